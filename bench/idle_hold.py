#!/usr/bin/env python3
"""Opens N intercepted connections through an HTTP proxy and holds them idle.

Each connection: TCP to the proxy, `CONNECT host:port`, a TLS handshake with
the proxy's minted certificate (verified against --cafile), and, with
--request, one keep-alive GET whose response is read in full. Then nothing:
the connection stays open until the driver says so.

With --creds FILE (shared-gateway mode), connection i sends line i mod n of
FILE: `Proxy-Authorization` value, a tab, the `Authorization` value of its GET.

Protocol with the driver (stdin/stdout, one JSON object per line):
  -> {"event": "ready", "opened": N, "failed": F, "seconds": T, "errors": {...}}
  <- "check"   -> {"event": "alive", "alive": A, "closed_by_peer": C}
  <- "fire"    -> one GET (with --auth) on every held connection at once,
                  {"event": "fired", "seconds": T, "statuses": {"200": N, ...}}
  <- "close"   -> closes everything, {"event": "closed"}, exit 0
"""

import argparse
import asyncio
import collections
import json
import ssl
import sys
import time


def creds_of(args, i):
    """(Proxy-Authorization value or None, Authorization value) of connection i."""
    if not args.creds_lines:
        return None, args.auth
    proxy_auth, _, auth = args.creds_lines[i % len(args.creds_lines)].partition("\t")
    return proxy_auth, auth or args.auth


async def open_one(args, ctx, sem, errors, i=0):
    proxy_auth, auth = creds_of(args, i)
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(args.proxy_host, args.proxy_port), 30
            )
        except Exception as exc:  # noqa: BLE001 - counted, reported
            errors[f"tcp: {type(exc).__name__}: {exc}"[:120]] += 1
            return None
        try:
            target = f"{args.host}:{args.port}"
            extra = f"Proxy-Authorization: {proxy_auth}\r\n" if proxy_auth else ""
            writer.write(
                f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n".encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            status = head.split(b" ", 2)[1]
            if status != b"200":
                errors[f"CONNECT {status.decode(errors='replace')}"] += 1
                writer.close()
                return None
            await asyncio.wait_for(
                writer.start_tls(ctx, server_hostname=args.host), 30
            )
            if args.request:
                writer.write(
                    (
                        f"GET / HTTP/1.1\r\nHost: {target}\r\n"
                        f"Authorization: {auth}\r\n\r\n"
                    ).encode()
                )
                status = (await read_response(reader)).encode()
                if status != b"200":
                    errors[f"GET {status.decode(errors='replace')}"] += 1
                    writer.close()
                    return None
            return reader, writer, auth
        except Exception as exc:  # noqa: BLE001 - counted, reported
            errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
            writer.close()
            return None


async def read_response(reader):
    """Reads one response (Content-Length or chunked); returns its status."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
    status = head.split(b" ", 2)[1].decode(errors="replace")
    lower = head.lower()
    length = 0
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await asyncio.wait_for(reader.readexactly(length), 60)
    elif b"transfer-encoding: chunked" in lower:
        while True:
            size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 60)
            size = int(size_line.split(b";")[0].strip(), 16)
            await asyncio.wait_for(reader.readexactly(size + 2), 60)
            if size == 0:
                break
    return status


async def get_once(reader, writer, auth, args):
    target = f"{args.host}:{args.port}"
    try:
        writer.write(
            f"GET / HTTP/1.1\r\nHost: {target}\r\nAuthorization: {auth}\r\n\r\n".encode()
        )
        status = await read_response(reader)
        return status
    except Exception as exc:  # noqa: BLE001 - counted, reported
        return f"{type(exc).__name__}"


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--proxy-host", default="127.0.0.1")
    p.add_argument("--proxy-port", type=int, required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cafile", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--parallel", type=int, default=64)
    p.add_argument("--request", action="store_true")
    p.add_argument("--auth", default="")
    p.add_argument("--creds", help="file: per-connection Proxy-Authorization TAB Authorization")
    args = p.parse_args()
    args.creds_lines = []
    if args.creds:
        with open(args.creds) as f:
            args.creds_lines = [line.rstrip("\n") for line in f if line.strip()]

    ctx = ssl.create_default_context(cafile=args.cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    sem = asyncio.Semaphore(args.parallel)
    errors = collections.Counter()
    start = time.monotonic()
    results = await asyncio.gather(
        *(open_one(args, ctx, sem, errors, i) for i in range(args.count))
    )
    held = [r for r in results if r is not None]
    emit(
        {
            "event": "ready",
            "opened": len(held),
            "failed": args.count - len(held),
            "seconds": round(time.monotonic() - start, 3),
            "errors": dict(errors.most_common(5)),
        }
    )
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        cmd = line.strip()
        if cmd == "check":
            closed = sum(
                1 for r, w, _ in held if r.at_eof() or w.transport.is_closing()
            )
            emit({"event": "alive", "alive": len(held) - closed, "closed_by_peer": closed})
        elif cmd == "fire":
            # One GET on every held connection at once: (a 401 storm when the
            # token behind --auth has expired upstream).
            t0 = time.monotonic()
            statuses = await asyncio.gather(*(get_once(r, w, a, args) for r, w, a in held))
            counts = collections.Counter(statuses)
            emit({"event": "fired", "seconds": round(time.monotonic() - t0, 4),
                  "statuses": dict(counts)})
        elif cmd in ("close", ""):
            for _, w, _ in held:
                w.close()
            await asyncio.sleep(0.2)
            emit({"event": "closed"})
            return


if __name__ == "__main__":
    asyncio.run(main())
