//! Wiring: a validated config and policy become a running pingora server with the data plane,
//! the control plane and the background work. No request logic lives here.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;

use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::control::{ControlService, ControlState};
use crate::metrics::Metrics;
use crate::oidc::Verifier;
use crate::policy::{PolicySet, RouteTable};
use crate::proxy::{DataPlane, Proxy, UpstreamPeer};
use crate::reload::Reloader;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An upstream could not be prepared.
    #[error(transparent)]
    Upstream(#[from] crate::proxy::upstream::UpstreamError),
    /// A listener could not be bound or configured.
    #[error("{what}: {reason}")]
    Listener {
        /// Which listener.
        what: String,
        /// Why.
        reason: String,
    },
    /// The HTTP client for IdP fetches could not be built.
    #[error("http client: {0}")]
    Http(String),
}

/// Builds every service and runs until SIGTERM/SIGINT. Blocks the calling thread.
pub fn run(config: Config, policy: PolicySet) -> Result<(), StartError> {
    let server = build(config, policy, Arc::new(SystemClock))?;
    server.run(pingora::server::RunArgs::default());
    Ok(())
}

/// An HTTP client for IdP discovery and JWKS: rustls, short timeouts, no redirects to other
/// schemes.
pub fn idp_http_client() -> Result<reqwest::Client, StartError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| StartError::Http(e.to_string()))
}

/// Builds the pingora server (not yet running).
pub fn build(config: Config, policy: PolicySet, clock: SharedClock) -> Result<Server, StartError> {
    let config = Arc::new(config);
    let metrics = Metrics::new();
    metrics.policy_rules.set(policy.rules.len() as i64);
    let policy = Arc::new(ArcSwap::from_pointee(policy));

    let upstreams = config
        .upstreams
        .iter()
        .map(UpstreamPeer::new)
        .collect::<Result<Vec<_>, _>>()?;
    let routes = RouteTable::new(
        config
            .routes
            .iter()
            .map(|r| (r.host.clone(), r.path_prefix.clone()))
            .collect(),
    );
    let route_upstreams = config.routes.iter().map(|r| r.upstream).collect();

    let verifier = Verifier::new(
        config.issuers.clone(),
        idp_http_client()?,
        clock.clone(),
        metrics.clone(),
    );

    let state = Arc::new(DataPlane {
        policy: policy.clone(),
        routes,
        route_upstreams,
        upstreams,
        verifier: verifier.clone(),
        metrics: metrics.clone(),
        clock,
        issuers: config.issuers.iter().map(|i| i.issuer.clone()).collect(),
        tls: config.server.tls.is_some(),
    });

    let conf = ServerConf {
        threads: config.server.threads.max(1),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        upstream_keepalive_pool_size: 256,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Proxy::new(state),
        "countersign data plane",
    );
    let listen = config.server.listen.to_string();
    match &config.server.tls {
        Some(tls) => {
            let mut settings =
                TlsSettings::intermediate(&tls.cert.to_string_lossy(), &tls.key.to_string_lossy())
                    .map_err(|e| StartError::Listener {
                        what: format!("TLS listener {listen}"),
                        reason: e.to_string(),
                    })?;
            settings.enable_h2();
            proxy.add_tls_with_settings(&listen, None, settings);
        }
        None => {
            if let Some(app) = proxy.app_logic_mut() {
                let mut opts = pingora::apps::HttpServerOptions::default();
                opts.h2c = true;
                app.server_options = Some(opts);
            }
            proxy.add_tcp(&listen);
        }
    }
    // Fail now, with a clear message, if the data port is taken (pingora would panic later).
    check_bindable(&listen, "data-plane listener")?;

    let control_listener =
        std::net::TcpListener::bind(config.server.control_listen).map_err(|e| {
            StartError::Listener {
                what: format!("control listener {}", config.server.control_listen),
                reason: e.to_string(),
            }
        })?;
    let reloader = Reloader::new(config.clone(), policy, metrics.clone());
    let v = verifier.clone();
    let tasks: Vec<Box<dyn Fn() + Send + Sync>> = vec![
        Box::new(move || v.start()),
        Box::new(move || reloader.spawn()),
    ];
    let control = ControlService::new(control_listener, ControlState { verifier, metrics }, tasks);

    server.add_service(proxy);
    server.add_service(background_service("control plane", control));
    Ok(server)
}

fn check_bindable(addr: &str, what: &str) -> Result<(), StartError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| StartError::Listener {
            what: format!("{what} {addr}"),
            reason: e.to_string(),
        })
}
