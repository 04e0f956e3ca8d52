//! Signature v0 interop with Slack's own Python SDK (`slack_sdk`'s `SignatureVerifier`, from
//! PyPI): what the SDK signs, Countersign accepts, and what Countersign signs, the SDK accepts;
//! both refuse the same tampered, wrong-secret and stale requests.
//!
//! Needs a Python with `slack_sdk`: `$SLACK_SDK_PYTHON`, else
//! `~/.cache/slack-interop-venv/bin/python`, else `python3`. Set one up with
//! `python3 -m venv ~/.cache/slack-interop-venv && ~/.cache/slack-interop-venv/bin/pip install slack_sdk`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use countersign::chat::slack::signature::{sign, verify, SignatureError};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SLACK_SDK_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/slack-interop-venv/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Runs the SDK script with `args` and `body` on stdin; returns its trimmed stdout.
fn sdk(args: &[&str], body: &[u8]) -> String {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slack_interop/sdk_signature.py");
    let mut child = Command::new(python())
        .arg(&script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", python()));
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "slack_sdk script failed (is slack_sdk installed? see this file's header): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn sdk_sign(ts: &str, body: &[u8]) -> String {
    sdk(&["sign", SECRET, ts], body)
}

fn sdk_accepts(secret: &str, ts: &str, sig: &str, body: &[u8], now: u64) -> bool {
    match sdk(&["verify", secret, ts, sig, &now.to_string()], body).as_str() {
        "valid" => true,
        "invalid" => false,
        other => panic!("unexpected SDK answer {other:?}"),
    }
}

fn bodies() -> Vec<Vec<u8>> {
    let click = serde_json::json!({
        "type": "block_actions",
        "user": {"id": "U2CERLKJA", "team_id": "T1DC2JH3J"},
        "trigger_id": "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c",
        "actions": [{"action_id": "approve", "value": "apr_aaaaaaaaaaaaaaaaaaaaaaaaaa"}],
        "state": {"values": {"reason": {"reason": {"value": "déploiement urgent ✓"}}}},
    });
    vec![
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c".to_vec(),
        serde_urlencoded::to_string([("payload", click.to_string())]).unwrap().into_bytes(),
        "payload={\"text\":\"raw UTF-8 déjà vu ✓\"}".as_bytes().to_vec(),
        Vec::new(),
    ]
}

#[test]
fn countersign_and_slack_sdk_agree_both_ways() {
    let ts = "1531420618";
    let now: u64 = 1531420618 + 42;
    // The documented example first: the SDK itself produces Slack's published signature.
    assert_eq!(
        sdk_sign(ts, &bodies()[0]),
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    );
    for body in bodies() {
        let theirs = sdk_sign(ts, &body);
        assert_eq!(verify(SECRET.as_bytes(), ts, &theirs, &body, now), Ok(()));
        let ours = sign(SECRET.as_bytes(), ts, &body);
        assert!(sdk_accepts(SECRET, ts, &ours, &body, now));
        assert_eq!(ours, theirs);
    }
}

#[test]
fn countersign_and_slack_sdk_refuse_the_same_requests() {
    let ts = "1531420618";
    let now: u64 = 1531420618;
    let body = bodies().remove(1);
    let ours = sign(SECRET.as_bytes(), ts, &body);
    let theirs = sdk_sign(ts, &body);

    let mut tampered = body.clone();
    tampered[12] ^= 0x01;
    assert!(!sdk_accepts(SECRET, ts, &ours, &tampered, now));
    assert_eq!(
        verify(SECRET.as_bytes(), ts, &theirs, &tampered, now),
        Err(SignatureError::Mismatch)
    );

    assert!(!sdk_accepts("wrong-secret", ts, &ours, &body, now));
    assert_eq!(
        verify(b"wrong-secret", ts, &theirs, &body, now),
        Err(SignatureError::Mismatch)
    );

    // Five minutes is the limit on both sides.
    let stale = now + 301;
    assert!(!sdk_accepts(SECRET, ts, &ours, &body, stale));
    assert_eq!(
        verify(SECRET.as_bytes(), ts, &theirs, &body, stale),
        Err(SignatureError::Stale)
    );
    let edge = now + 300;
    assert!(sdk_accepts(SECRET, ts, &ours, &body, edge));
    assert_eq!(verify(SECRET.as_bytes(), ts, &theirs, &body, edge), Ok(()));
}
