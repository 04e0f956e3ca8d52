#!/usr/bin/env python3
"""Generate an RSA-2048 key, a JWKS and RS256 test tokens into a work dir.

Adapted from the peers harness. Nothing here is meant to be committed: run.sh
calls this at run time with a fresh temporary directory.

Files written to OUTDIR:
  priv.pem             RSA private key (0600)
  pub.pem              SubjectPublicKeyInfo PEM ("BEGIN PUBLIC KEY")
  jwks.json            {"keys":[{kty,kid,use,alg,n,e}]}
  token.good           valid RS256 access token (iss, aud, sub, exp=+1h, iat, scope)
  token.bad_sig        the good token with its payload tampered (sub/scope changed)
                       and the original signature kept: always costs one full RSA
                       verification (used for the bad-token load runs)
  token.other_key      same claims + same kid, signed by a *different* RSA key.
                       (Not used for load: if its signature happens to be >= our
                       modulus, verifiers reject it before the RSA operation, so
                       its cost would vary from run to run with the random keys.)
  token.expired        valid signature, exp in the past
  token.wrong_aud      valid signature, aud != expected
  token.wrong_iss      valid signature, iss != expected
  token.no_scope       valid signature, scope lacks read:bench (policy check, 403)
  token.alg_none       unsigned token, header alg=none
  token.hs256_confusion  HS256 token MACed with the public-key PEM as secret
  claims.env           ISSUER / AUDIENCE / KID as shell assignments
  unique.json          (with --unique N) where the N distinct valid tokens are: see below

--key-file PATH: use the RSA key in PATH (PKCS#8 PEM), creating it (0600) if missing, instead
of a fresh key per run. run.sh keeps it at ~/.cache/countersign-bench/bench-key.pem so that the
cached unique tokens below stay valid across runs. Every output above is made as before.

--unique N --unique-cache DIR: N distinct valid RS256 tokens for the unique-token load runs,
one per line, all of the same length (so wrk can seek to token i): token.good's header and
claims plus a distinct `jti`, `iat` = when the file was made, `exp` = 30 days later
(--unique-ttl). Signed on every core (multiprocessing). Cached in DIR as
unique-<fingerprint>.tokens + .json, the fingerprint covering the public key, kid, iss, aud,
sub and scope; reused while it holds >= N tokens that stay valid for at least another day,
extended (same iat/exp) when it holds fewer, remade when expiring or unreadable.
unique.json in OUTDIR names the file, N, the line length and the exp.
"""
import argparse
import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import sys
import time

import jwt  # pyjwt

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_uint(n: int) -> str:
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def load_or_make_key(path):
    """The RSA key in `path`, made (0600, PKCS#8 PEM) if missing; None: a fresh key."""
    if path:
        try:
            with open(path, "rb") as f:
                return serialization.load_pem_private_key(f.read(), password=None)
        except FileNotFoundError:
            pass
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        os.replace(tmp, path)
    return key


# ---------------------------------------------------------------- unique tokens
JTI_WIDTH = 9  # "u" + 9 digits: every token of a file has the same length
_W = {}


def _worker_init(priv_pem, header_b64, claims_json_prefix, claims_json_suffix):
    _W["key"] = serialization.load_pem_private_key(priv_pem, password=None)
    _W["h"] = header_b64
    _W["pre"], _W["suf"] = claims_json_prefix, claims_json_suffix


def _sign_range(bounds):
    lo, hi = bounds
    key, h, pre, suf = _W["key"], _W["h"], _W["pre"], _W["suf"]
    out = []
    for i in range(lo, hi):
        signing_input = f"{h}.{b64u((pre + f'u{i:0{JTI_WIDTH}d}' + suf).encode())}"
        sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        out.append(f"{signing_input}.{b64u(sig)}\n")
    return "".join(out)


def unique_tokens(a, key, header_b64, base, outdir):
    """Makes / reuses the cached file of a.unique distinct tokens; writes OUTDIR/unique.json."""
    pub_der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    fp_src = json.dumps({"pub": pub_der.hex(), "kid": a.kid, "iss": base["iss"], "aud": base["aud"],
                         "sub": base["sub"], "scope": base["scope"], "hdr": header_b64,
                         "jti_width": JTI_WIDTH}, sort_keys=True)
    fp = hashlib.sha256(fp_src.encode()).hexdigest()[:16]
    os.makedirs(a.unique_cache, exist_ok=True)
    tok_path = os.path.join(a.unique_cache, f"unique-{fp}.tokens")
    meta_path = os.path.join(a.unique_cache, f"unique-{fp}.json")
    now = int(time.time())
    meta = None
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        if (meta["exp"] - now < a.unique_min_left or os.path.getsize(tok_path) != meta["count"] * meta["line_len"]):
            meta = None  # expiring soon, or the file does not match its description
    except (OSError, ValueError, KeyError):
        meta = None
    if meta is None:
        meta = {"count": 0, "iat": now, "exp": now + a.unique_ttl, "line_len": None}
        open(tok_path, "w").close()
    have = meta["count"]
    if have < a.unique:
        # claims in token.good's order, then jti; iat/exp fixed for the whole file
        claims = {**base, "iat": meta["iat"], "exp": meta["exp"], "jti": "\0"}
        pre, suf = json.dumps(claims, separators=(",", ":")).split('"\\u0000"')
        pre, suf = pre + '"', '"' + suf
        priv_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        procs = os.cpu_count() or 1
        chunk = 2000
        ranges = [(lo, min(lo + chunk, a.unique)) for lo in range(have, a.unique, chunk)]
        print(f"[gen_tokens] signing {a.unique - have:,} unique tokens on {procs} processes "
              f"(cache {tok_path})", file=sys.stderr, flush=True)
        t0 = time.time()
        with multiprocessing.Pool(procs, _worker_init, (priv_pem, header_b64, pre, suf)) as pool, \
                open(tok_path, "a") as out:
            for n, text in enumerate(pool.imap(_sign_range, ranges), 1):
                ll = len(text) // (ranges[n - 1][1] - ranges[n - 1][0])
                if meta["line_len"] is None:
                    meta["line_len"] = ll
                if ll * (ranges[n - 1][1] - ranges[n - 1][0]) != len(text) or ll != meta["line_len"]:
                    raise SystemExit("unique tokens of unequal length")
                out.write(text)
                meta["count"] = ranges[n - 1][1]
                if n % 25 == 0:
                    print(f"[gen_tokens]   {meta['count']:,} / {a.unique:,} "
                          f"({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
        with open(meta_path + ".tmp", "w") as f:
            json.dump(meta, f)
        os.replace(meta_path + ".tmp", meta_path)
        print(f"[gen_tokens] {a.unique - have:,} tokens signed in {time.time() - t0:.0f} s",
              file=sys.stderr, flush=True)
    # self-check: the first and the last token used verify and differ
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    ll = meta["line_len"]
    with open(tok_path, "rb") as f:
        first = f.read(ll).decode().strip()
        f.seek((a.unique - 1) * ll)
        last = f.read(ll).decode().strip()
    for t in (first, last):
        jwt.decode(t, pub_pem, algorithms=["RS256"], audience=a.audience, issuer=a.issuer)
    if a.unique > 1 and first == last:
        raise SystemExit("unique tokens are not distinct")
    with open(os.path.join(outdir, "token.unique_last"), "w") as f:
        f.write(last)
    with open(os.path.join(outdir, "unique.json"), "w") as f:
        json.dump({"file": tok_path, "count": a.unique, "line_len": ll, "iat": meta["iat"],
                   "exp": meta["exp"], "cached_count": meta["count"]}, f)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--issuer", default="https://issuer.bench.local/")
    ap.add_argument("--audience", default="bench-api")
    ap.add_argument("--kid", default="bench-key-1")
    ap.add_argument("--ttl", type=int, default=3600)
    ap.add_argument("--key-file", help="reuse (or create) the RSA key in this PEM file")
    ap.add_argument("--unique", type=int, default=0, help="N distinct valid tokens (0: none)")
    ap.add_argument("--unique-cache", default=os.path.expanduser("~/.cache/countersign-bench"))
    ap.add_argument("--unique-ttl", type=int, default=30 * 86400, help="exp - iat of unique tokens")
    ap.add_argument("--unique-min-left", type=int, default=86400,
                    help="remake the cached unique tokens when they expire sooner than this")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)

    key = load_or_make_key(a.key_file)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    priv_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def write(name: str, data, mode: int = 0o644) -> None:
        path = os.path.join(a.outdir, name)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        os.chmod(path, mode)

    write("priv.pem", priv_pem, 0o600)
    write("pub.pem", pub_pem)

    nums = key.public_key().public_numbers()
    jwks = {
        "keys": [
            {
                "kty": "RSA",
                "kid": a.kid,
                "use": "sig",
                "alg": "RS256",
                "n": b64u_uint(nums.n),
                "e": b64u_uint(nums.e),
            }
        ]
    }
    write("jwks.json", json.dumps(jwks, indent=2) + "\n")

    now = int(time.time())
    base = {
        "iss": a.issuer,
        "aud": a.audience,
        "sub": "bench-user-42",
        "iat": now,
        "exp": now + a.ttl,
        "scope": "read:bench write:bench",
    }
    hdr = {"kid": a.kid}

    def sign(claims, k=key):
        return jwt.encode(claims, k, algorithm="RS256", headers=hdr)

    good = sign(base)
    write("token.good", good)
    gh, _gp, gs = good.split(".")
    tampered = b64u(json.dumps({**base, "sub": "bench-admin", "scope": "admin"},
                               separators=(",", ":")).encode())
    write("token.bad_sig", f"{gh}.{tampered}.{gs}")
    write("token.other_key", sign(base, other))
    write("token.expired", sign({**base, "iat": now - 7200, "exp": now - 3600}))
    write("token.wrong_aud", sign({**base, "aud": "some-other-api"}))
    write("token.wrong_iss", sign({**base, "iss": "https://evil.example/"}))
    # valid token without the bench scopes: the policy's `require.scopes` must refuse it
    write("token.no_scope", sign({**base, "scope": "profile"}))

    # alg=none: header.payload. (empty signature)
    h = b64u(json.dumps({"alg": "none", "typ": "JWT", "kid": a.kid}).encode())
    p = b64u(json.dumps(base).encode())
    write("token.alg_none", f"{h}.{p}.")

    # classic RS256->HS256 confusion: HMAC keyed with the public key PEM
    h = b64u(json.dumps({"alg": "HS256", "typ": "JWT", "kid": a.kid}).encode())
    sig = hmac.new(pub_pem, f"{h}.{p}".encode(), hashlib.sha256).digest()
    write("token.hs256_confusion", f"{h}.{p}.{b64u(sig)}")

    write(
        "claims.env",
        f"ISSUER='{a.issuer}'\nAUDIENCE='{a.audience}'\nKID='{a.kid}'\n",
    )

    if a.unique > 0:
        unique_tokens(a, key, good.split(".")[0], base, a.outdir)

    # self-check: the good token verifies with the public key + claims
    jwt.decode(
        open(os.path.join(a.outdir, "token.good")).read(),
        pub_pem,
        algorithms=["RS256"],
        audience=a.audience,
        issuer=a.issuer,
    )


if __name__ == "__main__":
    main()
