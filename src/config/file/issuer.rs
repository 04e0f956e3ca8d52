//! `[[issuer]]`: the token issuers and the algorithms each may use.
//!
//! Owns the parsing of these sections only; every problem goes to the shared [`FileCheck`]. Must
//! not read other sections or build the final [`Config`](super::super::Config).

use super::*;

/// `[[issuer]]`.
pub fn issuer(ck: &mut FileCheck, t: &DeTable<'_>, header: &Range<usize>) -> Option<Issuer> {
    const KEYS: &[&str] = &[
        "issuer",
        "audiences",
        "jwks_uri",
        "algorithms",
        "leeway",
        "require_typ",
        "refresh",
        "identity_claim",
        "approvers",
    ];
    ck.unknown_keys(t, "in [[issuer]]", KEYS);
    let issuer = ck
        .req_str(t, header, "in [[issuer]]", "issuer")
        .and_then(|(s, span)| issuer_url(ck, "issuer", s, &span).map(|_| s.to_owned()));
    let audiences = match ck.opt_str_list(t, "audiences") {
        Some((list, span)) if list.is_empty() => {
            ck.err(&span, "\"audiences\" must name at least one audience");
            None
        }
        Some((list, _)) => Some(list.into_iter().map(|(s, _)| s.to_owned()).collect()),
        None => {
            if t.get("audiences").is_none() {
                ck.err(header, "missing required key \"audiences\" in [[issuer]]");
            }
            None
        }
    };
    let jwks_uri = match ck.opt_str(t, "jwks_uri") {
        Some((s, span)) => Some(Some(http_url(ck, "jwks_uri", s, &span)?)),
        None => Some(None),
    };
    let algorithms = match ck.opt_str_list(t, "algorithms") {
        Some((list, span)) => algorithms(ck, &list, &span),
        None => Some(Algorithm::defaults()),
    };
    let leeway = ck.opt_duration(t, "leeway", Duration::ZERO);
    let refresh = ck.opt_duration(t, "refresh", Duration::from_secs(1));
    let require_typ = ck.opt_str(t, "require_typ").map(|(s, _)| s.to_owned());
    let identity_claim = non_blank_or(
        ck,
        t,
        "identity_claim",
        "email",
        "\"identity_claim\" must name a claim",
    );
    let approvers = ck.opt_bool(t, "approvers").unwrap_or(false);
    Some(Issuer {
        issuer: issuer?,
        audiences: audiences?,
        jwks_uri: jwks_uri?,
        algorithms: algorithms?,
        leeway: leeway.unwrap_or(Duration::from_secs(60)),
        require_typ,
        refresh: refresh.unwrap_or(Duration::from_secs(300)),
        identity_claim: identity_claim?,
        approvers,
    })
}

/// `algorithms = [...]`: known JOSE names, never `none` or HMAC.
pub fn algorithms(
    ck: &mut FileCheck,
    list: &[(&str, Range<usize>)],
    span: &Range<usize>,
) -> Option<Vec<Algorithm>> {
    if list.is_empty() {
        ck.err(span, "\"algorithms\" must allow at least one algorithm");
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (name, span) in list {
        if let Some(a) = Algorithm::from_jose(name) {
            if !out.contains(&a) {
                out.push(a);
            }
            continue;
        }
        ok = false;
        let upper = name.to_ascii_uppercase();
        let message = if upper == "NONE" {
            format!("algorithm {name:?} is never allowed: unsigned tokens prove nothing")
        } else if upper.starts_with("HS") {
            format!("algorithm {name:?} is never allowed: HMAC needs a secret shared with the issuer, and a public key would be accepted as that secret")
        } else {
            let all = [
                "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
            ];
            let mut m = format!(
                "unknown algorithm {name:?}; expected one of {}",
                all.join(", ")
            );
            if let Some(exact) = all.iter().find(|a| a.eq_ignore_ascii_case(name)) {
                m = format!("unknown algorithm {name:?}; JOSE names are case-sensitive: did you mean {exact:?}?");
            }
            m
        };
        ck.err(span, message);
    }
    ok.then_some(out)
}
