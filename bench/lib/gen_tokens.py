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
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import time

import jwt  # pyjwt

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_uint(n: int) -> str:
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--issuer", default="https://issuer.bench.local/")
    ap.add_argument("--audience", default="bench-api")
    ap.add_argument("--kid", default="bench-key-1")
    ap.add_argument("--ttl", type=int, default=3600)
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
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
