//! The one canonical form of a request (SPEC 8): what routes, rules, `explain`, the approval
//! binding, the approval page and the upstream all see.
//!
//! Owns the spelling rules: path canonicalisation, host canonicalisation, which header names
//! are reserved or override the method, and the precise reason a spelling is refused. Pure:
//! no I/O, no pingora types. Must not decide anything about policy: it only says what a
//! request *is*; [`super::RouteTable::resolve`] and [`super::PolicySet`] decide what happens.

use std::borrow::Cow;

/// Why a request is refused with 400 `invalid_request` before any policy runs. The
/// [`description`](InvalidRequest::description) is the public `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidRequest {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    InvalidEscape,
    /// A NUL byte, raw or as `%00`.
    Nul,
    /// A control character (0x01-0x1F, 0x7F), raw or percent-encoded.
    ControlChar,
    /// A `.` or `..` segment (also percent-encoded, also before a `;`).
    DotSegment,
    /// `%2F` or `%5C` in any case.
    EncodedSlash,
    /// A raw `\`.
    Backslash,
    /// A `;` on a route without `allow_semicolons`.
    Semicolon,
    /// Percent-escapes that do not decode to UTF-8 (overlong forms such as `%C0%AF`).
    NotUtf8,
    /// Neither a `Host` header nor an authority in the request target.
    NoHost,
    /// More than one `Host` header.
    MultipleHosts,
    /// A host that is not a DNS name or IP literal (or has user info).
    BadHost,
    /// The request target's authority (HTTP/2 `:authority`, HTTP/1.1 absolute-form) and the
    /// `Host` header name different hosts.
    HostMismatch,
    /// A method-override header on a route without `allow_method_override`.
    MethodOverride,
    /// A method-override header whose value is not one method (or several that disagree).
    BadMethodOverride,
}

impl std::fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for InvalidRequest {}

impl InvalidRequest {
    /// The public `error_description` (stable wording; no request data in it).
    pub fn description(self) -> &'static str {
        match self {
            Self::NotAbsolute => "the request path must start with \"/\"",
            Self::InvalidEscape => "the request path has an invalid percent-escape",
            Self::Nul => "the request path contains a NUL byte (raw or %00)",
            Self::ControlChar => {
                "the request path contains a control character (raw or percent-encoded)"
            }
            Self::DotSegment => {
                "the request path contains a \".\" or \"..\" segment (also when percent-encoded)"
            }
            Self::EncodedSlash => {
                "the request path contains an encoded slash or backslash (%2F or %5C)"
            }
            Self::Backslash => "the request path contains a backslash",
            Self::Semicolon => {
                "the request path contains \";\" (matrix parameters are not accepted on this route)"
            }
            Self::NotUtf8 => {
                "the request path does not decode to valid UTF-8 (e.g. an overlong encoding)"
            }
            Self::NoHost => "the request has no host",
            Self::MultipleHosts => "the request has more than one Host header",
            Self::BadHost => "the request's host is not a valid host name",
            Self::HostMismatch => "the request's authority and Host header differ",
            Self::MethodOverride => {
                "method-override headers (X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override) are not accepted on this route"
            }
            Self::BadMethodOverride => {
                "the method-override header does not name exactly one HTTP method"
            }
        }
    }
}

/// A request path in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    /// The canonical path: what the upstream receives and approvers see.
    pub path: String,
    /// Whether it has a `;` (matrix parameters); refused unless the route allows them.
    pub matrix: bool,
}

impl CanonicalPath {
    /// The path rules and routes match: with matrix parameters (`;...` up to the next `/`)
    /// removed from every segment, as Tomcat and Jetty read it, so `/admin;x` is judged as
    /// `/admin`. Equal to [`Self::path`] when there is no `;`.
    pub fn match_path(&self) -> Cow<'_, str> {
        if !self.matrix {
            return Cow::Borrowed(&self.path);
        }
        let mut out = String::with_capacity(self.path.len());
        let mut segs = self
            .path
            .split('/')
            .skip(1)
            .map(|s| s.split(';').next().unwrap_or(""))
            .peekable();
        while let Some(seg) = segs.next() {
            // A segment that was only parameters disappears like an empty one ("//"); a
            // trailing one stays a trailing slash.
            if seg.is_empty() && segs.peek().is_some() {
                continue;
            }
            out.push('/');
            out.push_str(seg);
        }
        if out.is_empty() {
            out.push('/');
        }
        Cow::Owned(out)
    }
}

/// Puts a request path (no query) in canonical form (SPEC 8):
///
/// - percent-escapes of unreserved characters are decoded (`%61dmin` -> `admin`); every other
///   escape is kept, with uppercase hex;
/// - bytes that may not appear raw in a path are percent-encoded;
/// - runs of `/` collapse to one (`//admin` -> `/admin`); one trailing `/` is kept;
/// - refused: `.`/`..` segments (also `%2e`, also `..;x`), `%2F`/`%5C`, a raw `\`, NUL and
///   control characters (raw or encoded), invalid escapes, escapes that do not decode to
///   UTF-8, and a path not starting with `/`.
///
/// A `;` is kept and flagged ([`CanonicalPath::matrix`]); whether it is accepted is the
/// route's choice.
pub fn canonical_path(raw: &str) -> Result<CanonicalPath, InvalidRequest> {
    if !raw.starts_with('/') {
        return Err(InvalidRequest::NotAbsolute);
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut matrix = false;
    let mut non_ascii = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| hex_value(*c));
            let lo = bytes.get(i + 2).and_then(|c| hex_value(*c));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(InvalidRequest::InvalidEscape);
            };
            let d = hi << 4 | lo;
            match d {
                0 => return Err(InvalidRequest::Nul),
                b'/' | b'\\' => return Err(InvalidRequest::EncodedSlash),
                _ if is_control(d) => return Err(InvalidRequest::ControlChar),
                _ if is_unreserved(d) => out.push(char::from(d)),
                _ => {
                    non_ascii |= d >= 0x80;
                    out.push_str(percent_encoding::percent_encode_byte(d));
                }
            }
            i += 3;
            continue;
        }
        match b {
            0 => return Err(InvalidRequest::Nul),
            b'\\' => return Err(InvalidRequest::Backslash),
            _ if is_control(b) => return Err(InvalidRequest::ControlChar),
            b'/' if out.ends_with('/') => {}
            b';' => {
                matrix = true;
                out.push(';');
            }
            _ if is_unreserved(b) || is_raw_ok(b) => out.push(char::from(b)),
            _ => {
                non_ascii |= b >= 0x80;
                out.push_str(percent_encoding::percent_encode_byte(b));
            }
        }
        i += 1;
    }
    if non_ascii
        && std::str::from_utf8(&percent_encoding::percent_decode_str(&out).collect::<Vec<u8>>())
            .is_err()
    {
        return Err(InvalidRequest::NotUtf8);
    }
    let dot = out.split('/').any(|seg| {
        // Tomcat reads "..;x" as "..": judge the segment without its parameters.
        let seg = seg.split(';').next().unwrap_or("");
        seg == "." || seg == ".."
    });
    if dot {
        return Err(InvalidRequest::DotSegment);
    }
    Ok(CanonicalPath { path: out, matrix })
}

/// [`canonical_path`] for paths written in config and policy files: a `;` is refused there
/// (a rule for a matrix-parameter spelling could never match; rules see paths without them).
pub fn normalize_path(raw: &str) -> Result<String, InvalidRequest> {
    let c = canonical_path(raw)?;
    if c.matrix {
        return Err(InvalidRequest::Semicolon);
    }
    Ok(c.path)
}

/// RFC 3986 unreserved.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Sub-delimiters, `:` and `@` (and `/`): allowed raw in a path; kept as sent.
fn is_raw_ok(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@' | b'/'
    )
}

/// C0 controls and DEL (NUL is reported on its own).
fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Value of one hex digit.
fn hex_value(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// A host in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalHost {
    /// Lowercase, no trailing dot, no port: what routes and rules match.
    pub host: String,
    /// `host` plus `:port` when the port is not the scheme's default: the `Host` the upstream
    /// receives.
    pub authority: String,
}

/// Canonicalises an authority (`Host` header value or URI authority): lowercase, trailing dot
/// removed, the scheme's `default_port` removed. User info, empty labels and characters that
/// cannot be in a host name are refused.
pub fn canonical_host(authority: &str, default_port: u16) -> Result<CanonicalHost, InvalidRequest> {
    let bad = InvalidRequest::BadHost;
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').ok_or(bad)?;
        let literal = &rest[..end];
        literal.parse::<std::net::Ipv6Addr>().map_err(|_| bad)?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad),
        };
        (&authority[..end + 2], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => {
            let n: u16 = (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
                .ok_or(bad)?;
            (n != default_port).then_some(n)
        }
        None => None,
    };
    let mut host = host.to_ascii_lowercase();
    if !host.starts_with('[') {
        if host.ends_with('.') {
            host.pop();
        }
        let valid = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(bad);
        }
    }
    let authority = match port {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    Ok(CanonicalHost { host, authority })
}

/// Whether a header name, with `_` read as `-` and in any case, starts with `countersign-`:
/// such client headers are removed before anything reads the request (SPEC 5.1, 8). Servers
/// that fold `_` into `-` (CGI/WSGI environ, some frameworks) would otherwise read
/// `Countersign_Subject` as `Countersign-Subject`.
pub fn is_reserved_header(name: &str) -> bool {
    const PREFIX: &[u8] = b"countersign-";
    let n = name.as_bytes();
    n.len() >= PREFIX.len()
        && n[..PREFIX.len()]
            .iter()
            .zip(PREFIX)
            .all(|(a, b)| dash_fold(*a) == *b)
}

/// The method-override headers (SPEC 8), lowercase.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Whether a header name (any case, `_` read as `-`) is a method-override header.
pub fn is_method_override_header(name: &str) -> bool {
    METHOD_OVERRIDE_HEADERS.iter().any(|h| {
        h.len() == name.len() && name.bytes().zip(h.bytes()).all(|(a, b)| dash_fold(a) == b)
    })
}

/// Lowercase, `_` as `-`.
fn dash_fold(b: u8) -> u8 {
    match b {
        b'_' => b'-',
        _ => b.to_ascii_lowercase(),
    }
}

/// The method a request's override headers ask for: `Ok(None)` without one, `Err` when they
/// are not one valid method (several that disagree count as not one).
pub fn override_method(headers: &http::HeaderMap) -> Result<Option<http::Method>, InvalidRequest> {
    let mut found: Option<http::Method> = None;
    for (name, value) in headers {
        if !is_method_override_header(name.as_str()) {
            continue;
        }
        let text = value
            .to_str()
            .map_err(|_| InvalidRequest::BadMethodOverride)?
            .trim()
            .to_ascii_uppercase();
        let m = http::Method::from_bytes(text.as_bytes())
            .map_err(|_| InvalidRequest::BadMethodOverride)?;
        if found.as_ref().is_some_and(|f| *f != m) {
            return Err(InvalidRequest::BadMethodOverride);
        }
        found = Some(m);
    }
    Ok(found)
}

/// Whether the request carries any method-override header.
pub fn has_method_override(headers: &http::HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| is_method_override_header(name.as_str()))
}
