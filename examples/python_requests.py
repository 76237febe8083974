#!/usr/bin/env python3
"""GitHub's API with Python `requests` through airlock.

requests reads HTTPS_PROXY and REQUESTS_CA_BUNDLE from the environment by
itself (trust_env, the default), so nothing here mentions airlock: the code is
what it would be without it, and GITHUB_TOKEN holds a placeholder.

    GITHUB_API_URL  API base URL (default https://api.github.com)
"""

import os
import sys

import requests

API = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
TOKEN = os.environ["GITHUB_TOKEN"]


def main() -> int:
    response = requests.get(
        f"{API}/user",
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Accept": "application/vnd.github+json",
            "User-Agent": "airlock-example",
        },
        timeout=30,
    )
    try:
        who = response.json().get("login")
    except ValueError:
        who = response.text.strip()
    print(f"GET /user -> {response.status_code}: {who}")
    return 0 if response.ok else 1


if __name__ == "__main__":
    sys.exit(main())
