//! Values shared by every section: secrets, socket addresses, URLs and existing files.
//!
//! Owns the parsing of these sections only; every problem goes to the shared [`FileCheck`]. Must
//! not read other sections or build the final [`Config`](super::super::Config).

use super::*;

/// A required secret.
pub fn req_secret(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    header: &Range<usize>,
    section: &str,
    key: &str,
    dir: &Path,
) -> Option<Secret> {
    if t.get(key).is_none() {
        ck.err(header, format!("missing required key {key:?} in {section}"));
        return None;
    }
    secret(ck, t, key, dir)
}

/// An optional secret: `env:NAME` or `file:PATH` (relative to the config folder, one trailing
/// newline trimmed). Inline values are refused so secrets never sit in config files.
pub fn secret(ck: &mut FileCheck, t: &DeTable<'_>, key: &str, dir: &Path) -> Option<Secret> {
    let (s, span) = ck.opt_str(t, key)?;
    match read_secret(s, dir) {
        Ok(v) => Some(Secret::new(v)),
        Err(e) => {
            ck.err(&span, format!("{key:?}: {e}"));
            None
        }
    }
}

/// Reads the value a secret reference points at.
pub(crate) fn read_secret(reference: &str, dir: &Path) -> Result<String, String> {
    if let Some(name) = reference.strip_prefix("env:") {
        return match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(v),
            Ok(_) => Err(format!("environment variable {name} is empty")),
            Err(std::env::VarError::NotPresent) => {
                Err(format!("environment variable {name} is not set"))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("environment variable {name} is not valid UTF-8"))
            }
        };
    }
    if let Some(file) = reference.strip_prefix("file:") {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
        let value = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if value.is_empty() {
            return Err(format!("secret file {} is empty", path.display()));
        }
        return Ok(value.to_owned());
    }
    Err("secrets must be given as env:NAME or file:PATH, never inline".into())
}

/// A socket address `host:port` (IP literal).
pub fn socket_addr(
    ck: &mut FileCheck,
    key: &str,
    s: &str,
    span: &Range<usize>,
) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            let hint = if s.starts_with("localhost") {
                " (use 127.0.0.1)"
            } else {
                ""
            };
            ck.err(span, format!("{key:?} must be an IP address and port like \"127.0.0.1:8080\", not {s:?}{hint}"));
            None
        }
    }
}

/// An absolute http(s) URL with a host.
pub fn http_url(ck: &mut FileCheck, key: &str, s: &str, span: &Range<usize>) -> Option<Url> {
    match Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        Ok(_) => {
            ck.err(
                span,
                format!("{key:?} must be an http:// or https:// URL, not {s:?}"),
            );
            None
        }
        Err(e) => {
            ck.err(span, format!("{key:?} is not a valid URL ({e}): {s:?}"));
            None
        }
    }
}

/// An issuer URL: https, or http only on loopback (development).
pub fn issuer_url(ck: &mut FileCheck, key: &str, s: &str, span: &Range<usize>) -> Option<Url> {
    let url = http_url(ck, key, s, span)?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        ck.err(span, format!("{key:?} must use https:// (http:// is only accepted for 127.0.0.1 or localhost), not {s:?}"));
        return None;
    }
    Some(url)
}

/// A file path (relative to the config folder) that must exist.
pub fn existing_file(
    ck: &mut FileCheck,
    key: &str,
    s: &str,
    span: &Range<usize>,
    dir: &Path,
) -> Option<PathBuf> {
    let path = dir.join(s);
    if path.is_file() {
        Some(path)
    } else {
        ck.err(
            span,
            format!("{key:?}: file {} does not exist", path.display()),
        );
        None
    }
}

/// An optional string `key`: `default` when absent, the value when it is not blank, and `None`
/// with `blank` recorded at the value when it is blank.
pub fn non_blank_or(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    key: &str,
    default: &str,
    blank: &str,
) -> Option<String> {
    match ck.opt_str(t, key) {
        Some((s, span)) if s.trim().is_empty() => {
            ck.err(&span, blank);
            None
        }
        Some((s, _)) => Some(s.to_owned()),
        None => Some(default.to_owned()),
    }
}
