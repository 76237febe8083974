#!/usr/bin/env bash
# Ask airlock, from inside the sandbox, which credentials this sandbox has and
# whether each works. No SDK: airlock answers the name airlock.internal itself,
# through the proxy the sandbox already uses (https with airlock's CA here;
# http://airlock.internal works too).
#
#   status.sh            the whole document (JSON)
#   status.sh NAME       one credential, by variable (GITHUB_TOKEN) or provider
#                        (github); exits 0 when connected, 3 when a human must
#                        act (the connect link is printed), 1 on any error
#
# Needs HTTPS_PROXY and CURL_CA_BUNDLE (or SSL_CERT_FILE) from `airlock up` /
# `airlock env`. See docs/STATUS_API.md for the document.
set -euo pipefail

: "${HTTPS_PROXY:?HTTPS_PROXY is not set: run this with the environment airlock printed}"
url=${AIRLOCK_STATUS_URL:-https://airlock.internal/v1/status}

if [ $# -eq 0 ]; then
  curl --silent --show-error --fail-with-body "$url" || exit 1
  echo
  exit 0
fi

if ! doc=$(curl --silent --show-error --fail-with-body "$url/$1"); then
  echo "$doc" >&2
  exit 1
fi
echo "$doc"
# The document is compact JSON; these two fields need no JSON tool.
state=$(printf '%s' "$doc" | grep -o '"state":"[a-z_]*"' | head -n1 | cut -d'"' -f4)
link=$(printf '%s' "$doc" | grep -o '"connect_url":"[^"]*"' | head -n1 | cut -d'"' -f4 || true)
if [ "$state" = connected ]; then
  exit 0
fi
if [ -n "$link" ]; then
  echo "$1 is $state: ask your user to open $link" >&2
else
  echo "$1 is $state and has no connect link: ask the operator" >&2
fi
exit 3
