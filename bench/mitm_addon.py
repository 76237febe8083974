"""mitmproxy addon for the airlock benchmark: the same job airlock does.

Replaces the placeholder in `Authorization` with the real secret (in the
`requestheaders` hook, so it also works with streamed bodies) and dials the
bench upstream for names under BENCH_DOMAIN (the same job as airlock's
`[resolve]` override, with SNI and certificate checks still on the name).
"""

import os

PLACEHOLDER = os.environ["BENCH_PLACEHOLDER"]
REAL = os.environ["BENCH_REAL"]
UPSTREAM = (os.environ["BENCH_UPSTREAM_HOST"], int(os.environ["BENCH_UPSTREAM_PORT"]))
DOMAIN = os.environ["BENCH_DOMAIN"]


def server_connect(data):
    host = data.server.address[0] if data.server.address else ""
    if host == DOMAIN or host.endswith("." + DOMAIN):
        if not data.server.sni:
            data.server.sni = host
        data.server.address = UPSTREAM


def requestheaders(flow):
    auth = flow.request.headers.get("authorization")
    if auth and PLACEHOLDER in auth:
        flow.request.headers["authorization"] = auth.replace(PLACEHOLDER, REAL)
