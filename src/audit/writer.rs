//! The single writer of one audit file: a dedicated thread owns the file and the chain state,
//! takes events from a channel, and acknowledges each only after its line is on disk
//! (`write` + `fsync`). Events that queue up while a sync is in progress are written and
//! synced together (group commit), so many concurrent approvals cost one fsync, not many.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread;

use tokio::sync::oneshot;

use super::chain::{check_line, seal, Position, GENESIS_HASH};
use super::event::Event;
use super::AuditError;
use crate::clock::{SharedClock, SystemClock};

/// At most this many queued events share one fsync, so one slow batch cannot grow unbounded.
const MAX_BATCH: usize = 512;

/// How much of the file's end is read per step while looking for the last line.
const TAIL_CHUNK: u64 = 8 * 1024;

/// Handle to an open audit log. Cheap to clone; every clone feeds the same writer. The writer
/// thread stops once every handle is dropped and the queued events are written.
///
/// Only one `AuditLog` may write a given file at a time (one per replica, each with its own
/// file): two writers would each continue the chain from the same line and fork it.
#[derive(Clone, Debug)]
pub struct AuditLog {
    inner: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    jobs: mpsc::Sender<Job>,
    path: PathBuf,
    replica: String,
}

/// The outcome sent back to whoever appended an event.
type Outcome = Result<u64, AuditError>;

/// How an outcome reaches the appender: async callers await a oneshot, blocking callers wait
/// on a std channel (a oneshot's `blocking_recv` would panic inside a runtime).
enum Ack {
    Async(oneshot::Sender<Outcome>),
    Blocking(mpsc::SyncSender<Outcome>),
}

impl Ack {
    fn send(self, outcome: Outcome) {
        // The appender may have gone away (a dropped future); the line is written regardless.
        match self {
            Ack::Async(tx) => {
                let _ = tx.send(outcome);
            }
            Ack::Blocking(tx) => {
                let _ = tx.send(outcome);
            }
        }
    }
}

struct Job {
    event: Event,
    ack: Ack,
}

impl AuditLog {
    /// Opens (or creates) the audit file at `path` for appending, continuing its chain, with
    /// timestamps from the system clock. See [`AuditLog::open_with_clock`].
    pub fn open(path: impl AsRef<Path>, replica_id: &str) -> io::Result<AuditLog> {
        Self::open_with_clock(path, replica_id, Arc::new(SystemClock))
    }

    /// Opens (or creates) the audit file at `path`; `ts` comes from `clock`.
    ///
    /// An existing file's last line is checked on its own (shape and hash) and the chain
    /// continues from it. A file whose last line is damaged, or that ends in the middle of a
    /// line, is refused with `InvalidData`: appending after it would bury the damage, so the
    /// operator should run `countersign audit verify` and repair or move the file first.
    pub fn open_with_clock(
        path: impl AsRef<Path>,
        replica_id: &str,
        clock: SharedClock,
    ) -> io::Result<AuditLog> {
        let path = path.as_ref().to_path_buf();
        if replica_id.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "audit log: replica id must not be empty",
            ));
        }
        let existed = path.exists();
        let mut file = open_append(&path)?;
        if !existed {
            sync_parent_dir(&path);
        }
        let (last_seq, last_hash) = chain_head(&mut file, &path)?;
        let len = file.metadata()?.len();
        // Unbounded, because a bounded send would block an async task. Each queued event has
        // an appender waiting for it (a held request, a vote), so the queue is bounded by the
        // work in flight.
        let (jobs, queue) = mpsc::channel();
        let writer = Writer {
            file,
            len,
            seq: last_seq,
            prev: last_hash,
            replica: replica_id.to_owned(),
            clock,
            poisoned: false,
        };
        thread::Builder::new()
            .name("audit-writer".to_owned())
            .spawn(move || writer.run(queue))?;
        Ok(AuditLog {
            inner: Arc::new(Handle {
                jobs,
                path,
                replica: replica_id.to_owned(),
            }),
        })
    }

    /// Appends `event` and returns its `seq` once the line is written and fsynced. Only then
    /// may the step it records be acknowledged. Dropping the future does not cancel the write.
    ///
    /// Fails with [`AuditError::Refused`] (nothing written) if the event carries a field that
    /// was refused, and with a write error if the disk failed; after a write error every later
    /// append fails too, so no step is acknowledged without its record.
    pub async fn append(&self, event: Event) -> Result<u64, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.submit(event, Ack::Async(tx))?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Like [`AuditLog::append`], blocking the calling thread: for code outside the async
    /// runtime (signal handlers, file watchers). Do not call it from async code.
    pub fn append_blocking(&self, event: Event) -> Result<u64, AuditError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(event, Ack::Blocking(tx))?;
        rx.recv().map_err(|_| AuditError::Closed)?
    }

    /// The file this log writes.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The replica id written into every line.
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    fn submit(&self, event: Event, ack: Ack) -> Result<(), AuditError> {
        if let Some(refusal) = event.refused().first() {
            tracing::error!(
                event = event.kind(),
                field = %refusal.field,
                reason = %refusal.reason,
                "audit event refused"
            );
            return Err(AuditError::Refused {
                field: refusal.field.clone(),
                reason: refusal.reason,
            });
        }
        self.inner
            .jobs
            .send(Job { event, ack })
            .map_err(|_| AuditError::Closed)
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        // Emails and ids are personal data: owner writes, group (a log shipper) reads.
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o640);
    }
    options.open(path)
}

/// Makes a new file's directory entry durable, so an fsynced first line cannot vanish with
/// its file after a crash. Best effort: some platforms cannot open directories.
fn sync_parent_dir(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Err(e) = File::open(parent).and_then(|dir| dir.sync_all()) {
        tracing::warn!(dir = %parent.display(), error = %e, "could not fsync the audit log's directory");
    }
}

/// The `seq` and `hash` the next line continues from.
fn chain_head(file: &mut File, path: &Path) -> io::Result<(u64, String)> {
    let Some(tail) = last_line(file)? else {
        return Ok((0, GENESIS_HASH.to_owned()));
    };
    let damaged = |file: &mut File, reason: String| -> io::Error {
        let line = count_newlines(file).map(|n| n + 1 - usize::from(tail.complete));
        let at = line.map(|n| format!(":{n}")).unwrap_or_default();
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}{at}: {reason}; refusing to append to a damaged audit log \
                 (run `countersign audit verify`, then repair or move the file)",
                path.display()
            ),
        )
    };
    if !tail.complete {
        let reason = "the file ends in the middle of a line".to_owned();
        return Err(damaged(file, reason));
    }
    match check_line(&tail.bytes) {
        Ok(link) => Ok((link.seq, link.hash)),
        Err(reason) => Err(damaged(file, reason)),
    }
}

struct Tail {
    /// The last line without its `\n`.
    bytes: Vec<u8>,
    /// Whether the file ends with `\n`.
    complete: bool,
}

/// Reads the file's last line from the end, a chunk at a time, so opening a large log does not
/// read all of it.
fn last_line(file: &mut File) -> io::Result<Option<Tail>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut end = len;
    let mut bytes: Vec<u8> = Vec::new();
    let mut complete = None;
    while end > 0 {
        let start = end.saturating_sub(TAIL_CHUNK);
        let mut chunk = vec![0; usize::try_from(end - start).unwrap_or(0)];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        if complete.is_none() {
            let ends_with_newline = chunk.last() == Some(&b'\n');
            if ends_with_newline {
                chunk.pop();
            }
            complete = Some(ends_with_newline);
        }
        chunk.extend_from_slice(&bytes);
        bytes = chunk;
        if let Some(nl) = bytes.iter().rposition(|&b| b == b'\n') {
            bytes.drain(..=nl);
            break;
        }
        end = start;
    }
    Ok(Some(Tail {
        bytes,
        complete: complete.unwrap_or(true),
    }))
}

/// Only used to name the damaged line in an error message.
fn count_newlines(file: &mut File) -> io::Result<usize> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = [0u8; 64 * 1024];
    let mut count = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(count);
        }
        count += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
}

/// The state owned by the writer thread.
struct Writer {
    file: File,
    /// Bytes known to be durable; a failed write is cut back to this length.
    len: u64,
    seq: u64,
    prev: String,
    replica: String,
    clock: SharedClock,
    /// Set after a failed write or sync: from then on nothing is acknowledged.
    poisoned: bool,
}

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Job>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    /// Writes a batch with one write and one fsync, then acknowledges each event.
    fn commit(&mut self, batch: Vec<Job>) {
        if self.poisoned {
            for job in batch {
                job.ack.send(Err(AuditError::Poisoned));
            }
            return;
        }
        let ts = humantime::format_rfc3339_millis(self.clock.now()).to_string();
        let mut buf = String::new();
        let mut seq = self.seq;
        let mut prev = self.prev.clone();
        let mut written = Vec::with_capacity(batch.len());
        for job in batch {
            let at = Position {
                ts: &ts,
                seq: seq + 1,
                replica: &self.replica,
                prev: &prev,
            };
            match seal(&job.event, at) {
                Ok(sealed) => {
                    seq += 1;
                    buf.push_str(&sealed.line);
                    prev = sealed.hash;
                    written.push((seq, job.ack));
                }
                Err(e) => job.ack.send(Err(AuditError::Encode(e.to_string()))),
            }
        }
        if written.is_empty() {
            return;
        }
        match self.write_durably(buf.as_bytes()) {
            Ok(()) => {
                self.seq = seq;
                self.prev = prev;
                for (seq, ack) in written {
                    ack.send(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit log write failed; refusing all further events");
                self.poisoned = true;
                self.cut_back();
                let e = Arc::new(e);
                for (_, ack) in written {
                    ack.send(Err(AuditError::Write(e.clone())));
                }
            }
        }
    }

    fn write_durably(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.file.sync_data()?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Removes a partly written batch so the file still verifies up to the last acknowledged
    /// line. Best effort: after a failed fsync the disk's state is unknown, hence the poison.
    fn cut_back(&mut self) {
        if let Err(e) = self
            .file
            .set_len(self.len)
            .and_then(|()| self.file.sync_data())
        {
            tracing::error!(error = %e, "could not cut the audit log back to its last good line");
        }
    }
}
