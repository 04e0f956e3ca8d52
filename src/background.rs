//! Periodic work as pingora background services: JWKS refresh, policy reload, the approval
//! sweeper and audit webhook delivery each run as their own [`BackgroundService`] (one runtime
//! thread each), which the server starts with the proxy and the control plane and whose
//! shutdown watch tells it to stop.
//!
//! Owns only the adapter from "a job that runs until shutdown" to a pingora service. Must not
//! know what the jobs do; `app` picks them.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService, GenBackgroundService};

type Run = Box<dyn Fn(ShutdownWatch) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One periodic job: runs from server start until the shutdown watch turns `true`.
pub struct Job {
    name: &'static str,
    run: Run,
}

impl Job {
    /// A pingora service named `name` that runs `run` once, on its own runtime thread. `run`
    /// must return once the shutdown watch it is given turns `true`.
    pub fn service<F, Fut>(name: &'static str, run: F) -> GenBackgroundService<Job>
    where
        F: Fn(ShutdownWatch) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let run: Run = Box::new(move |stop| Box::pin(run(stop)));
        background_service(name, Job { name, run })
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl BackgroundService for Job {
    async fn start(&self, shutdown: ShutdownWatch) {
        (self.run)(shutdown).await;
        tracing::debug!(job = self.name, "background job stopped");
    }
}

/// Runs until `shutdown` turns `true` (or its sender is gone): for jobs that spawn their tasks
/// and hand them the watch, so their service lives exactly as long as they do.
pub async fn until_shutdown(shutdown: ShutdownWatch) {
    crate::shutdown::stopped(&mut Some(shutdown)).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_job_runs_until_the_shutdown_watch_turns_true() {
        let ran = Arc::new(AtomicBool::new(false));
        let seen = ran.clone();
        let service = Job::service("test", move |stop| {
            let seen = seen.clone();
            async move {
                seen.store(true, Ordering::SeqCst);
                until_shutdown(stop).await;
            }
        });
        let (tx, rx) = tokio::sync::watch::channel(false);
        let job = service.task();
        let running = tokio::spawn(async move { job.start(rx).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(ran.load(Ordering::SeqCst), "started");
        assert!(!running.is_finished(), "runs until shutdown");
        tx.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), running)
            .await
            .expect("stops on shutdown")
            .unwrap();
    }
}
