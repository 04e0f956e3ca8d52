//! Policy test files for `countersign test` (SPEC 9): `[[case]]` tables parsed into
//! [`TestCase`]s, every problem reported at once as `file:line:col: message`, like a config
//! file. Owns the file format only; running the cases is [`crate::policytest`]'s job.
//!
//! ```toml
//! [[case]]
//! name = "a production deploy is held"     # optional; default "METHOD URL"
//! method = "POST"
//! url = "https://deploy.example.com/v1/deployments/production"
//! claims = { email = "dev@example.com", scope = "deploy:write", acr = "phr" }  # absent = no token
//! auth_age = "5m"                          # optional: auth_time = now - 5m
//! expect = "approve"
//! rule = "prod-deploy"                     # optional: the rule that must decide
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use toml::de::{DeTable, DeValue};

use super::walk::{closest, FileCheck, Val};
use super::{syntax_problems, whole_file, Problem};
use crate::policy::{Mode, Outcome, PolicySet};

/// Keys of a `[[case]]`.
const CASE_KEYS: &[&str] = &[
    "name", "method", "url", "claims", "auth_age", "expect", "rule",
];

/// A position in a test file, for messages about a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    /// The test file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl At {
    /// A problem at this position.
    pub fn problem(&self, message: impl Into<String>) -> Problem {
        Problem {
            file: self.file.clone(),
            line: self.line,
            col: self.col,
            message: message.into(),
        }
    }
}

/// One `[[case]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    /// The `[[case]]` header.
    pub at: At,
    /// `name`, if given.
    pub name: Option<String>,
    /// `method`, uppercase.
    pub method: String,
    /// `url`: an absolute http(s) URL.
    pub url: String,
    /// `claims` of the caller's token; `None` = no token.
    pub claims: Option<Map<String, Value>>,
    /// `auth_age`: the caller logged in this long ago (sets `auth_time`).
    pub auth_age: Option<Duration>,
    /// `expect`.
    pub expect: Outcome,
    /// `rule`, with where it was written.
    pub rule: Option<(String, At)>,
}

impl TestCase {
    /// `name`, or `METHOD URL`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("{} {}", self.method, self.url),
        }
    }
}

/// Reads and parses one test file. A file that cannot be read, does not parse or has no
/// `[[case]]` is an error, as is every wrong key or value.
pub fn load_test_file(path: &Path) -> Result<Vec<TestCase>, Vec<Problem>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![whole_file(path, format!("cannot read test file: {e}"))])?;
    parse_test_file(path, &text)
}

/// Parses the text of a test file named `path`.
pub fn parse_test_file(path: &Path, text: &str) -> Result<Vec<TestCase>, Vec<Problem>> {
    let mut ck = FileCheck::new(path, text);
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        syntax_problems(&mut ck, &errors);
        return Err(ck.into_problems());
    }
    let doc = doc.get_ref();
    ck.unknown_keys(doc, "at the top level of a test file", &["case"]);
    let mut cases = Vec::new();
    match doc.get("case") {
        None => ck.err(
            &(0..0),
            "a test file needs at least one [[case]] table (method, url, expect)",
        ),
        Some(value) => {
            if let Some(array) = ck.as_array(value, "[[case]]") {
                for entry in array.iter() {
                    if let Some(t) = ck.as_table(entry, "each [[case]]") {
                        cases.extend(case(&mut ck, t, &entry.span()));
                    }
                }
            }
        }
    }
    let problems = ck.into_problems();
    if problems.is_empty() {
        Ok(cases)
    } else {
        Err(problems)
    }
}

/// Checks every case's `rule` against `policy`: it must name an enforcing rule, or be
/// `"default"` for `[policy] default` (a shadow rule never decides).
pub fn check_case_rules(cases: &[TestCase], policy: &PolicySet) -> Vec<Problem> {
    let names: Vec<&str> = policy.rules.iter().map(|r| r.name.as_str()).collect();
    let mut problems = Vec::new();
    for (name, at) in cases.iter().filter_map(|c| c.rule.as_ref()) {
        let message = match policy.rules.iter().find(|r| &r.name == name) {
            Some(r) if r.mode == Mode::Enforce => continue,
            Some(_) => format!(
                "rule {name:?} is a shadow rule: it never decides, and cases judge only the enforcing outcome"
            ),
            None if name == "default" => continue,
            None => {
                let mut m = format!("no rule is named {name:?} (\"default\" means [policy] default)");
                if let Some(best) = closest(name, &names) {
                    m.push_str(&format!("; did you mean {best:?}?"));
                }
                m
            }
        };
        problems.push(at.problem(message));
    }
    problems
}

/// The position of byte `at` in the file being checked.
fn at(ck: &FileCheck, offset: usize) -> At {
    let (line, col) = ck.position(offset);
    At {
        file: ck.file.clone(),
        line,
        col,
    }
}

/// One `[[case]]`; `None` after reporting its problems.
fn case(ck: &mut FileCheck, t: &DeTable<'_>, header: &std::ops::Range<usize>) -> Option<TestCase> {
    ck.unknown_keys(t, "in [[case]]", CASE_KEYS);
    let name = match ck.opt_str(t, "name") {
        Some((s, span)) if s.trim().is_empty() => {
            ck.err(&span, "\"name\" must not be empty");
            None
        }
        Some((s, _)) => Some(Some(s.to_owned())),
        None => (!t.contains_key("name")).then_some(None),
    };
    let method = ck
        .req_str(t, header, "in [[case]]", "method")
        .and_then(|(s, span)| method(ck, s, &span));
    let url = ck
        .req_str(t, header, "in [[case]]", "url")
        .and_then(|(s, span)| url(ck, s, &span));
    let claims = match t.get("claims") {
        Some(v) => match json(ck, v, "\"claims\"") {
            Some(Value::Object(map)) => Some(Some(map)),
            Some(_) => {
                ck.err(
                    &v.span(),
                    "\"claims\" must be a table, e.g. { scope = \"deploy:read\" }",
                );
                None
            }
            None => None,
        },
        None => Some(None),
    };
    let auth_age = auth_age(ck, t, claims.as_ref());
    let expect = ck
        .req_str(t, header, "in [[case]]", "expect")
        .and_then(|(s, span)| expect(ck, s, &span));
    let rule = match ck.opt_str(t, "rule") {
        Some((s, span)) if s.trim().is_empty() => {
            ck.err(&span, "\"rule\" must not be empty");
            None
        }
        Some((s, span)) => Some(Some((s.to_owned(), at(ck, span.start)))),
        None => (!t.contains_key("rule")).then_some(None),
    };
    Some(TestCase {
        at: at(ck, header.start),
        name: name?,
        method: method?,
        url: url?,
        claims: claims?,
        auth_age: auth_age?,
        expect: expect?,
        rule: rule?,
    })
}

/// `method`: an HTTP method token, uppercased.
fn method(ck: &mut FileCheck, s: &str, span: &std::ops::Range<usize>) -> Option<String> {
    let upper = s.to_ascii_uppercase();
    if !s.is_empty() && http::Method::from_bytes(upper.as_bytes()).is_ok() {
        return Some(upper);
    }
    ck.err(span, format!("{s:?} is not an HTTP method"));
    None
}

/// `url`: absolute, http or https, with a host.
fn url(ck: &mut FileCheck, s: &str, span: &std::ops::Range<usize>) -> Option<String> {
    let problem = match url::Url::parse(s) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => "must be an http:// or https:// URL",
        Ok(u) if u.host_str().is_none_or(str::is_empty) => "has no host",
        Ok(_) => return Some(s.to_owned()),
        Err(_) => "is not an absolute URL (e.g. \"https://deploy.example.com/v1/x\")",
    };
    ck.err(span, format!("\"url\" {s:?} {problem}"));
    None
}

/// `expect`: one of the [`Outcome`] words.
fn expect(ck: &mut FileCheck, s: &str, span: &std::ops::Range<usize>) -> Option<Outcome> {
    if let Some(o) = Outcome::parse(s) {
        return Some(o);
    }
    let words: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
    let mut m = format!("\"expect\" must be one of {}, not {s:?}", words.join(", "));
    if let Some(best) = closest(s, &words) {
        m.push_str(&format!("; did you mean {best:?}?"));
    }
    ck.err(span, m);
    None
}

/// `auth_age = "5m"`: needs `claims`, and replaces `claims.auth_time`.
fn auth_age(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    claims: Option<&Option<Map<String, Value>>>,
) -> Option<Option<Duration>> {
    let Some((k, _)) = t.get_key_value("auth_age") else {
        return Some(None);
    };
    let age = ck.opt_duration(t, "auth_age", Duration::ZERO)?;
    let conflict = match claims {
        Some(None) => Some("\"auth_age\" needs \"claims\": a case without claims has no token"),
        Some(Some(map)) if map.contains_key("auth_time") => {
            Some("give either \"auth_age\" or claims.auth_time, not both")
        }
        _ => None,
    };
    if let Some(m) = conflict {
        ck.err(&k.span(), m);
        return None;
    }
    Some(Some(age))
}

/// A TOML value as JSON (a datetime becomes its RFC 3339 text).
fn json(ck: &mut FileCheck, v: &Val<'_>, what: &str) -> Option<Value> {
    Some(match v.get_ref() {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Value::from(n),
            Err(_) => {
                ck.err(&v.span(), format!("{what}: integer out of range"));
                return None;
            }
        },
        DeValue::Float(f) => match f
            .as_str()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            Some(n) => Value::Number(n),
            None => {
                ck.err(
                    &v.span(),
                    format!("{what}: {} is not a JSON number", f.as_str()),
                );
                return None;
            }
        },
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(a) => {
            let items: Vec<Option<Value>> = a.iter().map(|x| json(ck, x, what)).collect();
            Value::Array(items.into_iter().collect::<Option<Vec<_>>>()?)
        }
        DeValue::Table(t) => {
            let mut map = Map::new();
            let mut ok = true;
            for (k, x) in t.iter() {
                match json(ck, x, what) {
                    Some(x) => {
                        map.insert(k.get_ref().to_string(), x);
                    }
                    None => ok = false,
                }
            }
            if !ok {
                return None;
            }
            Value::Object(map)
        }
    })
}
