"""mitmproxy addon for the airlock benchmark: the same job airlock does.

- Replaces the placeholder in `Authorization` with the real secret, in the
  `requestheaders` hook so that it also works when bodies are streamed.
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


def requestheaders(flow):
    auth = flow.request.headers.get("authorization")
    if auth and PLACEHOLDER in auth:
        flow.request.headers["authorization"] = auth.replace(PLACEHOLDER, REAL)
