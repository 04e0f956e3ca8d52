//! Wiring: a validated config and policy become a running pingora server with the data plane,
//! the control plane and the background work. No request logic lives here.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;

use crate::approval::store::{ChatState, MemoryChatState};
use crate::approval::BrokerSettings;
use crate::approval::{
    ApprovalSigner, ApprovalStore, AuditError, AuditEvent, AuditSink, Broker, Executor,
    LogNotifier, MemoryStore, Notifier, RecordSeal, RedisStore,
};
use crate::audit::AuditLog;
use crate::background::{until_shutdown, Job};
use crate::chat::fanout::Fanout;
use crate::chat::slack::{RetryPolicy, SlackApp, SlackNotifier};
use crate::chat::teams::TeamsNotifier;
use crate::chat::teams_bot::{TeamsBot, TeamsBotNotifier};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::config::StoreUrl;
use crate::control::login::Login;
use crate::control::session::{SessionKey, Sessions};
use crate::control::{ControlService, ControlState};
use crate::metrics::Metrics;
use crate::oidc::Verifier;
use crate::policy::PolicySet;
use crate::proxy::plane::ApprovalPlane;
use crate::proxy::{DataPlane, Proxy, UpstreamPeer};
use crate::reload::Reloader;
use crate::telemetry::Telemetry;

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
    /// The approval machinery (audit log, signing key, store) could not be set up.
    #[error("approvals: {0}")]
    Approvals(String),
    /// The OpenTelemetry exporter could not be set up.
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
}

/// The broker's audit events go to the hash-chained audit log.
#[derive(Debug, Clone)]
pub struct AuditAdapter(pub AuditLog);

#[async_trait::async_trait]
impl AuditSink for AuditAdapter {
    async fn record(&self, event: AuditEvent<'_>) -> Result<(), AuditError> {
        self.0
            .append(event.to_event())
            .await
            .map(drop)
            .map_err(|err| AuditError(err.to_string()))
    }
}

/// Audit events, once written, also drive the approval lifecycle spans.
#[derive(Debug)]
struct TracedAudit {
    audit: AuditAdapter,
    telemetry: Telemetry,
}

#[async_trait::async_trait]
impl AuditSink for TracedAudit {
    async fn record(&self, event: AuditEvent<'_>) -> Result<(), AuditError> {
        let for_trace = self
            .telemetry
            .enabled()
            .then(|| (event.kind(), event.to_event().to_flat_json()));
        self.audit.record(event).await?;
        if let Some((kind, fields)) = for_trace {
            self.telemetry.audit_event(kind, &fields);
        }
        Ok(())
    }
}

/// Builds every service and runs until SIGTERM/SIGINT. Blocks the calling thread.
pub fn run(config: Config, policy: PolicySet) -> Result<(), StartError> {
    let (server, shutdown) = build(config, policy, Arc::new(SystemClock), None)?;
    serve(server, shutdown);
    Ok(())
}

/// Runs a built server until SIGTERM/SIGINT. Blocks the calling thread.
pub fn serve(server: Server, shutdown: tokio::sync::watch::Sender<bool>) {
    server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(DrainFirst(shutdown)),
    });
}

/// SIGTERM: first tell held callers (503 `shutting_down`), then let pingora drain.
struct DrainFirst(tokio::sync::watch::Sender<bool>);

#[async_trait::async_trait]
impl pingora::server::ShutdownSignalWatch for DrainFirst {
    async fn recv(&self) -> pingora::server::ShutdownSignal {
        let signal = pingora::server::UnixShutdownSignalWatch.recv().await;
        let _ = self.0.send(true);
        // Give held requests a moment to write their 503 before listeners close.
        tokio::time::sleep(Duration::from_millis(200)).await;
        signal
    }
}

/// An HTTP client for IdP discovery, JWKS and chat webhooks: rustls, short timeouts.
pub fn idp_http_client() -> Result<reqwest::Client, StartError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| StartError::Http(e.to_string()))
}

/// Builds the pingora server (not yet running).
pub fn build(
    config: Config,
    policy: PolicySet,
    clock: SharedClock,
    extra_notifier: Option<Arc<dyn Notifier>>,
) -> Result<(Server, tokio::sync::watch::Sender<bool>), StartError> {
    let config = Arc::new(config);
    let metrics = Metrics::new();
    metrics.policy_rules.set(policy.rules.len() as i64);
    crate::reload::report_lint(&config, &policy, &metrics);
    let policy = Arc::new(ArcSwap::from_pointee(policy));

    let upstreams = config
        .upstreams
        .iter()
        .map(UpstreamPeer::new)
        .collect::<Result<Vec<_>, _>>()?;
    let routes = config.route_table();

    let verifier = Verifier::new(
        config.issuers.clone(),
        idp_http_client()?,
        clock.clone(),
        metrics.clone(),
    );

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let audit =
        AuditLog::open_with_clock(&config.approvals.audit_log, &replica_id(), clock.clone())
            .map_err(|e| {
                StartError::Approvals(format!(
                    "audit log {}: {e}",
                    config.approvals.audit_log.display()
                ))
            })?;
    let public_url = config
        .server
        .public_url
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let (store, chat_state) = approval_stores(&config, clock.clone())?;
    let teams_bot = teams_bot(&config, clock.clone(), chat_state.clone())?;
    let telemetry = match &config.telemetry {
        Some(t) => Telemetry::start(
            t,
            config
                .routes
                .iter()
                .map(crate::telemetry::route_label)
                .collect(),
        )?,
        None => Telemetry::disabled(),
    };
    let (notifier, slack) = chat_notifier(
        &config,
        clock.clone(),
        extra_notifier,
        &teams_bot,
        chat_state,
    )?;
    let audit_sink = Arc::new(TracedAudit {
        audit: AuditAdapter(audit.clone()),
        telemetry: telemetry.clone(),
    });
    let broker = build_broker(
        &config,
        clock.clone(),
        &metrics,
        notifier,
        audit_sink,
        store,
    )?;
    let clock_for_login = clock.clone();
    let approvals = Arc::new(ApprovalPlane {
        broker: broker.clone(),
        public_url: public_url.clone(),
        upstreams: config.upstreams.iter().map(|u| u.name.clone()).collect(),
        shutdown: shutdown_rx,
    });

    let state = Arc::new(DataPlane {
        policy: policy.clone(),
        routes,
        upstreams,
        verifier: verifier.clone(),
        metrics: metrics.clone(),
        clock,
        issuers: config.issuers.iter().map(|i| i.issuer.clone()).collect(),
        tls: config.server.tls.is_some(),
        approvals,
        telemetry,
        shadow: crate::proxy::shadow::ShadowRecorder::new(metrics.clone(), audit.clone()),
    });

    let conf = ServerConf {
        threads: config.server.threads.max(1),
        // pingora cancels in-flight tasks when the runtime stops: give them time to finish.
        grace_period_seconds: Some(3),
        graceful_shutdown_timeout_seconds: Some(10),
        upstream_keepalive_pool_size: 256,
        // One current-thread runtime per worker: ~15% less CPU per request here (bench/README.md).
        work_stealing: false,
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
    let reloader = Reloader::new(config.clone(), policy, metrics.clone(), Some(audit));
    let (sessions, login) = approver_login(&config, clock_for_login)?;
    let v = verifier.clone();
    let b = broker.clone();
    let mut jobs = vec![
        Job::service("jwks refresh", move |stop| {
            v.start_until(stop.clone());
            until_shutdown(stop)
        }),
        Job::service("policy reload", move |stop| {
            reloader.spawn_until(stop.clone());
            until_shutdown(stop)
        }),
        Job::service("approval sweeper", move |stop| {
            let sweeper = b.spawn_background_until(stop);
            async move { drop(sweeper.await) }
        }),
    ];
    if let Some(webhook) = &config.audit_webhook {
        let delivery = crate::audit::webhook::Delivery::new(
            webhook.clone(),
            &config.approvals.audit_log,
            idp_http_client()?,
            &metrics,
        )
        .map_err(|e| StartError::Approvals(format!("[audit] webhook metrics: {e}")))?;
        jobs.push(Job::service("audit webhook", move |stop| {
            let delivery = delivery.clone().spawn_until(stop);
            async move { drop(delivery.await) }
        }));
    }
    let control = ControlService::new(
        control_listener,
        ControlState {
            verifier,
            metrics,
            broker: broker.clone(),
            public_url: public_url.clone(),
            sessions,
            login,
            data_addr: config.server.listen,
            slack,
            teams_bot,
            data_up: Arc::default(),
        },
    );

    server.add_service(proxy);
    server.add_service(background_service("control plane", control));
    for job in jobs {
        server.add_service(job);
    }
    Ok((server, shutdown_tx))
}

/// The shared Redis store with `store_password` and `store_ca` applied (connects lazily).
fn redis_store(config: &Config, url: &url::Url) -> Result<RedisStore, StartError> {
    let ca = match &config.approvals.store_ca {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| StartError::Approvals(format!("store_ca {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let password = config.approvals.store_password.as_ref().map(|p| p.expose());
    RedisStore::with_options(url.as_str(), password, ca)
        .map_err(|e| StartError::Approvals(format!("store: {e}")))
}

/// The approval store and the chat state that goes with it.
type Stores = (Arc<dyn ApprovalStore>, Arc<dyn ChatState>);

/// The approval store and the chat state that goes with it (posted chat copies, handled
/// clicks): both on the one Redis client when `store` is Redis, so every replica shares them;
/// both in this process otherwise.
fn approval_stores(config: &Config, clock: SharedClock) -> Result<Stores, StartError> {
    Ok(match &config.approvals.store {
        StoreUrl::Memory => (
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryChatState::new()),
        ),
        StoreUrl::Redis(url) => shared_stores(config, redis_store(config, url)?, clock)?,
        StoreUrl::Sentinel(url) => {
            let password = config.approvals.store_password.as_ref().map(|p| p.expose());
            let store = RedisStore::sentinel(url.clone(), password)
                .map_err(|e| StartError::Approvals(format!("store: {e}")))?;
            shared_stores(config, store, clock)?
        }
    })
}

/// A Redis store sealed with keys derived from `signing_key`, as both the approval store and
/// the chat state. Config validation requires a signing key with a shared store (SPEC 8):
/// every replica derives the same record MAC and encryption keys from it.
fn shared_stores(
    config: &Config,
    store: RedisStore,
    clock: SharedClock,
) -> Result<Stores, StartError> {
    let pem = config.approvals.signing_key.as_ref().ok_or_else(|| {
        StartError::Approvals("a shared store needs [approvals] signing_key".into())
    })?;
    let seal = RecordSeal::derive_from(pem.expose().as_bytes());
    let redis = Arc::new(store.with_clock(clock).with_seal(Arc::new(seal)));
    Ok((redis.clone(), redis))
}

/// The approval broker: the approval store, the hash-chained audit log, the approval signing
/// key.
fn build_broker(
    config: &Config,
    clock: SharedClock,
    metrics: &Metrics,
    notifier: Arc<dyn Notifier>,
    audit: Arc<dyn AuditSink>,
    store: Arc<dyn ApprovalStore>,
) -> Result<Broker, StartError> {
    let executor = config
        .upstreams
        .iter()
        .fold(Executor::new(Duration::from_secs(30)), |e, u| {
            e.with_upstream(&u.name, u.url.as_str(), u.ca.clone())
        });
    let public_url = config.server.public_url.as_str().trim_end_matches('/');
    let signer = match &config.approvals.signing_key {
        Some(pem) => ApprovalSigner::from_pem(pem.expose())
            .map_err(|e| StartError::Approvals(format!("signing_key: {e}")))?,
        None => {
            tracing::warn!(
                "[approvals] signing_key is not set: approval tokens are signed with a key \
                 generated at start, so upstreams must refetch {public_url}/.well-known/jwks.json \
                 after every restart"
            );
            ApprovalSigner::generate().map_err(|e| StartError::Approvals(e.to_string()))?
        }
    }
    .with_issuer(public_url);
    let broker = Broker::new(
        store,
        notifier,
        audit,
        clock,
        Arc::new(signer),
        Arc::new(executor),
        config.approver_groups.clone(),
    )
    .with_metrics(metrics.clone())
    // Chat APIs retry with backoff (Retry-After on 429): give them time before a delivery counts
    // as failed. A slow chat delays the step it reports by at most this, never its outcome.
    .with_settings(BrokerSettings {
        notify_timeout: Duration::from_secs(10),
        max_pending_per_requester: config.approvals.max_pending_per_requester as usize,
        recheck_interval: config.approvals.recheck,
        ..BrokerSettings::default()
    });
    with_on_call(config, broker)
}

/// `broker` resolving `pagerduty:` approvers through PagerDuty when `[pagerduty]` is set.
fn with_on_call(config: &Config, broker: Broker) -> Result<Broker, StartError> {
    let Some(pd) = &config.pagerduty else {
        return Ok(broker);
    };
    let client = crate::oncall::PagerDutyClient::new(pd).map_err(StartError::Http)?;
    Ok(broker.with_on_call(Arc::new(client)))
}

/// Sessions and the OIDC login for the approval pages, when `[approver_login]` is set.
fn approver_login(
    config: &Config,
    clock: SharedClock,
) -> Result<(Option<Sessions>, Option<Arc<Login>>), StartError> {
    let Some(cfg) = &config.approver_login else {
        return Ok((None, None));
    };
    // Session cookies are signed with a key derived from the approval signing key, so every
    // replica sharing that key accepts the same sessions; without one, a random key per process.
    let key = match &config.approvals.signing_key {
        Some(pem) => SessionKey::derive_from(pem.expose().as_bytes())
            .map_err(|_| StartError::Approvals("signing_key too short".into()))?,
        None => SessionKey::random()
            .map_err(|_| StartError::Approvals("no randomness for the session key".into()))?,
    };
    let sessions = Sessions::for_public_url(key, &config.server.public_url, clock);
    let login = Login::new(cfg, &config.server.public_url, sessions.clone())
        .map_err(|e| StartError::Approvals(format!("[approver_login]: {e}")))?;
    Ok((Some(sessions), Some(Arc::new(login))))
}

/// Every configured chat channel behind one notifier (a log line always; `extra`; Teams and
/// Slack when configured). Each channel delivers only to the targets a rule's `notify` names for
/// it. Also returns the Slack app, whose interactions endpoint the control plane serves; it
/// remembers its posted messages and handled clicks in `chat_state`.
fn chat_notifier(
    config: &Config,
    clock: SharedClock,
    extra: Option<Arc<dyn Notifier>>,
    teams_bot: &Option<TeamsBot>,
    chat_state: Arc<dyn ChatState>,
) -> Result<(Arc<dyn Notifier>, Option<SlackApp>), StartError> {
    let public_url = config.server.public_url.as_str().trim_end_matches('/');
    let http = idp_http_client()?;
    let mut fanout = Fanout::new().with("log", Arc::new(LogNotifier));
    if let Some(extra) = extra {
        fanout = fanout.with("extra", extra);
    }
    let slack = match &config.slack {
        Some(cfg) => Some(
            SlackApp::with_state(
                cfg,
                config.server.public_url.clone(),
                clock,
                RetryPolicy::default(),
                chat_state,
            )
            .map_err(|e| StartError::Approvals(format!("[slack]: {e}")))?,
        ),
        None => None,
    };
    if let Some(app) = &slack {
        fanout = fanout.with("slack", Arc::new(SlackNotifier::new(app.clone())));
    }
    if let Some(teams) = &config.teams {
        fanout = fanout.with(
            "teams",
            Arc::new(TeamsNotifier::new(
                teams.webhook_url.clone(),
                public_url,
                http.clone(),
            )),
        );
    }
    if let Some(bot) = teams_bot {
        fanout = fanout.with("teams", Arc::new(TeamsBotNotifier::new(bot.clone())));
    }
    Ok((Arc::new(fanout), slack))
}

/// The Teams bot, when `[teams]` is in bot mode (its messaging endpoint is on the control plane).
fn teams_bot(
    config: &Config,
    clock: SharedClock,
    chat_state: Arc<dyn ChatState>,
) -> Result<Option<TeamsBot>, StartError> {
    let Some(cfg) = &config.teams_bot else {
        return Ok(None);
    };
    if cfg.conversations.is_empty() {
        tracing::warn!(
            "[teams] has no conversations: approval cards cannot be posted until one is added \
             (the bot logs each conversation it is added to)"
        );
    }
    TeamsBot::with_state(
        cfg,
        &config.server.public_url,
        clock,
        RetryPolicy::default(),
        chat_state,
    )
    .map(Some)
    .map_err(|e| StartError::Approvals(format!("[teams]: {e}")))
}

/// This process, for audit lines: host name and pid.
fn replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

fn check_bindable(addr: &str, what: &str) -> Result<(), StartError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| StartError::Listener {
            what: format!("{what} {addr}"),
            reason: e.to_string(),
        })
}
