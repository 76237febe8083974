#!/usr/bin/env python3
"""Narrow an airlock placeholder offline: no SDK, no call to airlock.

    python3 narrow.py "$GITHUB_TOKEN" 'allow=GET /repos/acme/web/**' "expires=$(( $(date +%s) + 600 ))" 'uses=5'

prints a placeholder that works only within those caveats. Give it to a
sub-agent instead of the original. The recipe (docs/NARROWING.md):
HMAC-SHA256 chained over the caveats, base62 encoded.
"""
import hashlib, hmac, sys

A = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def narrow(placeholder, caveats, prefix="miosa-tok-"):
    ident = hashlib.sha256(b"airlock-narrow-id-v1" + placeholder.encode()).digest()[:16]
    sig = hmac.new(placeholder.encode(), b"airlock-narrow-v1", "sha256").digest()
    for c in caveats:
        sig = hmac.new(sig, c.encode(), "sha256").digest()
    n = int.from_bytes(b"\x01" + ident + sig + "\n".join(caveats).encode(), "big")
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = A[r] + out
    return prefix + out


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: narrow.py PLACEHOLDER CAVEAT...")
    print(narrow(sys.argv[1], sys.argv[2:]))
