#!/usr/bin/env python3
"""airlock benchmark driver: airlock beside direct, mitmproxy and Squid, one run.

Started by `bench/run` (which installs the tools and builds airlock). Starts an
nginx upstream and every peer on loopback, runs the same workloads through
each, and writes results.json, PNG charts and BENCHMARKS.md.

Usage: bench/run [--smoke] [--reps N] [--duration S] [--size-mib N]
                 [--idle N] [--peers a,b,c] [--out DIR] [--no-report]
"""

import argparse
import datetime
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

DOMAIN = "bench.test"
HOST = DOMAIN
PLACEHOLDER = "miosa-tok-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
REAL = "real-secret-value-123"
BODY = b"01234567890123456789"  # 20 bytes

PORTS = {
    "nginx": 18443,
    "nginx_h1": 18444,
    "airlock": 18080,
    "mitmproxy": 18081,
    "ceiling": 18083,
    "squid_bump": 13128,
    "squid_tunnel": 13129,
}
UP_PORT = PORTS["nginx"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

PEER_ORDER = ["direct", "airlock", "ceiling", "squid_bump", "mitmproxy", "squid_tunnel"]
LABELS = {
    "direct": "direct",
    "airlock": "airlock",
    "ceiling": "ceiling (bare interceptor)",
    "squid_bump": "Squid bump",
    "mitmproxy": "mitmproxy",
    "squid_tunnel": "Squid plain tunnel",
}
PROXIES = [p for p in PEER_ORDER if p != "direct"]
INTERCEPTING = ["airlock", "ceiling", "squid_bump", "mitmproxy"]

FAILURES = []  # airlock correctness failures: make the run exit non-zero
NOTES = []  # other peers' problems, recorded in the report


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def tool_version(cmd):
    try:
        out = subprocess.run(cmd, text=True, capture_output=True, timeout=20)
        text = (out.stdout + out.stderr).strip().splitlines()
        return text[0].strip() if text else "?"
    except Exception as exc:  # noqa: BLE001
        return f"unavailable ({exc})"


# ---------------------------------------------------------------- /proc metrics


def proc_tree(pid):
    """pid and all its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid):
    """utime+stime of the process tree (children reaped count via cutime/cstime)."""
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after ')': state=0, ppid=1, ... utime=11, stime=12, cutime=13, cstime=14
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / CLK_TCK


def rss_kib(pid):
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KIB
        except OSError:
            continue
    return total


def rss_split(pid):
    """Private (anonymous) vs file-backed (binary, libraries) RSS of the main process."""
    out = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(("RssAnon", "RssFile", "RssShmem")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


class RssSampler:
    """Samples a process tree's RSS every 25 ms; keeps the peak."""

    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self._stop.wait(0.025)

    def __enter__(self):
        self.peak = rss_kib(self.pid)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


# ---------------------------------------------------------------- statistics


def summarize(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def med(stat):
    return None if stat is None else stat["median"]


# ---------------------------------------------------------------- setup


def openssl(*args, cwd):
    run(["openssl", *args], cwd=cwd)


def make_ca(dirpath, cn):
    dirpath.mkdir(parents=True, exist_ok=True)
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca-key.pem", cwd=dirpath)
    openssl(
        "req", "-x509", "-new", "-key", "ca-key.pem", "-out", "ca.pem", "-days", "30",
        "-subj", f"/CN={cn}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=dirpath,
    )


def make_certs(work):
    """Bench CA and the nginx leaf (rustls refuses a CA used as a server cert)."""
    d = work / "pki"
    make_ca(d, "airlock bench upstream CA")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "leaf-key.pem", cwd=d)
    openssl("req", "-new", "-key", "leaf-key.pem", "-out", "leaf.csr", "-subj", f"/CN={DOMAIN}", cwd=d)
    (d / "leaf.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{DOMAIN},DNS:*.{DOMAIN}\n"
    )
    openssl(
        "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
        "-CAcreateserial", "-out", "leaf.pem", "-days", "30", "-extfile", "leaf.ext",
        cwd=d,
    )
    return d


class Proc:
    def __init__(self, name, popen, logpath):
        self.name, self.popen, self.logpath = name, popen, logpath

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def stop(self):
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)

    def log_tail(self, n=20):
        try:
            return "\n".join(Path(self.logpath).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def spawn(name, cmd, work, env=None, cwd=None, stdout=None):
    logpath = work / f"{name}.log"
    logf = open(logpath, "w")
    popen = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=stdout or logf,
        stderr=logf,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        start_new_session=True,
    )
    return Proc(name, popen, logpath)


def wait_port(port, proc=None, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open in {timeout}s")


def start_nginx(work, pki, size):
    d = work / "nginx"
    (d / "www").mkdir(parents=True, exist_ok=True)
    shm = Path("/dev/shm") / f"airlock-bench-{os.getpid()}"
    (shm / "body").mkdir(parents=True, exist_ok=True)
    (shm / "upload").mkdir(parents=True, exist_ok=True)
    big = d / "www" / "big.bin"
    with open(big, "wb") as f:  # sparse: nginx reads zeros without disk I/O
        f.truncate(size)
    conf = d / "nginx.conf"
    conf.write_text(
        f"""
user root;
worker_processes 1;
worker_rlimit_nofile 19000;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 18000; }}
http {{
  access_log off;
  # What the upstream thinks of the credential it got. vault-tok-1 (the
  # vault's first token) is "expired": the 401 storm of the token-path test.
  map $http_authorization $auth_state {{
    default bad;
    "Bearer {REAL}" ok;
    "Bearer vault-tok-1" expired;
    "~^Bearer vault-tok-[0-9]+$" ok;
    # The scaling workload's tenants: each has a token of its own.
    "~^Bearer scale-tok-[0-9a-z-]+$" ok;
  }}
  client_body_temp_path {shm}/body;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  server {{
    listen 127.0.0.1:{UP_PORT} ssl http2;
    # The same server without h2 (ALPN offers http/1.1 only): see start_airlock.
    listen 127.0.0.1:{PORTS["nginx_h1"]} ssl;
    server_name {DOMAIN} *.{DOMAIN};
    ssl_certificate {pki}/leaf.pem;
    ssl_certificate_key {pki}/leaf-key.pem;
    ssl_session_cache shared:SSL:10m;
    root {d}/www;
    default_type text/plain;
    # A failed swap shows up as 403 in every client's status counts.
    if ($auth_state = expired) {{ return 401 "token expired\\n"; }}
    if ($auth_state = bad) {{ return 403 "swap missing\\n"; }}
    location = / {{ return 200 "{BODY.decode()}"; }}
    location = /big {{ try_files /big.bin =404; }}
    location = /upload {{
      client_max_body_size 0;
      dav_methods PUT;
      alias {shm}/upload/sink;
    }}
  }}
}}
"""
    )
    proc = spawn("nginx", ["nginx", "-c", str(conf)], work)
    wait_port(UP_PORT, proc)
    proc.shm = shm
    return proc


H2_HOST = f"h2.{DOMAIN}"


def start_airlock(work, pki, binary, upstream_h2, swap_in=("header", "basic", "body"),
                  name="airlock", scrub=True, tokens=1, rules=None, env=None, wrap=(), start_secs=30,
                  proxy_extra=""):
    """airlock's upstream for bench.test is nginx's h1-only listener unless
    upstream_h2: airlock forwards an HTTP/1.1 client's Host header next to
    :authority on an h2 upstream, which nginx 1.22 refuses with 400 ("client
    sent duplicate host header"). h2.bench.test always goes to the h2 listener,
    for the interop check and the HTTP/2 client-side row."""
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    main_port = UP_PORT if upstream_h2 else PORTS["nginx_h1"]
    # More bindings for the same sandbox: the response firewall guards every
    # token the sandbox could obtain, so its pattern set grows with them.
    more = "".join(
        f"""
[[secret]]
name = "OTHER_TOKEN_{i}"
value = "other-secret-{i:04d}-{'x' * 24}"
placeholder = "miosa-tok-{i:04d}{'B' * 28}"
hosts = ["other{i}.{DOMAIN}"]
"""
        for i in range(1, tokens)
    )
    conf = d / "airlock.toml"
    conf.write_text(
        f"""
[proxy]
upstream_ca = ["{pki}/ca.pem"]
allowed_ports = [{UP_PORT}]
scrub_responses = {"true" if scrub else "false"}
# The idle workload holds 10 000 connections from one sandbox.
max_connections_per_sandbox = 20000
max_connections = 25000
{proxy_extra}
[resolve]
"{H2_HOST}" = "127.0.0.1:{UP_PORT}"
"{DOMAIN}" = "127.0.0.1:{main_port}"
"*.{DOMAIN}" = "127.0.0.1:{main_port}"

[[secret]]
name = "API_TOKEN"
value = "{REAL}"
placeholder = "{PLACEHOLDER}"
hosts = ["{DOMAIN}", "*.{DOMAIN}"]
swap_in = {json.dumps(swap_in)}
{f"rules = {json.dumps(rules)}" if rules else ""}
{more}"""
    )
    out = open(d / "stdout.txt", "w")
    cmd = [
        *wrap, str(binary), "up", "--config", str(conf), "--data-dir", str(d / "data"),
        "--listen", f"127.0.0.1:{PORTS[name]}",
        # Ephemeral vault and metrics ports: several airlocks run side by side.
        "--vault-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
    ]
    proc = spawn(name, cmd, work, env={"AIRLOCK_LOG": "warn", **(env or {})}, stdout=out)
    deadline = time.monotonic() + start_secs
    while time.monotonic() < deadline:
        text = (d / "stdout.txt").read_text()
        if "\n\n" in text:
            break
        if not proc.alive():
            raise RuntimeError(f"airlock exited:\n{proc.log_tail()}")
        time.sleep(0.05)
    else:
        raise RuntimeError("airlock did not print its environment")
    if f"'{PLACEHOLDER}'" not in text:
        FAILURES.append("airlock's printed environment lacks the configured placeholder")
    proc.ca = d / "data" / "ca.pem"
    proc.cmd = cmd
    wait_port(PORTS[name], proc)
    return proc


# ---------------------------------------------------------------- the response firewall's cost

# name: (response firewall on, tokens the sandbox holds)
FIREWALL_VARIANTS = {
    "fw_off": (False, 1),
    "fw_1": (True, 1),
    "fw_10": (True, 10),
    "fw_100": (True, 100),
}
for _i, _n in enumerate(FIREWALL_VARIANTS):
    PORTS[_n] = 18100 + _i
    on, n = FIREWALL_VARIANTS[_n]
    LABELS[_n] = f"airlock, firewall {'on' if on else 'off'}, {n} token{'s' if n > 1 else ''}"


def firewall_cost(work, pki, binary, upstream_h2, reps, duration, size):
    """The same airlock build four times: response firewall off, and on with
    1, 10 and 100 tokens to guard. Keep-alive GETs (1 and 16 connections) and
    a large download, round-robin, so the firewall's cost is read side by side."""
    procs, peers = {}, {}
    out = {"variants": {}, "commands": {}}
    try:
        for name, (on, tokens) in FIREWALL_VARIANTS.items():
            procs[name] = start_airlock(work, pki, binary, upstream_h2, name=name, scrub=on, tokens=tokens,
                                        proxy_extra=FIREWALL_WIRE)
            peers[name] = Peer(name, procs[name], pki)
            ok, detail = sanity(peers[name])
            if not ok:
                FAILURES.append(f"{LABELS[name]}: a swapped GET did not reach nginx intact: {detail}")
                return out
            out["variants"][name] = {"firewall": on, "tokens": tokens, "keepalive_c1": {"runs": []},
                                     "keepalive_c16": {"runs": []}, "download": {"runs": []}}
            warm_download(peers[name])
            run_oha(peers[name], 16, 1)  # untimed warm-up
        out["commands"]["keep-alive"] = shlex.join(oha_cmd(peers["fw_1"], 1, duration))
        out["commands"]["download"] = shlex.join(transfer_cmd_preview(peers["fw_1"], "download", None))
        for r in range(reps):
            for name, peer in peers.items():
                v = out["variants"][name]
                for conns in (1, 16):
                    res = run_oha(peer, conns, duration)
                    v[f"keepalive_c{conns}"]["runs"].append(res)
                    if res.get("failed") or res.get("error"):
                        FAILURES.append(f"{peer.label} keep-alive c={conns}: {res.get('failed') or res.get('error')}")
                res = transfer(peer, "download", size, None)
                res.pop("cmd", None)
                v["download"]["runs"].append(res)
                if res.get("failed"):
                    FAILURES.append(f"{peer.label} download: {res['failed']}")
                log(f"firewall rep {r + 1} {name}: {v['keepalive_c1']['runs'][-1].get('rps') or 0:.0f} req/s (1 conn), "
                    f"{v['keepalive_c16']['runs'][-1].get('rps') or 0:.0f} req/s (16), {res.get('mb_s') or 0:.0f} MB/s")
    finally:
        for p in procs.values():
            p.stop()
    return out


# ---------------------------------------------------------------- request rules and narrowed placeholders

# name: (the binding's rules, whether the client sends a narrowed placeholder)
RULES_VARIANTS = {
    "rules_none": (None, False),
    # First match wins: nine rules that do not match, then the one that does.
    "rules_10": ([f"allow GET /repos/acme/r{i}/**" for i in range(9)] + ["allow GET /**"], False),
    "narrowed": (None, True),
}
for _i, _n in enumerate(RULES_VARIANTS):
    PORTS[_n] = 18110 + _i
LABELS["rules_none"] = "airlock, no request rules"
LABELS["rules_10"] = "airlock, 10 request rules (the last matches)"
LABELS["narrowed"] = "airlock, a narrowed placeholder (2 caveats)"


def rules_cost(work, pki, binary, upstream_h2, reps, duration):
    """Issue 17: request rules and a narrowed placeholder's caveat checks on
    the keep-alive workload, beside the same build without them."""
    procs, peers = {}, {}
    out = {"variants": {}, "commands": {}}
    try:
        for name, (rules, narrowed) in RULES_VARIANTS.items():
            procs[name] = start_airlock(work, pki, binary, upstream_h2, name=name, rules=rules)
            peers[name] = Peer(name, procs[name], pki)
            if narrowed:
                made = subprocess.run(
                    [str(binary), "placeholder", "narrow", PLACEHOLDER, "--allow", "GET /**", "--ttl", "24h"],
                    text=True, capture_output=True)
                if made.returncode != 0:
                    FAILURES.append(f"airlock placeholder narrow failed: {made.stderr.strip()[-300:]}")
                    return out
                peers[name].auth = f"Bearer {made.stdout.strip()}"
            ok, detail = sanity(peers[name])
            if not ok:
                FAILURES.append(f"{LABELS[name]}: a swapped GET did not reach nginx intact: {detail}")
                return out
            out["variants"][name] = {"keepalive_c1": {"runs": []}, "keepalive_c16": {"runs": []}}
            run_oha(peers[name], 16, 1)  # untimed warm-up
        out["commands"]["keep-alive"] = shlex.join(oha_cmd(peers["rules_10"], 1, duration))
        for r in range(reps):
            for name, peer in peers.items():
                v = out["variants"][name]
                for conns in (1, 16):
                    res = run_oha(peer, conns, duration)
                    v[f"keepalive_c{conns}"]["runs"].append(res)
                    if res.get("failed") or res.get("error"):
                        FAILURES.append(f"{peer.label} keep-alive c={conns}: {res.get('failed') or res.get('error')}")
                log(f"rules rep {r + 1} {name}: {v['keepalive_c1']['runs'][-1].get('rps') or 0:.0f} req/s (1 conn), "
                    f"{v['keepalive_c16']['runs'][-1].get('rps') or 0:.0f} req/s (16)")
    finally:
        for p in procs.values():
            p.stop()
    return out


# ---------------------------------------------------------------- allocations per request

PORTS["airlock_alloc"] = 18120
PORTS["ceiling_alloc"] = 18121
LABELS["airlock_alloc"] = "airlock (counting allocator)"
LABELS["ceiling_alloc"] = "ceiling (counting allocator)"


def read_alloc_counts(path):
    """(allocations, reallocations, bytes) as the process last wrote them."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            a, r, b = (int(x) for x in path.read_text().split())
            return a, r, b
        except (OSError, ValueError):
            time.sleep(0.05)
    raise RuntimeError(f"no allocation counts in {path}")


def allocations(work, pki, src, target_dir, upstream_h2, requests=2000):
    """Issue 19: allocations per keep-alive request, airlock beside the
    ceiling, each built with a counting global allocator (--features
    alloc-count, bench/alloc-count) in a target dir of its own. Counts do not
    depend on the machine's load."""
    env = {**os.environ, "CARGO_TARGET_DIR": str(target_dir)}
    for args in (["--bin", "airlock"], ["-p", "airlock-bench-ceiling"]):
        b = subprocess.run(["cargo", "build", "--release", "-q", "--features", "alloc-count", *args],
                           cwd=src if args[0] == "--bin" else REPO, env=env, text=True, capture_output=True)
        if b.returncode != 0:
            return {"skipped": f"alloc-count build failed: {b.stderr.strip()[-600:]}"}
    binaries = {"airlock_alloc": Path(target_dir) / "release" / "airlock",
                "ceiling_alloc": Path(target_dir) / "release" / "ceiling"}
    out = {"requests": requests}
    procs = {}
    try:
        for name, binary in binaries.items():
            counts = work / f"{name}.allocs"
            extra = {"ALLOC_COUNT_FILE": str(counts)}
            if name == "airlock_alloc":
                procs[name] = start_airlock(work, pki, binary, upstream_h2, name=name, env=extra)
            else:
                procs[name] = start_ceiling(work, pki, binary, binaries["airlock_alloc"], upstream_h2,
                                            name=name, env=extra)
            peer = Peer(name, procs[name], pki)
            ok, detail = sanity(peer)
            if not ok:
                FAILURES.append(f"{peer.label}: a swapped GET did not reach nginx intact: {detail}")
                return out
            # Warm: pools, caches, leaves, buffers.
            warm = oha_cmd(peer, 1, 1, requests=300)
            subprocess.run(warm, capture_output=True, timeout=120)
            time.sleep(0.3)
            a0, r0, b0 = read_alloc_counts(counts)
            cmd = oha_cmd(peer, 1, 1, requests=requests)
            p = subprocess.run(cmd, text=True, capture_output=True, timeout=300)
            time.sleep(0.3)
            a1, r1, b1 = read_alloc_counts(counts)
            codes = json.loads(p.stdout).get("statusCodeDistribution") or {} if p.returncode == 0 else {}
            if codes.get("200", codes.get(200, 0)) != requests:
                FAILURES.append(f"{peer.label}: allocation run answered {codes} ({p.stderr.strip()[-200:]})")
            out[name] = {
                "allocs_per_req": (a1 - a0) / requests,
                "reallocs_per_req": (r1 - r0) / requests,
                "bytes_per_req": (b1 - b0) / requests,
            }
            out.setdefault("commands", {})[name] = shlex.join(cmd)
            log(f"allocations {name}: {out[name]['allocs_per_req']:.1f}/request, "
                f"{out[name]['bytes_per_req']:.0f} bytes/request")
    finally:
        for p in procs.values():
            p.stop()
    return out


# ---------------------------------------------------------------- instructions per request

PORTS["airlock_ir"] = 18122
PORTS["airlock_ir_info"] = 18123
PORTS["ceiling_ir"] = 18124
LABELS["airlock_ir"] = "airlock (callgrind)"
LABELS["airlock_ir_info"] = "airlock (callgrind), audit lines on (log level info)"
LABELS["ceiling_ir"] = "ceiling (callgrind)"


def callgrind_total(dump, wait_s=30):
    """The `totals:` of a callgrind dump, waited for (callgrind_control -d
    returns before the file is written); None when none came."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        m = re.search(r"^totals: (\d+)", dump.read_text(), re.M) if dump.exists() else None
        if m:
            return int(m.group(1))
        time.sleep(0.2)
    return None


def instructions_per_request(work, pki, airlock_bin, ceiling_bin, upstream_h2, requests=2000):
    """Issue 19: instructions each proxy executes per keep-alive request
    (callgrind, the counters zeroed after a warm-up, one connection). They do
    not depend on the machine's load, so small changes show where timed runs
    spread ±20 %. airlock runs as in the timed workloads (log level warn: no
    audit lines) and again at its default level (an audit line per request)."""
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        return {"skipped": "valgrind not installed"}
    out = {"requests": requests, "connections": 1}
    for name in ("airlock_ir", "airlock_ir_info", "ceiling_ir"):
        dump = work / f"callgrind.{name}.out"
        for old in work.glob(f"callgrind.{name}.out*"):
            old.unlink()
        wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", "--dump-instr=no"]
        proc = None
        try:
            if name == "ceiling_ir":
                proc = start_ceiling(work, pki, ceiling_bin, airlock_bin, upstream_h2, name=name, wrap=wrap,
                                     start_secs=180)
            else:
                env = {"AIRLOCK_LOG": "info"} if name == "airlock_ir_info" else None
                proc = start_airlock(work, pki, airlock_bin, upstream_h2, name=name, env=env, wrap=wrap,
                                     start_secs=180)
            peer = Peer(name, proc, pki)
            warm = oha_cmd(peer, 1, 1, requests=300)
            subprocess.run(warm, capture_output=True, timeout=600)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, timeout=60)
            cmd = oha_cmd(peer, 1, 1, requests=requests)
            p = subprocess.run(cmd, text=True, capture_output=True, timeout=1200)
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, timeout=60)
            codes = json.loads(p.stdout).get("statusCodeDistribution") or {} if p.returncode == 0 else {}
            if codes.get("200", codes.get(200, 0)) != requests:
                FAILURES.append(f"{peer.label}: instruction-count run answered {codes} ({p.stderr.strip()[-200:]})")
                continue
            total = callgrind_total(work / f"callgrind.{name}.out.1")
            if total is None:
                out[name] = {"error": "callgrind wrote no dump"}
                continue
            out[name] = {"ir_per_req": total / requests, "command": shlex.join(proc.cmd)}
            log(f"instructions {name}: {total / requests:,.0f} per request")
        except Exception as exc:  # noqa: BLE001
            out[name] = {"error": str(exc)[-300:]}
            log(f"instructions {name}: {exc}")
        finally:
            if proc is not None:
                proc.stop()
    return out


# ---------------------------------------------------------------- callgrind of the swapper


def callgrind_swapper(work, target_dir, src, mib=64, every=65536):
    """Instruction counts of airlock's streaming body swapper and response
    scrubber on a fixed body (bench/swapcount), minus draining it untouched."""
    if not shutil.which("valgrind"):
        return {"skipped": "valgrind not installed"}
    # Built in the work dir against the measured source tree, with its lock
    # file (same versions, so most of airlock's artifacts are reused).
    d = work / "swapcount"
    (d / "src").mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "swapcount" / "src" / "main.rs", d / "src" / "main.rs")
    toml = (HERE / "swapcount" / "Cargo.toml").read_text()
    toml = toml.replace('path = "../../proxy"', f'path = "{src}/proxy"')
    toml = toml.replace('path = "../../vault-client"', f'path = "{src}/vault-client"')
    (d / "Cargo.toml").write_text(toml)
    shutil.copy(Path(src) / "Cargo.lock", d / "Cargo.lock")
    manifest = d / "Cargo.toml"
    env = {**os.environ, "CARGO_TARGET_DIR": str(target_dir)}
    b = subprocess.run(["cargo", "build", "--release", "-q", "--manifest-path", str(manifest)],
                       env=env, text=True, capture_output=True)
    if b.returncode != 0:
        return {"skipped": f"swapcount build failed: {b.stderr.strip()[-600:]}"}
    binary = Path(target_dir) / "release" / "airlock-swapcount"
    out = {"body_mib": mib, "placeholder_every": every, "chunk_bytes": 16384,
           "command": f"valgrind --tool=callgrind {binary} MODE {mib} {every}"}
    v = subprocess.run([str(binary), "swap", str(mib), str(every)], env={**env, "SWAPCOUNT_VERIFY": "1"},
                       text=True, capture_output=True, timeout=300)
    try:
        out["verify"] = json.loads(v.stdout)
    except json.JSONDecodeError:
        out["verify"] = {"error": (v.stdout + v.stderr)[-300:]}
    expected = (mib << 20) // every - 1
    if out["verify"].get("tokens_out", -1) < expected:
        FAILURES.append(f"swapcount: {out['verify']} (want ≥ {expected} tokens swapped)")
    # scrub1000: the firewall guarding 1 000 tokens (issue 19: its cost must
    # not grow with the token count). Building that firewall is counted apart
    # (the same run on an empty body, and the empty copy beside it).
    runs = {"copy": ("copy", mib, []), "swap": ("swap", mib, []), "scrub": ("scrub", mib, []),
            "scrub1000": ("scrub", mib, ["1000"]), "copy_empty": ("copy", 0, []),
            "scrub1000_empty": ("scrub", 0, ["1000"])}
    for mode, (what, body_mib, extra) in runs.items():
        cg = work / f"callgrind.{mode}.out"
        argv = [str(binary), what, str(body_mib), str(every), *extra]
        p = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}", *argv],
                           text=True, capture_output=True, timeout=1200)
        m = re.search(r"Collected : (\d+)", p.stderr)
        out[mode] = {"ir": int(m.group(1)) if m else None}
        if m is None:
            out[mode]["error"] = p.stderr[-300:]
        log(f"callgrind {mode}: {out[mode].get('ir')} instructions")
    size = mib << 20
    build = None
    if out["scrub1000_empty"].get("ir") and out["copy_empty"].get("ir"):
        build = out["scrub1000_empty"]["ir"] - out["copy_empty"]["ir"]
        out["scrub1000"]["build_ir"] = build
    for mode in ("swap", "scrub", "scrub1000"):
        if out[mode].get("ir") and out["copy"].get("ir") and (mode != "scrub1000" or build is not None):
            net = out[mode]["ir"] - out["copy"]["ir"] - (build if mode == "scrub1000" else 0)
            out[mode]["net_ir"] = net
            out[mode]["ir_per_byte"] = net / size
    return out


# ---------------------------------------------------------------- token path (vault)

PORTS_VAULT = {"airlock_vault": 18082, "vault": 18090, "oauth": 18445}
AUTH_HOST = f"auth.{DOMAIN}"
API_HOST = f"api.{DOMAIN}"
OAUTH_CLIENT = ("bench-client", "bench-client-secret-0123456789")


class MockOAuth:
    """A token endpoint on loopback (TLS with the bench leaf): every
    client_credentials or refresh grant issues vault-tok-N, N = 1, 2, …"""

    def __init__(self, pki):
        import http.server

        self.lock = threading.Lock()
        self.grants = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                form = self.rfile.read(length).decode(errors="replace")
                if self.path.startswith("/token"):
                    with outer.lock:
                        outer.grants.append((time.monotonic(), form))
                        n = len(outer.grants)
                    body = json.dumps({
                        "access_token": f"vault-tok-{n}", "token_type": "bearer",
                        "expires_in": 3600, "scope": "read",
                    }).encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                else:
                    body = b"{}"
                    self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", PORTS_VAULT["oauth"]), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki / "leaf.pem", pki / "leaf-key.pem")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self):
        with self.lock:
            return len(self.grants)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def start_airlock_vault(work, pki, binary, upstream_h2, env=None):
    """airlock with its vault: a provider whose token endpoint is MockOAuth, a
    machine account (client credentials), and a static secret on the same
    host for comparison."""
    d = work / "airlock_vault"
    d.mkdir(parents=True, exist_ok=True)
    api_port = UP_PORT if upstream_h2 else PORTS["nginx_h1"]
    conf = d / "airlock.toml"
    conf.write_text(
        f"""
[proxy]
upstream_ca = ["{pki}/ca.pem"]
allowed_ports = [{UP_PORT}]

[resolve]
"{AUTH_HOST}" = "127.0.0.1:{PORTS_VAULT['oauth']}"
"{API_HOST}" = "127.0.0.1:{api_port}"

[vault]
public_url = "http://127.0.0.1:{PORTS_VAULT['vault']}"

[[provider]]
name = "benchoauth"
display_name = "Bench OAuth"
authorize_url = "https://{AUTH_HOST}:{PORTS_VAULT['oauth']}/authorize"
token_url = "https://{AUTH_HOST}:{PORTS_VAULT['oauth']}/token"
scopes = ["read"]
hosts = ["{API_HOST}"]
inject = "bearer"
env = "BENCH_OAUTH_TOKEN"

[[app]]
provider = "benchoauth"
client_id = "{OAUTH_CLIENT[0]}"
client_secret = "{OAUTH_CLIENT[1]}"

[[secret]]
name = "API_TOKEN"
value = "{REAL}"
placeholder = "{PLACEHOLDER}"
hosts = ["{API_HOST}"]
"""
    )
    out = open(d / "stdout.txt", "w")
    cmd = [
        str(binary), "up", "--config", str(conf), "--data-dir", str(d / "data"),
        "--listen", f"127.0.0.1:{PORTS_VAULT['airlock_vault']}",
        "--vault-listen", f"127.0.0.1:{PORTS_VAULT['vault']}",
        "--admin-listen", "127.0.0.1:0",
    ]
    proc = spawn("airlock_vault", cmd, work, env={"AIRLOCK_LOG": os.environ.get("BENCH_VAULT_LOG", "warn"), **(env or {})},
                 stdout=out)
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        text = (d / "stdout.txt").read_text()
        if "\n\n" in text:
            break
        if not proc.alive():
            raise RuntimeError(f"airlock (vault) exited:\n{proc.log_tail()}")
        time.sleep(0.05)
    else:
        raise RuntimeError("airlock (vault) did not print its environment")
    m = re.search(r"BENCH_OAUTH_TOKEN='([^']+)'", text)
    if not m:
        raise RuntimeError(f"no BENCH_OAUTH_TOKEN in airlock's environment:\n{text}")
    proc.vault_placeholder = m.group(1)
    proc.ca = d / "data" / "ca.pem"
    proc.cmd = cmd
    proc.data = d / "data"
    wait_port(PORTS_VAULT["airlock_vault"], proc)
    wait_port(PORTS_VAULT["vault"], proc)
    return proc


def vault_api(proc, method, path, body=None):
    import urllib.request

    token = (proc.data / "admin.token").read_text().strip()
    req = urllib.request.Request(
        f"http://127.0.0.1:{PORTS_VAULT['vault']}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def read_response(t):
    """One HTTP/1.1 response from a socket: Content-Length or chunked (airlock
    re-frames answers it scrubs as chunked)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = t.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lower = head.lower()
    m = re.search(rb"content-length:\s*(\d+)", lower)
    while True:
        if m and len(rest) >= int(m.group(1)):
            break
        if not m and b"chunked" in lower and rest.endswith(b"0\r\n\r\n"):
            break
        if not m and b"chunked" not in lower:
            break
        chunk = t.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def held_gets(peer, host, auth, n=3):
    """One intercepted connection; the wall time of each of n keep-alive GETs, ms."""
    ctx = ssl.create_default_context(cafile=str(peer.ca))
    s = socket.create_connection(("127.0.0.1", peer.port), timeout=30)
    target = f"{host}:{UP_PORT}"
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = ctx.wrap_socket(s, server_hostname=host)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        t.sendall(f"GET / HTTP/1.1\r\nHost: {target}\r\nAuthorization: {auth}\r\n\r\n".encode())
        data = read_response(t)
        out.append({"ms": (time.perf_counter() - t0) * 1e3, "status": data[9:12].decode()})
    t.close()
    return out


def token_path(work, pki, binary, upstream_h2, reps, duration, storm_n, results):
    """Workload 5: vault token (cache hit) vs static secret, a cold cache, and
    a 401 storm that must cause exactly one refresh."""
    res = {"storm_n": storm_n}
    mock = MockOAuth(pki)
    proc = None
    try:
        proc = start_airlock_vault(work, pki, binary, upstream_h2)
        results["commands"]["start airlock with its vault"] = shlex.join(proc.cmd)
        status, body = vault_api(proc, "POST", "/v1/machine-accounts", {
            "name": "bench-bot", "provider": "benchoauth", "client_id": OAUTH_CLIENT[0],
            "client_secret": OAUTH_CLIENT[1], "scopes": ["read"],
        })
        res["machine_account"] = {"status": status, "grants": mock.count()}
        if status != 201:
            raise RuntimeError(f"machine account: {status} {body[:200]}")
        vault_auth = f"Bearer {proc.vault_placeholder}"
        peer = Peer("airlock", proc, pki, host=API_HOST, label="airlock (vault)")
        peer.port = PORTS_VAULT["airlock_vault"]
        peer.proxy = f"http://127.0.0.1:{peer.port}"

        # -- the 401 storm: vault-tok-1 is expired at nginx. Open storm_n
        # intercepted connections first, then one GET on each at once.
        before = mock.count()
        cmd = [
            sys.executable, str(HERE / "idle_hold.py"), "--proxy-port", str(peer.port),
            "--host", API_HOST, "--port", str(UP_PORT), "--cafile", str(peer.ca),
            "--count", str(storm_n), "--auth", vault_auth,
        ]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        ready = json.loads(p.stdout.readline())
        p.stdin.write("fire\n")
        p.stdin.flush()
        fired = json.loads(p.stdout.readline())
        p.stdin.write("close\n")
        p.stdin.flush()
        p.stdout.readline()
        p.wait(30)
        time.sleep(0.5)
        res["storm"] = {
            "opened": ready.get("opened"), "open_errors": ready.get("errors"),
            "seconds": fired.get("seconds"), "statuses": fired.get("statuses"),
            "refreshes": mock.count() - before,
        }
        ok = fired.get("statuses", {}).get("200", 0)
        if res["storm"]["refreshes"] != 1 or ok != storm_n:
            FAILURES.append(
                f"airlock 401 storm of {storm_n}: {res['storm']['refreshes']} refresh(es) (want 1), "
                f"statuses {fired.get('statuses')}")
            log(FAILURES[-1])
        log(f"401 storm: {ok}/{storm_n} answered 200 in {fired.get('seconds')} s, "
            f"{res['storm']['refreshes']} refresh(es)")

        # -- cache hit vs static secret: same airlock, same host, keep-alive
        static = Peer("airlock", proc, pki, host=API_HOST, label="airlock (static secret)")
        static.port, static.proxy = peer.port, peer.proxy
        res["throughput"] = {}
        for c in (1, 16):
            entry = res["throughput"][f"c{c}"] = {"vault": {"runs": []}, "static": {"runs": []}}
            for r in range(reps):
                for name, pr in (("vault", peer), ("static", static)):
                    pr_auth = vault_auth if name == "vault" else f"Bearer {PLACEHOLDER}"
                    pr.auth = pr_auth
                    out = run_oha(pr, c, duration)
                    if out.get("failed") or out.get("error"):
                        FAILURES.append(f"airlock token path ({name}, c={c}): {out.get('failed') or out.get('error')}")
                    entry[name]["runs"].append(out)
                    log(f"token path c={c} rep {r + 1} {name}: {out.get('rps') or 0:.0f} req/s p50 {out.get('p50_us') or 0:.0f} us")
        results["commands"]["token path (vault placeholder)"] = shlex.join(oha_cmd(peer, 16, duration))

        # -- cold cache: a fresh process has no cached token; its first request
        # asks the vault (store read + unseal). Same connection, GET 1 vs GET 2/3.
        res["cold"] = []
        for r in range(reps):
            proc.stop()
            proc = start_airlock_vault(work, pki, binary, upstream_h2)
            peer.proc = static.proc = proc
            gets = held_gets(peer, API_HOST, vault_auth, 3)
            res["cold"].append(gets)
            log(f"token path cold: first GET {gets[0]['ms']:.2f} ms, then {gets[1]['ms']:.2f}, {gets[2]['ms']:.2f} ms")
            if any(g["status"] != "200" for g in gets):
                FAILURES.append(f"airlock token path cold cache: statuses {[g['status'] for g in gets]}")
        res["grants_total"] = mock.count()
    except Exception as exc:  # noqa: BLE001
        FAILURES.append(f"token path: {type(exc).__name__}: {exc}")
        log(FAILURES[-1])
        if proc is not None:
            res["log_tail"] = proc.log_tail(20)
    finally:
        if proc is not None:
            proc.stop()
        mock.stop()
    return res


# ---------------------------------------------------------------- how cost grows with work (issue 19)

# One shared gateway (`airlock up` with `require_auth = true`, vault on SQLite)
# populated through the admin API; a second pair with the firewall on and off.
PORTS_SCALE = {"airlock_scale": 18130, "vault_scale": 18131,
               "fw_scale_on": 18132, "vault_fw_on": 18133,
               "fw_scale_off": 18134, "vault_fw_off": 18135}
PORTS.update({k: v for k, v in PORTS_SCALE.items() if not k.startswith("vault")})
LABELS["airlock_scale"] = "airlock, shared gateway"
LABELS["fw_scale_on"] = "airlock, shared gateway, firewall on"
LABELS["fw_scale_off"] = "airlock, shared gateway, firewall off"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SCALE_TENANT_SIZE = 100  # sandboxes per tenant: a team's sandboxes share its keys
SCALE_PER_SANDBOX = 10  # bindings per sandbox on the population axis
SCALE_MEASURED = 4  # sandboxes the keep-alive clients speak as, spread over the population


# The firewall rows compare airlocks that differ only in the firewall: with
# `auto`, each picks its upstream wire from its own timings, and a download
# on HTTP/2 costs ~0.45 s/GB more than on HTTP/1.1, which swamped the
# firewall's few per cent (last runs: +59 %, -35 %, +52 %).
FIREWALL_WIRE = 'upstream_protocol = "http1"'


def start_airlock_shared(work, pki, binary, upstream_h2, name, vault_name, scrub=True, proxy_extra="",
                         wrap=(), start_secs=60, env=None):
    """`airlock up` as a shared gateway: every client names its sandbox in
    Proxy-Authorization; sandboxes and secrets come from the admin API."""
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    main_port = UP_PORT if upstream_h2 else PORTS["nginx_h1"]
    conf = d / "airlock.toml"
    conf.write_text(
        f"""
[proxy]
upstream_ca = ["{pki}/ca.pem"]
allowed_ports = [{UP_PORT}]
require_auth = true
scrub_responses = {"true" if scrub else "false"}
# 10 000 idle connections, one per sandbox (the per-sandbox cap stays the default).
max_connections = 12000
# Opening 10 000 takes minutes (each sandbox's first request loads its
# tokens and builds its firewall); hyper closes a keep-alive connection that
# sends no request head within this, so the first ones would be gone.
header_read_timeout_secs = 600
{proxy_extra}
[resolve]
"{DOMAIN}" = "127.0.0.1:{main_port}"
"*.{DOMAIN}" = "127.0.0.1:{main_port}"

[vault]
public_url = "http://127.0.0.1:{PORTS_SCALE[vault_name]}"
"""
    )
    out = open(d / "stdout.txt", "w")
    cmd = [
        *wrap, str(binary), "up", "--config", str(conf), "--data-dir", str(d / "data"),
        "--listen", f"127.0.0.1:{PORTS_SCALE[name]}",
        "--vault-listen", f"127.0.0.1:{PORTS_SCALE[vault_name]}",
        "--admin-listen", "127.0.0.1:0",
    ]
    proc = spawn(name, cmd, work, env={"AIRLOCK_LOG": "warn", **(env or {})}, stdout=out)
    wait_port(PORTS_SCALE[name], proc, timeout=start_secs)
    wait_port(PORTS_SCALE[vault_name], proc, timeout=start_secs)
    proc.ca = d / "data" / "ca.pem"
    proc.cmd = cmd
    proc.data = d / "data"
    proc.vault_port = PORTS_SCALE[vault_name]
    return proc


class AdminApi:
    """The vault's admin API over one keep-alive connection per thread."""

    def __init__(self, proc):
        import http.client

        self._mk = lambda: http.client.HTTPConnection("127.0.0.1", proc.vault_port, timeout=60)
        deadline = time.monotonic() + 30
        while not (proc.data / "admin.token").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.token = (proc.data / "admin.token").read_text().strip()
        self.local = threading.local()

    def call(self, method, path, body):
        import http.client

        for attempt in (0, 1):
            conn = getattr(self.local, "conn", None) or self._mk()
            self.local.conn = conn
            try:
                conn.request(method, path, body=json.dumps(body).encode(), headers={
                    "authorization": f"Bearer {self.token}", "content-type": "application/json"})
                r = conn.getresponse()
                return r.status, r.read().decode()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


class Population:
    """Tenants, their secrets and their sandboxes, made through the admin API
    (POST /v1/secrets, POST /v1/sandboxes), as an operator's tooling would.
    Sandbox i belongs to tenant i // tenant_size; each tenant has its own
    API_TOKEN for bench.test (a token of its own, which nginx accepts) and
    filler secrets FILL_1… bound to other hosts."""

    def __init__(self, proc, per_sandbox=SCALE_PER_SANDBOX, tenant_size=SCALE_TENANT_SIZE, prefix="t"):
        self.api = AdminApi(proc)
        self.per_sandbox, self.tenant_size, self.prefix = per_sandbox, tenant_size, prefix
        self.tenants = {}  # name -> secrets made
        self.sandboxes = []  # {"id", "secret", "tenant", "placeholder", "bindings"}
        self.bindings = 0
        self.lock = threading.Lock()

    def _ok(self, what, status, body, want=201):
        if status != want:
            raise RuntimeError(f"{what}: {status} {body[:300]}")

    def tenant(self, t, count, threads=4):
        """Tenant t with at least `count` secrets (API_TOKEN + fillers)."""
        import concurrent.futures

        name = f"{self.prefix}{t}"
        have = self.tenants.get(name, 0)
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda j: self._secret(name, j), range(have, count)))
        self.tenants[name] = max(have, count)
        return name

    def _secret(self, name, j):
        # Random like real tokens: shared text would shrink the firewall's tables.
        if j == 0:
            body = {"tenant": name, "name": "API_TOKEN", "value": f"scale-tok-{name}-{secrets.token_hex(16)}",
                    "hosts": [DOMAIN], "swap_in": ["header"]}
        else:
            rand = "".join(secrets.choice(BASE62) for _ in range(36))
            body = {"tenant": name, "name": f"FILL_{j}", "value": f"fill_{rand}",
                    "hosts": [f"f{j}.{DOMAIN}"], "swap_in": ["header"]}
        status, text = self.api.call("POST", "/v1/secrets", body)
        self._ok(f"secret {body['name']} of {name}", status, text)

    def sandbox(self, tenant, bindings):
        names = ["API_TOKEN"] + [f"FILL_{j}" for j in range(1, bindings)]
        status, text = self.api.call("POST", "/v1/sandboxes", {"tenant": tenant, "secrets": names})
        self._ok(f"sandbox of {tenant}", status, text)
        made = json.loads(text)
        placeholder = made["env"].get("API_TOKEN")
        if not placeholder or not placeholder.startswith("miosa-tok-"):
            raise RuntimeError(f"sandbox of {tenant}: no API_TOKEN placeholder in {sorted(made['env'])}")
        return {"id": made["id"], "secret": made["proxy_secret"], "tenant": tenant,
                "placeholder": placeholder, "bindings": bindings}

    def grow(self, count, threads=4, deadline_s=900):
        """Adds sandboxes until there are `count`; returns seconds taken."""
        import concurrent.futures

        t0 = time.monotonic()
        start = len(self.sandboxes)
        need_tenants = sorted({i // self.tenant_size for i in range(start, count)})
        for t in need_tenants:  # secrets first (sequential: a few per tenant)
            self.tenant(t, self.per_sandbox)

        def one(i):
            if time.monotonic() - t0 > deadline_s:
                raise RuntimeError(f"population: more than {deadline_s} s to create {count - start} sandboxes")
            return i, self.sandbox(f"{self.prefix}{i // self.tenant_size}", self.per_sandbox)

        made = {}
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            for i, sb in pool.map(one, range(start, count)):
                made[i] = sb
        for i in range(start, count):
            self.sandboxes.append(made[i])
            self.bindings += made[i]["bindings"]
        return time.monotonic() - t0


def sandbox_peer(proc, pki, sb, name):
    import base64

    peer = Peer(name, proc, pki)
    peer.port = PORTS_SCALE[name]
    peer.proxy = f"http://127.0.0.1:{peer.port}"
    peer.proxy_auth = "Basic " + base64.b64encode(f"{sb['id']}:{sb['secret']}".encode()).decode()
    peer.auth = f"Bearer {sb['placeholder']}"
    return peer


def spread(n, k):
    """k indices spread evenly over range(n), first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(j * (n - 1) / (k - 1)) for j in range(k)})


def run_oha_many(peers, conns, duration):
    """One oha per sandbox at once; proxy CPU over the whole window, divided
    by every response."""
    pid = peers[0].pid
    cmds = [oha_cmd(p, conns, duration) for p in peers]
    cpu0 = cpu_seconds(pid)
    t0 = time.monotonic()
    procs = [subprocess.Popen(c, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in cmds]
    outs = [p.communicate(timeout=duration * 4 + 60) for p in procs]
    wall = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    res = {"load1": float(open("/proc/loadavg").read().split()[0]), "sandboxes": len(peers),
           "conns_each": conns, "proxy_cpu_s": cpu, "wall_s": wall, "rps": 0.0, "responses": 0, "ok_2xx": 0,
           "p50s_us": [], "errors": {}}
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0:
            res["error"] = f"oha exit {p.returncode}: {err.strip()[-300:]}"
            continue
        data = json.loads(out)
        codes = {str(k): v for k, v in (data.get("statusCodeDistribution") or {}).items()}
        res["rps"] += (data.get("summary") or {}).get("requestsPerSec") or 0
        res["responses"] += sum(codes.values())
        res["ok_2xx"] += sum(v for k, v in codes.items() if k.startswith("2"))
        res["errors"].update(data.get("errorDistribution") or {})
        p50 = (data.get("latencyPercentiles") or {}).get("p50")
        if p50 is not None:
            res["p50s_us"].append(p50 * 1e6)
    res["p50_us"] = statistics.median(res["p50s_us"]) if res["p50s_us"] else None
    if res["responses"]:
        res["cpu_us_per_req"] = cpu / res["responses"] * 1e6
    if not res.get("error") and (res["responses"] == 0 or res["ok_2xx"] != res["responses"] or res["errors"]):
        res["failed"] = f"{res['ok_2xx']}/{res['responses']} 2xx, errors {res['errors']}"
    return res


def scaling_firewall(work, pki, binary, upstream_h2, reps, duration, size, token_counts):
    """The firewall's cost by the number of tokens a sandbox holds: two
    shared gateways populated alike, one with `scrub_responses = false`;
    keep-alive GETs (16 connections) and a download, interleaved."""
    out = {"tokens": token_counts, "variants": {}}
    procs, peers = {}, {}
    try:
        for name, vault_name, scrub in (("fw_scale_on", "vault_fw_on", True), ("fw_scale_off", "vault_fw_off", False)):
            procs[name] = start_airlock_shared(work, pki, binary, upstream_h2, name, vault_name, scrub,
                                               proxy_extra=FIREWALL_WIRE)
            pop = Population(procs[name], prefix="fw")
            t0 = time.monotonic()
            tenant = pop.tenant(0, max(token_counts))
            for n in token_counts:
                sb = pop.sandbox(tenant, n)
                peers[(name, n)] = sandbox_peer(procs[name], pki, sb, name)
            out.setdefault("populate_s", {})[name] = round(time.monotonic() - t0, 2)
            out["secrets"] = max(token_counts)
        for key, peer in peers.items():
            ok, detail = sanity(peer)
            if not ok:
                FAILURES.append(f"scaling firewall {key}: a swapped GET did not reach nginx intact: {detail}")
                return out
            warm_download(peer)
            run_oha(peer, 16, 1)  # untimed warm-up: ledger, firewall, pools
        out["command"] = shlex.join(oha_cmd(next(iter(peers.values())), 16, duration))
        for key in peers:
            out["variants"][f"{key[0]}_{key[1]}"] = {
                "firewall": key[0] == "fw_scale_on", "tokens": key[1],
                "keepalive_c16": {"runs": []}, "download": {"runs": []}}
        # Each round measures on and off twice, in the order A B B A (the
        # first alternating by round), each window half the duration, and
        # reads the round's cost from the two sums: a drift of the machine
        # that is linear over the round cancels out of it (one gateway alone
        # drifted 25 % within a minute here, more than the cost measured).
        window = max(1.0, duration / 2)
        for r in range(reps):
            first, second = ("fw_scale_on", "fw_scale_off") if r % 2 == 0 else ("fw_scale_off", "fw_scale_on")
            for n in token_counts:
                # Untimed first: after the other blocks' minute, a gateway's
                # first window with 1 000 bindings cost up to 60 % more, firewall
                # on and off alike (bench/ANALYSIS.md), a cost of the pause that
                # A B B A cannot cancel.
                for name in (first, second):
                    run_oha(peers[(name, n)], 16, 1)
                windows = {name: {"keepalive": [], "download": []} for name in (first, second)}
                for name in (first, second, second, first):
                    peer = peers[(name, n)]
                    res = run_oha(peer, 16, window)
                    res.pop("cmd", None)
                    windows[name]["keepalive"].append(res)
                    if res.get("failed") or res.get("error"):
                        FAILURES.append(f"{peer.label}, {n} tokens, keep-alive: {res.get('failed') or res.get('error')}")
                    res = transfer(peer, "download", size, None)
                    res.pop("cmd", None)
                    windows[name]["download"].append(res)
                    if res.get("failed"):
                        FAILURES.append(f"{peer.label}, {n} tokens, download: {res['failed']}")
                for name, w in windows.items():
                    v = out["variants"][f"{name}_{n}"]
                    ka, dl = merge_oha_windows(w["keepalive"]), merge_transfers(w["download"])
                    v["keepalive_c16"]["runs"].append(ka)
                    v["download"]["runs"].append(dl)
                    log(f"scaling firewall rep {r + 1} {name} {n} tokens: "
                        f"{ka.get('rps') or 0:.0f} req/s, {ka.get('cpu_us_per_req') or 0:.1f} us CPU/req, "
                        f"{dl.get('mb_s') or 0:.0f} MB/s, {dl.get('cpu_s_per_gb') or 0:.3f} s/GB")
    except Exception as exc:  # noqa: BLE001
        FAILURES.append(f"scaling firewall: {type(exc).__name__}: {exc}")
        log(FAILURES[-1])
    finally:
        for p in procs.values():
            p.stop()
    return out


def merge_oha_windows(runs):
    """One figure from several oha windows on one gateway: CPU a request
    from the sums; the windows kept as they were."""
    ok = [r for r in runs if not r.get("failed") and not r.get("error")]
    out = {"windows": runs}
    if len(ok) != len(runs):
        out["failed"] = "; ".join(r.get("failed") or r.get("error") for r in runs if r not in ok)
        return out
    responses = sum(r["responses"] for r in ok)
    cpu = sum(r["proxy_cpu_s"] for r in ok)
    out.update(responses=responses, proxy_cpu_s=cpu, rps=statistics.fmean(r["rps"] for r in ok),
               p50_us=statistics.median(r["p50_us"] for r in ok), load1=max(r["load1"] for r in ok))
    if responses:
        out["cpu_us_per_req"] = cpu / responses * 1e6
    return out


def merge_transfers(runs):
    """One figure from several transfers through one gateway, from the sums."""
    ok = [r for r in runs if not r.get("failed")]
    out = {"transfers": runs}
    if len(ok) != len(runs):
        out["failed"] = "; ".join(r["failed"] for r in runs if r not in ok)
        return out
    moved = sum(r["bytes"] for r in ok)
    secs = sum(r["seconds"] for r in ok)
    cpu = sum(r["proxy_cpu_s"] for r in ok)
    out.update(bytes=moved, seconds=secs, mb_s=moved / secs / 1e6, proxy_cpu_s=cpu,
               cpu_s_per_gb=cpu / (moved / 1e9) if moved else None)
    return out


# glibc copies a large buffer with `rep movsb`, which valgrind counts as an
# instruction a byte: the download's three copies of each byte would be
# counted as 3 of its ~8 instructions a byte, where they take a few percent
# of its time. With copies done by vector loops (32 bytes an instruction), the
# count weighs them about as the CPU does.
COUNTED_COPIES = "glibc.cpu.x86_rep_movsb_threshold=4294967295:glibc.cpu.x86_rep_stosb_threshold=4294967295"


def scaling_firewall_counted(work, pki, binary, upstream_h2, token_counts, requests=1000, mib=32, windows=3):
    """The firewall's cost counted, not timed: on this kind of machine a
    gateway's CPU a request moves by tens of percent from one window to the
    next, far more than the 5 % target. The two gateways of
    `scaling_firewall` (on; `scrub_responses = false`) are populated alike
    natively, then started again under callgrind on the same data; for each
    token count, instructions per keep-alive request (one connection,
    `requests` a window) and per byte of a `mib` MiB download (a range of
    nginx's file). The least of `windows` windows is kept: what the
    gateway does per span of wall time (the ledger's list read again every
    30 s, the cache's host policy every 30 s) falls into a window now and
    then, and under valgrind's slowdown into far more of them than per
    request of real traffic. The kernel's work is not counted; the
    firewall's is all in the process."""
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        return {"skipped": "valgrind not installed"}
    wd = work / "fw_counted"
    wd.mkdir(parents=True, exist_ok=True)
    size = mib << 20
    out = {"tokens": token_counts, "requests": requests, "download_bytes": size, "windows": windows,
           "variants": {}}
    for name, vault_name, scrub in (("fw_scale_on", "vault_fw_on", True), ("fw_scale_off", "vault_fw_off", False)):
        proc = None
        try:
            proc = start_airlock_shared(wd, pki, binary, upstream_h2, name, vault_name, scrub,
                                        proxy_extra=FIREWALL_WIRE)
            pop = Population(proc, prefix="fc")
            tenant = pop.tenant(0, max(token_counts))
            made = {n: pop.sandbox(tenant, n) for n in token_counts}
            proc.stop()
            dump = wd / f"callgrind.{name}.out"
            for old in wd.glob(f"callgrind.{name}.out*"):
                old.unlink()
            wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", "--dump-instr=no"]
            proc = start_airlock_shared(wd, pki, binary, upstream_h2, name, vault_name, scrub,
                                        proxy_extra=FIREWALL_WIRE, wrap=wrap, start_secs=300,
                                        env={"GLIBC_TUNABLES": COUNTED_COPIES})
            dumps = 0

            def counted(cmd, timeout, proc=proc, dump=dump):
                nonlocal dumps
                subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, timeout=60)
                p = subprocess.run(cmd, text=True, capture_output=True, timeout=timeout)
                subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, timeout=60)
                dumps += 1
                part = dump.with_name(f"{dump.name}.{dumps}")
                total = callgrind_total(part)
                if total is None:
                    raise RuntimeError(f"callgrind wrote no dump {part.name}")
                return p, total

            for n in token_counts:
                peer = sandbox_peer(proc, pki, made[n], name)
                # Untimed: the ledger's first load and the firewall's build.
                warm = subprocess.run(oha_cmd(peer, 1, 1, requests=100), text=True, capture_output=True,
                                      timeout=900)
                if warm.returncode != 0:
                    raise RuntimeError(f"{n} tokens, warm-up: oha exit {warm.returncode}: {warm.stderr[-200:]}")
                v = out["variants"].setdefault(f"{name}_{n}", {"firewall": scrub, "tokens": n,
                                                               "ir_per_req": [], "ir_per_byte": []})
                for _ in range(windows):
                    p, total = counted(oha_cmd(peer, 1, 1, requests=requests), 1200)
                    codes = json.loads(p.stdout).get("statusCodeDistribution") or {} if p.returncode == 0 else {}
                    if codes.get("200", codes.get(200, 0)) != requests:
                        raise RuntimeError(f"{n} tokens, keep-alive: answered {codes} ({p.stderr.strip()[-200:]})")
                    v["ir_per_req"].append(total / requests)
                download = curl_base(peer) + ["-r", f"0-{size - 1}", "-o", "/dev/null", "-w",
                                              "%{http_code} %{size_download}", url(peer.host, "/big")]
                for _ in range(windows):
                    p, total = counted(download, 1200)
                    if p.stdout.split() != ["206", str(size)]:
                        raise RuntimeError(f"{n} tokens, download: {p.stdout!r} {p.stderr.strip()[-200:]}")
                    v["ir_per_byte"].append(total / size)
                log(f"counted {name} {n} tokens: {min(v['ir_per_req']):,.0f} instructions a request, "
                    f"{min(v['ir_per_byte']):.3f} a byte")
        except Exception as exc:  # noqa: BLE001
            FAILURES.append(f"scaling firewall counted, {name}: {type(exc).__name__}: {exc}")
            log(FAILURES[-1])
            if proc is not None:
                log(proc.log_tail())
        finally:
            if proc is not None:
                proc.stop()
    return out


def scaling_population(work, pki, binary, upstream_h2, reps, duration, points, idle_n):
    """Per-request cost as the gateway's population grows: keep-alive GETs
    from a few sandboxes spread over it, at each population size; then idle
    connections, one sandbox after another."""
    out = {"points": [], "per_sandbox": SCALE_PER_SANDBOX, "tenant_size": SCALE_TENANT_SIZE,
           "measured_sandboxes": SCALE_MEASURED}
    proc = None
    try:
        proc = start_airlock_shared(work, pki, binary, upstream_h2, "airlock_scale", "vault_scale")
        out["command"] = shlex.join(proc.cmd)
        pop = Population(proc)
        for n in points:
            secs = pop.grow(n)
            point = {"sandboxes": len(pop.sandboxes), "bindings": pop.bindings, "tenants": len(pop.tenants),
                     "populate_s": round(secs, 2), "c1": {"runs": []}, "spread": {"runs": []}}
            log(f"scaling: {point['sandboxes']} sandboxes, {point['bindings']} bindings "
                f"({secs:.1f} s to create)")
            # Always 4 clients: below 4 sandboxes some speak as the same one.
            idx = spread(len(pop.sandboxes), SCALE_MEASURED)
            chosen = [pop.sandboxes[idx[j % len(idx)]] for j in range(SCALE_MEASURED)]
            point["measured"] = sorted({sb["id"] for sb in chosen})
            peers = [sandbox_peer(proc, pki, sb, "airlock_scale") for sb in chosen]
            for peer in peers:
                ok, detail = sanity(peer)
                if not ok:
                    FAILURES.append(f"scaling, {n} sandboxes: a swapped GET did not reach nginx intact: {detail}")
                    return out
            run_oha_many(peers, 4, 1)  # untimed warm-up
            point["rss_kib"] = rss_kib(proc.pid)
            for r in range(reps):
                res = run_oha(peers[0], 1, duration)
                res.pop("cmd", None)
                point["c1"]["runs"].append(res)
                many = run_oha_many(peers, 4, duration)
                point["spread"]["runs"].append(many)
                for what, x in (("1 conn", res), ("spread", many)):
                    if x.get("failed") or x.get("error"):
                        FAILURES.append(f"scaling, {n} sandboxes, keep-alive {what}: {x.get('failed') or x.get('error')}")
                log(f"scaling {point['sandboxes']} sandboxes rep {r + 1}: 1 conn {res.get('rps') or 0:.0f} req/s "
                    f"{res.get('cpu_us_per_req') or 0:.0f} us CPU/req; {len(peers)} sandboxes x "
                    f"4 conns {many.get('rps') or 0:.0f} req/s "
                    f"{many.get('cpu_us_per_req') or 0:.0f} us CPU/req")
            out["points"].append(point)
        if out["points"] and proc.alive():
            out["churn"] = scaling_churn(pop, peers, reps, duration)
        if idle_n and proc.alive():
            out["idle"] = scaling_idle(proc, pki, pop, idle_n, work)
        if not proc.alive():
            FAILURES.append(f"scaling: airlock died:\n{proc.log_tail()}")
    except Exception as exc:  # noqa: BLE001
        FAILURES.append(f"scaling: {type(exc).__name__}: {exc}")
        log(FAILURES[-1])
        if proc is not None:
            out["log_tail"] = proc.log_tail(20)
    finally:
        if proc is not None:
            proc.stop()
    return out


SCALE_CHURN_PER_S = 5


def scaling_churn(pop, peers, reps, duration):
    """The largest population's spread run again while sandboxes are being
    created (SCALE_CHURN_PER_S a second, a tenant of their own): what a busy
    gateway's operators do all day."""
    tenant = pop.tenant("churn", pop.per_sandbox)
    out = {"rate_per_s": SCALE_CHURN_PER_S, "created": 0, "spread": {"runs": []}}
    stop = threading.Event()

    def churn():
        while not stop.wait(1 / SCALE_CHURN_PER_S):
            try:
                pop.sandbox(tenant, pop.per_sandbox)
                out["created"] += 1
            except Exception as exc:  # noqa: BLE001
                out["error"] = f"{type(exc).__name__}: {exc}"[:300]
                return

    pid = peers[0].pid
    for r in range(reps):
        # The creations alone first: their CPU (admin API, sealing, SQLite)
        # is subtracted from the loaded run's, which shares the process.
        stop.clear()
        t = threading.Thread(target=churn, daemon=True)
        made0, cpu0, t0 = out["created"], cpu_seconds(pid), time.monotonic()
        t.start()
        time.sleep(duration)
        stop.set()
        t.join(30)
        alone = (cpu_seconds(pid) - cpu0) / max(out["created"] - made0, 1)
        out.setdefault("cpu_s_per_create", []).append(alone)
        stop.clear()
        t = threading.Thread(target=churn, daemon=True)
        made0 = out["created"]
        t.start()
        try:
            res = run_oha_many(peers, 4, duration)
        finally:
            stop.set()
            t.join(30)
        made = out["created"] - made0
        if res.get("responses"):
            res["cpu_us_per_req_raw"] = res.get("cpu_us_per_req")
            res["cpu_us_per_req"] = (res["proxy_cpu_s"] - alone * made) / res["responses"] * 1e6
        out["spread"]["runs"].append(res)
        if res.get("failed") or res.get("error"):
            FAILURES.append(f"scaling, sandboxes being created: {res.get('failed') or res.get('error')}")
        log(f"scaling churn rep {r + 1}: {res.get('rps') or 0:.0f} req/s {res.get('cpu_us_per_req') or 0:.0f} us CPU/req "
            f"({out['created']} sandboxes created so far)")
    if out.get("error"):
        FAILURES.append(f"scaling churn: creating sandboxes failed: {out['error']}")
    return out


def scaling_idle(proc, pki, pop, count, work):
    """`count` idle intercepted connections, connection i as sandbox
    i mod population, each after one GET with its own sandbox's placeholder."""
    import base64

    creds = work / "scaling-creds.txt"
    creds.write_text("".join(
        "Basic " + base64.b64encode(f"{sb['id']}:{sb['secret']}".encode()).decode()
        + f"\tBearer {sb['placeholder']}\n" for sb in pop.sandboxes))
    peer = sandbox_peer(proc, pki, pop.sandboxes[0], "airlock_scale")
    cmd = [sys.executable, str(HERE / "idle_hold.py"), "--proxy-port", str(peer.port), "--host", HOST,
           "--port", str(UP_PORT), "--cafile", str(peer.ca), "--count", str(count), "--request",
           "--creds", str(creds)]
    import resource

    asked = count
    # airlock's client connections fit in its descriptor budget (open-files
    # limit − 320) less a sixteenth kept for upstream connections
    # (proxy/src/limits.rs, `Descriptors`); the probe needs one more.
    budget = max(resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 320, 2)
    fit = budget - min(max(budget // 16, 64), budget // 2) - 8
    count = min(count, fit)
    cmd[cmd.index("--count") + 1] = str(count)
    time.sleep(1.0)
    rss0, cpu0 = rss_kib(proc.pid), cpu_seconds(proc.pid)
    res = {"count": count, "asked": asked, "sandboxes": min(count, len(pop.sandboxes)), "rss_before_kib": rss0}
    if count < asked:
        res["capped"] = (f"{count} of {asked}: the open-files limit "
                         f"({resource.getrlimit(resource.RLIMIT_NOFILE)[0]}) caps airlock's max_connections")
    hold_idle(cmd, peer, proc.pid, count, cpu0, res)
    if res.get("opened"):
        res["kib_per_conn"] = (res["rss_held_kib"] - rss0) / res["opened"]
    if res.get("failed") or (res.get("opened") or 0) < count or (res.get("alive_after_probe") or 0) < count:
        FAILURES.append(f"scaling idle: {res.get('opened')}/{count} opened, {res.get('alive_after_probe')} alive; "
                        f"errors {res.get('errors')}")
    if (res["probe"] or {}).get("failed") or (res["probe"] or {}).get("error"):
        FAILURES.append(f"scaling idle: probe while held: {res['probe']}")
    log(f"scaling idle: {res.get('opened')}/{count} held over {res['sandboxes']} sandboxes, "
        f"{res.get('kib_per_conn') or 0:.1f} KiB/conn, probe p50 {(res['probe'] or {}).get('p50_us') or 0:.0f} us")
    return res


def start_ceiling(work, pki, binary, airlock_binary, upstream_h2, name="ceiling", env=None, wrap=(),
                  start_secs=60):
    """The ceiling: a bare TLS interceptor on airlock's crates (bench/ceiling),
    to the same nginx listener as airlock, setting the credential header the
    way Squid does. What airlock costs above it is airlock's own work."""
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    run([str(airlock_binary), "ca", "init", "--dir", str(d / "ca"), "--force"])
    main_port = UP_PORT if upstream_h2 else PORTS["nginx_h1"]
    cmd = [
        *wrap, str(binary), "--listen", f"127.0.0.1:{PORTS[name]}", "--ca-dir", str(d / "ca"),
        "--upstream-ca", f"{pki}/ca.pem",
        "--resolve", f"{H2_HOST}=127.0.0.1:{UP_PORT}",
        "--resolve", f"{DOMAIN}=127.0.0.1:{main_port}",
        "--resolve", f"*.{DOMAIN}=127.0.0.1:{main_port}",
        "--set-header", f"authorization: Bearer {REAL}",
    ]
    proc = spawn(name, cmd, work, env=env)
    wait_port(PORTS[name], proc, timeout=start_secs)
    proc.ca = d / "ca" / "ca.pem"
    proc.cmd = cmd
    return proc


def start_mitmproxy(work, pki):
    d = work / "mitmproxy"
    d.mkdir(parents=True, exist_ok=True)
    cmd = [
        "mitmdump", "-q", "--listen-host", "127.0.0.1", "-p", str(PORTS["mitmproxy"]),
        "--set", f"confdir={d}",
        "--set", f"ssl_verify_upstream_trusted_ca={pki}/ca.pem",
        "--set", "connection_strategy=lazy",
        "--set", "stream_large_bodies=1m",
        "-s", str(HERE / "mitm_addon.py"),
    ]
    env = {
        "BENCH_PLACEHOLDER": PLACEHOLDER, "BENCH_REAL": REAL, "BENCH_DOMAIN": DOMAIN,
        "BENCH_UPSTREAM_HOST": "127.0.0.1", "BENCH_UPSTREAM_PORT": str(UP_PORT),
    }
    proc = spawn("mitmproxy", cmd, work, env=env, cwd=d)
    wait_port(PORTS["mitmproxy"], proc, timeout=90)
    proc.ca = d / "mitmproxy-ca-cert.pem"
    proc.cmd = cmd
    return proc


def start_squid(work, pki, bump, fresh_names):
    name = "squid_bump" if bump else "squid_tunnel"
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    hosts = d / "hosts"
    hosts.write_text(f"127.0.0.1 {DOMAIN}\n" + "".join(f"127.0.0.1 {n}\n" for n in fresh_names))
    port = PORTS[name]
    lines = []
    if bump:
        if not (d / "ca-bundle.pem").exists():  # a restart keeps its CA and cert db
            make_ca(d, "squid bench CA")
            (d / "ca-bundle.pem").write_text((d / "ca.pem").read_text() + (d / "ca-key.pem").read_text())
            run(["/usr/lib/squid/security_file_certgen", "-c", "-s", str(d / "ssl_db"), "-M", "16MB"])
        lines += [
            f"http_port 127.0.0.1:{port} ssl-bump tls-cert={d}/ca-bundle.pem "
            "generate-host-certificates=on dynamic_cert_mem_cache_size=16MB",
            f"sslcrtd_program /usr/lib/squid/security_file_certgen -s {d}/ssl_db -M 16MB",
            "sslcrtd_children 4 startup=1 idle=1",
            "acl step1 at_step SslBump1",
            "ssl_bump peek step1",
            "ssl_bump bump all",
            f"tls_outgoing_options cafile={pki}/ca.pem",
            "request_header_access Authorization deny all",
            f"request_header_replace Authorization Bearer {REAL}",
        ]
    else:
        lines += [f"http_port 127.0.0.1:{port}"]
    lines += [
        f"acl bench_port port {UP_PORT}",
        "acl CONNECT method CONNECT",
        "http_access deny CONNECT !bench_port",
        "http_access allow localhost",
        "http_access deny all",
        f"hosts_file {hosts}",
        "cache deny all",
        "cache_mem 0 MB",
        "access_log none",
        "cache_store_log none",
        f"cache_log {d}/cache.log",
        f"pid_filename {d}/squid.pid",
        f"coredump_dir {d}",
        "workers 1",
        "max_filedescriptors 19000",
        "shutdown_lifetime 0 seconds",
        "pinger_enable off",
        "read_ahead_gap 1 MB",
        "client_request_buffer_max_size 1 MB",
    ]
    conf = d / "squid.conf"
    conf.write_text("\n".join(lines) + "\n")
    run(["chown", "-R", "proxy:proxy", str(d)])
    cmd = ["squid", "-N", "-f", str(conf)]
    proc = spawn(name, cmd, work)
    wait_port(port, proc)
    proc.ca = (d / "ca.pem") if bump else (pki / "ca.pem")
    proc.cmd = cmd
    return proc


# ---------------------------------------------------------------- clients


class Peer:
    def __init__(self, name, proc, pki, host=HOST, label=None):
        self.name = name
        self.label = label or LABELS[name]
        self.host = host
        self.proc = proc
        self.port = PORTS.get(name)
        self.proxy = None if name == "direct" else f"http://127.0.0.1:{self.port}"
        self.ca = pki / "ca.pem" if proc is None else proc.ca
        # Direct and the plain tunnel do not swap: their client sends the real
        # secret, so nginx answers 200 all the same.
        self.auth = f"Bearer {REAL}" if name in ("direct", "squid_tunnel") else f"Bearer {PLACEHOLDER}"
        self.ok = True

    @property
    def pid(self):
        return None if self.proc is None else self.proc.pid


def url(host=HOST, path="/"):
    return f"https://{host}:{UP_PORT}{path}"


def oha_cmd(peer, conns, duration, h2=False, keepalive=True, streams=1, requests=None, wrap=()):
    """oha for `duration` seconds, or for a count of `requests` when given;
    `wrap` goes before it (`taskset -c 1`)."""
    cmd = [
        *wrap, "oha", "--no-tui", "--output-format", "json",
        *(["-n", str(requests)] if requests else ["-z", f"{round(duration * 1000)}ms"]),
        "-c", str(conns), "-w",
        "--cacert", str(peer.ca),
        "-H", f"Authorization: {peer.auth}",
    ]
    if h2:
        cmd += ["--http2", "-p", str(streams)]
    if not keepalive:
        cmd += ["--disable-keepalive"]
    if peer.proxy:
        # oha resolves the URL's host before starting unless told not to; the
        # proxy resolves it (CONNECT carries the name).
        cmd += ["--no-pre-lookup", "-x", peer.proxy]
        if getattr(peer, "proxy_auth", None):  # shared gateway: the sandbox's credential
            cmd += ["--proxy-header", f"Proxy-Authorization: {peer.proxy_auth}"]
    else:
        cmd += ["--connect-to", f"{peer.host}:{UP_PORT}:127.0.0.1:{UP_PORT}"]
    cmd.append(url(peer.host))
    return cmd


def hold_idle(cmd, peer, pid, count, cpu0, res):
    """Runs idle_hold.py (`cmd`) against `peer` (process `pid`): connections
    opened, CPU to open them, RSS while held, a 1 s keep-alive probe while
    they are held, and how many were still alive after it, into `res`."""
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        line = p.stdout.readline()
        ready = json.loads(line) if line else {"opened": 0, "failed": count, "errors": {"holder": "died"}}
        res.update({k: ready.get(k) for k in ("opened", "failed", "seconds", "errors")})
        res["open_cpu_s"] = cpu_seconds(pid) - cpu0
        time.sleep(1.0)
        res["rss_held_kib"] = rss_kib(pid)
        # Responsiveness while they are held: one keep-alive client, 1 s.
        probe = run_oha(peer, 1, 1)
        res["probe"] = {k: probe.get(k) for k in ("rps", "p50_us", "p99_us", "failed", "error")}
        p.stdin.write("check\n")
        p.stdin.flush()
        alive = json.loads(p.stdout.readline())
        res["alive_after_probe"] = alive.get("alive")
        res["closed_by_proxy"] = alive.get("closed_by_peer")
        p.stdin.write("close\n")
        p.stdin.flush()
        p.stdout.readline()
    finally:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def run_oha(peer, conns, duration, **kw):
    cmd = oha_cmd(peer, conns, duration, **kw)
    cpu0 = cpu_seconds(peer.pid) if peer.pid else None
    t0 = time.monotonic()
    p = subprocess.run(cmd, text=True, capture_output=True, timeout=duration * 4 + 60)
    wall = time.monotonic() - t0
    cpu = (cpu_seconds(peer.pid) - cpu0) if peer.pid else None
    if p.returncode != 0:
        return {"error": f"oha exit {p.returncode}: {p.stderr.strip()[-400:]}", "cmd": cmd}
    data = json.loads(p.stdout)
    s = data.get("summary", {})
    codes = {str(k): v for k, v in (data.get("statusCodeDistribution") or {}).items()}
    errors = data.get("errorDistribution") or {}
    total = sum(codes.values())
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    lat = data.get("latencyPercentiles") or {}
    res = {
        "load1": float(open("/proc/loadavg").read().split()[0]),
        "rps": s.get("requestsPerSec"),
        "p50_us": None if lat.get("p50") is None else lat["p50"] * 1e6,
        "p99_us": None if lat.get("p99") is None else lat["p99"] * 1e6,
        "responses": total,
        "ok_2xx": ok,
        "status": codes,
        "errors": errors,
        "proxy_cpu_s": cpu,
        "wall_s": wall,
    }
    if cpu is not None and total:
        res["cpu_us_per_req"] = cpu / total * 1e6
    if total == 0 or ok != total or errors:
        res["failed"] = f"{ok}/{total} 2xx, errors {errors}"
    return res


def curl_base(peer):
    cmd = ["curl", "-sS", "--http1.1", "--cacert", str(peer.ca), "-H", f"Authorization: {peer.auth}"]
    if peer.proxy:
        cmd += ["-x", peer.proxy]
        if getattr(peer, "proxy_auth", None):
            cmd += ["--proxy-header", f"Proxy-Authorization: {peer.proxy_auth}"]
    else:
        cmd += ["--resolve", f"{peer.host}:{UP_PORT}:127.0.0.1"]
    return cmd


def sanity(peer, http="--http1.1"):
    cmd = curl_base(peer) + ["-w", "\n%{http_code}", url(peer.host)]
    cmd[cmd.index("--http1.1")] = http
    p = subprocess.run(cmd, text=True, capture_output=True, timeout=30)
    lines = p.stdout.rsplit("\n", 1)
    ok = p.returncode == 0 and len(lines) == 2 and lines[1] == "200" and lines[0] == BODY.decode()
    return ok, (p.stdout + p.stderr).strip()[-300:]


# Chunked uploads for every peer: Squid 5.7 bump drops Content-Length uploads
# of more than ~50 MB mid-body (curl: "(52) Empty reply from server"; its log
# shows ERR_CLIENT_GONE while the client is still sending), chunked ones work.
UPLOAD_FLAGS = ["-H", "Expect:", "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: text/plain"]
PLACEHOLDER_EVERY = 64 * 1024  # one placeholder per 64 KiB of upload body


def make_upload(path, size):
    """Text with a placeholder every 64 KiB: airlock swaps each one (body swap on)."""
    unit = bytearray(b"lorem ipsum dolor sit amet " * (PLACEHOLDER_EVERY // 27 + 1))[:PLACEHOLDER_EVERY]
    token = b" " + PLACEHOLDER.encode() + b" "  # delimited: base62 after it would extend the placeholder
    unit[100:100 + len(token)] = token
    block = bytes(unit) * 16  # 1 MiB
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[:left])
            left -= len(block)
    return size // PLACEHOLDER_EVERY + (1 if size % PLACEHOLDER_EVERY > 100 else 0)


def check_upload_sink(shm, expected):
    """What nginx stored: every placeholder swapped, none left."""
    data = (shm / "upload" / "sink").read_bytes()
    return {"real": data.count(REAL.encode()), "placeholders": data.count(b"miosa-tok-"), "expected": expected,
            "ok": data.count(REAL.encode()) == expected and b"miosa-tok-" not in data}


def warm_download(peer):
    cmd = curl_base(peer) + ["-r", "0-67108863", "-o", "/dev/null", url(peer.host, "/big")]
    subprocess.run(cmd, capture_output=True, timeout=120)


def transfer(peer, kind, size, upload_file):
    w = "%{http_code} %{time_total} %{size_download} %{size_upload}"
    if kind == "download":
        cmd = curl_base(peer) + ["-o", "/dev/null", "-w", w, url(peer.host, "/big")]
    else:
        cmd = curl_base(peer) + UPLOAD_FLAGS + ["-T", str(upload_file), "-o", "/dev/null", "-w", w,
                                                url(peer.host, "/upload")]
    cpu0 = cpu_seconds(peer.pid) if peer.pid else None
    rss0 = rss_kib(peer.pid) if peer.pid else None
    if peer.pid:
        with RssSampler(peer.pid) as sampler:
            p = subprocess.run(cmd, text=True, capture_output=True, timeout=600)
        peak = sampler.peak
    else:
        p = subprocess.run(cmd, text=True, capture_output=True, timeout=600)
        peak = None
    cpu = (cpu_seconds(peer.pid) - cpu0) if peer.pid else None
    parts = p.stdout.split()
    if p.returncode != 0 or len(parts) != 4:
        return {"failed": f"curl exit {p.returncode}: {p.stderr.strip()[-300:]}", "cmd": cmd}
    code, secs, down, up = parts[0], float(parts[1]), int(parts[2]), int(parts[3])
    # an upload's size_upload counts the chunk framing too
    moved = down if kind == "download" else (size if up >= size else up)
    res = {
        "status": code,
        "seconds": secs,
        "bytes": moved,
        "mb_s": moved / secs / 1e6,
        "proxy_cpu_s": cpu,
        "rss_before_kib": rss0,
        "rss_peak_kib": peak,
        "cmd": cmd,
    }
    if cpu is not None:
        res["cpu_s_per_gb"] = cpu / (moved / 1e9) if moved else None
    if not code.startswith("2") or moved != size:
        res["failed"] = f"status {code}, moved {moved} of {size} bytes"
    return res


def first_connection(peer, host):
    """CONNECT (if proxied) + TLS + one GET with `Connection: close`; wall ms."""
    ctx = ssl.create_default_context(cafile=str(peer.ca))
    t0 = time.perf_counter()
    if peer.proxy:
        s = socket.create_connection(("127.0.0.1", peer.port), timeout=30)
        target = f"{host}:{UP_PORT}"
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
        if b" 200" not in head.split(b"\r\n", 1)[0]:
            s.close()
            return {"failed": f"CONNECT: {head[:80]!r}"}
    else:
        s = socket.create_connection(("127.0.0.1", UP_PORT), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        t = ctx.wrap_socket(s, server_hostname=host)
        t_tls = time.perf_counter()
        t.sendall(
            f"GET / HTTP/1.1\r\nHost: {host}:{UP_PORT}\r\nAuthorization: {peer.auth}\r\nConnection: close\r\n\r\n".encode()
        )
        data = read_response(t)
        t1 = time.perf_counter()
        t.close()
    except (OSError, ssl.SSLError) as exc:
        return {"failed": f"{type(exc).__name__}: {exc}"}
    status = data.split(b" ", 2)[1] if data.startswith(b"HTTP/") else b"?"
    res = {"ms": (t1 - t0) * 1e3, "handshake_ms": (t_tls - t0) * 1e3, "status": status.decode()}
    if status != b"200":
        res["failed"] = f"status {status!r}"
    return res


def idle_test(peer, count, with_request, work):
    cmd = [
        sys.executable, str(HERE / "idle_hold.py"),
        "--proxy-port", str(peer.port), "--host", HOST, "--port", str(UP_PORT),
        "--cafile", str(peer.ca), "--count", str(count),
    ]
    if with_request:
        cmd += ["--request", "--auth", peer.auth]
    time.sleep(1.0)
    rss0 = rss_kib(peer.pid)
    cpu0 = cpu_seconds(peer.pid)
    res = {"count": count, "with_request": with_request, "rss_before_kib": rss0}
    hold_idle(cmd, peer, peer.pid, count, cpu0, res)
    time.sleep(2.0)
    res["rss_after_close_kib"] = rss_kib(peer.pid)
    if res.get("opened"):
        res["kib_per_conn"] = (res["rss_held_kib"] - rss0) / res["opened"]
    if res.get("failed") or (res.get("opened") or 0) < count:
        res["incomplete"] = f"{res.get('opened')}/{count} opened; errors {res.get('errors')}"
    return res


# ---------------------------------------------------------------- perf profile


def perf_profile(peer, work, duration):
    if not shutil.which("perf"):
        return {"skipped": "perf not installed"}
    data = work / "perf.data"
    rec = subprocess.Popen(
        ["perf", "record", "-F", "499", "-g", "-p", str(peer.pid), "-o", str(data), "--", "sleep", str(duration + 1)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(0.5)
    oha = run_oha(peer, 16, duration)
    _, err = rec.communicate(timeout=duration + 60)
    if rec.returncode != 0:
        return {"skipped": f"perf record failed: {err.strip()[-300:]}"}
    out = {}
    views = (
        ("by_dso", ["--sort", "dso"]),
        ("by_symbol", ["--sort", "dso,symbol"]),
        ("airlock_only", ["--sort", "symbol", "--dsos", "airlock"]),
    )
    for key, extra in views:
        rep = subprocess.run(
            ["perf", "report", "-i", str(data), "--no-children", "--stdio", "-g", "none",
             "--percent-limit", "0.5", *extra],
            text=True, capture_output=True,
        )
        lines = [re.sub(r"(\s+-)+\s*$", "", ln).rstrip() for ln in rep.stdout.splitlines()
                 if ln.strip() and not ln.startswith("#")]
        out[key] = lines[:40]
    out["rps_under_perf"] = oha.get("rps")
    return out


# ---------------------------------------------------------------- main


def machine_info():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1048576:.1f} GiB"
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "memory": mem,
        "os": tool_version(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "nofile_limit": tool_version(["sh", "-c", "ulimit -n"]),
    }


def versions(binary, commit):
    if not commit:
        commit = tool_version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    return {
        "airlock": f"{tool_version([str(binary), '--version'])} (commit {commit})",
        "rustc": tool_version(["rustc", "--version"]),
        "oha": tool_version(["oha", "--version"]),
        "nginx": tool_version(["nginx", "-v"]),
        "squid": tool_version(["squid", "-v"]) if shutil.which("squid") else "not installed",
        "mitmproxy": tool_version(["mitmdump", "--version"]) if shutil.which("mitmdump") else "not installed",
        "curl": tool_version(["curl", "--version"]),
        "openssl": tool_version(["openssl", "version"]),
        "python": platform.python_version(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--airlock", help="path to the release airlock binary (bench/run passes it)")
    ap.add_argument("--ceiling", help="path to the release ceiling binary (bench/run builds bench/ceiling)")
    ap.add_argument("--smoke", action="store_true", help="1 run of ~1 s each, small sizes")
    ap.add_argument("--build", default="release", help="how both binaries were built (for the report)")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--duration", type=float, help="seconds per oha measurement")
    ap.add_argument("--size-mib", type=int, help="download/upload size")
    ap.add_argument("--idle", type=int, help="idle connections to hold")
    ap.add_argument("--peers", help="comma list (default: all installed)")
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/tmp/airlock-bench"))
    ap.add_argument("--out", help="where results.json, charts/ and BENCHMARKS.md go")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--workloads", help="comma list of keepalive,h2,newconn,first,transfer,idle,vault,firewall,rules,"
                    "scaling,allocs,instructions,fwcount,callgrind (default: all; --smoke leaves out allocs, "
                    "instructions, fwcount and callgrind: they build extra binaries or run under valgrind)")
    ap.add_argument("--scale-sandboxes", help="scaling: population sizes, growing (default 1,100,1000,10000; "
                    "smoke 1,100); each sandbox holds 10 bindings")
    ap.add_argument("--scale-tokens", help="scaling: tokens one sandbox holds, firewall on vs off "
                    "(default 1,10,100,1000; smoke 1,100)")
    ap.add_argument("--airlock-upstream", choices=["h1", "h2"], default="h2",
                    help="nginx listener airlock forwards bench.test to (h2 offered, or http/1.1 only)")
    ap.add_argument("--airlock-protocol", choices=["auto", "http1", "http2"], default="auto",
                    help="airlock's upstream_protocol in the main peer (an A/B of the wire choice)")
    ap.add_argument("--target-dir", help="cargo target dir (for the swapcount build)")
    ap.add_argument("--conns", default="1,16,256", help="keep-alive connection counts")
    ap.add_argument("--swap-in", default="header,basic,body",
                    help="airlock's swap_in for the bench secret (older builds know no 'body')")
    ap.add_argument("--src", default=str(REPO), help="the airlock source tree the binary was built from")
    ap.add_argument("--airlock-commit", help="label for the measured commit")
    ap.add_argument("--report-only", metavar="RESULTS_JSON",
                    help="redraw charts and rewrite the report from an earlier results.json")
    args = ap.parse_args()
    if args.report_only:
        return rewrite_report(Path(args.report_only), args)
    if not args.airlock:
        ap.error("--airlock is required (bench/run builds it and passes it)")

    smoke = args.smoke
    reps = args.reps or (1 if smoke else 5)
    duration = args.duration or (1 if smoke else 5)
    size = (args.size_mib or (32 if smoke else 1024)) * 1024 * 1024
    idle_n = args.idle or (200 if smoke else 10000)
    conn_levels = [int(c) for c in args.conns.split(",")]
    all_workloads = ("keepalive,h2,newconn,first,transfer,idle,vault,firewall,rules,scaling,allocs,instructions,"
                     "fwcount,callgrind")
    # Smoke runs leave out the four that build extra binaries or run under valgrind.
    smoke_workloads = ",".join(w for w in all_workloads.split(",")
                               if w not in ("allocs", "instructions", "fwcount", "callgrind"))
    workloads = set((args.workloads or (smoke_workloads if smoke else all_workloads)).split(","))
    if args.out:
        out_dir = Path(args.out)
        report_path = out_dir / "BENCHMARKS.md"
    elif smoke:
        out_dir = Path(args.work) / "smoke-report"
        report_path = out_dir / "BENCHMARKS.md"
    else:
        out_dir = HERE
        report_path = REPO / "BENCHMARKS.md"

    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    for stale in Path("/dev/shm").glob("airlock-bench-*"):
        # left by a run that was killed: its pid is the suffix
        pid = stale.name.rsplit("-", 1)[-1].split(".")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
    work.mkdir(parents=True)

    available = {"direct": True, "airlock": True}
    available["squid_bump"] = available["squid_tunnel"] = bool(shutil.which("squid")) and Path(
        "/usr/lib/squid/security_file_certgen").exists()
    available["mitmproxy"] = bool(shutil.which("mitmdump"))
    available["ceiling"] = bool(args.ceiling) and Path(args.ceiling).exists()
    # The plain tunnel is a reference figure: left out of smoke runs unless asked for.
    wanted = args.peers.split(",") if args.peers else [p for p in PEER_ORDER if not (smoke and p == "squid_tunnel")]
    names = [p for p in PEER_ORDER if p in wanted and available.get(p)]
    for p in wanted:
        if p in PEER_ORDER and not available.get(p):
            NOTES.append(f"{LABELS[p]}: not installed, skipped")

    # The default `auto` is left unset, as a user's config leaves it.
    protocol_line = "" if args.airlock_protocol == "auto" else f'upstream_protocol = "{args.airlock_protocol}"\n'
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.monotonic()
    log(f"mode={'smoke' if smoke else 'full'} reps={reps} duration={duration}s size={size >> 20} MiB idle={idle_n} peers={names}")

    pki = make_certs(work)
    fresh_names = [f"fresh{os.getpid()}x{i}.{DOMAIN}" for i in range(reps * 2 + 4)]
    upload_file = Path("/dev/shm") / f"airlock-bench-upload-{os.getpid()}.bin"
    placeholders_in_upload = make_upload(upload_file, size)

    procs = {}
    results = {
        "meta": {
            "mode": "smoke" if smoke else "full",
            "started_utc": started.isoformat(timespec="seconds"),
            "reps": reps, "duration_s": duration, "transfer_bytes": size, "idle_connections": idle_n,
            "machine": machine_info(), "versions": versions(args.airlock, args.airlock_commit),
            "build": args.build,
            "peers": [LABELS[n] for n in names], "ports": PORTS,
            "loadavg_start": open("/proc/loadavg").read().split()[:3],
        },
        "commands": {},
        "rss_kib": {},
        "workloads": {},
    }
    try:
        procs["nginx"] = start_nginx(work, pki, size)
        starters = {
            "airlock": lambda: start_airlock(work, pki, args.airlock, args.airlock_upstream == "h2",
                                             args.swap_in.split(","), proxy_extra=protocol_line),
            "mitmproxy": lambda: start_mitmproxy(work, pki),
            "ceiling": lambda: start_ceiling(work, pki, args.ceiling, args.airlock,
                                             args.airlock_upstream == "h2"),
            "squid_bump": lambda: start_squid(work, pki, True, fresh_names),
            "squid_tunnel": lambda: start_squid(work, pki, False, fresh_names),
        }
        peers = {}
        for n in names:
            if n == "direct":
                peers[n] = Peer(n, None, pki)
                continue
            try:
                procs[n] = starters[n]()
                peers[n] = Peer(n, procs[n], pki)
                results["commands"][f"start {LABELS[n]}"] = shlex.join(procs[n].cmd)
            except Exception as exc:  # noqa: BLE001
                if n == "airlock":
                    FAILURES.append(f"airlock did not start: {exc}")
                    raise
                NOTES.append(f"{LABELS[n]}: did not start ({exc}); skipped")
                log(NOTES[-1])
        time.sleep(1.0)
        for n, peer in peers.items():
            if peer.pid:
                results["rss_kib"].setdefault(n, {})["start"] = rss_kib(peer.pid)

        # The upstream really refuses an unswapped placeholder.
        probe = Peer("direct", None, pki)
        probe.auth = f"Bearer {PLACEHOLDER}"
        ok, detail = sanity(probe)
        if ok or "403" not in detail:
            FAILURES.append(f"nginx did not refuse the bare placeholder: {detail}")
        for n, peer in list(peers.items()):
            ok, detail = sanity(peer)
            if not ok:
                msg = f"{peer.label}: a swapped GET did not reach nginx intact: {detail}"
                if n == "airlock":
                    FAILURES.append(msg)
                else:
                    NOTES.append(msg + "; skipped")
                    del peers[n]
                log(msg)
        # Interop: airlock in front of an upstream that offers h2 (nginx 1.22).
        interop = {}
        if "airlock" in peers:
            h2up = Peer("airlock", procs["airlock"], pki, host=H2_HOST, label="airlock, h2 upstream")
            for client in ("--http1.1", "--http2"):
                ok, detail = sanity(h2up, client)
                status = detail.rsplit("\n", 1)[-1]
                interop[client] = {"ok": ok, "status": status, "detail": detail[-200:]}
                if not ok:
                    FAILURES.append(
                        f"airlock → nginx offering h2, {client[2:]} client: status {status} instead of 200 "
                        "(nginx: 'client sent duplicate host header')" if status == "400" else
                        f"airlock → nginx offering h2, {client[2:]} client: {detail[-200:]}")
                    log(FAILURES[-1])
        results["interop_h2_upstream"] = interop
        results["meta"]["airlock_upstream"] = args.airlock_upstream
        results["meta"]["airlock_protocol"] = args.airlock_protocol
        for n, peer in peers.items():
            if peer.pid:
                results["rss_kib"][n]["rest"] = rss_kib(peer.pid)
                results.setdefault("rss_split_rest_kib", {})[n] = rss_split(peer.pid)
        order = [n for n in PEER_ORDER if n in peers]
        results["meta"]["peers"] = [LABELS[n] for n in order]

        def record_rss(stage):
            for n in order:
                if peers[n].pid:
                    results["rss_kib"][n][stage] = rss_kib(peers[n].pid)

        def check(peer, res, what):
            if res.get("failed") or res.get("error"):
                msg = f"{peer.label} {what}: {res.get('failed') or res.get('error')}"
                if peer.name == "airlock":
                    FAILURES.append(msg)
                else:
                    NOTES.append(msg)
                log("  !", msg)

        wl = results["workloads"]
        if "keepalive" in workloads:
            # -- 1. keep-alive GETs
            for n in order:
                run_oha(peers[n], 16, 1)  # untimed warm-up
            for c in conn_levels:
                key = f"c{c}"
                wl.setdefault("keepalive", {})[key] = {n: {"runs": []} for n in order}
                results["commands"][f"keep-alive, {c} conns"] = shlex.join(oha_cmd(peers["airlock"], c, duration))
                for r in range(reps):
                    for n in order:
                        res = run_oha(peers[n], c, duration)
                        check(peers[n], res, f"keep-alive c={c}")
                        wl["keepalive"][key][n]["runs"].append(res)
                        log(f"keep-alive c={c} rep {r + 1} {n}: {res.get('rps') or 0:.0f} req/s p50 {res.get('p50_us') or 0:.0f} us")
            record_rss("keepalive")

        if "h2" in workloads:
            # -- 1b. HTTP/2 client side
            h2_cases = [("c16", 16, 1)] + ([] if smoke else [("c1x16", 1, 16)])
            h2_peers = dict(peers)
            h2_order = list(order)
            if interop.get("--http2", {}).get("ok") and args.airlock_upstream == "h1":
                h2_peers["airlock_h2up"] = Peer("airlock", procs["airlock"], pki, host=H2_HOST,
                                                label="airlock, h2 upstream")
                h2_order.insert(h2_order.index("airlock") + 1, "airlock_h2up")
            for key, c, streams in h2_cases:
                wl.setdefault("h2", {})[key] = {n: {"runs": []} for n in h2_order}
                results["commands"][f"HTTP/2, {c} conns x {streams} streams"] = shlex.join(
                    oha_cmd(peers["airlock"], c, duration, h2=True, streams=streams))
                for r in range(reps):
                    for n in h2_order:
                        if wl["h2"][key][n].get("unsupported"):
                            continue  # measured once: the peer does not speak h2 to clients
                        res = run_oha(h2_peers[n], c, duration, h2=True, streams=streams)
                        if n.startswith("squid") and (res.get("failed") or res.get("error")):
                            wl["h2"][key][n]["unsupported"] = res.get("failed") or res.get("error")
                        else:
                            check(h2_peers[n], res, f"HTTP/2 {key}")
                        wl["h2"][key][n]["runs"].append(res)
                        log(f"h2 {key} rep {r + 1} {n}: {res.get('rps') or 0:.0f} req/s")
            record_rss("h2")

        if "newconn" in workloads:
            # -- 2. new connection per request
            wl["newconn"] = {n: {"runs": []} for n in order}
            results["commands"]["new connection per request"] = shlex.join(
                oha_cmd(peers["airlock"], 8, duration, keepalive=False))
            for r in range(reps):
                for n in order:
                    res = run_oha(peers[n], 8, duration, keepalive=False)
                    check(peers[n], res, "new connection per request")
                    wl["newconn"][n]["runs"].append(res)
                    log(f"new-conn rep {r + 1} {n}: {res.get('rps') or 0:.0f} conn/s")
            record_rss("newconn")

        if "first" in workloads:
            # -- 2b. first connection to a never-seen host name, then the same name again
            wl["first_conn"] = {n: {"fresh": [], "again": []} for n in order}
            for r in range(reps):
                for n in order:
                    name = fresh_names[r]  # (the plain tunnel mints nothing: reference only)
                    fresh = first_connection(peers[n], name)
                    again = first_connection(peers[n], name)
                    check(peers[n], fresh, "first connection")
                    check(peers[n], again, "second connection")
                    wl["first_conn"][n]["fresh"].append(fresh)
                    wl["first_conn"][n]["again"].append(again)
                    log(f"first-conn rep {r + 1} {n}: fresh {fresh.get('ms', 0):.2f} ms, again {again.get('ms', 0):.2f} ms")

        if "transfer" in workloads:
            # -- 3. large download and upload
            for n in order:
                warm_download(peers[n])  # untimed: the first transfer after start-up is slow
            for kind in ("download", "upload"):
                wl[kind] = {n: {"runs": []} for n in order}
                results["commands"][kind] = shlex.join(
                    transfer_cmd_preview(peers["airlock"], kind, upload_file))
                for r in range(reps):
                    for n in order:
                        res = transfer(peers[n], kind, size, upload_file)
                        if kind == "upload" and n in ("airlock", "mitmproxy") and r == 0 and not res.get("failed"):
                            res["body_swap_check"] = check_upload_sink(procs["nginx"].shm, placeholders_in_upload)
                            if not res["body_swap_check"]["ok"]:
                                res["failed"] = f"body swap: {res['body_swap_check']}"
                        check(peers[n], res, kind)
                        res.pop("cmd", None)
                        wl[kind][n]["runs"].append(res)
                        log(f"{kind} rep {r + 1} {n}: {res.get('mb_s') or 0:.0f} MB/s, proxy CPU {res.get('cpu_s_per_gb') or 0:.2f} s/GB")
                record_rss(kind)

        if "idle" in workloads:
            # -- 4. idle intercepted connections (one peer at a time, each on a
            # fresh process: a used heap would absorb the new connections)
            def restart(n):
                procs[n].stop()
                procs[n] = starters[n]()
                peers[n].proc = procs[n]
                ok, detail = sanity(peers[n])  # warm: one intercepted request
                if not ok:
                    raise RuntimeError(f"{peers[n].label} after restart: {detail}")

            wl["idle"] = {}
            for n in order:
                if n == "direct":
                    continue
                restart(n)
                res = idle_test(peers[n], idle_n, False, work)
                wl["idle"][n] = res
                log(f"idle {n}: {res.get('opened')}/{idle_n} open, {res.get('kib_per_conn') or 0:.1f} KiB/conn, probe p50 {((res.get('probe') or {}).get('p50_us') or 0):.0f} us")
                if res.get("incomplete") or (res.get("probe") or {}).get("failed"):
                    check(peers[n], {"failed": res.get("incomplete") or res["probe"]["failed"]}, "idle connections")
            # airlock and the ceiling: each idle connection has carried one GET
            wl["idle_after_request"] = {}
            for n in [p for p in ("airlock", "ceiling") if p in peers]:
                restart(n)
                res = idle_test(peers[n], idle_n, True, work)
                wl["idle_after_request"][n] = res
                log(f"idle+GET {n}: {res.get('opened')}/{idle_n}, {res.get('kib_per_conn') or 0:.1f} KiB/conn")
                if res.get("incomplete"):
                    check(peers[n], {"failed": res["incomplete"]}, "idle connections after a GET")

        if "vault" in workloads:
            # -- 5. token path: vault cache hit, cold cache, 401 storm
            wl["token_path"] = token_path(work, pki, args.airlock, args.airlock_upstream == "h2",
                                          reps, duration, 100 if smoke else 1000, results)

        if "firewall" in workloads:
            # -- 6. the response firewall's cost: off, and on with 1, 10, 100 tokens
            wl["firewall"] = firewall_cost(work, pki, args.airlock, args.airlock_upstream == "h2",
                                           reps, duration, size)

        if "allocs" in workloads:
            # -- 8. allocations per request (counting allocator builds), airlock ÷ ceiling
            results["allocations"] = allocations(work, pki, Path(args.src),
                                                 Path(args.target_dir or REPO / "target") / "bench-alloc",
                                                 args.airlock_upstream == "h2")

        if "instructions" in workloads:
            # -- 8b. instructions per request (callgrind), airlock ÷ ceiling
            results["instructions"] = instructions_per_request(work, pki, args.airlock, args.ceiling,
                                                               args.airlock_upstream == "h2")

        if "rules" in workloads:
            # -- 7. request rules and a narrowed placeholder on the keep-alive path
            wl["rules"] = rules_cost(work, pki, args.airlock, args.airlock_upstream == "h2", reps, duration)

        scale_tokens = [int(x) for x in (args.scale_tokens or ("1,100" if smoke else "1,10,100,1000")).split(",")]
        if "scaling" in workloads:
            # -- 9. how cost grows with work: a shared gateway's population,
            # the tokens a sandbox holds (firewall on vs off), idle connections
            scale_reps = min(reps, 3)
            points = [int(x) for x in (args.scale_sandboxes or ("1,100" if smoke else "1,100,1000,10000")).split(",")]
            wl["scaling"] = {
                # An even count of rounds: each gateway goes first as often.
                "firewall": scaling_firewall(work, pki, args.airlock, args.airlock_upstream == "h2",
                                             1 if smoke else 6, duration, size, scale_tokens),
                "population": scaling_population(work, pki, args.airlock, args.airlock_upstream == "h2",
                                                 scale_reps, duration, points, idle_n),
            }

        if "fwcount" in workloads:
            # -- 9b. the firewall's cost by the tokens a sandbox holds, counted (callgrind)
            results["firewall_counted"] = scaling_firewall_counted(work, pki, args.airlock,
                                                                   args.airlock_upstream == "h2", scale_tokens,
                                                                   mib=min(32, size >> 20))

        if "callgrind" in workloads:
            results["callgrind"] = callgrind_swapper(work, args.target_dir or Path(args.airlock).parent.parent,
                                                     Path(args.src))

        # -- profile airlock (after all measurements: perf perturbs timings)
        if not smoke and not args.no_profile and "keepalive" in workloads:
            results["profile"] = perf_profile(peers["airlock"], work, max(duration, 5))

        for n in order:
            if peers[n].proc is not None and not peers[n].proc.alive():
                rc = peers[n].proc.popen.returncode
                how = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit status {rc}"
                msg = f"{peers[n].label} died during the run ({how}):\n{peers[n].proc.log_tail()}"
                (FAILURES if n == "airlock" else NOTES).append(msg)
        airlock_log = procs["airlock"].log_tail(30)
        if airlock_log.strip():
            results["airlock_log_tail"] = airlock_log
    except Exception as exc:  # noqa: BLE001
        FAILURES.append(f"bench driver error: {type(exc).__name__}: {exc}")
        log(FAILURES[-1])
        import traceback

        traceback.print_exc()
    finally:
        for p in procs.values():
            p.stop()
        try:
            upload_file.unlink()
        except OSError:
            pass
        if "nginx" in procs:
            shutil.rmtree(procs["nginx"].shm, ignore_errors=True)

    results["meta"]["elapsed_s"] = round(time.monotonic() - t_start, 1)
    results["meta"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    results["failures"] = FAILURES
    results["notes"] = NOTES
    import report

    report.aggregate(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    try:
        charts = report.charts(results, out_dir / "charts")
    except Exception as exc:  # noqa: BLE001
        charts = []
        NOTES.append(f"charts not drawn: {exc}")
    report_path.write_text(report.markdown(results, charts, report_path.parent, out_dir / "charts"))
    log(f"wrote {out_dir / 'results.json'} and {report_path} in {results['meta']['elapsed_s']} s")
    if FAILURES:
        log("AIRLOCK FAILURES:")
        for f in FAILURES:
            log("  -", f)
        return 1
    return 0


def rewrite_report(results_path, args):
    import report

    results = json.loads(results_path.read_text())
    report.aggregate(results)
    out_dir = Path(args.out) if args.out else results_path.parent
    if args.out:
        report_path = out_dir / "BENCHMARKS.md"
    elif results["meta"]["mode"] == "full" and out_dir.resolve() == HERE:
        report_path = REPO / "BENCHMARKS.md"
    else:
        report_path = out_dir / "BENCHMARKS.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    charts = report.charts(results, out_dir / "charts")
    report_path.write_text(report.markdown(results, charts, report_path.parent, out_dir / "charts"))
    log(f"rewrote {report_path} from {results_path}")
    return 0


def transfer_cmd_preview(peer, kind, upload_file):
    w = "%{http_code} %{time_total} %{size_download} %{size_upload}"
    if kind == "download":
        return curl_base(peer) + ["-o", "/dev/null", "-w", w, url(peer.host, "/big")]
    return curl_base(peer) + UPLOAD_FLAGS + ["-T", str(upload_file), "-o", "/dev/null", "-w", w,
                                             url(peer.host, "/upload")]


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
