#!/usr/bin/env bash
# git clone and git push through airlock, with the placeholder as the HTTP
# Basic password (how git sends tokens). airlock decodes the Basic credential,
# swaps the placeholder for the real token and re-encodes it.
#
# Needs, from `airlock up` (or `airlock env`): HTTPS_PROXY, GIT_SSL_CAINFO and
# GITHUB_TOKEN, the placeholder.
#
#   GIT_REPO_URL       repository to clone and push to (no credentials in it),
#                      default https://github.com/$GITHUB_REPOSITORY.git
#   GITHUB_REPOSITORY  owner/name, when GIT_REPO_URL is not set
#   GIT_BRANCH         branch to create and push (default airlock-example-<time>)
set -euo pipefail

: "${GITHUB_TOKEN:?GITHUB_TOKEN (the placeholder airlock printed) is not set}"
: "${HTTPS_PROXY:?HTTPS_PROXY is not set: run this with the environment airlock printed}"
repo_url=${GIT_REPO_URL:-https://github.com/${GITHUB_REPOSITORY:?set GIT_REPO_URL or GITHUB_REPOSITORY (owner/name)}.git}
branch=${GIT_BRANCH:-airlock-example-$(date +%s)}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A credential helper answers git's question for a username and password; the
# placeholder never lands in .git/config or the remote URL. (Putting it in the
# URL, https://x-access-token:$GITHUB_TOKEN@github.com/..., works as well.)
# shellcheck disable=SC2016 # $GITHUB_TOKEN is expanded by the helper, when git runs it
helper='!f() { test "$1" = get && printf "username=x-access-token\npassword=%s\n" "$GITHUB_TOKEN"; }; f'
with_token=(-c credential.helper= -c "credential.helper=$helper")

git "${with_token[@]}" clone --quiet "$repo_url" "$work/repo"
cd "$work/repo"
git checkout --quiet -b "$branch"
date -u '+pushed through airlock at %Y-%m-%dT%H:%M:%SZ' >airlock-example.txt
git add airlock-example.txt
git -c user.name="airlock example" -c user.email="airlock-example@example.invalid" \
  commit --quiet -m "airlock example: push with a placeholder"
git "${with_token[@]}" push --quiet origin "$branch"
echo "cloned $repo_url and pushed branch $branch"
