//! HTTP side of key loading: OIDC discovery and JWKS download, size-capped and time-limited.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// Largest discovery or JWKS document we read.
const MAX_BODY: usize = 1024 * 1024;
/// Per-request time limit, on top of whatever the shared client has.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A downloaded JWKS document.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// Response body.
    pub(crate) body: Vec<u8>,
    /// `Cache-Control: max-age`, if the response had one.
    pub(crate) max_age: Option<Duration>,
}

/// Where OIDC discovery for `issuer` lives: `{issuer}/.well-known/openid-configuration`
/// (one slash, even when the issuer ends with one).
pub(crate) fn discovery_url(issuer: &str) -> Result<Url, String> {
    let base = issuer.trim_end_matches('/');
    Url::parse(&format!("{base}/.well-known/openid-configuration"))
        .map_err(|e| format!("issuer is not a URL: {e}"))
}

/// Runs discovery and returns the issuer's `jwks_uri`. The document's `issuer` must equal the
/// configured one exactly (OpenID Connect Discovery 1.0, section 4.3).
pub(crate) async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Url, String> {
    #[derive(Deserialize)]
    struct Metadata {
        issuer: String,
        jwks_uri: String,
    }
    let fetched = get(http, discovery_url(issuer)?).await?;
    let meta: Metadata = serde_json::from_slice(&fetched.body)
        .map_err(|e| format!("discovery document is invalid: {e}"))?;
    if meta.issuer != issuer {
        return Err(format!(
            "discovery document names issuer {:?}, expected {issuer:?}",
            meta.issuer
        ));
    }
    let url = Url::parse(&meta.jwks_uri).map_err(|e| format!("jwks_uri is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!(
            "jwks_uri has unsupported scheme {:?}",
            url.scheme()
        ));
    }
    Ok(url)
}

/// GETs `url`: 2xx only, body at most 1 MiB, `Cache-Control: max-age` reported.
pub(crate) async fn get(http: &reqwest::Client, url: Url) -> Result<Fetched, String> {
    let mut response = http
        .get(url)
        .header(http::header::ACCEPT, "application/json")
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP status {status}"));
    }
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY as u64)
    {
        return Err("response larger than 1 MiB".to_owned());
    }
    let max_age = response
        .headers()
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_max_age);
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading body failed: {e}"))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err("response larger than 1 MiB".to_owned());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched { body, max_age })
}

/// `max-age=N` from a Cache-Control value (directive names are case-insensitive; quoted values
/// tolerated). Other directives are ignored.
pub(crate) fn parse_max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|directive| {
        let (name, arg) = directive.trim().split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        let secs: u64 = arg.trim().trim_matches('"').parse().ok()?;
        Some(Duration::from_secs(secs))
    })
}
