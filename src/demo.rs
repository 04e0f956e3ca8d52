//! `countersign demo`: a zero-setup tour on loopback.
use std::process::ExitCode;
/// Runs the demo.
pub fn run() -> ExitCode {
    todo!("demo")
}
