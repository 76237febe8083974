#!/usr/bin/env python3
"""How much of airlock's gap to the ceiling at 16 keep-alive connections is
what running on two cores costs (bench/ANALYSIS.md, "The 16-connection
gap"). Starts nginx, airlock and the ceiling through bench.py's own
functions and measures CPU a request and requests a second, alternating
the two proxies, in three settings: as the bench runs them (free on every
core), each proxy pinned to core 0 with oha and nginx on core 1, and free
with one tokio worker each. Prints one line per run and the medians.

    target/bench-venv/bin/python3 bench/pin_cores.py \\
        --airlock target/bench-release/pgo/airlock --ceiling target/bench-release/pgo/ceiling
"""
import argparse
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


def setting(label, work, pki, args, pinned=False, env=None):
    nginx = bench.start_nginx(work, pki, 64 << 20)
    procs = [nginx]
    try:
        air = bench.start_airlock(work, pki, args.airlock, True, env=env)
        procs.append(air)
        ceil = bench.start_ceiling(work, pki, args.ceiling, args.airlock, True, env=env)
        procs.append(ceil)
        peers = {"airlock": bench.Peer("airlock", air, pki), "ceiling": bench.Peer("ceiling", ceil, pki)}
        for peer in peers.values():
            bench.run_oha(peer, 16, 2)  # warm up
        runs = measure(peers, args.reps, args.duration, pinned, label)
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
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pki = bench.make_certs(work)
    lines = [
        setting("free", work, pki, args),
        setting("pinned", work, pki, args, pinned=True),
        setting("one worker", work, pki, args, env={"TOKIO_WORKER_THREADS": "1"}),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
