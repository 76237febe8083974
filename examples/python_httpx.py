#!/usr/bin/env python3
"""GitHub's API with Python `httpx` through airlock.

httpx, with trust_env=True (the default), takes the proxy from HTTPS_PROXY
(and NO_PROXY) and the trusted roots from SSL_CERT_FILE, both printed by
airlock; GITHUB_TOKEN holds a placeholder. (httpx does not read
REQUESTS_CA_BUNDLE.)

    GITHUB_API_URL  API base URL (default https://api.github.com)
"""

import os
import sys

import httpx

API = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
TOKEN = os.environ["GITHUB_TOKEN"]


def main() -> int:
    with httpx.Client(
        base_url=API,
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Accept": "application/vnd.github+json",
            "User-Agent": "airlock-example",
        },
        timeout=30,
    ) as client:
        response = client.get("/user")
    try:
        who = response.json().get("login")
    except ValueError:
        who = response.text.strip()
    print(f"GET /user -> {response.status_code} {response.http_version}: {who}")
    return 0 if response.is_success else 1


if __name__ == "__main__":
    sys.exit(main())
