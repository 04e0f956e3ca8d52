//! `[pagerduty]` (SPEC 9, on-call approvers): the REST API token (a secret, never inline), the
//! API base URL and how long a schedule's on-call answer is cached; and the check of a
//! `pagerduty:SCHEDULE_ID` approver entry in a policy file.
//!
//! Owns the parsing of this section only; every problem goes to the shared [`FileCheck`]. Must
//! not read other sections, build the final [`Config`](super::super::Config) or call PagerDuty.

use super::*;
use crate::config::PagerDuty;
use crate::policy::Approver;

/// PagerDuty's REST API v2.
pub const DEFAULT_API_URL: &str = "https://api.pagerduty.com";

/// How long a schedule's on-call answer is reused when `cache` is not given.
pub const DEFAULT_CACHE: Duration = Duration::from_secs(60);

/// `[pagerduty]`: `api_token` (required secret), `api_url` (https, or http on loopback),
/// `cache` (a duration; `"0s"` turns the cache off).
pub fn pagerduty(ck: &mut FileCheck, value: &Val<'_>, dir: &Path) -> Option<PagerDuty> {
    let t = ck.as_table(value, "[pagerduty]")?;
    let header = value.span();
    ck.unknown_keys(t, "in [pagerduty]", &["api_token", "api_url", "cache"]);
    let api_token = req_secret(ck, t, &header, "[pagerduty]", "api_token", dir);
    let api_url = match ck.opt_str(t, "api_url") {
        Some((s, span)) => issuer_url(ck, "api_url", s, &span),
        None => Url::parse(DEFAULT_API_URL).ok(),
    };
    let cache = match t.get("cache") {
        Some(_) => ck.opt_duration(t, "cache", Duration::ZERO),
        None => Some(DEFAULT_CACHE),
    };
    Some(PagerDuty {
        api_token: api_token?,
        api_url: api_url?,
        cache: cache?,
    })
}

/// A policy's `pagerduty:SCHEDULE_ID` entry (`schedule` is what follows the prefix): needs a
/// `[pagerduty]` section and a schedule id of letters and digits, as PagerDuty writes them.
pub(crate) fn on_call_approver(
    ck: &mut FileCheck,
    schedule: &str,
    span: &Range<usize>,
    configured: bool,
) -> Option<Approver> {
    if schedule.is_empty() {
        ck.err(
            span,
            "approver \"pagerduty:\" needs a schedule id, like \"pagerduty:PABC123\"",
        );
        return None;
    }
    if !schedule.bytes().all(|b| b.is_ascii_alphanumeric()) || schedule.len() > 64 {
        ck.err(
            span,
            format!("approver \"pagerduty:{schedule}\": a PagerDuty schedule id is letters and digits, like \"PABC123\""),
        );
        return None;
    }
    if !configured {
        ck.err(
            span,
            format!("approver \"pagerduty:{schedule}\" needs a [pagerduty] section in the config"),
        );
        return None;
    }
    Some(Approver::PagerDuty(schedule.to_owned()))
}

#[cfg(test)]
#[path = "pagerduty_tests.rs"]
mod tests;
