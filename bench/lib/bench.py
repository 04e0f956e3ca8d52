#!/usr/bin/env python3
"""Benchmark driver, called by bench/run.sh once all servers are up.

Adapted from the peers harness (shared/peers/lib/bench.py): same measurement, plus
policy checks for the countersign row and a ratio table (countersign / nginx,
countersign / haproxy-jwt).

1. functional check: every row gets the good token; every JWT row also gets a
   set of bad tokens (no header, bad signature, expired, wrong aud/iss,
   alg=none, HS256 key confusion) and must answer each with 4xx (401 expected);
   rows with a policy ("jwt+policy") must also refuse what the bench policy
   refuses (403). None of the refused requests may reach the upstream.
2. ROUNDS interleaved rounds: for each row in order, warm-up + measured load
   run with the good token, and (JWT rows) warm-up + measured run with a
   bad-signature token, then (JWT rows, when run.sh made unique tokens) warm-up +
   measured run with a different valid token per request ("unique"): each row
   walks through the token file with its own cursor, so no token is sent twice to
   the same server until the file is used up (the report counts any repeat).
3. writes results.jsonl into the work dir, the markdown report, and a .json with
   everything beside the report (re-render: bench.py --render X.json X.md).

Only the standard library; the load generator is wrk.
"""
import argparse
import datetime
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")

BAD_VARIANTS = [
    ("none", "no Authorization header"),
    ("bad_sig", "payload tampered, original signature"),
    ("other_key", "signed by another RSA key, same kid"),
    ("expired", "exp in the past"),
    ("wrong_aud", "aud mismatch"),
    ("wrong_iss", "iss mismatch"),
    ("alg_none", "alg=none, unsigned"),
    ("hs256_confusion", "HS256 keyed with the public PEM"),
]

# Extra checks for rows that evaluate the bench policy (bench/conf/policies/bench.toml):
# (name, method, path, token file or None, description). Each must be answered 403.
POLICY_CHECKS = [
    ("deny_rule", "GET", "/admin/x", "good", "GET /admin/x: rule bench-admin (deny)"),
    ("default_deny", "DELETE", "/", "good", "DELETE /: no rule matches, default deny"),
    ("no_scope", "GET", "/", "no_scope", "GET / with a token lacking read:bench (insufficient_scope)"),
]

# the rows the ratio table compares, (numerator, denominator)
RATIOS = [("countersign", "nginx"), ("countersign", "haproxy-jwt"), ("haproxy-jwt", "nginx")]


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------- helpers
def read_token(work, name):
    with open(os.path.join(work, f"token.{name}")) as f:
        return f.read().strip()


def is_jwt(row):
    return row["auth"] in ("jwt", "jwt+policy")


def http_get(port, path, token, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        conn.request(method, path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        return r.status, body
    except Exception as e:  # noqa: BLE001
        return 0, str(e).encode()
    finally:
        conn.close()


def cpu_snapshot(pgids):
    """Jiffies: (user+nice+system of the whole machine, steal, CPU of our server
    process groups). irq/softirq are left out of 'busy' on purpose."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iow, _irq, _sirq, steal = v
    ours, per = 0, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        pg = int(rest[2])  # field 5 = pgrp
        if pg in pgids:
            t = int(rest[11]) + int(rest[12])  # utime + stime (all threads)
            ours += t
            per[pg] = per.get(pg, 0) + t
    return {"busy": user + nice + system, "steal": steal, "ours": ours, "per": per}


def upstream_counters(port):
    """(accepts, requests) from the upstream nginx stub_status."""
    st, body = http_get(port, "/_bench_stub_status", None)
    if st != 200:
        return None
    m = re.search(rb"\n\s*(\d+)\s+(\d+)\s+(\d+)", body)
    return (int(m.group(1)), int(m.group(3))) if m else None


def jwks_fetches(work):
    try:
        with open(os.path.join(work, "jwks-access.log")) as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


# ---------------------------------------------------------------- generators
def run_wrk(a, url, token, duration, count_status, extra_env=None):
    env = dict(os.environ)
    env["BENCH_TOKEN"] = token or ""
    env["BENCH_COUNT_STATUS"] = "1" if count_status else "0"
    env.pop("BENCH_TOKEN_FILE", None)
    env.update(extra_env or {})
    cmd = ["nice", "-n", str(a.nice), "taskset", "-c", a.gen_cpus, "wrk", "-t", str(a.threads), "-c", str(a.conns),
           "-d", f"{duration}s", "--latency", "--timeout", "5s",
           "-s", os.path.join(HERE, "wrk.lua"), url]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = p.stdout.read().decode(errors="replace")
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    m = re.search(r"^BENCHJSON (.*)$", out, re.M)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed (rc={p.returncode}):\n{out}")
    r = json.loads(m.group(1))
    r["gen_cpu_s"] = ru.ru_utime + ru.ru_stime
    r["raw"] = out
    return r


# ---------------------------------------------------------------- phases
def functional_checks(a, rows, upstream_port):
    """Returns {row: {variant: status}} and list of problems."""
    matrix, problems = {}, []
    good = read_token(a.work, "good")
    for row in rows:
        res = {}
        st, body = http_get(row["port"], a.path, good)
        res["good"] = st
        if st != 200:
            problems.append(f"{row['name']}: good token got {st} ({body[:120]!r})")
        elif body.strip() != b"ok":
            problems.append(f"{row['name']}: unexpected body {body[:80]!r}")
        if is_jwt(row) and a.unique:
            # one token of the unique-token file (its last one) must be accepted too
            st, body = http_get(row["port"], a.path, read_token(a.work, "unique_last"))
            res["unique"] = st
            if st != 200:
                problems.append(f"{row['name']}: unique-token file's last token got {st} ({body[:120]!r})")
        if is_jwt(row):
            u0 = upstream_counters(upstream_port)
            for v, _ in BAD_VARIANTS:
                tok = None if v == "none" else read_token(a.work, v)
                st, body = http_get(row["port"], a.path, tok)
                res[v] = st
                if not 400 <= st < 500:
                    problems.append(f"{row['name']}: BROKEN - bad token '{v}' got {st}")
            if row["auth"] == "jwt+policy":
                for v, method, path, tok, _ in POLICY_CHECKS:
                    st, body = http_get(row["port"], path, read_token(a.work, tok), method)
                    res[v] = st
                    if st != 403:
                        problems.append(f"{row['name']}: BROKEN - policy check '{v}' got {st} "
                                        f"({body[:120]!r}), want 403")
            u1 = upstream_counters(upstream_port)
            if u0 and u1:
                # the 'after' stub_status request itself is one request
                leaked = u1[1] - u0[1] - 1
                res["reached_upstream"] = leaked
                if leaked:
                    problems.append(f"{row['name']}: BROKEN - {leaked} refused requests reached the upstream")
        matrix[row["name"]] = res
    return matrix, problems


def unique_env(a, offset, duration):
    """wrk environment of a unique-token run starting at token `offset`."""
    u = a.unique
    load = min(u["count"], int(duration * a.unique_load_rps) + a.conns)
    return {"BENCH_TOKEN_FILE": u["file"], "BENCH_TOKEN_LINE_LEN": str(u["line_len"]),
            "BENCH_TOKEN_COUNT": str(u["count"]), "BENCH_TOKEN_OFFSET": str(offset % u["count"]),
            "BENCH_TOKEN_LOAD": str(load), "BENCH_WRK_THREADS": str(a.threads)}


def one_run(a, row, kind, rnd, pgids, upstream_port, upstream_pgid, cursors=None):
    extra_warm = extra = None
    if kind == "unique":
        token = None
        cur = cursors.get(row["name"], 0)  # tokens this row's server has been sent so far
    if kind == "bad":
        token = read_token(a.work, "bad_sig")
    elif kind == "unique":
        pass
    elif is_jwt(row) or a.send_token_all:
        token = read_token(a.work, "good")
    else:
        token = None
    count_status = (kind == "bad") or a.count_status_all
    url = f"http://127.0.0.1:{row['port']}{a.path}"
    gen = run_wrk
    if a.warmup > 0:
        if kind == "unique":
            w = gen(a, url, token, a.warmup, False, unique_env(a, cur, a.warmup))
            cur += w["tokens_used"]
        else:
            gen(a, url, token, a.warmup, False)
    if kind == "unique":
        extra = unique_env(a, cur, a.duration)
    la = loadavg()
    u0 = upstream_counters(upstream_port)
    c0 = cpu_snapshot(pgids)
    t0 = time.monotonic()
    r = gen(a, url, token, a.duration, count_status, extra)
    wall = time.monotonic() - t0
    c1 = cpu_snapshot(pgids)
    u1 = upstream_counters(upstream_port)
    busy = (c1["busy"] - c0["busy"]) / CLK_TCK
    ours = (c1["ours"] - c0["ours"]) / CLK_TCK
    r.pop("raw", None)
    r.update({
        "row": row["name"], "kind": kind, "round": rnd, "loadavg1": la, "wall_s": wall,
        "server_cpu_s": ours,
        "proxy_cpu_s": (c1["per"].get(row["pgid"], 0) - c0["per"].get(row["pgid"], 0)) / CLK_TCK,
        "upstream_cpu_s": (c1["per"].get(upstream_pgid, 0) - c0["per"].get(upstream_pgid, 0)) / CLK_TCK,
        "foreign_cpu_s": max(0.0, busy - ours - r["gen_cpu_s"]),
        "steal_s": (c1["steal"] - c0["steal"]) / CLK_TCK,
        # the 'after' stub_status request itself is one connection + one request
        "upstream_new_conns": (u1[0] - u0[0] - 1) if u0 and u1 else None,
        "upstream_requests": (u1[1] - u0[1] - 1) if u0 and u1 else None,
        "ts": datetime.datetime.now().isoformat(timespec="seconds"),
    })
    if kind == "unique":
        n, used = a.unique["count"], r["tokens_used"]
        r.update({
            "token_offset": cur,  # tokens sent to this server before this measured run
            "tokens_distinct": min(used, r["tokens_loaded"], n),
            # tokens this server had never been sent before in this benchmark
            "tokens_first_use": max(0, min(cur + used, n) - cur),
        })
        r["tokens_repeated"] = used - r["tokens_first_use"]
        cursors[row["name"]] = cur + used
    return r


def load_problems(results):
    """Bad-token load runs must be refused (4xx) and never reach the upstream."""
    problems = []
    for r in results:
        if r["kind"] == "unique" and r["err_status"]:
            problems.append(f"{r['row']}: BROKEN - round {r['round']} unique-token run got "
                            f"{r['err_status']} non-2xx/3xx responses")
        if r["kind"] != "bad":
            continue
        wrong = sum(v for k, v in r["codes"].items() if not k.startswith("4"))
        if wrong:
            problems.append(f"{r['row']}: BROKEN - round {r['round']} bad-token run got {wrong} non-4xx responses")
        if r.get("upstream_requests"):
            problems.append(f"{r['row']}: BROKEN - round {r['round']} bad-token run let "
                            f"{r['upstream_requests']} requests reach the upstream")
    return problems


def fmt_codes(r):
    if r["codes"]:
        return " ".join(f"{k}:{v}" for k, v in sorted(r["codes"].items()))
    return f"non-2xx/3xx:{r['err_status']}"


# ---------------------------------------------------------------- report
def med(xs):
    return statistics.median(xs) if xs else float("nan")


def cmd_out(cmd):
    try:
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0] if (p.stdout + p.stderr).strip() else "?"
    except Exception:  # noqa: BLE001
        return "?"


def cpu_per_req(r):
    return r["proxy_cpu_s"] / r["requests"] * 1e6 if r["requests"] else float("nan")


def noise_pct(r):
    return (r["foreign_cpu_s"] + r["steal_s"]) / r["wall_s"] * 100


QUIET_PCT = 10  # a run is "quiet" when other processes + steal used < 10% of one core


def ratio_lines(rows, by):
    """The headline: countersign against nginx and haproxy-jwt.

    Rows of one round ran a minute apart under similar background load, so the median of
    per-round req/s ratios cancels much of the machine's drift; the ratio of the two
    medians does not (each median may come from a different, differently noisy round) and
    is shown only for reference. CPU µs/req barely moves with background load. "quiet
    rounds" uses only the rounds in which both runs were quiet."""
    names = {r["name"] for r in rows}
    L = []
    for kind in ("good", "bad", "unique"):
        for num, den in RATIOS:
            if num not in names or den not in names:
                continue
            if kind != "good" and "nginx" in (num, den):
                continue  # nginx has no auth, so no bad-token run to compare with
            rn, rd = by.get((num, kind)), by.get((den, kind))
            if not rn or not rd:
                continue
            m_rps = med([r["rps"] for r in rn]) / med([r["rps"] for r in rd])
            den_by_round = {r["round"]: r for r in rd}
            pairs = [(r, den_by_round[r["round"]]) for r in rn if r["round"] in den_by_round]
            pr = [x["rps"] / y["rps"] for x, y in pairs if y["rps"]]
            qr = [x["rps"] / y["rps"] for x, y in pairs
                  if y["rps"] and noise_pct(x) < QUIET_PCT and noise_pct(y) < QUIET_PCT]
            quiet = f"{med(qr):.2f} ({len(qr)})" if qr else "— (0)"
            m_cpu = med([cpu_per_req(r) for r in rn]) / med([cpu_per_req(r) for r in rd])
            p50 = med([r["p50_us"] for r in rn]) / med([r["p50_us"] for r in rd])
            p99 = med([r["p99_us"] for r in rn]) / med([r["p99_us"] for r in rd])
            tok = {"good": "good token", "bad": "tampered token (401)",
                   "unique": "unique tokens (a new valid token per request)"}[kind]
            L.append(f"| {num} / {den} | {tok} | **{med(pr):.2f}** ({min(pr):.2f}–{max(pr):.2f}) | "
                     f"{quiet} | {m_rps:.2f} | {m_cpu:.2f} | {p50:.2f} | {p99:.2f} |")
    if not L:
        return []
    head = ["## Ratios", "",
            "| pair | token | req/s ratio, median of per-round ratios (min–max) | "
            f"req/s ratio in quiet rounds (< {QUIET_PCT}% noise): median (rounds) | "
            "ratio of median req/s | CPU µs/req ratio | p50 ratio | p99 ratio |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    tail = ["",
            "req/s ratio > 1: the first row is faster. CPU µs/req ratio < 1: the first row spends "
            "less CPU per request. Latency ratios < 1: the first row answers faster. The per-round "
            "ratio compares runs made a minute apart, so it cancels most background drift; the "
            "ratio of medians can pair a quiet run with a noisy one. "
            "Issue 2's target is countersign / nginx ≥ 0.8 on req/s.", ""]
    return head + L + tail


def unique_lines(a, results):
    """Per unique-token run: tokens sent vs requests, repeats, requests that reached the upstream."""
    us = [r for r in results if r["kind"] == "unique"]
    if not us:
        return []
    u = a.unique
    L = ["", f"**Unique-token runs**: token file of {u['count']:,} distinct valid tokens (same key, "
         f"header and claims as the good token plus a distinct `jti`; exp "
         f"{datetime.datetime.fromtimestamp(u['exp'], datetime.timezone.utc):%Y-%m-%d}); each row "
         "walks through it with its own cursor across warm-ups, measured runs and rounds. "
         "`first use` = tokens that server had never been sent before in this benchmark; "
         "`repeated` = tokens it had (a repeat within 10 min may be a countersign cache hit). "
         "`reached upstream` should equal `requests` (every token accepted; the count includes "
         "the few requests still in flight when the window closed).", "",
         "| round | row | requests | reached upstream | tokens sent (measured run) | distinct | "
         "first use | repeated | tokens sent to the server before this run |",
         "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in us:
        L.append(f"| {r['round']} | {r['row']} | {r['requests']:,} | {r.get('upstream_requests') or 0:,} | "
                 f"{r['tokens_used']:,} | {r['tokens_distinct']:,} | {r['tokens_first_use']:,} | "
                 f"{r['tokens_repeated']:,} | {r['token_offset']:,} |")
    rep = sum(r["tokens_repeated"] for r in us)
    L.append("")
    L.append("Repeated tokens: " + ("none — every request of every unique-token run carried a token "
                                    "its server had never seen." if not rep else
                                    f"{rep:,} (raise UNIQUE_TOKENS)."))
    L.append("")
    return L


def report(a, rows, matrix, problems, results, started, finished, jwks):
    by = {}
    for r in results:
        by.setdefault((r["row"], r["kind"]), []).append(r)
    direct = by.get(("direct", "good"))
    direct_rps = med([r["rps"] for r in direct]) if direct else None

    L = []
    L.append(f"# Countersign benchmark — {started:%Y-%m-%d %H:%M} UTC")
    L.append("")
    L.append(f"Command: `{getattr(a, 'env', '')} {getattr(a, 'command', 'bench/run.sh')}`".replace("`  ", "`"))
    L.append("")
    L.append(f"Load: `wrk` {a.threads} thread, {a.conns} connections, "
             f"{a.duration} s measured after {a.warmup} s warm-up per run, GET {a.path}; "
             f"{a.rounds} interleaved rounds (row order {' → '.join(x['name'] for x in rows)}, "
             f"JWT rows followed by their bad-token run, whose token is the good one with a tampered "
             f"payload" + (", and their unique-token run, a different valid token per request" if getattr(a, "unique", None) else "")
             + "). Medians over rounds; min–max is the per-round spread of req/s.")
    L.append(f"CPU placement (taskset): load generator on cpu {a.gen_cpus}; proxy under test on cpu "
             f"{a.srv_cpus}; upstream nginx on cpu {a.upstream_cpus}. Every server: 1 worker process/"
             f"thread (nginx worker_processes 1, HAProxy nbthread 1, countersign threads = 1). "
             f"Servers and generator run at nice {a.nice} (other jobs on the machine at their own).")
    L.append(f"Run: {started:%H:%M:%S}–{finished:%H:%M:%S} UTC; "
             f"loadavg(1m) seen at run starts: {min(r['loadavg1'] for r in results):.2f}–"
             f"{max(r['loadavg1'] for r in results):.2f}.")
    L.append("")
    if problems:
        L.append("**Problems (the numbers below are not a valid comparison):** " + "; ".join(problems))
        L.append("")
    L.extend(ratio_lines(rows, by))
    L.append("## Rows")
    L.append("")
    L.append("| row | auth | token | req/s (median) | req/s min–max | spread | vs direct | "
             "p50 ms | p99 ms | proxy CPU µs/req | status codes seen (all rounds) | upstream conns opened / reqs reaching upstream per run | noise % (max): foreign / steal | quietest run: req/s (foreign+steal %) |")
    L.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|")
    for row in rows:
        for kind in ("good", "bad", "unique"):
            rs = by.get((row["name"], kind))
            if not rs:
                continue
            rps = [r["rps"] for r in rs]
            m = med(rps)
            spread = (max(rps) - min(rps)) / m * 100 if m else 0
            ratio = f"{m / direct_rps:.2f}" if direct_rps and kind == "good" else "—"
            if kind != "good" and direct_rps:
                ratio = f"({m / direct_rps:.2f})"
            codes = {}
            errs = 0
            for r in rs:
                for k, v in r["codes"].items():
                    codes[k] = codes.get(k, 0) + v
                errs += r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
            if codes:
                cs = ", ".join(f"{k}×{v}" for k, v in sorted(codes.items()))
            else:
                ns = sum(r["err_status"] for r in rs)
                cs = "2xx/3xx only (wrk: 0 non-2xx/3xx)" if ns == 0 else f"{ns} responses ≥400 (!)"
            if errs:
                cs += f"; socket errors {errs}"
            fpct = max(r["foreign_cpu_s"] / r["wall_s"] * 100 for r in rs)
            spct = max(r["steal_s"] / r["wall_s"] * 100 for r in rs)
            uc = [r["upstream_new_conns"] for r in rs if r.get("upstream_new_conns") is not None]
            ur = [r["upstream_requests"] for r in rs if r.get("upstream_requests") is not None]
            up = f"{max(uc)} / {med(ur):,.0f}" if uc else "?"
            cpr = med([cpu_per_req(r) for r in rs])
            q = min(rs, key=noise_pct)
            quiet = f"{q['rps']:,.0f} ({noise_pct(q):.0f}%)"
            tok = {"good": "good", "bad": "tampered", "unique": "unique"}[kind]
            if kind == "good" and not is_jwt(row) and not a.send_token_all:
                tok = "(none)"
            L.append(f"| {row['name']} | {row['auth']} | {tok} | {m:,.0f} | {min(rps):,.0f}–{max(rps):,.0f} | "
                     f"{spread:.0f}% | {ratio} | {med([r['p50_us'] for r in rs]) / 1000:.2f} | "
                     f"{med([r['p99_us'] for r in rs]) / 1000:.2f} | {cpr:.1f} | {cs} | {up} | {fpct:.0f} / {spct:.0f} | {quiet} |")
    L.append("")
    L.append("`upstream conns opened` = max over rounds of new TCP connections the upstream accepted "
             "during a measured run (from its stub_status; direct = the wrk connections). Tens of new "
             "connections against ~10^5 requests still means keep-alive reuse: a proxy drops the upstream "
             "connections of requests in flight when the warm-up's clients disconnect and refills its "
             "pool at the start of the measured run; a proxy without reuse would show one per request. "
             "`reqs reaching upstream` = median; for bad-token runs it must be 0. ")
    L.extend(unique_lines(a, results))
    L.append(f"JWKS fetches from the upstream: {jwks[0]} during start-up + enforcement checks, "
             f"{jwks[1]} during all load runs.")
    L.append("")
    L.append("`proxy CPU µs/req` = CPU time (user+sys, all threads/processes of that server's process "
             "group, from /proc) ÷ requests completed, median over rounds; for `direct` it is the upstream "
             "nginx itself. Less sensitive to other load on the machine than req/s (kernel loopback work "
             "is charged to whichever process triggers it, so treat it as approximate).")
    L.append("")
    L.append("`vs direct` = median req/s ÷ direct's median req/s (bad-token runs in parentheses). "
             "`foreign CPU %` = CPU time used during the measured window by processes other than "
             "the generator and the benchmark's own servers (e.g. cargo builds running beside the benchmark), "
             "as % of one core (the machine has 2). It shares caches/SMT siblings with the pinned "
             "servers and is the main source of run-to-run noise; 0–5% means a quiet machine. `steal` = "
             "time the hypervisor ran something else on our vCPUs (/proc/stat steal), as % of one core.")
    L.append("")
    L.append("## Auth enforcement check (single requests before the load runs)")
    L.append("")
    auth_rows = [r for r in rows if is_jwt(r)]
    if auth_rows:
        hdr = ["good"] + (["unique"] if getattr(a, "unique", None) else []) + [v for v, _ in BAD_VARIANTS]
        if any(r["auth"] == "jwt+policy" for r in auth_rows):
            hdr += [v for v, *_ in POLICY_CHECKS]
        hdr.append("reached_upstream")
        L.append("| row | " + " | ".join(hdr) + " |")
        L.append("|---|" + "---|" * len(hdr))
        for row in auth_rows:
            res = matrix[row["name"]]
            L.append(f"| {row['name']} | " + " | ".join(str(res.get(h, "—")) for h in hdr) + " |")
        L.append("")
        L.append("Bad variants: " + "; ".join(f"`{v}` = {d}" for v, d in BAD_VARIANTS) + ".")
        L.append("Policy checks (rows with a policy, must be 403): "
                 + "; ".join(f"`{v}` = {d}" for v, _m, _p, _t, d in POLICY_CHECKS) + ".")
        L.append("`reached_upstream` = requests of those refused checks that reached the upstream (must be 0).")
    plain = [r["name"] for r in rows if not is_jwt(r)]
    if plain:
        L.append(f"Rows without auth ({', '.join(plain)}) answered the good request with: "
                 + ", ".join(f"{n} {matrix[n]['good']}" for n in plain) + ".")
    L.append("")
    L.append("Problems: " + ("none" if not problems else "; ".join(problems)))
    L.append("")
    L.append("## Per-round raw numbers")
    L.append("")
    L.append("| round | row | token | req/s | p50 ms | p99 ms | p99.9 ms | socket errs | upstream conns+ | "
             "proxy CPU s | upstream CPU s | gen CPU s | foreign CPU s | steal s | loadavg1 |")
    L.append("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        L.append(f"| {r['round']} | {r['row']} | {r['kind']} | {r['rps']:,.0f} | {r['p50_us'] / 1000:.2f} | "
                 f"{r['p99_us'] / 1000:.2f} | {r['p999_us'] / 1000:.2f} | "
                 f"{r['err_connect'] + r['err_read'] + r['err_write'] + r['err_timeout']} | "
                 f"{r.get('upstream_new_conns')} | {r['proxy_cpu_s']:.2f} | {r['upstream_cpu_s']:.2f} | "
                 f"{r['gen_cpu_s']:.1f} | {r['foreign_cpu_s']:.1f} | {r['steal_s']:.1f} | {r['loadavg1']:.2f} |")
    L.append("")
    L.append("## Environment")
    L.append("")
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except Exception:  # noqa: BLE001
        pass
    L.append(f"- host: {platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu})")
    for label, c in [("wrk", "wrk -v 2>&1 | head -1"), ("nginx", "nginx -v"),
                     ("haproxy", "haproxy -v | head -1")]:
        L.append(f"- {label}: {cmd_out(c)}")
    for row in rows:
        L.append(f"- row `{row['name']}`: {row.get('desc', '')}")
    L.append("")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------- main
def render_saved(state_path, out):
    """Re-render a report from the .json a run saved next to its .md."""
    with open(state_path) as f:
        st = json.load(f)
    a = argparse.Namespace(**st["args"])
    md = report(a, st["rows"], st["matrix"], st["problems"], st["results"],
                datetime.datetime.fromisoformat(st["started"]),
                datetime.datetime.fromisoformat(st["finished"]), tuple(st["jwks"]))
    with open(out, "w") as f:
        f.write(md)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--render":
        render_saved(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(epilog="or: bench.py --render RESULTS.json OUT.md")
    ap.add_argument("--rows", required=True, help="rows.json written by run.sh")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True, help="markdown report path (a .json with all data goes beside it)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gen-cpus", default="0")
    ap.add_argument("--srv-cpus", default="1")
    ap.add_argument("--upstream-cpus", default="1")
    ap.add_argument("--path", default="/")
    ap.add_argument("--bad-runs", type=int, default=1)
    ap.add_argument("--send-token-all", type=int, default=1)
    ap.add_argument("--count-status-all", type=int, default=0)
    ap.add_argument("--allow-broken", type=int, default=0)
    ap.add_argument("--nice", type=int, default=0)
    ap.add_argument("--unique-runs", type=int, default=0,
                    help="1: JWT rows also get a unique-token run (needs WORK/unique.json)")
    ap.add_argument("--unique-load-rps", type=int, default=40000,
                    help="tokens a wrk run loads = its seconds x this (+ conns), at most the file's")
    ap.add_argument("--command", default="bench/run.sh", help="shown in the report")
    ap.add_argument("--env", default="", help="knobs shown in the report")
    a = ap.parse_args()

    with open(a.rows) as f:
        cfg = json.load(f)
    rows, pgids = cfg["rows"], set(cfg["pgids"])
    a.unique = None
    if a.unique_runs:
        with open(os.path.join(a.work, "unique.json")) as f:
            a.unique = json.load(f)

    started = datetime.datetime.now(datetime.timezone.utc)
    matrix, problems = functional_checks(a, rows, cfg["upstream_port"])
    log("== auth enforcement check (status codes) ==")
    for name, res in matrix.items():
        log(f"  {name:14s} " + "  ".join(f"{k}={v}" for k, v in res.items()))
    for p in problems:
        log("  PROBLEM:", p)
    if problems and not a.allow_broken:
        log("refusing to benchmark a broken setup (ALLOW_BROKEN=1 overrides)")
        sys.exit(2)

    jwks_after_checks = jwks_fetches(a.work)
    parent = os.getppid()
    results = []
    cursors = {}
    jl = open(os.path.join(a.work, "results.jsonl"), "w")
    for rnd in range(1, a.rounds + 1):
        log(f"== round {rnd}/{a.rounds} ==")
        for row in rows:
            kinds = (["good"] + (["bad"] if is_jwt(row) and a.bad_runs else [])
                     + (["unique"] if is_jwt(row) and a.unique else []))
            for kind in kinds:
                if os.getppid() != parent:  # run.sh is gone (killed): stop too
                    log("parent run.sh exited; stopping")
                    sys.exit(3)
                r = one_run(a, row, kind, rnd, pgids, cfg["upstream_port"], cfg["upstream_pgid"], cursors)
                results.append(r)
                jl.write(json.dumps(r) + "\n")
                jl.flush()
                log(f"  {row['name']:14s} {kind:6s} {r['rps']:>10,.0f} req/s  p50 {r['p50_us'] / 1000:6.2f} ms"
                    f"  p99 {r['p99_us'] / 1000:6.2f} ms  codes[{fmt_codes(r)}]"
                    f"  proxy-cpu {r['proxy_cpu_s'] / max(r['requests'], 1) * 1e6:.0f}us/req"
                    f"  upstream conns+{r['upstream_new_conns']} reqs+{r['upstream_requests']}"
                    f"  foreign-cpu {r['foreign_cpu_s']:.1f}s steal {r['steal_s']:.1f}s"
                    + (f"  tokens {r['tokens_used']:,} (first use {r['tokens_first_use']:,})"
                       if kind == "unique" else ""))
    jl.close()
    problems += load_problems(results)
    finished = datetime.datetime.now(datetime.timezone.utc)
    jwks = (jwks_after_checks, jwks_fetches(a.work) - jwks_after_checks)
    md = report(a, rows, matrix, problems, results, started, finished, jwks)
    with open(a.out, "w") as f:
        f.write(md)
    state = {"args": vars(a), "rows": rows, "matrix": matrix, "problems": problems,
             "results": results, "started": started.isoformat(), "finished": finished.isoformat(),
             "jwks": list(jwks)}
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(state, f, indent=1)
    log(f"== report written to {a.out} ==")


if __name__ == "__main__":
    main()
