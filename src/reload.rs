//! Policy hot reload: on SIGHUP and whenever a policy file (or its folder) changes, the policy
//! files are loaded and validated again; only a fully valid set replaces the active one. A bad
//! file keeps the old policy, and is logged and counted.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};

use crate::audit::{AuditLog, Event};
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::policy::PolicySet;

/// Runs the coverage lint (SPEC 8) on `policy`: logs every warning and sets
/// `countersign_policy_warnings`. Called at start and after every successful reload.
pub fn report_lint(config: &Config, policy: &PolicySet, metrics: &Metrics) {
    let warnings = config.lint(policy);
    for w in &warnings {
        tracing::warn!(warning = %w, "coverage lint: a request could avoid a rule");
    }
    metrics.policy_warnings.set(warnings.len() as i64);
}

/// Everything a reload needs.
#[derive(Debug, Clone)]
pub struct Reloader {
    config: Arc<Config>,
    policy: Arc<ArcSwap<PolicySet>>,
    metrics: Metrics,
    audit: Option<AuditLog>,
}

impl Reloader {
    /// A reloader that swaps `policy`.
    pub fn new(
        config: Arc<Config>,
        policy: Arc<ArcSwap<PolicySet>>,
        metrics: Metrics,
        audit: Option<AuditLog>,
    ) -> Self {
        Self {
            config,
            policy,
            metrics,
            audit,
        }
    }

    /// Records the reload in the audit log (best effort: a reload is not undone for it).
    async fn audit(&self, result: &str, trigger: &str, rules: usize, problems: usize) {
        if let Some(log) = &self.audit {
            let event = Event::new("policy.reloaded")
                .actor("countersign")
                .field("result", result)
                .field("trigger", trigger)
                .field("rules", rules)
                .field("problems", problems);
            if let Err(e) = log.append(event).await {
                tracing::error!(error = %e, "could not audit the policy reload");
            }
        }
    }

    /// Loads the policy files again; swaps them in only when every file is valid.
    pub async fn reload(&self, why: &str) -> bool {
        match config::load_policies(&self.config) {
            Ok(set) => {
                let changed = **self.policy.load() != set;
                let rules = set.rules.len();
                report_lint(&self.config, &set, &self.metrics);
                self.policy.store(Arc::new(set));
                tracing::info!(trigger = why, changed, "policy reloaded");
                self.audit("ok", why, rules, 0).await;
                self.metrics.policy_rules.set(rules as i64);
                self.metrics.policy_reloads.with_label_values(&["ok"]).inc();
                true
            }
            Err(problems) => {
                // Log first, count last: whoever sees the counter move can read why.
                for p in &problems.0 {
                    tracing::error!(trigger = why, problem = %p, "policy reload rejected; keeping the previous policy");
                }
                let active = self.policy.load().rules.len();
                self.audit("error", why, active, problems.0.len()).await;
                self.metrics
                    .policy_reloads
                    .with_label_values(&["error"])
                    .inc();
                false
            }
        }
    }

    /// Spawns the SIGHUP handler and the file watcher on the current runtime.
    pub fn spawn(&self) {
        self.spawn_with(None);
    }

    /// Like [`Self::spawn`]; both tasks end when `shutdown` turns `true`.
    pub fn spawn_until(&self, shutdown: crate::shutdown::Shutdown) {
        self.spawn_with(Some(shutdown));
    }

    fn spawn_with(&self, shutdown: Option<crate::shutdown::Shutdown>) {
        let this = self.clone();
        let mut stop = shutdown.clone();
        let sighup = async move {
            let mut hup =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGHUP");
                        return;
                    }
                };
            while hup.recv().await.is_some() {
                this.reload("SIGHUP").await;
            }
        };
        tokio::spawn(async move {
            tokio::select! {
                () = sighup => {}
                () = crate::shutdown::stopped(&mut stop) => {}
            }
        });
        let this = self.clone();
        let mut stop = shutdown;
        tokio::spawn(async move {
            tokio::select! {
                () = this.watch_files() => {}
                () = crate::shutdown::stopped(&mut stop) => {}
            }
        });
    }

    /// Folders that hold the policy globs (watched non-recursively).
    fn watched_dirs(&self) -> BTreeSet<PathBuf> {
        self.config
            .policy
            .files
            .iter()
            .filter_map(|glob| {
                let base: PathBuf = PathBuf::from(glob)
                    .components()
                    .take_while(|c| {
                        let s = c.as_os_str().to_string_lossy();
                        !s.contains(['*', '?', '['])
                    })
                    .collect();
                if base.is_dir() {
                    Some(base)
                } else {
                    base.parent().map(PathBuf::from)
                }
            })
            .collect()
    }

    async fn watch_files(self) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Only changes to files the globs name count: other files in a watched folder (a log
        // file written next to the config, say) must not trigger reloads, or a reload that
        // logs would trigger the next one.
        // The folders watched are the globs' own, so matching the file name part is enough.
        let patterns: Vec<glob::Pattern> = self
            .config
            .policy
            .files
            .iter()
            .filter_map(|g| {
                let name = std::path::Path::new(g).file_name()?.to_str()?;
                glob::Pattern::new(name).ok()
            })
            .collect();
        let mut watcher =
            match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
                if let Ok(ev) = ev {
                    let relevant = ev
                        .paths
                        .iter()
                        .filter_map(|p| p.file_name().and_then(|n| n.to_str()))
                        .any(|name| patterns.iter().any(|pat| pat.matches(name)));
                    if !ev.kind.is_access() && relevant {
                        let _ = tx.send(());
                    }
                }
            }) {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch policy files; reload with SIGHUP");
                    return;
                }
            };
        for dir in self.watched_dirs() {
            if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch policy folder");
            }
        }
        while rx.recv().await.is_some() {
            // Editors write in several steps: wait for the burst to end, then reload once.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while rx.try_recv().is_ok() {}
            self.reload("file change").await;
        }
    }
}
