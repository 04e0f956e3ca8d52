//! The one shutdown signal every periodic task listens to: pingora's shutdown watch (a
//! `watch::Receiver<bool>` that turns `true` on SIGTERM/SIGINT), handed to each periodic job by
//! its background service ([`crate::background::Job`]).
//!
//! Owns only the "has shutdown begun" check. Must not start or stop anything itself.

use tokio::sync::watch;

/// The server's shutdown watch (`true` once shutdown began).
pub type Shutdown = watch::Receiver<bool>;

/// Resolves once `shutdown` turns `true` or its sender is gone; never when there is none (a
/// task started without a shutdown signal runs until aborted or its owner is dropped).
pub async fn stopped(shutdown: &mut Option<Shutdown>) {
    match shutdown {
        // `wait_for` fails when the sender is gone: stop then too.
        Some(rx) => drop(rx.wait_for(|stop| *stop).await),
        None => std::future::pending().await,
    }
}
