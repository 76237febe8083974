"""A fake X (Twitter) v1.1 API and its OAuth 1.0a endpoints over TLS, whose
every signature check is oauthlib's own server side.

The consumer key and secret are given on the command line (the REAL ones);
request tokens, verifiers, access tokens and token secrets are made here.
``RequestTokenEndpoint``, ``AccessTokenEndpoint`` and ``ResourceEndpoint``
of ``oauthlib.oauth1`` verify each HMAC-SHA1 signature with the real secrets.

Endpoints:
  POST /oauth/request_token, GET /oauth/authorize (approves at once, or
  declines after POST /_control {"deny": true}), POST /oauth/access_token,
  GET /1.1/account/verify_credentials.json (echoes the credentials it was
  signed with, like a careless upstream), POST /1.1/statuses/update.json
  (form body ``status``).
  POST /_control with JSON {"refuse": "request_token" | "access_token" |
  null, "deny": bool} changes how the next calls are answered.

Usage: fake_x.py CERT KEY CONSUMER_KEY CONSUMER_SECRET LOG
Prints the port, then serves until killed. One JSON line per request in LOG.
"""

import json
import secrets
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

from oauthlib.oauth1 import (
    AccessTokenEndpoint,
    RequestTokenEndpoint,
    RequestValidator,
    ResourceEndpoint,
)

CERT, KEY, CONSUMER_KEY, CONSUMER_SECRET, LOG = sys.argv[1:6]
lock = threading.Lock()
# request token -> {"secret", "callback", "verifier"}
request_tokens = {}
# access token -> secret
access_tokens = {}
nonces = set()
control = {"refuse": None, "deny": False}
SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class Validator(RequestValidator):
    # X's tokens hold '-'; airlock's nonces are 32 characters.
    safe_characters = SAFE
    client_key_length = (8, 64)
    request_token_length = (8, 64)
    access_token_length = (8, 64)
    nonce_length = (8, 64)
    verifier_length = (8, 64)
    realms = []

    dummy_client = "dummy-client-key"
    dummy_request_token = "dummy-request-token"
    dummy_access_token = "dummy-access-token"

    def validate_client_key(self, client_key, request):
        return client_key == CONSUMER_KEY

    def get_client_secret(self, client_key, request):
        return CONSUMER_SECRET if client_key == CONSUMER_KEY else "dummy"

    def validate_timestamp_and_nonce(self, client_key, timestamp, nonce, request,
                                     request_token=None, access_token=None):
        with lock:
            key = (client_key, timestamp, nonce, request_token, access_token)
            if key in nonces:
                return False
            nonces.add(key)
            return True

    def validate_requested_realms(self, client_key, realms, request):
        return True

    def get_default_realms(self, client_key, request):
        return []

    def validate_redirect_uri(self, client_key, redirect_uri, request):
        return redirect_uri.startswith("https://") or redirect_uri.startswith("http://127.0.0.1")

    def save_request_token(self, token, request):
        with lock:
            request_tokens[token["oauth_token"]] = {
                "secret": token["oauth_token_secret"],
                "callback": request.redirect_uri,
                "verifier": None,
            }

    def validate_request_token(self, client_key, token, request):
        with lock:
            return token in request_tokens

    def get_request_token_secret(self, client_key, token, request):
        with lock:
            t = request_tokens.get(token)
        return t["secret"] if t else "dummy"

    def validate_verifier(self, client_key, token, verifier, request):
        with lock:
            t = request_tokens.get(token)
        return bool(t and t["verifier"] and secrets.compare_digest(t["verifier"], verifier))

    def invalidate_request_token(self, client_key, request_token, request):
        with lock:
            request_tokens.pop(request_token, None)

    def get_realms(self, token, request):
        return []

    def save_access_token(self, token, request):
        with lock:
            access_tokens[token["oauth_token"]] = token["oauth_token_secret"]

    def validate_access_token(self, client_key, token, request):
        with lock:
            return token in access_tokens

    def get_access_token_secret(self, client_key, token, request):
        with lock:
            return access_tokens.get(token, "dummy")

    def validate_realms(self, client_key, token, request, uri=None, realms=None):
        return True


validator = Validator()
request_endpoint = RequestTokenEndpoint(validator)
access_endpoint = AccessTokenEndpoint(validator)
resource_endpoint = ResourceEndpoint(validator)


def log(entry):
    with lock, open(LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=None):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        uri = "https://" + self.headers["Host"] + self.path
        path = urlsplit(self.path).path
        headers = {k: v for k, v in self.headers.items()}
        text = body.decode("utf-8", "replace")
        entry = {
            "method": self.command,
            "path": self.path,
            "authorization": self.headers.get("Authorization", ""),
            "body": text,
        }
        if path == "/_control":
            with lock:
                control.update(json.loads(text or "{}"))
            return self.reply(204, b"")
        if path == "/oauth/request_token":
            if control["refuse"] == "request_token":
                entry["verified"] = False
                log(entry)
                return self.reply(401, '{"errors":[{"code":32,"message":"Could not authenticate you."}]}')
            h, b, status = request_endpoint.create_request_token_response(
                uri, self.command, text, headers)
            entry["verified"] = status == 200
            log(entry)
            return self.reply(status, b or "", h)
        if path == "/oauth/authorize":
            token = dict(parse_qsl(urlsplit(self.path).query)).get("oauth_token", "")
            with lock:
                t = request_tokens.get(token)
                if t and not control["deny"]:
                    t["verifier"] = secrets.token_urlsafe(24)
            entry["verified"] = bool(t)
            log(entry)
            if not t:
                return self.reply(400, "unknown oauth_token")
            params = {"denied": token} if control["deny"] else {
                "oauth_token": token, "oauth_verifier": t["verifier"]}
            sep = "&" if "?" in t["callback"] else "?"
            return self.reply(302, "", {"Location": t["callback"] + sep + urlencode(params)})
        if path == "/oauth/access_token":
            if control["refuse"] == "access_token":
                entry["verified"] = False
                log(entry)
                return self.reply(401, "Invalid request token.")
            h, b, status = access_endpoint.create_access_token_response(
                uri, self.command, text, headers)
            entry["verified"] = status == 200
            log(entry)
            return self.reply(status, b or "", h)
        valid, request = resource_endpoint.validate_protected_resource_request(
            uri, self.command, text, headers)
        entry["verified"] = bool(valid)
        entry["consumer_key"] = getattr(request, "client_key", None)
        entry["token"] = getattr(request, "resource_owner_key", None)
        log(entry)
        if not valid:
            return self.reply(401, '{"errors":[{"code":32,"message":"Could not authenticate you."}]}',
                              {"Content-Type": "application/json"})
        token = request.resource_owner_key
        with lock:
            token_secret = access_tokens.get(token)
        if self.command == "GET" and path == "/1.1/account/verify_credentials.json":
            # A careless upstream: it echoes every credential it knows.
            echo = {
                "screen_name": "airlock_test",
                "echo": {
                    "oauth_token": token,
                    "oauth_token_secret": token_secret,
                    "consumer_key": CONSUMER_KEY,
                    "consumer_secret": CONSUMER_SECRET,
                },
            }
            return self.reply(200, json.dumps(echo), {"Content-Type": "application/json"})
        if self.command == "POST" and path == "/1.1/statuses/update.json":
            form = dict(parse_qsl(text, keep_blank_values=True))
            return self.reply(200, json.dumps({"id": 1, "text": form.get("status", "")}),
                              {"Content-Type": "application/json"})
        return self.reply(404, '{"errors":[{"code":34,"message":"Sorry, that page does not exist."}]}')

    do_GET = do_POST = do_HEAD = do_DELETE = handle_any


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
