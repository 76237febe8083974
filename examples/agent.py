#!/usr/bin/env python3
"""A tiny "agent" in a sandbox: it reads a repository's open issues on GitHub
and posts a summary to a Slack channel.

It knows nothing about airlock. It uses only the environment a sandbox is
given and Python's standard library: urllib takes the proxy from HTTPS_PROXY,
and OpenSSL takes the trusted roots from SSL_CERT_FILE. GITHUB_TOKEN and
SLACK_TOKEN hold placeholders; airlock puts the real tokens on the requests,
each only towards its own service's hosts.

    GITHUB_API_URL     default https://api.github.com
    SLACK_API_URL      default https://slack.com/api
    GITHUB_REPOSITORY  owner/name (default octocat/Hello-World)
    SLACK_CHANNEL      channel id or name (default #general)
"""

import json
import os
import sys
import urllib.error
import urllib.request

GITHUB_API = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
SLACK_API = os.environ.get("SLACK_API_URL", "https://slack.com/api").rstrip("/")
REPOSITORY = os.environ.get("GITHUB_REPOSITORY", "octocat/Hello-World")
CHANNEL = os.environ.get("SLACK_CHANNEL", "#general")


def call(method, url, token, payload=None):
    """One API call; returns (status, parsed JSON or the text)."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "User-Agent": "airlock-example-agent",
    }
    data = None
    if payload is not None:
        data = json.dumps(payload).encode()
        headers["Content-Type"] = "application/json; charset=utf-8"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    text = body.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.strip()


def main():
    github_token = os.environ["GITHUB_TOKEN"]
    slack_token = os.environ["SLACK_TOKEN"]

    status, issues = call(
        "GET",
        f"{GITHUB_API}/repos/{REPOSITORY}/issues?state=open&per_page=5",
        github_token,
    )
    print(f"github: GET /repos/{REPOSITORY}/issues -> {status}")
    if status != 200:
        print(f"github refused: {issues}", file=sys.stderr)
        return 1
    if isinstance(issues, list):
        lines = [f"#{i.get('number')} {i.get('title')}" for i in issues]
        summary = f"{len(issues)} open issue(s) in {REPOSITORY}"
    else:
        lines = []
        summary = f"{REPOSITORY}: {issues}"
    text = "\n".join([summary, *lines])

    status, answer = call(
        "POST",
        f"{SLACK_API}/chat.postMessage",
        slack_token,
        {"channel": CHANNEL, "text": text},
    )
    print(f"slack: POST /chat.postMessage -> {status}")
    # Slack answers 200 with {"ok": false, "error": ...} for API errors.
    if status != 200 or (isinstance(answer, dict) and not answer.get("ok", False)):
        print(f"slack refused: {answer}", file=sys.stderr)
        return 1
    print(f"posted to {CHANNEL}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
