//! Where the store's Redis is, and the one connection every command goes through: a single
//! server (`redis://`, `rediss://`), or the master that a set of Sentinels names
//! (`redis+sentinel://`, SPEC 7 "Redis itself highly available").
//!
//! With Sentinel, the master is looked up when the first command needs it and again after any
//! command fails (a failover shows up as a refused connection, or as `READONLY` from a demoted
//! master), so a replica follows a failover within one failed command. Every write that decides
//! anything waits until at least one Redis replica has it ([`Link::durable`], `WAIT 1`): a
//! master that dies right after answering cannot take an approval, a vote or an execution claim
//! with it, so a promoted replica never lets a request run twice or forgets one. When no
//! replica acknowledges in time the write is reported as failed (fail closed): the caller of
//! that step gets an error, never a silent success.
//!
//! Owns connecting and the URL format; must not read or write records.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use tokio::sync::{Mutex, OnceCell};

use crate::approval::store::StoreError;

/// A parsed `redis+sentinel://[:password@]host:port[,host:port...]/MASTER[/DB]` URL: the
/// password (optional) is the Sentinels' own; the data nodes' password is `store_password`.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// The Sentinels, `(host, port)`; port 26379 when omitted.
    pub sentinels: Vec<(String, u16)>,
    /// The master name the Sentinels monitor (`sentinel monitor NAME ...`).
    pub master: String,
    /// The database number on the master.
    pub db: i64,
    /// The Sentinels' password (`requirepass` of the Sentinels), if any.
    pub sentinel_password: Option<String>,
}

impl std::fmt::Debug for SentinelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelUrl")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

/// The URL scheme of a Sentinel-managed store.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

impl SentinelUrl {
    /// Parses a `redis+sentinel://` URL; the error says what is wrong, for `countersign check`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix(SENTINEL_SCHEME)
            .ok_or_else(|| format!("a Sentinel store starts with {SENTINEL_SCHEME}"))?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let sentinel_password = match auth {
            None => None,
            Some(a) => {
                let pw = a.strip_prefix(':').unwrap_or(a);
                let pw = percent_decode(pw)?;
                (!pw.is_empty()).then_some(pw)
            }
        };
        let (hosts, path) = rest
            .split_once('/')
            .ok_or("no master name: write redis+sentinel://HOST:PORT,.../MASTER")?;
        let mut sentinels = Vec::new();
        for h in hosts.split(',') {
            let (host, port) = match h.rsplit_once(':') {
                Some((host, port)) => (
                    host,
                    port.parse::<u16>()
                        .map_err(|_| format!("bad Sentinel port in {h:?}"))?,
                ),
                None => (h, 26379),
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || port == 0 {
                return Err(format!("bad Sentinel address {h:?}"));
            }
            sentinels.push((host.to_owned(), port));
        }
        let mut parts = path.split('/');
        let master = parts.next().unwrap_or_default().to_owned();
        if master.is_empty() {
            return Err("no master name: write redis+sentinel://HOST:PORT,.../MASTER".into());
        }
        let db = match parts.next() {
            None | Some("") => 0,
            Some(d) => d
                .parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .ok_or_else(|| format!("bad database number {d:?}"))?,
        };
        if parts.next().is_some() {
            return Err("too many path parts: write .../MASTER or .../MASTER/DB".into());
        }
        Ok(Self {
            sentinels,
            master,
            db,
            sentinel_password,
        })
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "the Sentinel password is not UTF-8".into())
}

/// The connection the store uses.
pub(super) enum Link {
    /// One server; the connection manager reconnects to it on its own.
    Direct {
        client: redis::Client,
        conn: OnceCell<ConnectionManager>,
    },
    /// The master the Sentinels name, looked up again after a failed command.
    Sentinel {
        sentinel: Box<Mutex<SentinelClient>>,
        current: Mutex<Option<(ConnectionManager, redis::Client)>>,
        url: SentinelUrl,
    },
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The connection info may carry a password: show only where it points.
            Self::Direct { client, .. } => f
                .debug_struct("Direct")
                .field("addr", &client.get_connection_info().addr)
                .finish(),
            Self::Sentinel { url, .. } => f.debug_tuple("Sentinel").field(url).finish(),
        }
    }
}

fn err(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("redis {context}: {e}"))
}

impl Link {
    /// A Sentinel link; nothing is contacted yet.
    pub(super) fn sentinel(url: SentinelUrl, password: Option<&str>) -> Result<Self, StoreError> {
        let addrs: Vec<redis::ConnectionInfo> = url
            .sentinels
            .iter()
            .map(|(host, port)| redis::ConnectionInfo {
                addr: redis::ConnectionAddr::Tcp(host.clone(), *port),
                redis: redis::RedisConnectionInfo {
                    password: url.sentinel_password.clone(),
                    ..Default::default()
                },
            })
            .collect();
        let node = SentinelNodeConnectionInfo {
            tls_mode: None,
            redis_connection_info: Some(redis::RedisConnectionInfo {
                db: url.db,
                password: password.map(str::to_owned),
                ..Default::default()
            }),
        };
        let client = SentinelClient::build(
            addrs,
            url.master.clone(),
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(|e| err("sentinel", e))?;
        Ok(Self::Sentinel {
            sentinel: Box::new(Mutex::new(client)),
            current: Mutex::new(None),
            url,
        })
    }

    fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(1)
            .set_max_delay(200)
    }

    /// The connection to the (current) master, connecting first if needed. Bounded by twice
    /// `timeout`, longer than the connection timeout inside, so its error (refused, TLS, auth)
    /// is what the caller sees rather than a bare timeout.
    pub(super) async fn conn(&self, timeout: Duration) -> Result<ConnectionManager, StoreError> {
        match self {
            Self::Direct { client, conn } => {
                let init = async {
                    tokio::time::timeout(
                        timeout * 2,
                        ConnectionManager::new_with_config(
                            client.clone(),
                            Self::manager_config(timeout),
                        ),
                    )
                    .await
                    .map_err(|_| err("connect", "timed out"))?
                    .map_err(|e| err("connect", e))
                };
                conn.get_or_try_init(|| init).await.cloned()
            }
            Self::Sentinel {
                sentinel, current, ..
            } => {
                let mut current = current.lock().await;
                if let Some((c, _)) = current.as_ref() {
                    return Ok(c.clone());
                }
                let resolve = async {
                    let client = sentinel
                        .lock()
                        .await
                        .async_get_client()
                        .await
                        .map_err(|e| err("sentinel: no master", e))?;
                    let manager = ConnectionManager::new_with_config(
                        client.clone(),
                        Self::manager_config(timeout),
                    )
                    .await
                    .map_err(|e| err("connect to master", e))?;
                    Ok::<_, StoreError>((manager, client))
                };
                let (manager, client) = tokio::time::timeout(timeout * 3, resolve)
                    .await
                    .map_err(|_| err("sentinel", "master lookup timed out"))??;
                tracing::info!(master = ?client.get_connection_info().addr, "redis store: connected to the master the Sentinels name");
                *current = Some((manager.clone(), client));
                Ok(manager)
            }
        }
    }

    /// A client for the pub/sub connection, to the current master.
    pub(super) async fn client(&self, timeout: Duration) -> Result<redis::Client, StoreError> {
        match self {
            Self::Direct { client, .. } => Ok(client.clone()),
            Self::Sentinel { current, .. } => {
                self.conn(timeout).await?;
                current
                    .lock()
                    .await
                    .as_ref()
                    .map(|(_, c)| c.clone())
                    .ok_or_else(|| err("sentinel", "no master"))
            }
        }
    }

    /// After a failed command: with Sentinel, the next command looks the master up again (the
    /// failure may be a failover). A single server's connection manager reconnects itself.
    pub(super) async fn failed(&self) {
        if let Self::Sentinel { current, .. } = self {
            *current.lock().await = None;
        }
    }

    /// Whether writes must reach a replica before they count ([`Self::durable`]).
    pub(super) fn replicated(&self) -> bool {
        matches!(self, Self::Sentinel { .. })
    }

    /// With Sentinel: waits until at least one replica has every write sent on `c` so far
    /// (`WAIT 1 timeout`), and fails when none acknowledges in time. A single server: nothing.
    pub(super) async fn durable(
        &self,
        c: &mut ConnectionManager,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        if !self.replicated() {
            return Ok(());
        }
        let wait_ms = u64::try_from(timeout.as_millis()).unwrap_or(1000).max(1);
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(1).arg(wait_ms);
        let acked: i64 = tokio::time::timeout(timeout * 2, cmd.query_async(c))
            .await
            .map_err(|_| err("replication", "WAIT timed out"))?
            .map_err(|e| err("replication", e))?;
        if acked < 1 {
            return Err(err(
                "replication",
                "no replica acknowledged the write in time; it does not count (fail closed)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::SentinelUrl;

    #[test]
    fn sentinel_urls_parse_with_defaults_and_say_what_is_wrong() {
        let u = SentinelUrl::parse("redis+sentinel://10.0.0.1:26380,10.0.0.2,s3:1/cs").unwrap();
        assert_eq!(
            u.sentinels,
            vec![
                ("10.0.0.1".to_owned(), 26380),
                ("10.0.0.2".to_owned(), 26379),
                ("s3".to_owned(), 1)
            ]
        );
        assert_eq!(
            (u.master.as_str(), u.db, u.sentinel_password),
            ("cs", 0, None)
        );
        let u = SentinelUrl::parse("redis+sentinel://:p%40ss@h:1/cs/3").unwrap();
        assert_eq!((u.db, u.sentinel_password.as_deref()), (3, Some("p@ss")));
        assert!(
            !format!("{u:?}").contains("p@ss"),
            "Debug hides the password"
        );
        for bad in [
            "redis://h/cs",
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:x/cs",
            "redis+sentinel://,h/cs",
            "redis+sentinel://h/cs/-1",
            "redis+sentinel://h/cs/0/extra",
        ] {
            assert!(SentinelUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
