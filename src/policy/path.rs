//! Path templates (`path = "/v1/{env}"`) and whole-segment prefixes (SPEC 4, 8): how a rule's
//! or route's path condition matches a canonical request path.
//!
//! Pure: no I/O. Must not canonicalise (that is [`super::canonical`]); it matches paths that
//! are already canonical.

use super::normalize_path;

/// One compiled segment of a [`PathTemplate`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Must equal this (normalized) text.
    Literal(String),
    /// `{name}`: one non-empty segment.
    Param(String),
    /// `{*name}`: the non-empty remaining tail, slashes included.
    Rest(String),
}

/// A compiled path template: `/v1/deployments/{env}`, `/files/{*rest}`.
///
/// Literal segments are stored in [`normalize_path`] form, so a template matches the canonical
/// request path byte for byte (or in any ASCII case, for case-insensitive upstreams).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// The template as written.
    pub source: String,
    segments: Vec<Segment>,
}

impl PathTemplate {
    /// Parses a template. `{name}` matches one non-empty segment, `{*rest}` (last segment only)
    /// the remaining tail. Names are unique.
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some(rest) = s.strip_prefix('/') else {
            return Err(format!("path {s:?} must start with \"/\""));
        };
        let raw: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(raw.len());
        for (i, seg) in raw.iter().enumerate() {
            // Request paths have runs of "/" collapsed, so an empty segment before the end
            // could never match.
            if seg.is_empty() && i + 1 != raw.len() {
                return Err(format!("path {s:?}: empty segment (\"//\")"));
            }
            let compiled = parse_segment(seg).map_err(|e| format!("path {s:?}: {e}"))?;
            if matches!(compiled, Segment::Rest(_)) && i + 1 != raw.len() {
                return Err(format!(
                    "path {s:?}: {{*{}}} must be the last segment",
                    &seg[2..seg.len() - 1]
                ));
            }
            if let Segment::Param(name) | Segment::Rest(name) = &compiled {
                let dup = segments
                    .iter()
                    .any(|p| matches!(p, Segment::Param(n) | Segment::Rest(n) if n == name));
                if dup {
                    return Err(format!("path {s:?}: parameter {{{name}}} appears twice"));
                }
            }
            segments.push(compiled);
        }
        // One trailing slash is not significant (SPEC 8): "/a/" is the template "/a".
        if segments.len() > 1 && segments.last() == Some(&Segment::Literal(String::new())) {
            segments.pop();
        }
        Ok(Self {
            source: s.to_owned(),
            segments,
        })
    }

    /// Names of the parameters, in order.
    pub fn param_names(&self) -> Vec<&str> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Param(n) | Segment::Rest(n) => Some(n.as_str()),
                Segment::Literal(_) => None,
            })
            .collect()
    }

    /// Matches a request path (no query, in canonical match form), returning the parameters
    /// (percent-decoded). One trailing `/` on the request is not significant (SPEC 8:
    /// `/a/{x}` matches `/a/1` and `/a/1/`). With `case_insensitive`, literal segments compare
    /// in any ASCII case.
    pub fn matches(&self, path: &str, case_insensitive: bool) -> Option<Vec<(String, String)>> {
        let mut rest = path.strip_prefix('/')?;
        if let Some(trimmed) = rest.strip_suffix('/') {
            rest = trimmed;
        }
        let mut params = Vec::new();
        for (i, seg) in self.segments.iter().enumerate() {
            let last = i + 1 == self.segments.len();
            if let Segment::Rest(name) = seg {
                if rest.is_empty() {
                    return None;
                }
                params.push((name.clone(), decode(rest)));
                return Some(params);
            }
            let (here, tail) = match rest.split_once('/') {
                Some((h, t)) if !last => (h, t),
                Some(_) => return None,
                None if last => (rest, ""),
                None => return None,
            };
            match seg {
                Segment::Literal(lit) if eq_case(lit, here, case_insensitive) => {}
                Segment::Param(name) if !here.is_empty() => {
                    params.push((name.clone(), decode(here)))
                }
                _ => return None,
            }
            rest = tail;
        }
        Some(params)
    }

    /// The literal segments before the first parameter, as a path (`/v1/deployments` for
    /// `/v1/deployments/{env}`): every path the template matches starts with it.
    pub fn literal_prefix(&self) -> String {
        let mut out = String::new();
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => {
                    out.push('/');
                    out.push_str(l);
                }
                Segment::Param(_) | Segment::Rest(_) => break,
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    /// Whether both templates match exactly the same paths (parameter names aside).
    pub fn same_shape(&self, other: &PathTemplate) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| match (a, b) {
                    (Segment::Literal(x), Segment::Literal(y)) => x == y,
                    (Segment::Param(_), Segment::Param(_))
                    | (Segment::Rest(_), Segment::Rest(_)) => true,
                    _ => false,
                })
    }
}

/// String equality, in any ASCII case when `case_insensitive`.
pub(super) fn eq_case(a: &str, b: &str, case_insensitive: bool) -> bool {
    if case_insensitive {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Whether `path` lies under `prefix` on whole segments (SPEC 8): `/admin` and `/admin/` both
/// cover `/admin`, `/admin/` and `/admin/x`, never `/administrator`; `/` covers everything.
pub fn segment_prefix(prefix: &str, path: &str, case_insensitive: bool) -> bool {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        return true;
    }
    path.len() >= p.len()
        && path.is_char_boundary(p.len())
        && eq_case(p, &path[..p.len()], case_insensitive)
        && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
}

/// Parses one template segment.
fn parse_segment(seg: &str) -> Result<Segment, String> {
    if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
        let (name, rest) = match inner.strip_prefix('*') {
            Some(n) => (n, true),
            None => (inner, false),
        };
        check_param_name(name)?;
        return Ok(if rest {
            Segment::Rest(name.to_owned())
        } else {
            Segment::Param(name.to_owned())
        });
    }
    if seg.contains(['{', '}']) {
        return Err(format!(
            "segment {seg:?}: a parameter must be a whole segment (\"{{name}}\" or \"{{*name}}\")"
        ));
    }
    let normalized =
        normalize_path(&format!("/{seg}")).map_err(|e| format!("segment {seg:?}: {e}"))?;
    Ok(Segment::Literal(normalized[1..].to_owned()))
}

/// A parameter name: an identifier.
fn check_param_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid parameter name {name:?} (letters, digits and _)"
        ))
    }
}

/// Fully percent-decodes a captured value (invalid UTF-8 becomes U+FFFD, so a value that is not
/// text never equals a configured condition but the segment still counts as matched).
fn decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}
