#!/usr/bin/env python3
"""An agent that asks airlock whether its account is connected before it
calls the API, and, when a human must act, shows its user the one-time
connect link and waits for them.

No SDK: airlock answers https://airlock.internal/v1/status itself, through
the proxy requests already uses (HTTPS_PROXY, REQUESTS_CA_BUNDLE). The
credential's variable holds a placeholder; airlock swaps in the real token.

    CREDENTIAL          the variable to check (default GITHUB_TOKEN); a
                        provider's name (github) works too
    API_URL             what to GET once connected (default https://api.github.com/user)
    WAIT_SECS           how long to wait for the user (default 0: just tell them)
    AIRLOCK_STATUS_URL  default https://airlock.internal/v1/status

Exit status: 0 the API answered 2xx, 1 it did not, 3 still needs a human.
"""

import os
import sys
import time
from urllib.parse import urlsplit

import requests

STATUS = os.environ.get("AIRLOCK_STATUS_URL", "https://airlock.internal/v1/status").rstrip("/")
CREDENTIAL = os.environ.get("CREDENTIAL", "GITHUB_TOKEN")
API_URL = os.environ.get("API_URL", "https://api.github.com/user")
WAIT_SECS = float(os.environ.get("WAIT_SECS", "0"))


def credential_status():
    """This sandbox's view of one credential (never a token)."""
    answer = requests.get(f"{STATUS}/{CREDENTIAL}", timeout=30)
    if answer.status_code == 404:
        sys.exit(f"this sandbox has no credential {CREDENTIAL}: {answer.json()['message']}")
    answer.raise_for_status()
    return answer.json()["credential"]


def main():
    credential = credential_status()
    deadline = time.monotonic() + WAIT_SECS
    shown = None
    while credential["state"] != "connected":
        link = credential.get("connect_url")
        if link and link != shown:
            print(f"{CREDENTIAL} is {credential['state']}: ask your user to open {link}", flush=True)
            shown = link
        elif not link and shown is None:
            print(f"{CREDENTIAL} is {credential['state']} and has no connect link: ask the operator", flush=True)
            shown = ""
        if time.monotonic() >= deadline:
            return 3
        time.sleep(1)
        credential = credential_status()

    token = os.environ[credential["variable"]]  # a placeholder
    answer = requests.get(API_URL, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    scopes = " ".join(credential["scopes"]) or "-"
    print(f"{CREDENTIAL} connected (scopes: {scopes}); GET {urlsplit(API_URL).path} -> {answer.status_code}")
    return 0 if answer.ok else 1


if __name__ == "__main__":
    sys.exit(main())
