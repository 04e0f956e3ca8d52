//! `countersign audit verify FILE`: walks the whole chain and names the first bad line.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use super::chain::{check_line, GENESIS_HASH};

/// What a sound log ends with. Keep `last_hash` somewhere else (a ticket, another system) to
/// detect later truncation or rewriting of the whole tail, which a chain alone cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    /// Number of lines (events).
    pub lines: usize,
    /// `seq` of the last line; 0 for an empty file.
    pub last_seq: u64,
    /// `hash` of the last line; 64 zeros for an empty file.
    pub last_hash: String,
}

/// The first problem found. `line` is 1-based; 0 means the file itself (it could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// 1-based line number of the first bad line, or 0 when the file could not be read.
    pub line: usize,
    /// What is wrong, for a person.
    pub reason: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.reason)
        } else {
            write!(f, "line {}: {}", self.line, self.reason)
        }
    }
}

impl std::error::Error for VerifyError {}

/// Checks the whole file: every line parses and its `hash` recomputes, `seq` starts at 1 and
/// grows by exactly 1, `prev` of the first line is 64 zeros and of every other line the `hash`
/// of the line before, and the file ends with a newline (a cut-off last line fails).
pub fn verify(path: impl AsRef<Path>) -> Result<VerifySummary, VerifyError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| unreadable(path, &e))?;
    let mut reader = BufReader::new(file);
    let mut summary = VerifySummary {
        lines: 0,
        last_seq: 0,
        last_hash: GENESIS_HASH.to_owned(),
    };
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| unreadable(path, &e))?;
        if n == 0 {
            return Ok(summary);
        }
        let number = summary.lines + 1;
        let bad = |reason: String| VerifyError {
            line: number,
            reason,
        };
        if buf.pop() != Some(b'\n') {
            return Err(bad(
                "the file ends in the middle of this line (cut off or torn write)".to_owned(),
            ));
        }
        let link = check_line(&buf).map_err(bad)?;
        let expected_seq = summary.last_seq + 1;
        if link.seq != expected_seq {
            return Err(bad(format!(
                "seq is {}, expected {expected_seq} (a line is missing, duplicated or out of order)",
                link.seq
            )));
        }
        if link.prev != summary.last_hash {
            return Err(bad(format!(
                "prev does not match the hash of the line before ({})",
                summary.last_hash
            )));
        }
        summary.lines = number;
        summary.last_seq = link.seq;
        summary.last_hash = link.hash;
    }
}

fn unreadable(path: &Path, e: &io::Error) -> VerifyError {
    VerifyError {
        line: 0,
        reason: format!("cannot read {}: {e}", path.display()),
    }
}
