//! Evidence export (SPEC 10): every audit line as a CloudEvents 1.0 structured-mode JSON event,
//! POSTed to `[audit] webhook` and signed, or printed by `countersign audit export` for backfill.
//!
//! Owns: the CloudEvent encoding of an audit line, the `Countersign-Signature` header, the
//! delivery loop and its cursor file. Must not touch: the writer. Delivery *reads the audit file
//! behind the writer* (it never sits between a step and its record), so a slow or failing
//! receiver delays delivery only, never a decision.
//!
//! # Delivery
//! Lines are delivered one at a time in file order, so events of one approval arrive in the
//! order they happened (and so do all others). A line is delivered when the receiver answers
//! 2xx; anything else (an error status, a timeout, a refused connection) is retried with
//! exponential backoff (0.5 s doubling to 30 s, for ever: evidence is never dropped). After
//! each delivery the byte offset just past the line, its `seq` and its `hash` are saved to the
//! cursor file `<audit_log>.webhook-cursor` (written to a temporary file, then renamed), so a
//! restart resumes where delivery stopped. The next line's `prev` must be that `hash`: a log
//! that was rotated or replaced does not continue the chain and is delivered from its start. Delivery is at least once: a crash between a delivery and its
//! cursor write repeats that one event, with the same `id`, which receivers use to drop
//! duplicates.
//!
//! # Event
//! ```json
//! {"specversion":"1.0","id":"<the line's hash>","source":"/countersign/<replica>",
//!  "type":"dev.countersign.vote.cast","time":"<the line's ts>",
//!  "datacontenttype":"application/json","subject":"<approval_id, when present>",
//!  "data":<the audit line, byte for byte>}
//! ```
//! `data` is the line exactly as written, so a receiver can recompute its chain hash. The body is
//! identical for the webhook and for `audit export`; the header `Countersign-Signature:
//! sha256=<hex>` is the lowercase hex HMAC-SHA256 of the body with `webhook_secret`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;

use super::chain::check_line;
use crate::config::AuditWebhook;

/// `Content-Type` of a structured-mode CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// The header carrying the body's HMAC.
pub const SIGNATURE_HEADER: &str = "countersign-signature";

/// At most this much of the audit file is read per step.
const READ_CHUNK: u64 = 1024 * 1024;

/// How often the file is looked at again when everything has been delivered.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// First retry delay after a failed delivery; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Longest wait between two delivery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Characters of the replica id kept as they are in `source` (the rest is percent-encoded).
const SOURCE_KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

/// The CloudEvent for one audit line (without its `\n`): the exact body that is POSTed.
/// Fails on a line that is not a sound audit record (shape or hash).
pub fn cloudevent(line: &str) -> Result<String, String> {
    check_line(line.as_bytes())?;
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        ts: &'a str,
        event: &'a str,
        replica: &'a str,
        approval_id: Option<&'a str>,
        hash: &'a str,
    }
    let head: Head<'_> = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let source = format!(
        "/countersign/{}",
        utf8_percent_encode(head.replica, SOURCE_KEEP)
    );
    let text = |s: &str| serde_json::to_string(s).map_err(|e| e.to_string());
    let subject = match head.approval_id {
        Some(id) => format!(",\"subject\":{}", text(id)?),
        None => String::new(),
    };
    Ok(format!(
        "{{\"specversion\":\"1.0\",\"id\":{id},\"source\":{source},\"type\":{kind},\"time\":{time},\
         \"datacontenttype\":\"application/json\"{subject},\"data\":{line}}}",
        id = text(head.hash)?,
        source = text(&source)?,
        kind = text(&format!("dev.countersign.{}", head.event))?,
        time = text(head.ts)?,
    ))
}

/// `sha256=<lowercase hex HMAC-SHA256 of body>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The cursor file of an audit log: `<audit_log>.webhook-cursor`.
pub fn cursor_path(audit_log: &Path) -> PathBuf {
    let mut name = audit_log.as_os_str().to_owned();
    name.push(".webhook-cursor");
    PathBuf::from(name)
}

/// How far delivery got: the byte offset just past the last delivered line, its `seq` and its
/// `hash`. The next line's `prev` must equal `hash`: otherwise the file is not the one the
/// cursor was written for (rotated or replaced) and delivery starts it from the beginning.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// Bytes of the audit file already delivered (always at a line boundary).
    pub offset: u64,
    /// `seq` of the last delivered line (0 = none), for people reading the file.
    pub seq: u64,
    /// `hash` of the last delivered line (empty = none).
    #[serde(default)]
    pub hash: String,
}

impl Cursor {
    /// Whether `line` (a sound record) is the one that follows the cursor in the chain.
    pub fn is_followed_by(&self, line: &str) -> bool {
        #[derive(serde::Deserialize)]
        struct Prev<'a> {
            prev: &'a str,
        }
        let Ok(p) = serde_json::from_str::<Prev<'_>>(line) else {
            return false;
        };
        if self.hash.is_empty() {
            // No hash: the start of a file, or a cursor from before hashes were kept.
            return self.offset > 0 || p.prev == super::GENESIS_HASH;
        }
        p.prev == self.hash
    }

    /// Moves past `line`, which ends at byte `end`.
    fn advance(&mut self, line: &str, end: u64) {
        #[derive(serde::Deserialize)]
        struct Link {
            seq: u64,
            hash: String,
        }
        self.offset = end;
        if let Ok(l) = serde_json::from_str::<Link>(line) {
            self.seq = l.seq;
            self.hash = l.hash;
        }
    }
}

impl Cursor {
    /// Reads the cursor file; a missing file means "from the start".
    pub fn load(path: &Path) -> io::Result<Cursor> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Cursor::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the cursor file atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let text = serde_json::to_vec(self).map_err(io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }
}

/// The delivery loop of one audit file to one webhook.
#[derive(Debug, Clone)]
pub struct Delivery {
    config: AuditWebhook,
    audit_log: PathBuf,
    cursor_file: PathBuf,
    http: reqwest::Client,
    /// `countersign_audit_webhook_attempts_total{result}`: `delivered` or `failed`.
    attempts: prometheus::IntCounterVec,
    /// `countersign_audit_webhook_backlog_bytes`: audit log bytes not yet delivered.
    backlog: prometheus::IntGauge,
}

impl Delivery {
    /// Delivers the events of `audit_log` to `config.url` with `http`; registers its metrics
    /// in `metrics`.
    pub fn new(
        config: AuditWebhook,
        audit_log: &Path,
        http: reqwest::Client,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Delivery, prometheus::Error> {
        let attempts = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "countersign_audit_webhook_attempts_total",
                "Audit webhook POSTs, by result (delivered, failed: retried with backoff).",
            ),
            &["result"],
        )?;
        let backlog = prometheus::IntGauge::new(
            "countersign_audit_webhook_backlog_bytes",
            "Bytes of the audit log not yet delivered to the webhook (0 = caught up).",
        )?;
        metrics.registry().register(Box::new(attempts.clone()))?;
        metrics.registry().register(Box::new(backlog.clone()))?;
        Ok(Delivery {
            config,
            audit_log: audit_log.to_path_buf(),
            cursor_file: cursor_path(audit_log),
            http,
            attempts,
            backlog,
        })
    }

    /// Starts the loop on the current tokio runtime; it runs until the process ends.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Like [`Delivery::spawn`], stopping when `stop` turns `true` (shutdown). An event cut
    /// off mid-delivery is delivered again after the restart (at least once, same `id`).
    pub fn spawn_until(
        self,
        mut stop: pingora::server::ShutdownWatch,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tokio::select! {
                () = self.run() => {}
                _ = stop.wait_for(|down| *down) => {}
            }
        })
    }

    async fn run(self) {
        let mut cursor = match Cursor::load(&self.cursor_file) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    cursor = %self.cursor_file.display(), error = %e,
                    "audit webhook: unreadable cursor file; delivering from the start"
                );
                Cursor::default()
            }
        };
        tracing::info!(
            url = %redacted_url(&self.config.url), offset = cursor.offset, seq = cursor.seq,
            "audit webhook: delivering events"
        );
        loop {
            let lines = match self.read_from(&mut cursor) {
                Ok(lines) => lines,
                Err(e) => {
                    tracing::warn!(audit_log = %self.audit_log.display(), error = %e, "audit webhook: cannot read the audit log");
                    Vec::new()
                }
            };
            if lines.is_empty() {
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            for (line, end) in lines {
                let body = match cloudevent(&line) {
                    Ok(b) => b,
                    Err(reason) => {
                        // Never skip evidence: stop here and look again (the writer cuts a
                        // failed batch back; a damaged file needs a person).
                        tracing::error!(offset = cursor.offset, %reason, "audit webhook: a line of the audit log is not a sound record; delivery paused");
                        tokio::time::sleep(MAX_BACKOFF).await;
                        break;
                    }
                };
                if !cursor.is_followed_by(&line) {
                    tracing::error!(
                        offset = cursor.offset, seq = cursor.seq,
                        "audit webhook: the audit log does not continue the delivered chain (rotated or replaced); delivering it from the start"
                    );
                    cursor = Cursor::default();
                    break;
                }
                self.deliver(&body).await;
                cursor.advance(&line, end);
                if let Err(e) = cursor.save(&self.cursor_file) {
                    tracing::warn!(cursor = %self.cursor_file.display(), error = %e, "audit webhook: cannot save the cursor (a restart would deliver again)");
                }
            }
        }
    }

    /// The complete lines after `cursor.offset`, each with the offset just past it. Resets the
    /// cursor when the file is shorter than it or the offset is not at a line boundary (the
    /// file was replaced).
    fn read_from(&self, cursor: &mut Cursor) -> io::Result<Vec<(String, u64)>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(&self.audit_log)?;
        let len = file.metadata()?.len();
        self.backlog
            .set(i64::try_from(len.saturating_sub(cursor.offset)).unwrap_or(i64::MAX));
        let at_boundary = |file: &mut std::fs::File, offset: u64| -> io::Result<bool> {
            if offset == 0 {
                return Ok(true);
            }
            let mut b = [0u8; 1];
            file.seek(SeekFrom::Start(offset - 1))?;
            file.read_exact(&mut b)?;
            Ok(b[0] == b'\n')
        };
        if cursor.offset > len || !at_boundary(&mut file, cursor.offset)? {
            tracing::error!(
                offset = cursor.offset, len,
                "audit webhook: the audit log no longer matches the cursor (replaced or cut); delivering it from the start"
            );
            *cursor = Cursor::default();
        }
        if cursor.offset == len {
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(cursor.offset))?;
        let mut buf = Vec::new();
        file.take(READ_CHUNK).read_to_end(&mut buf)?;
        let mut out = Vec::new();
        let mut start = 0usize;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + nl;
            let line = String::from_utf8_lossy(&buf[start..end]).into_owned();
            out.push((line, cursor.offset + end as u64 + 1));
            start = end + 1;
        }
        if out.is_empty() && buf.len() as u64 == READ_CHUNK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an audit line longer than 1 MiB",
            ));
        }
        Ok(out)
    }

    /// POSTs `body` until the receiver answers 2xx.
    async fn deliver(&self, body: &str) {
        let sig = signature(self.config.secret.expose().as_bytes(), body.as_bytes());
        let mut backoff = FIRST_BACKOFF;
        loop {
            let sent = self
                .http
                .post(self.config.url.clone())
                .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
                .header(SIGNATURE_HEADER, &sig)
                .body(body.to_owned())
                .send()
                .await;
            let problem = match sent {
                Ok(resp) if resp.status().is_success() => {
                    self.attempts.with_label_values(&["delivered"]).inc();
                    return;
                }
                Ok(resp) => format!("HTTP {}", resp.status().as_u16()),
                Err(e) => e.without_url().to_string(),
            };
            self.attempts.with_label_values(&["failed"]).inc();
            tracing::warn!(
                url = %redacted_url(&self.config.url), %problem, retry_in_ms = backoff.as_millis() as u64,
                "audit webhook: delivery failed; retrying"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// The webhook URL for logs: scheme, host and path (a query or user info may hold a token).
fn redacted_url(url: &url::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.path()
    )
}

/// Parses `--since`: an RFC 3339 time (`2026-12-01T00:00:00Z`) or a duration before now
/// (`24h`, `15m`).
pub fn parse_since(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    match humantime::parse_duration(text) {
        Ok(d) => now
            .checked_sub(d)
            .ok_or_else(|| format!("--since {text:?} reaches before 1970")),
        Err(_) => Err(format!(
            "--since {text:?} is neither an RFC 3339 time (2026-12-01T00:00:00Z) nor a duration (24h)"
        )),
    }
}

/// Writes the CloudEvent of every line of `audit_log` written at or after `since`, one per
/// line, to `out`. Stops at the first line that is not a sound record, naming it.
pub fn export(
    audit_log: &Path,
    since: Option<SystemTime>,
    out: &mut impl Write,
) -> Result<usize, String> {
    use std::io::BufRead;
    let file = std::fs::File::open(audit_log).map_err(|e| e.to_string())?;
    let mut count = 0;
    for (n, line) in io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: {e}", n + 1))?;
        let body = cloudevent(&line).map_err(|e| format!("line {}: {e}", n + 1))?;
        if let Some(since) = since {
            #[derive(serde::Deserialize)]
            struct Ts<'a> {
                ts: &'a str,
            }
            let ts = serde_json::from_str::<Ts<'_>>(&line)
                .ok()
                .and_then(|t| humantime::parse_rfc3339(t.ts).ok())
                .ok_or_else(|| format!("line {}: unreadable ts", n + 1))?;
            if ts < since {
                continue;
            }
        }
        writeln!(out, "{body}").map_err(|e| e.to_string())?;
        count += 1;
    }
    Ok(count)
}

/// `countersign audit export FILE [--since T]`: CloudEvents on stdout, one per line; exit 1
/// (with `FILE:LINE: reason` on stderr) when the file cannot be read or a line is damaged.
pub fn export_cli(audit_log: &Path, since: Option<&str>) -> ExitCode {
    let since = match since.map(|s| parse_since(s, SystemTime::now())).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("countersign: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = export(audit_log, since, &mut out);
    let flushed = out.flush();
    match (result, flushed) {
        (Ok(_), Ok(())) => ExitCode::SUCCESS,
        (Err(e), _) => {
            eprintln!("{}:{e}", audit_log.display());
            ExitCode::FAILURE
        }
        (Ok(_), Err(e)) => {
            eprintln!("countersign: stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, Event};

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn since_takes_times_and_durations() {
        let now = humantime::parse_rfc3339("2026-12-04T12:00:00Z").unwrap();
        assert_eq!(
            parse_since("2026-12-01T00:00:00Z", now).unwrap(),
            humantime::parse_rfc3339("2026-12-01T00:00:00Z").unwrap()
        );
        assert_eq!(
            parse_since("2h", now).unwrap(),
            humantime::parse_rfc3339("2026-12-04T10:00:00Z").unwrap()
        );
        assert!(parse_since("yesterday", now).is_err());
    }

    #[tokio::test]
    async fn cloudevent_wraps_the_line_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, "host-1:42").unwrap();
        log.append(
            Event::new("vote.cast")
                .approval_id("ap_1")
                .actor("a@example.com"),
        )
        .await
        .unwrap();
        log.append(Event::new("policy.reloaded")).await.unwrap();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let event: serde_json::Value =
            serde_json::from_str(&cloudevent(lines[0]).unwrap()).unwrap();
        let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["type"], "dev.countersign.vote.cast");
        assert_eq!(event["source"], "/countersign/host-1%3A42");
        assert_eq!(event["id"], line["hash"]);
        assert_eq!(event["time"], line["ts"]);
        assert_eq!(event["subject"], "ap_1");
        assert_eq!(event["data"], line);
        // data is the line byte for byte (its chain hash can be recomputed by the receiver).
        assert!(cloudevent(lines[0])
            .unwrap()
            .ends_with(&format!(",\"data\":{}}}", lines[0])));
        let second: serde_json::Value =
            serde_json::from_str(&cloudevent(lines[1]).unwrap()).unwrap();
        assert!(second.get("subject").is_none());
        // A tampered line is refused, never exported.
        assert!(cloudevent(&lines[0].replace("a@example.com", "b@example.com")).is_err());

        // The chain tells whether a cursor continues into a line.
        let mut cursor = Cursor::default();
        assert!(cursor.is_followed_by(lines[0]));
        assert!(
            !cursor.is_followed_by(lines[1]),
            "a fresh cursor starts at seq 1"
        );
        cursor.advance(lines[0], lines[0].len() as u64 + 1);
        assert_eq!(
            (cursor.seq, cursor.hash.as_str()),
            (1, line["hash"].as_str().unwrap())
        );
        assert!(cursor.is_followed_by(lines[1]));
        assert!(
            !cursor.is_followed_by(lines[0]),
            "a replaced file starts over"
        );

        let mut out = Vec::new();
        assert_eq!(export(&path, None, &mut out).unwrap(), 2);
        let future = SystemTime::now() + Duration::from_secs(60);
        let mut none = Vec::new();
        assert_eq!(export(&path, Some(future), &mut none).unwrap(), 0);
    }

    #[test]
    fn cursor_round_trips_next_to_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        let path = cursor_path(&log);
        assert_eq!(path, dir.path().join("audit.jsonl.webhook-cursor"));
        assert_eq!(Cursor::load(&path).unwrap(), Cursor::default());
        let c = Cursor {
            offset: 1234,
            seq: 7,
            hash: "ab".repeat(32),
        };
        c.save(&path).unwrap();
        assert_eq!(Cursor::load(&path).unwrap(), c);
    }
}
