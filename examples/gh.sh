#!/usr/bin/env bash
# The GitHub CLI through airlock. gh is a Go program: it reads HTTPS_PROXY and
# SSL_CERT_FILE from the environment, and its token from GH_TOKEN (github.com)
# or GH_ENTERPRISE_TOKEN (a GitHub Enterprise host named by GH_HOST).
#
# Needs, from `airlock up` (or `airlock env`): HTTPS_PROXY, SSL_CERT_FILE and
# GITHUB_TOKEN, the placeholder.
#
#   GH_HOST  a GitHub Enterprise Server host (API at https://GH_HOST/api/v3/);
#            unset for github.com
set -euo pipefail

: "${GITHUB_TOKEN:?GITHUB_TOKEN (the placeholder airlock printed) is not set}"
: "${HTTPS_PROXY:?HTTPS_PROXY is not set: run this with the environment airlock printed}"
export GH_TOKEN=${GH_TOKEN:-$GITHUB_TOKEN}
export GH_ENTERPRISE_TOKEN=${GH_ENTERPRISE_TOKEN:-$GITHUB_TOKEN}
export GH_NO_UPDATE_NOTIFIER=1 GH_PROMPT_DISABLED=1

gh api user
