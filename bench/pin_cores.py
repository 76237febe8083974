#!/usr/bin/env python3
"""How much of airlock's gap to the ceiling at 16 keep-alive connections is
what running on two cores costs (bench/ANALYSIS.md, "The 16-connection
gap"). Starts nginx, airlock and the ceiling through bench.py's own
functions and measures CPU a request and requests a second, alternating
the two proxies, in three settings: as the bench runs them (free on every
core), each proxy pinned to core 0 with oha and nginx on core 1, and free
with one tokio worker each. Prints one line per run and the medians.

With `--perf DIR`, each proxy is also profiled (perf, cpu-clock) for one
more run in the free and the pinned setting, and the symbols whose CPU per
request grows most from pinned to free are printed: with no hardware
counters, that growth is where lines shared between cores cost.

    target/bench-venv/bin/python3 bench/pin_cores.py \\
        --airlock target/bench-release/pgo/airlock --ceiling target/bench-release/pgo/ceiling
"""
import argparse
import collections
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def pin(pid, cpus):
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], capture_output=True, check=False)


def nginx_pids():
    out = subprocess.run(["pgrep", "-x", "nginx"], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def measure(peers, reps, duration, pinned, label):
    """{name: [(req/s, CPU µs a request)]} over `reps` alternating rounds."""
    out = {name: [] for name in peers}
    every = f"0-{os.cpu_count() - 1}"
    wrap = ("taskset", "-c", "1") if pinned else ()
    for _ in range(reps):
        for name, peer in peers.items():
            pin(peer.pid, "0" if pinned else every)
            for n in nginx_pids():
                pin(n, "1" if pinned else every)
            r = bench.run_oha(peer, 16, duration, wrap=wrap)
            if r.get("failed") or r.get("error"):
                raise SystemExit(f"{name}: {r.get('failed') or r.get('error')}")
            out[name].append((r["rps"], r["cpu_us_per_req"]))
            print(f"{label} {name}: {r['rps']:.0f} req/s, "
                  f"{r['cpu_us_per_req']:.2f} µs CPU/req", flush=True)
    return out


PERF_HZ = 4999


def profile(peer, duration, pinned, data):
    """{symbol: µs a request} from one more oha run under `perf record`."""
    rec = subprocess.Popen(
        ["perf", "record", "-F", str(PERF_HZ), "-e", "cpu-clock", "-p", str(peer.pid), "-o", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = bench.run_oha(peer, 16, duration, wrap=("taskset", "-c", "1") if pinned else ())
    finally:
        rec.send_signal(2)
        rec.wait(60)
    rep = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--stdio", "-F", "sample,sym",
         "--percent-limit", "0"], text=True, capture_output=True).stdout
    per_req = collections.Counter()
    for line in rep.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or line.startswith("#") or not parts[0].isdigit():
            continue
        per_req[parts[2].strip()] += int(parts[0]) / PERF_HZ * 1e6 / max(r.get("responses") or 1, 1)
    return per_req


def perf_diff(profiles, top=40):
    """Lines of the symbols that cost more a request free than pinned."""
    lines = []
    for name in sorted({n for n, _ in profiles}):
        free, pinned = profiles.get((name, "free")), profiles.get((name, "pinned"))
        if not free or not pinned:
            continue
        growth = sorted(((free[s] - pinned.get(s, 0), s) for s in free), reverse=True)[:top]
        lines.append(f"{name}: {sum(free.values()):.1f} µs/req free, {sum(pinned.values()):.1f} pinned")
        lines += [f"  {d:+6.2f} µs  {pinned.get(s, 0):6.2f} -> {free[s]:6.2f}  {s}" for d, s in growth]
    return lines


def setting(label, work, pki, args, pinned=False, env=None, profiles=None):
    nginx = bench.start_nginx(work, pki, 64 << 20)
    procs = [nginx]
    try:
        air_env = {**(env or {}), **dict(kv.split("=", 1) for kv in args.airlock_env)}
        air = bench.start_airlock(work, pki, args.airlock, True, env=air_env or None)
        procs.append(air)
        ceil = bench.start_ceiling(work, pki, args.ceiling, args.airlock, True, env=env)
        procs.append(ceil)
        peers = {"airlock": bench.Peer("airlock", air, pki), "ceiling": bench.Peer("ceiling", ceil, pki)}
        for peer in peers.values():
            bench.run_oha(peer, 16, 2)  # warm up
        runs = measure(peers, args.reps, args.duration, pinned, label)
        if profiles is not None:
            for name, peer in peers.items():
                data = Path(args.perf) / f"{name}-{label.replace(' ', '-')}.data"
                profiles[(name, label)] = profile(peer, args.duration, pinned, data)
    finally:
        for p in reversed(procs):
            p.stop()
    med = {n: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for n, v in runs.items()}
    (ar, ac), (cr, cc) = med["airlock"], med["ceiling"]
    return f"{label}: airlock {ac:.1f} vs ceiling {cc:.1f} µs CPU/req ({ac / cc:.2f}x); " \
           f"req/s {ar:.0f} vs {cr:.0f} ({ar / cr:.2f}x)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--airlock", required=True)
    ap.add_argument("--ceiling", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--work", default="/tmp/airlock-pin-cores")
    ap.add_argument("--perf", metavar="DIR", help="also profile each proxy free and pinned; perf.data files go here")
    ap.add_argument("--airlock-env", action="append", default=[], metavar="K=V",
                    help="an environment variable for airlock only (repeatable)")
    ap.add_argument("--settings", default="free,pinned,one worker",
                    help="comma-separated: free, pinned, one worker")
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pki = bench.make_certs(work)
    profiles = None
    if args.perf:
        Path(args.perf).mkdir(parents=True, exist_ok=True)
        profiles = {}
    chosen = [x.strip() for x in args.settings.split(",")]
    lines = []
    if "free" in chosen:
        lines.append(setting("free", work, pki, args, profiles=profiles))
    if "pinned" in chosen:
        lines.append(setting("pinned", work, pki, args, pinned=True, profiles=profiles))
    if "one worker" in chosen:
        lines.append(setting("one worker", work, pki, args, env={"TOKIO_WORKER_THREADS": "1"}))
    if profiles:
        lines += perf_diff(profiles)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
