#!/usr/bin/env bash
# curl through airlock: the sandbox sends the placeholder, GitHub gets the token.
#
# Needs, from `airlock up` (or `airlock env`): HTTPS_PROXY, CURL_CA_BUNDLE (or
# SSL_CERT_FILE) and GITHUB_TOKEN, the placeholder. curl reads the proxy and
# the CA bundle from the environment by itself.
#
#   GITHUB_API_URL  API base URL (default https://api.github.com)
set -euo pipefail

api=${GITHUB_API_URL:-https://api.github.com}
: "${GITHUB_TOKEN:?GITHUB_TOKEN (the placeholder airlock printed) is not set}"
: "${HTTPS_PROXY:?HTTPS_PROXY is not set: run this with the environment airlock printed}"

curl --silent --show-error --fail-with-body \
  --header "Authorization: Bearer ${GITHUB_TOKEN}" \
  --header "Accept: application/vnd.github+json" \
  --header "User-Agent: airlock-example" \
  --write-out '\nHTTP %{http_code}\n' \
  "${api%/}/user"
