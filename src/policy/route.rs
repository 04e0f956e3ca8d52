//! `[[route]]` matching and request resolution: from the request as it arrived to the one
//! [`CanonicalRequest`] that every later step judges (SPEC 8).
//!
//! Owns the order of the checks (host, path, route, per-route relaxations, method override).
//! Pure: no I/O, no pingora types. Must not evaluate rules; that is [`super::PolicySet`].

use std::borrow::Cow;

use super::canonical::{
    canonical_host, canonical_path, has_method_override, override_method, CanonicalHost,
    InvalidRequest,
};
use super::{segment_prefix, HostPattern, RequestFacts};

/// One compiled `[[route]]`.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    /// Host condition; `None` = any host.
    pub host: Option<HostPattern>,
    /// Path prefix in canonical form, matched on whole segments.
    pub prefix: String,
    /// Index of the upstream.
    pub upstream: usize,
    /// `allow_semicolons = true`: `;` in the path is accepted (rules still judge the path
    /// without the matrix parameters).
    pub allow_semicolons: bool,
    /// `allow_method_override = true`: override headers are accepted and policy judges the
    /// overridden method.
    pub allow_method_override: bool,
    /// The upstream's `case_insensitive_paths`: route and rule paths match in any ASCII case.
    pub case_insensitive: bool,
}

/// A compiled route table: first match wins.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    entries: Vec<RouteEntry>,
}

/// The request as it arrived, before canonicalisation.
#[derive(Debug, Clone, Copy)]
pub struct RawRequest<'a> {
    /// Method on the request line.
    pub method: &'a http::Method,
    /// Authority of the request target (HTTP/2 `:authority`, HTTP/1.1 absolute-form).
    pub target_authority: Option<&'a str>,
    /// Path of the request target, as sent.
    pub path: &'a str,
    /// Query, as sent (kept byte for byte).
    pub query: Option<&'a str>,
    /// Headers, as sent (after reserved `Countersign-*` headers were removed).
    pub headers: &'a http::HeaderMap,
    /// The listener scheme's default port (80 or 443), dropped from the authority.
    pub default_port: u16,
}

/// The one canonical request: what routes, rules, `explain`, the approval binding and the
/// upstream see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    /// The method policy judges: the request's, or the override header's where the route
    /// allows overrides.
    pub method: http::Method,
    /// The method on the request line (what the upstream receives).
    pub wire_method: http::Method,
    /// Canonical host (lowercase, no trailing dot, no port).
    pub host: String,
    /// Canonical authority: the `Host` the upstream receives.
    pub authority: String,
    /// Canonical path: what the upstream receives.
    pub path: String,
    /// The path rules match (matrix parameters removed); `None` when equal to `path`.
    pub match_path: Option<String>,
    /// Query as sent.
    pub query: Option<String>,
    /// Index of the route.
    pub route: usize,
    /// Index of the route's upstream.
    pub upstream: usize,
    /// Whether path matching ignores ASCII case (the upstream's `case_insensitive_paths`).
    pub case_insensitive: bool,
}

impl CanonicalRequest {
    /// The facts rules look at.
    pub fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            method: &self.method,
            host: &self.host,
            path: self.match_path.as_deref().unwrap_or(&self.path),
            case_insensitive: self.case_insensitive,
        }
    }

    /// Path plus `?query`.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Why [`RouteTable::resolve`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unroutable {
    /// 400 `invalid_request`.
    Invalid(InvalidRequest),
    /// 404 `no_route`.
    NoRoute,
}

impl From<InvalidRequest> for Unroutable {
    fn from(e: InvalidRequest) -> Self {
        Unroutable::Invalid(e)
    }
}

impl RouteTable {
    /// A table of `entries` in order.
    pub fn new(entries: Vec<RouteEntry>) -> Self {
        Self { entries }
    }

    /// The routes, in order.
    pub fn entries(&self) -> &[RouteEntry] {
        &self.entries
    }

    /// Index of the first route matching `host` (canonical) and `path` (a match path).
    pub fn find(&self, host: &str, path: &str) -> Option<usize> {
        self.entries.iter().position(|r| {
            r.host.as_ref().is_none_or(|h| h.matches(host))
                && segment_prefix(&r.prefix, path, r.case_insensitive)
        })
    }

    /// Canonicalises `raw`, finds its route and applies the route's relaxations.
    pub fn resolve(&self, raw: &RawRequest<'_>) -> Result<CanonicalRequest, Unroutable> {
        let host = request_host(raw)?;
        let path = canonical_path(raw.path)?;
        let match_path = path.match_path();
        let route = self
            .find(&host.host, &match_path)
            .ok_or(Unroutable::NoRoute)?;
        let entry = &self.entries[route];
        if path.matrix && !entry.allow_semicolons {
            return Err(InvalidRequest::Semicolon.into());
        }
        let method = if entry.allow_method_override {
            override_method(raw.headers)?.unwrap_or_else(|| raw.method.clone())
        } else if has_method_override(raw.headers) {
            return Err(InvalidRequest::MethodOverride.into());
        } else {
            raw.method.clone()
        };
        let match_path = match match_path {
            Cow::Owned(p) => Some(p),
            Cow::Borrowed(_) => None,
        };
        Ok(CanonicalRequest {
            method,
            wire_method: raw.method.clone(),
            host: host.host,
            authority: host.authority,
            path: path.path,
            match_path,
            query: raw.query.map(str::to_owned),
            route,
            upstream: entry.upstream,
            case_insensitive: entry.case_insensitive,
        })
    }
}

/// The request's host: the target authority and the `Host` header must agree when both are
/// present (HTTP/2 and HTTP/1.1 absolute-form are judged alike); exactly one `Host` header.
fn request_host(raw: &RawRequest<'_>) -> Result<CanonicalHost, InvalidRequest> {
    let mut hosts = raw.headers.get_all(http::header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(InvalidRequest::MultipleHosts);
    }
    let header = header
        .map(|v| v.to_str().map_err(|_| InvalidRequest::BadHost))
        .transpose()?
        .map(|v| canonical_host(v, raw.default_port))
        .transpose()?;
    let target = raw
        .target_authority
        .map(|a| canonical_host(a, raw.default_port))
        .transpose()?;
    match (target, header) {
        (Some(t), Some(h)) if t.host != h.host => Err(InvalidRequest::HostMismatch),
        (Some(t), _) => Ok(t),
        (None, Some(h)) => Ok(h),
        (None, None) => Err(InvalidRequest::NoHost),
    }
}
