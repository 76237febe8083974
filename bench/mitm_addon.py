"""mitmproxy addon for the airlock benchmark: the same job airlock does.

- Replaces the placeholder in `Authorization` with the real secret, in the
  `requestheaders` hook so that it also works when bodies are streamed, and
  in request bodies (chunk by chunk when streamed), like airlock's body swap.
- Resolves BENCH_DOMAIN and its subdomains to BENCH_UPSTREAM_HOST, the job of
  airlock's `[resolve]` overrides and Squid's `hosts_file`. This is done at
  name resolution, not by rewriting the server address in `server_connect`:
  a rewritten address no longer matches the request's, so mitmproxy would open
  a new upstream connection for every request and stall after five (its
  per-address connection limit).
"""

import os
import socket

PLACEHOLDER = os.environ["BENCH_PLACEHOLDER"]
REAL = os.environ["BENCH_REAL"]
UPSTREAM_HOST = os.environ["BENCH_UPSTREAM_HOST"]
DOMAIN = os.environ["BENCH_DOMAIN"]

_getaddrinfo = socket.getaddrinfo


def _bench_getaddrinfo(host, *args, **kwargs):
    if isinstance(host, bytes):
        host = host.decode()
    if isinstance(host, str) and (host == DOMAIN or host.endswith("." + DOMAIN)):
        host = UPSTREAM_HOST
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _bench_getaddrinfo


def _swap_chunk(data):
    # Not chunk-boundary safe (airlock's swapper is): enough to cost the same work.
    return data.replace(PLACEHOLDER_B, REAL_B)


PLACEHOLDER_B = PLACEHOLDER.encode()
REAL_B = REAL.encode()


def requestheaders(flow):
    auth = flow.request.headers.get("authorization")
    if auth and PLACEHOLDER in auth:
        flow.request.headers["authorization"] = auth.replace(PLACEHOLDER, REAL)
    # Bodies stream through the swap chunk by chunk. (Left to mitmproxy, a
    # chunked upload is buffered until it passes stream_large_bodies and then
    # streamed untouched: no hook sees it again.)
    has_body = "chunked" in flow.request.headers.get("transfer-encoding", "").lower() or (
        flow.request.headers.get("content-length", "0") not in ("", "0"))
    if has_body:
        flow.request.stream = _swap_chunk
