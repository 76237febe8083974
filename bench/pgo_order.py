"""The link order of a profile-guided build (bench/pgo): the calls a binary
makes from its start through its first requests, found under callgrind,
as the linker's `--call-graph-ordering-file` (`caller callee count` a
line, mangled names). The linker lays out every function in a call graph
together (its C3 ordering), hot ones first: the graph the profile put in
the objects (the request path, from the training) and this one (start-up
and first requests). The code a resting process has run then sits in a few
megabytes of its text instead of being spread over all of it, so fewer of
its pages are resident (bench/ANALYSIS.md). A `--symbol-ordering-file`
would do that too, but it turns the profile's call-graph order off: the
hot path lost its layout (measured, bench/ANALYSIS.md).

The workload is what the bench runs before it reads "RSS at rest": start,
GETs over HTTP/1.1 and HTTP/2 on both upstream wires, stop. Both peers get
the same, as in the training.

  bench/pgo_order.py --airlock BIN --ceiling BIN --work DIR --out DIR
      writes DIR/airlock.callgraph and DIR/ceiling.callgraph
"""
import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402


def call_edges(callgrind_out, binary_name):
    """Calls between functions of `binary_name` that callgrind saw, as
    {(caller, callee): count}. Needs `--compress-strings=no` (names written
    in full) and `--demangle=no` (the symbol table's own names)."""
    edges = {}
    obj = caller = None
    callee_obj = callee = None
    with open(callgrind_out, errors="replace") as f:
        for line in f:
            if line.startswith("ob="):
                obj = line[3:].strip()
            elif line.startswith("fn="):
                # `'2` marks a recursion depth, not another symbol.
                caller = line[3:].strip().split("'", 1)[0]
                callee_obj = callee = None
            elif line.startswith("cob="):
                callee_obj = line[4:].strip()
            elif line.startswith("cfn="):
                callee = line[4:].strip().split("'", 1)[0]
            elif line.startswith("calls=") and callee is not None:
                # A callee's object is the caller's unless `cob=` said otherwise;
                # either holds for this call only.
                ours = Path(callee_obj or obj or "").name == binary_name == Path(obj or "").name
                if ours and caller != callee and not callee.startswith("0x") and not caller.startswith("0x"):
                    count = int(line[6:].split()[0])
                    edges[(caller, callee)] = edges.get((caller, callee), 0) + count
                callee_obj = callee = None
    return edges


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
            edges = {}
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
                for edge, count in call_edges(trace, Path(binary).name).items():
                    edges[edge] = edges.get(edge, 0) + count
            functions = {f for edge in edges for f in edge}
            if len(functions) < 100:
                raise SystemExit(f"pgo_order: {name}: only {len(functions)} functions seen (symbols stripped?)")
            (out / f"{name}.callgraph").write_text(
                "".join(f"{a} {b} {count}\n" for (a, b), count in sorted(edges.items())))
            B.log(f"pgo_order: {name}: {len(edges)} calls between {len(functions)} functions "
                  "run at start and in the first requests")
    finally:
        nginx.stop()
        shutil.rmtree(nginx.shm, ignore_errors=True)


if __name__ == "__main__":
    main()
