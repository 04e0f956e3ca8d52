"""Signs or verifies a Slack request body with Slack's own Python SDK (slack_sdk).

Used by tests/slack_interop.rs to prove Countersign's signature v0 code agrees with Slack's.
The body is read from stdin as raw bytes.

    python sdk_signature.py sign SECRET TIMESTAMP            -> prints v0=...
    python sdk_signature.py verify SECRET TIMESTAMP SIG NOW  -> prints valid | invalid

Setup: python3 -m venv ~/.cache/slack-interop-venv && ~/.cache/slack-interop-venv/bin/pip install slack_sdk
"""
import sys

from slack_sdk.signature import Clock, SignatureVerifier


class FixedClock(Clock):
    """A clock frozen at the time the Rust test chose, so 'stale' means the same on both sides."""

    def __init__(self, now: float):
        self._now = now

    def now(self) -> float:
        return self._now


def main() -> int:
    body = sys.stdin.buffer.read()
    mode, secret, timestamp = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "sign":
        print(SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body))
        return 0
    if mode == "verify":
        signature, now = sys.argv[4], float(sys.argv[5])
        verifier = SignatureVerifier(secret, clock=FixedClock(now))
        print("valid" if verifier.is_valid(body=body, timestamp=timestamp, signature=signature) else "invalid")
        return 0
    print(f"unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
