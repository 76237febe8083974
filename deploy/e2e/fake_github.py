#!/usr/bin/env python3
"""A GitHub stand-in for deploy/container-e2e: github.com and api.github.com on
one HTTPS port, with a certificate from the test's own CA.

- GET  /login/oauth/authorize        the consent page, approved at once: 302 to
                                     redirect_uri with a code (PKCE S256 kept)
- POST /login/oauth/access_token     code + code_verifier + client secret ->
                                     an access token and a refresh token
- GET  /user                         200 for a token it issued, else 401
- GET  /e2e/echo-authorization       answers with the Authorization header it
                                     got (airlock must scrub it on the way back)
- DELETE /applications/ID/grant      revocation (client id and secret as Basic,
                                     the token in JSON): 204, its tokens dead
- /octo/hello.git/...                a git repository over smart HTTP (Basic
                                     auth: any user, an issued token as password)

State the test reads with `docker exec` (never printed): /tmp/fake-github/
issued (one issued token a line), grants (one line a token grant) and
revocations (one line a revoked grant).
Standard library only; run as `fake_github.py CERT KEY CLIENT_ID SECRET_FILE`.
"""

import base64
import hashlib
import http.server
import json
import os
import secrets
import ssl
import subprocess
import sys
import threading
import urllib.parse

CERT, KEY, CLIENT_ID, SECRET_FILE = sys.argv[1:5]
with open(SECRET_FILE) as f:
    CLIENT_SECRET = f.read().strip()
STATE = "/tmp/fake-github"
GIT_ROOT = "/tmp/fake-github/git"
lock = threading.Lock()
codes = {}  # code -> (code_challenge, redirect_uri)
tokens = set()
refresh_tokens = set()


def record(name, line):
    with open(os.path.join(STATE, name), "a") as f:
        f.write(line + "\n")


def make_repo():
    work = os.path.join(STATE, "work")
    env = dict(os.environ, GIT_AUTHOR_NAME="Octo", GIT_AUTHOR_EMAIL="octo@example.test",
               GIT_COMMITTER_NAME="Octo", GIT_COMMITTER_EMAIL="octo@example.test", HOME=STATE)
    subprocess.run(["git", "init", "-q", "-b", "main", work], check=True, env=env)
    with open(os.path.join(work, "README.md"), "w") as f:
        f.write("hello from the fake GitHub\n")
    subprocess.run(["git", "-C", work, "add", "README.md"], check=True, env=env)
    subprocess.run(["git", "-C", work, "commit", "-q", "-m", "hello"], check=True, env=env)
    os.makedirs(os.path.join(GIT_ROOT, "octo"), exist_ok=True)
    subprocess.run(["git", "clone", "-q", "--bare", work, os.path.join(GIT_ROOT, "octo", "hello.git")],
                   check=True, env=env)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # method and path only: no query, no headers
        sys.stderr.write("fake-github: %s %s\n" % (self.command, self.path.split("?")[0]))

    def send(self, status, body=b"", ctype="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def host(self):
        return (self.headers.get("Host") or "").split(":")[0].lower()

    def bearer(self):
        auth = self.headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in ("bearer", "token"):
            return value.strip()
        if scheme.lower() == "basic":
            try:
                return base64.b64decode(value).decode().partition(":")[2]
            except ValueError:
                return ""
        return ""

    def authorized(self):
        with lock:
            return self.bearer() in tokens

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        host = self.host()
        if host == "github.com" and url.path == "/login/oauth/authorize":
            if q.get("client_id") != CLIENT_ID or q.get("code_challenge_method") != "S256" or not q.get("state"):
                return self.send(400, {"error": "bad authorize request"})
            code = secrets.token_urlsafe(16)
            with lock:
                codes[code] = (q.get("code_challenge", ""), q.get("redirect_uri", ""))
            sep = "&" if "?" in q["redirect_uri"] else "?"
            loc = q["redirect_uri"] + sep + urllib.parse.urlencode({"code": code, "state": q["state"]})
            return self.send(302, b"", "text/plain", [("Location", loc)])
        if host == "api.github.com" and url.path == "/user":
            if not self.authorized():
                return self.send(401, {"message": "Bad credentials"})
            return self.send(200, {"login": "octocat", "id": 1}, headers=[("X-OAuth-Scopes", "repo, read:user")])
        if host == "api.github.com" and url.path == "/e2e/echo-authorization":
            if not self.authorized():
                return self.send(401, {"message": "Bad credentials"})
            return self.send(200, {"authorization": self.headers.get("Authorization")})
        if host == "github.com" and url.path.startswith("/octo/hello.git/"):
            return self.git(url)
        self.send(404, {"message": "Not Found"})

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        host = self.host()
        if host == "github.com" and url.path == "/login/oauth/access_token":
            return self.token(dict(urllib.parse.parse_qsl(self.body().decode())))
        if host == "github.com" and url.path.startswith("/octo/hello.git/"):
            return self.git(url)
        self.send(404, {"message": "Not Found"})

    def do_DELETE(self):
        """GitHub's "delete an app authorization": Basic client id and secret,
        the access token in a JSON body; every token of the grant stops working."""
        body = self.body()
        if self.host() == "api.github.com" and self.path == f"/applications/{CLIENT_ID}/grant":
            want = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            if self.headers.get("Authorization") != want:
                return self.send(401, {"message": "Requires authentication"})
            try:
                token = json.loads(body or b"{}").get("access_token")
            except ValueError:
                token = None
            with lock:
                if token not in tokens:
                    return self.send(404, {"message": "Not Found"})
                tokens.clear()
                refresh_tokens.clear()
                record("revocations", "grant")
            return self.send(204)
        self.send(404, {"message": "Not Found"})

    def token(self, form):
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return self.send(401, {"error": "incorrect_client_credentials"})
        grant = form.get("grant_type")
        with lock:
            if grant == "authorization_code":
                challenge, redirect_uri = codes.pop(form.get("code", ""), (None, None))
                verifier = form.get("code_verifier", "")
                want = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if challenge is None or challenge != want or form.get("redirect_uri") != redirect_uri:
                    return self.send(400, {"error": "bad_verification_code"})
                record("grants", "authorization_code")
            elif grant == "refresh_token":
                if form.get("refresh_token") not in refresh_tokens:
                    return self.send(400, {"error": "bad_refresh_token"})
                refresh_tokens.discard(form.get("refresh_token"))
                record("grants", "refresh_token")
            else:
                return self.send(400, {"error": "unsupported_grant_type"})
            access, refresh = "gho_" + secrets.token_hex(18), "ghr_" + secrets.token_hex(30)
            tokens.add(access)
            refresh_tokens.add(refresh)
            record("issued", access)
            record("issued", refresh)
        self.send(200, {"access_token": access, "token_type": "bearer", "scope": "repo,read:user",
                        "expires_in": 28800, "refresh_token": refresh, "refresh_token_expires_in": 15811200})

    def git(self, url):
        """Smart HTTP through `git http-backend`, behind GitHub's Basic auth."""
        if not self.authorized():
            return self.send(401, b"", "text/plain", [("WWW-Authenticate", 'Basic realm="GitHub"')])
        body = self.body() if self.command == "POST" else b""
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": GIT_ROOT, "GIT_HTTP_EXPORT_ALL": "1",
               "REQUEST_METHOD": self.command, "PATH_INFO": url.path, "QUERY_STRING": url.query,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "REMOTE_USER": "octocat", "HOME": STATE}
        p = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        head, _, out = p.stdout.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.split()[0])
            elif k:
                headers.append((k, v.strip()))
        ctype = next((v for k, v in headers if k.lower() == "content-type"), "application/octet-stream")
        self.send(status, out, ctype, [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-length")])


def main():
    os.makedirs(STATE, exist_ok=True)
    make_repo()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(CERT, KEY)
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 443), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("fake-github: listening on :443", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
