#!/usr/bin/env python3
"""Helpers for bench/pending-scale.sh (standard library only).

  create HOSTPORTS PREFIX TOKEN N [THREADS]   POST N requests with Prefer: respond-async,
                                              round-robin over HOSTPORTS (comma separated);
                                              prints "created N failed F secs S"
  walk HOSTPORT TOKEN [STATUS] [LIMIT]        GET /approvals pages with the cursor; prints
                                              JSON {pages, ids, unique, first_page_ms, walk_ms,
                                              by_status}
  hold HOSTPORTS PREFIX TOKEN N SECS          opens N connections (round-robin), sends one
                                              POST on each and keeps it open, unanswered, for
                                              SECS (held callers); prints "opened N answered A"
                                              once all are sent, and again at the end
"""
import asyncio
import http.client
import json
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

_local = threading.local()


def _conn(hostport):
    c = getattr(_local, "c", None)
    if c is None:
        c = _local.c = {}
    if hostport not in c:
        h, p = hostport.rsplit(":", 1)
        c[hostport] = http.client.HTTPConnection(h, int(p), timeout=30)
    return c[hostport]


def create(hostports, prefix, token, n, threads=32):
    hps = hostports.split(",")

    def one(i):
        hp = hps[i % len(hps)]
        for attempt in range(3):
            try:
                c = _conn(hp)
                c.request("POST", f"{prefix}{i}", body=b'{"i":%d}' % i,
                          headers={"Authorization": f"Bearer {token}",
                                   "Prefer": "respond-async",
                                   "Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                return r.status
            except Exception:
                _local.c.pop(hp, None)
        return 0

    t0 = time.monotonic()
    with ThreadPoolExecutor(threads) as ex:
        codes = list(ex.map(one, range(n)))
    secs = time.monotonic() - t0
    ok = sum(1 for c in codes if c == 202)
    bad = {}
    for c in codes:
        if c != 202:
            bad[c] = bad.get(c, 0) + 1
    print(f"created {ok} failed {n - ok} secs {secs:.1f} other {json.dumps(bad)}")


def walk(hostport, token, status="all", limit=500):
    h, p = hostport.rsplit(":", 1)
    c = http.client.HTTPConnection(h, int(p), timeout=60)
    cursor = None
    pages = 0
    ids = []
    by_status = {}
    first_ms = None
    t0 = time.monotonic()
    while True:
        q = {"limit": str(limit), "status": status}
        if cursor:
            q["cursor"] = cursor
        ts = time.monotonic()
        c.request("GET", "/approvals?" + urllib.parse.urlencode(q),
                  headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            sys.exit(f"GET /approvals answered {r.status}: {body[:300]!r}")
        doc = json.loads(body)
        if first_ms is None:
            first_ms = (time.monotonic() - ts) * 1000
        pages += 1
        for a in doc["approvals"]:
            ids.append(a["approval_id"])
            by_status[a["status"]] = by_status.get(a["status"], 0) + 1
        cursor = doc.get("next_cursor")
        if not cursor:
            break
    walk_ms = (time.monotonic() - t0) * 1000
    print(json.dumps({"pages": pages, "ids": len(ids), "unique": len(set(ids)),
                      "first_page_ms": round(first_ms, 1), "walk_ms": round(walk_ms, 1),
                      "by_status": by_status}))


async def _hold(hostports, prefix, token, n, secs):
    hps = hostports.split(",")
    conns = []
    answered = 0

    async def one(i):
        h, p = hps[i % len(hps)].rsplit(":", 1)
        r, w = await asyncio.open_connection(h, int(p))
        body = b'{"i":%d}' % i
        w.write((f"POST {prefix}{i} HTTP/1.1\r\nHost: {h}:{p}\r\n"
                 f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        await w.drain()
        conns.append((r, w))

    for start in range(0, n, 200):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + 200))))
    print(f"opened {len(conns)} answered 0", flush=True)
    await asyncio.sleep(secs)
    for r, w in conns:
        if r.at_eof() or len(r._buffer):  # an answer came back: not held any more
            answered += 1
        w.close()
    print(f"opened {len(conns)} answered {answered}", flush=True)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "create":
        create(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
               int(sys.argv[6]) if len(sys.argv) > 6 else 32)
    elif cmd == "walk":
        walk(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "all",
             int(sys.argv[5]) if len(sys.argv) > 5 else 500)
    elif cmd == "hold":
        asyncio.run(_hold(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
                          float(sys.argv[6])))
    else:
        sys.exit(__doc__)
