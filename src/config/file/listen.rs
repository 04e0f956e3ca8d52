//! `[server]`, `[[upstream]]` and `[[route]]`: where Countersign listens and what it forwards to.
//!
//! Owns the parsing of these sections only; every problem goes to the shared [`FileCheck`]. Must
//! not read other sections or build the final [`Config`](super::super::Config).

use super::*;

/// `[server]`.
pub fn server(ck: &mut FileCheck, value: &Val<'_>, dir: &Path) -> Option<Server> {
    const KEYS: &[&str] = &["listen", "tls", "control_listen", "public_url", "threads"];
    let t = ck.as_table(value, "[server]")?;
    let header = value.span();
    ck.unknown_keys(t, "in [server]", KEYS);
    let listen = ck
        .req_str(t, &header, "in [server]", "listen")
        .and_then(|(s, span)| socket_addr(ck, "listen", s, &span));
    let tls = t.get("tls").and_then(|v| tls(ck, v, dir));
    let default_control = SocketAddr::from((Ipv4Addr::LOCALHOST, 9090));
    let control_listen = match ck.opt_str(t, "control_listen") {
        Some((s, span)) => {
            let addr = socket_addr(ck, "control_listen", s, &span);
            if addr.is_some() && addr == listen {
                ck.err(&span, "\"control_listen\" must differ from \"listen\" (the control plane never shares the data port)");
            }
            addr
        }
        None => {
            if listen == Some(default_control) {
                ck.err(&header, "\"listen\" is the default \"control_listen\" 127.0.0.1:9090; set \"control_listen\" to another address");
            }
            Some(default_control)
        }
    };
    let public_url = match ck.opt_str(t, "public_url") {
        Some((s, span)) => http_url(ck, "public_url", s, &span),
        None => control_listen.and_then(|a| Url::parse(&format!("http://{a}")).ok()),
    };
    let threads = ck.opt_int(t, "threads", 1).unwrap_or(2);
    Some(Server {
        listen: listen?,
        tls,
        control_listen: control_listen?,
        public_url: public_url?,
        threads: usize::try_from(threads).unwrap_or(2),
    })
}

/// `tls = { cert, key }`.
pub fn tls(ck: &mut FileCheck, value: &Val<'_>, dir: &Path) -> Option<TlsFiles> {
    let t = ck.as_table(value, "\"tls\"")?;
    let header = value.span();
    ck.unknown_keys(t, "in [server.tls]", &["cert", "key"]);
    let cert = ck
        .req_str(t, &header, "in [server.tls]", "cert")
        .and_then(|(s, span)| existing_file(ck, "cert", s, &span, dir));
    let key = ck
        .req_str(t, &header, "in [server.tls]", "key")
        .and_then(|(s, span)| existing_file(ck, "key", s, &span, dir));
    Some(TlsFiles {
        cert: cert?,
        key: key?,
    })
}

/// `[[upstream]]`.
pub fn upstream(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    header: &Range<usize>,
    dir: &Path,
) -> Option<Upstream> {
    ck.unknown_keys(
        t,
        "in [[upstream]]",
        &["name", "url", "ca", "case_insensitive_paths"],
    );
    let name = ck
        .req_str(t, header, "in [[upstream]]", "name")
        .map(|(s, _)| s.to_owned());
    let url = ck
        .req_str(t, header, "in [[upstream]]", "url")
        .and_then(|(s, span)| upstream_url(ck, s, &span));
    let ca = match ck.opt_str(t, "ca") {
        Some((s, span)) => {
            if url.as_ref().is_some_and(|u| u.scheme() != "https") {
                ck.err(&span, "\"ca\" is only used with an https:// upstream url");
            }
            Some(existing_file(ck, "ca", s, &span, dir)?)
        }
        None => None,
    };
    let case_insensitive_paths = ck.opt_bool(t, "case_insensitive_paths").unwrap_or(false);
    Some(Upstream {
        name: name?,
        url: url?,
        ca,
        case_insensitive_paths,
    })
}

/// An upstream origin: http(s), a host, no path beyond `/`, no query or fragment.
pub fn upstream_url(ck: &mut FileCheck, s: &str, span: &Range<usize>) -> Option<Url> {
    let url = http_url(ck, "url", s, span)?;
    let problem = if url.path() != "/" {
        Some("must not have a path (routes keep the request path as sent)")
    } else if url.query().is_some() || url.fragment().is_some() {
        Some("must not have a query or fragment")
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("must not carry credentials")
    } else {
        None
    };
    match problem {
        Some(p) => {
            ck.err(span, format!("upstream \"url\" {s:?} {p}"));
            None
        }
        None => Some(url),
    }
}

/// `[[route]]`.
pub fn route(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    header: &Range<usize>,
    upstreams: &[&str],
) -> Option<Route> {
    const KEYS: &[&str] = &[
        "host",
        "path_prefix",
        "upstream",
        "allow_semicolons",
        "allow_method_override",
    ];
    ck.unknown_keys(t, "in [[route]]", KEYS);
    let host = match ck.opt_str(t, "host") {
        Some((s, span)) => match HostPattern::parse(s) {
            Ok(h) => Some(Some(h)),
            Err(e) => {
                ck.err(&span, e);
                None
            }
        },
        None => Some(None),
    };
    let path_prefix = match ck.opt_str(t, "path_prefix") {
        Some((s, span)) => prefix(ck, "path_prefix", s, &span),
        None => Some("/".to_owned()),
    };
    let upstream = ck
        .req_str(t, header, "in [[route]]", "upstream")
        .and_then(|(s, span)| {
            let found = upstreams.iter().position(|u| *u == s);
            if found.is_none() {
                let mut m = format!("no [[upstream]] is named {s:?}");
                if let Some(best) = closest(s, upstreams) {
                    m.push_str(&format!("; did you mean {best:?}?"));
                }
                ck.err(&span, m);
            }
            found
        });
    let allow_semicolons = ck.opt_bool(t, "allow_semicolons").unwrap_or(false);
    let allow_method_override = ck.opt_bool(t, "allow_method_override").unwrap_or(false);
    Some(Route {
        host: host?,
        path_prefix: path_prefix?,
        upstream: upstream?,
        allow_semicolons,
        allow_method_override,
        line: ck.position(header.start).0,
    })
}

/// A path prefix in [`normalize_path`] form.
pub(crate) fn prefix(
    ck: &mut FileCheck,
    key: &str,
    s: &str,
    span: &Range<usize>,
) -> Option<String> {
    if !s.starts_with('/') {
        ck.err(span, format!("{key:?} must start with \"/\""));
        return None;
    }
    match normalize_path(s) {
        Ok(p) => Some(p),
        Err(e) => {
            ck.err(span, format!("{key:?} {s:?}: {e}"));
            None
        }
    }
}
