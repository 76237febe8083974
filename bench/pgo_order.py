"""The link order of a profile-guided build (bench/pgo): which functions a
binary runs from its start through its first requests, found under
callgrind, one mangled symbol a line, for the linker's
`--symbol-ordering-file`. Linked first and together, the code a resting
process has run sits in a few megabytes of its text instead of being spread
over all of it, so fewer of its pages are resident (bench/ANALYSIS.md).

The workload is what the bench runs before it reads "RSS at rest": start,
GETs over HTTP/1.1 and HTTP/2 on both upstream wires, stop. Both peers get
the same, as in the training.

  bench/pgo_order.py --airlock BIN --ceiling BIN --work DIR --out DIR
      writes DIR/airlock.order and DIR/ceiling.order
"""
import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402


def executed_functions(callgrind_out, binary_name):
    """Functions of `binary_name` that callgrind saw run, first seen first.
    Needs `--compress-strings=no` (names written in full) and
    `--demangle=no` (the symbol table's own names)."""
    names, seen, obj = [], set(), None
    with open(callgrind_out, errors="replace") as f:
        for line in f:
            if line.startswith("ob="):
                obj = line[3:].strip()
            elif line.startswith("fn=") and obj and Path(obj).name == binary_name:
                # `'2` marks a recursion depth, not another symbol.
                name = line[3:].strip().split("'", 1)[0]
                if name not in seen and not name.startswith("0x"):
                    seen.add(name)
                    names.append(name)
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--airlock", required=True)
    ap.add_argument("--ceiling", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    pki = B.make_certs(work)
    nginx = B.start_nginx(work, pki, 1 << 20)
    B.PORTS["pgo_order"] = B.PORTS["airlock"]
    B.LABELS["pgo_order"] = "link order"
    try:
        for name, binary in (("airlock", args.airlock), ("ceiling", args.ceiling)):
            names, seen = [], set()
            for upstream_h2 in (True, False):
                trace = work / f"{name}-{'h2' if upstream_h2 else 'h1'}.callgrind"
                wrap = ("valgrind", "--tool=callgrind", "--demangle=no", "--compress-strings=no",
                        "--dump-instr=no", f"--callgrind-out-file={trace}")
                if name == "airlock":
                    proc = B.start_airlock(work, pki, binary, upstream_h2, name="pgo_order",
                                           wrap=wrap, start_secs=300)
                else:
                    proc = B.start_ceiling(work, pki, binary, args.airlock, upstream_h2,
                                           name="pgo_order", wrap=wrap, start_secs=300)
                try:
                    # As the bench before "RSS at rest": a GET each way, and
                    # the interop GETs to the upstream offering h2.
                    for host in (B.DOMAIN, B.H2_HOST):
                        peer = B.Peer("pgo_order", proc, pki, host=host)
                        for http in ("--http1.1", "--http2"):
                            ok, detail = B.sanity(peer, http)
                            if not ok and host == B.DOMAIN:
                                raise SystemExit(f"pgo_order: {name} {http}: {detail}")
                finally:
                    proc.stop()
                for fn in executed_functions(trace, Path(binary).name):
                    if fn not in seen:
                        seen.add(fn)
                        names.append(fn)
            if len(names) < 100:
                raise SystemExit(f"pgo_order: {name}: only {len(names)} functions seen (symbols stripped?)")
            (out / f"{name}.order").write_text("\n".join(names) + "\n")
            B.log(f"pgo_order: {name}: {len(names)} functions run at start and in the first requests")
    finally:
        nginx.stop()
        shutil.rmtree(nginx.shm, ignore_errors=True)


if __name__ == "__main__":
    main()
