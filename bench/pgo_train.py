"""The training run of a profile-guided build (bench/pgo): the same
workload for airlock and the ceiling, each instrumented binary writing its
counts to its own file at exit. Keep-alive GETs at 1 and 16 connections,
a connection per request, HTTP/2 on the client side, and downloads and
uploads (a placeholder every 64 KiB), on an HTTP/2 and an HTTP/1.1
upstream; for airlock also a vault-backed token (a 401 that refreshes it,
then cache hits). Paths it does not run (signing, WebSocket, consent, the
shared gateway's sandbox credentials) are laid out as cold code: correct,
and possibly slower than in a plain build.

  bench/pgo_train.py --airlock BIN --ceiling BIN --profiles DIR --work DIR
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402

# (connections, requests, oha options)
GETS = (
    (1, 3000, {}),
    (16, 10000, {}),
    (4, 400, {"keepalive": False}),
    (16, 4000, {"h2": True, "streams": 4}),
)
TRANSFER_BYTES = 32 << 20


def oha(peer, conns, requests, **opts):
    cmd = B.oha_cmd(peer, conns, 1, requests=requests, **opts)
    p = subprocess.run(cmd, text=True, capture_output=True, timeout=600)
    codes = json.loads(p.stdout).get("statusCodeDistribution") if p.returncode == 0 else None
    if not codes or set(codes) != {"200"}:
        raise SystemExit(f"pgo_train: {peer.name} answered {codes or p.stderr[-300:]}")


def train_vault(work, pki, airlock, upstream_h2, env):
    """airlock with its vault: a machine account's token from the mock
    provider, its first answer a 401 that refreshes it, then cache hits: the
    path an OAuth-connected account's requests take."""
    mock = B.MockOAuth(pki)
    proc = None
    try:
        proc = B.start_airlock_vault(work, pki, airlock, upstream_h2, env=env)
        status, body = B.vault_api(proc, "POST", "/v1/machine-accounts", {
            "name": "pgo-bot", "provider": "benchoauth", "client_id": B.OAUTH_CLIENT[0],
            "client_secret": B.OAUTH_CLIENT[1], "scopes": ["read"],
        })
        if status != 201:
            raise SystemExit(f"pgo_train: machine account: {status} {body[:200]}")
        peer = B.Peer("pgo_train", proc, pki, host=B.API_HOST)
        peer.port = B.PORTS_VAULT["airlock_vault"]
        peer.proxy = f"http://127.0.0.1:{peer.port}"
        peer.auth = f"Bearer {proc.vault_placeholder}"
        for conns, requests, opts in GETS[:2]:
            oha(peer, conns, requests, **opts)
    finally:
        if proc is not None:
            proc.stop()
        mock.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--airlock", required=True)
    ap.add_argument("--ceiling", required=True)
    ap.add_argument("--profiles", required=True, help="where the .profraw files go")
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    work, profiles = Path(args.work), Path(args.profiles)
    work.mkdir(parents=True, exist_ok=True)
    profiles.mkdir(parents=True, exist_ok=True)
    # Helper runs (`airlock ca init` for the ceiling's CA) are not training.
    os.environ["LLVM_PROFILE_FILE"] = str(work / "untrained-%p.profraw")
    pki = B.make_certs(work)
    nginx = B.start_nginx(work, pki, TRANSFER_BYTES)
    upload = work / "upload.bin"
    B.make_upload(upload, TRANSFER_BYTES)
    B.PORTS["pgo_train"] = B.PORTS["airlock"]
    B.LABELS["pgo_train"] = "training"
    try:
        for name in ("airlock", "ceiling"):
            env = {"LLVM_PROFILE_FILE": str(profiles / f"{name}-%p.profraw")}
            for upstream_h2 in (True, False):
                if name == "airlock":
                    proc = B.start_airlock(work, pki, args.airlock, upstream_h2, name="pgo_train", env=env)
                else:
                    proc = B.start_ceiling(work, pki, args.ceiling, args.airlock, upstream_h2,
                                           name="pgo_train", env=env)
                try:
                    peer = B.Peer("pgo_train", proc, pki)
                    for conns, requests, opts in GETS:
                        oha(peer, conns, requests, **opts)
                    for kind in ("download", "upload", "download", "upload"):
                        done = B.transfer(peer, kind, TRANSFER_BYTES, upload)
                        if "failed" in done:
                            raise SystemExit(f"pgo_train: {name} {kind}: {done['failed']}")
                finally:
                    # A clean exit (SIGTERM) writes the counts.
                    proc.stop()
                B.log(f"pgo_train: {name}, {'h2' if upstream_h2 else 'HTTP/1.1'} upstream: trained")
            if name == "airlock":
                train_vault(work, pki, args.airlock, True, env)
                B.log("pgo_train: airlock with its vault: trained")
    finally:
        nginx.stop()
        shutil.rmtree(nginx.shm, ignore_errors=True)
        upload.unlink(missing_ok=True)
    for name in ("airlock", "ceiling"):
        if not list(profiles.glob(f"{name}-*.profraw")):
            raise SystemExit(f"pgo_train: {name} wrote no profile (did it exit cleanly?)")


if __name__ == "__main__":
    main()
