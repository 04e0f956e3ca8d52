//! Adaptive Card building blocks shared by the Teams webhook cards ([`super::teams`]) and the
//! Teams bot cards ([`super::teams_bot`]): titles, facts, the replayed headers and body
//! preview, links, and the defusing every user-controlled value goes through first (Adaptive
//! Card text is markdown: a requester must not plant a link or a fake button in front of an
//! approver). Owns card text only; must not send anything or decide anything.

use serde_json::{json, Value};

use crate::approval::Approval;

/// Media type of an Adaptive Card attachment.
pub(crate) const CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";
/// The schema URL editors and validators expect in `$schema`.
pub(crate) const CARD_SCHEMA: &str = "http://adaptivecards.io/schemas/adaptive-card.json";
/// Longest value shown in a fact; headers and paths can be kilobytes long.
pub(crate) const FACT_MAX_CHARS: usize = 300;
/// Longest body preview shown (Teams rejects messages above about 28 KB).
const PREVIEW_MAX_CHARS: usize = 1000;
/// Appended to a value that was cut.
const CUT_MARK: &str = " …";
/// Invisible, non-breaking: placed inside `://` and `www.` so no renderer sees a URL.
const WORD_JOINER: char = '\u{2060}';

/// A bold, wrapping heading.
pub(crate) fn title(text: &str, color: &str) -> Value {
    json!({
        "type": "TextBlock",
        "text": defuse(text, FACT_MAX_CHARS),
        "size": "Large",
        "weight": "Bolder",
        "color": color,
        "wrap": true,
    })
}

/// A highlighted warning line (fixed text, not user-controlled).
pub(crate) fn warning(text: &str) -> Value {
    json!({
        "type": "TextBlock",
        "text": text,
        "color": "Attention",
        "weight": "Bolder",
        "wrap": true,
    })
}

/// A FactSet; every value is defused.
pub(crate) fn fact_set(facts: &[(&str, String)]) -> Value {
    let facts: Vec<Value> = facts
        .iter()
        .map(|(name, value)| json!({ "title": name, "value": defuse(value, FACT_MAX_CHARS) }))
        .collect();
    json!({ "type": "FactSet", "facts": facts })
}

/// Every header that will be replayed, credentials masked, in monospace (SPEC 8).
pub(crate) fn replayed_headers(a: &Approval) -> Option<Value> {
    if a.headers.is_empty() {
        return None;
    }
    let lines: Vec<String> = a
        .headers
        .iter()
        .map(|h| one_line_controls(&format!("{}: {}", h.name, h.value)))
        .collect();
    let text = break_links(&truncate(&lines.join("\n"), PREVIEW_MAX_CHARS));
    Some(monospace_section(
        "Headers sent (credentials masked)",
        &text,
    ))
}

/// A bold label over `text` in monospace. A `RichTextBlock` `TextRun` is never
/// markdown-processed (Adaptive Cards schema), unlike a `TextBlock`.
fn monospace_section(label: &str, text: &str) -> Value {
    json!({
        "type": "Container",
        "items": [
            { "type": "TextBlock", "text": label, "weight": "Bolder", "spacing": "Medium" },
            {
                "type": "RichTextBlock",
                "inlines": [{ "type": "TextRun", "text": text, "fontType": "Monospace" }],
            },
        ],
    })
}

/// The body preview in monospace. A `RichTextBlock` `TextRun` is never markdown-processed
/// (Adaptive Cards schema), unlike a `TextBlock`, so JSON shows exactly as sent, with no
/// escaping noise; URLs in it are still broken so none becomes a link.
pub(crate) fn body_preview(a: &Approval) -> Option<Value> {
    if a.body_preview.is_empty() {
        return None;
    }
    let label = if a.body_preview_cut || a.body_preview.chars().count() > PREVIEW_MAX_CHARS {
        format!(
            "Body (preview cut: {} bytes in all, SHA-256 {})",
            a.body_len, a.body_sha256
        )
    } else {
        "Body".to_owned()
    };
    let text = break_links(&truncate(
        &one_line_controls(&a.body_preview),
        PREVIEW_MAX_CHARS,
    ));
    Some(monospace_section(&label, &text))
}

/// A button opening `url` in the approver's browser.
pub(crate) fn open_url(label: &str, url: &str, style: Option<&str>) -> Value {
    let mut action = json!({ "type": "Action.OpenUrl", "title": label, "url": url });
    if let Some(style) = style {
        action["style"] = json!(style);
    }
    action
}

/// What was asked, the first facts of every Teams card (webhook and bot mode).
pub(crate) fn request_facts(a: &Approval) -> Vec<(&'static str, String)> {
    vec![
        ("Requester", requester(a)),
        ("Method", a.method.clone()),
        ("Host", a.host.clone()),
        ("Path", a.path_and_query()),
        (
            "Reason",
            a.reason.clone().unwrap_or_else(|| "(none given)".into()),
        ),
    ]
}

/// `alice@example.com`, or `sub (issuer)` when the token had no email.
pub(crate) fn requester(a: &Approval) -> String {
    match &a.requester.email {
        Some(email) => email.clone(),
        None => format!("{} ({})", a.requester.sub, a.requester.iss),
    }
}

/// `POST deploy.example.com/v1/x?y`.
pub(crate) fn request_line(a: &Approval) -> String {
    format!("{} {}{}", a.method, a.host, a.path_and_query())
}

/// `1 of 2 approvals (alice@example.com)`, or for a table quorum
/// `dba 1/1, security 0/1 (alice@example.com)`.
pub(crate) fn votes(a: &Approval) -> String {
    let approved = a.approved_by();
    let mut s = a
        .quorum_summary()
        .unwrap_or_else(|| format!("{} of {} approvals", approved.len(), a.quorum));
    if !approved.is_empty() {
        s.push_str(&format!(" ({})", approved.join(", ")));
    }
    s
}

pub(crate) use crate::clock::rfc3339_ms as rfc3339;

// ----- defusing user-controlled text ---------------------------------------------------------

/// Makes `value` safe to show in markdown-processed card text, at most `max` characters.
///
/// Adaptive Card text is a markdown subset (bold, italic, lists, `[text](url)` links) and
/// Teams also turns bare URLs into links. Backslash escapes are honoured inconsistently (Teams
/// mobile showed them literally, AdaptiveCards issue 5590), so the defence does not rely on
/// them alone:
/// - control characters (newlines included) become spaces: a fact is one line, so no block
///   syntax (lists, headings) can start after the first character;
/// - markdown punctuation is backslash-escaped (CommonMark, what the renderers implement);
///   braces too, so no `{{DATE(...)}}` / `${...}` host substitution can be triggered;
/// - `://` and `www.` get an invisible word joiner, so no renderer recognises a URL even where
///   escapes are ignored; a link needs `](` followed by a URL, which can no longer occur.
pub(crate) fn defuse(value: &str, max: usize) -> String {
    let flat = truncate(&one_line_controls(value), max);
    break_links(&escape_markdown(&flat))
}

/// Control characters (including CR, LF, TAB) to spaces.
fn one_line_controls(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Backslash before every character that can start or end markdown syntax, and before a
/// leading list marker (`-`, `+`, `1.`).
fn escape_markdown(s: &str) -> String {
    const SPECIAL: &[char] = &[
        '\\', '*', '_', '[', ']', '(', ')', '`', '~', '<', '>', '#', '|', '!', '{', '}',
    ];
    let mut out = String::with_capacity(s.len() + 8);
    let leading_digits = s.chars().take_while(char::is_ascii_digit).count();
    for (i, c) in s.chars().enumerate() {
        let list_marker = (i == 0 && (c == '-' || c == '+'))
            || (i == leading_digits && leading_digits > 0 && (c == '.' || c == ')'));
        if SPECIAL.contains(&c) || list_marker {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Puts a word joiner inside `://` and after `www` before a dot, case-insensitively.
fn break_links(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        out.push(c);
        let next_is = |want: &str| {
            let mut it = chars[i + 1..].iter();
            want.chars()
                .all(|w| it.next().is_some_and(|c| c.eq_ignore_ascii_case(&w)))
        };
        let www_start = (i == 0 || !chars[i - 1].is_alphanumeric())
            && c.eq_ignore_ascii_case(&'w')
            && next_is("ww.");
        if (c == ':' && next_is("//")) || www_start {
            out.push(WORD_JOINER);
        }
    }
    out
}

/// At most `max` characters, with [`CUT_MARK`] when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let keep = max.saturating_sub(CUT_MARK.chars().count());
    let mut out: String = s.chars().take(keep).collect();
    out.push_str(CUT_MARK);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_markdown_link_cannot_survive() {
        let out = defuse("[Approve](https://evil.example/x)", 300);
        assert!(!out.contains("]("), "{out}");
        assert!(!out.contains("://"), "{out}");
        assert!(out.starts_with("\\[Approve\\]\\(https:"), "{out}");
    }

    #[test]
    fn bare_urls_and_www_are_broken_invisibly() {
        let out = defuse("see HTTPS://evil.example and www.evil.example", 300);
        assert!(!out.to_ascii_lowercase().contains("https://"), "{out}");
        assert!(!out.contains("www."), "{out}");
        // Removing the invisible joiner gives the text back: nothing visible changed.
        assert_eq!(
            out.replace(WORD_JOINER, ""),
            "see HTTPS://evil.example and www.evil.example"
        );
        // "awww." is not a host name start.
        assert_eq!(break_links("awww.x"), "awww.x");
    }

    #[test]
    fn emphasis_lists_and_newlines_are_flattened_or_escaped() {
        assert_eq!(defuse("**bold** _it_", 300), "\\*\\*bold\\*\\* \\_it\\_");
        assert_eq!(defuse("- item", 300), "\\- item");
        assert_eq!(defuse("12. item", 300), "12\\. item");
        assert_eq!(defuse("a\n\n- b\r\n# c", 300), "a  - b  \\# c");
        // Plain paths stay readable.
        assert_eq!(
            defuse("/v1/deployments/prod-eu", 300),
            "/v1/deployments/prod-eu"
        );
    }

    #[test]
    fn long_values_are_cut_on_a_char_boundary() {
        let out = defuse(&"é".repeat(500), 10);
        assert_eq!(out.chars().count(), 10);
        assert!(out.ends_with(CUT_MARK));
    }
}
