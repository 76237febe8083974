"""A fake S3 + STS endpoint over TLS whose signature check is botocore's own.

Every request's SigV4 signature is recomputed by botocore's ``S3SigV4Auth``
(service s3) or ``SigV4Auth`` (others) from the REAL credentials given on
the command line, over the request exactly as received. A mismatch gets
S3's ``SignatureDoesNotMatch`` (echoing ``AWSAccessKeyId`` as S3 does).
``aws-chunked`` bodies are decoded and their trailing CRC32 checked.

Usage: fake_s3.py CERT KEY REAL_KEY_ID REAL_SECRET LOG [SESSION_TOKEN]
Prints the port, then serves until killed. One JSON line per request in LOG.
"""

import base64
import hashlib
import hmac
import json
import re
import ssl
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

CERT, KEY, KEY_ID, SECRET, LOG = sys.argv[1:6]
TOKEN = sys.argv[6] if len(sys.argv) > 6 else None
AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
    r"SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})"
)
objects = {}
uploads = {}
# Temporary credentials handed out by AssumeRole: key id -> (secret, token).
issued = {}
lock = threading.Lock()


def keys_of(key_id):
    """(secret, token) of a key id this fake knows, else None."""
    if key_id == KEY_ID:
        return SECRET, TOKEN
    with lock:
        return issued.get(key_id)


def expected_signature(handler, body, key_id, region, service, signed):
    secret, token = keys_of(key_id)
    creds = Credentials(key_id, secret, token)
    signer = (S3SigV4Auth if service == "s3" else SigV4Auth)(creds, service, region)
    url = "https://" + handler.headers["Host"] + handler.path
    headers = {}
    for name in signed.split(";"):
        values = handler.headers.get_all(name) or []
        headers[name] = ",".join(values)
    req = AWSRequest(method=handler.command, url=url, headers=headers, data=body)
    req.context["timestamp"] = handler.headers["x-amz-date"]
    # Only what the client signed: botocore reads the headers as given.
    canonical = signer.canonical_request(req)
    sts = signer.string_to_sign(req, canonical)
    return signer.signature(sts, req)


def chunks_verify(body, seed, region, service, amz_date, trailer=False):
    """Each chunk's signature, chained from the seed, with the REAL secret
    (the spec's string to sign, written here with hmac, not botocore)."""
    def h(key, msg):
        return hmac.new(key, msg.encode() if isinstance(msg, str) else msg, hashlib.sha256)
    key = ("AWS4" + SECRET).encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = h(key, part).digest()
    scope = "/".join((amz_date[:8], region, service, "aws4_request"))
    empty = hashlib.sha256(b"").hexdigest()
    prev, rest = seed, body
    while True:
        line, rest = rest.split(b"\r\n", 1)
        size_text, sig = line.decode().split(";chunk-signature=")
        size = int(size_text, 16)
        last_with_trailer = size == 0 and trailer
        data, rest = rest[:size], rest[size + (0 if last_with_trailer else 2):]
        sts = "\n".join(("AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, empty,
                         hashlib.sha256(data).hexdigest()))
        if h(key, sts).hexdigest() != sig:
            return False
        prev = sig
        if size == 0 and not trailer:
            return rest == b""
        if size == 0:
            # Trailing headers, then their signature over "name:value\n" each.
            lines = rest.split(b"\r\n")
            signed, trailer_sig = b"", None
            for line in lines:
                name, _, value = line.decode().partition(":")
                if name.lower() == "x-amz-trailer-signature":
                    trailer_sig = value.strip()
                    break
                signed += ("%s:%s\n" % (name.strip().lower(), value.strip())).encode()
            sts = "\n".join(("AWS4-HMAC-SHA256-TRAILER", amz_date, scope, prev,
                             hashlib.sha256(signed).hexdigest()))
            return trailer_sig == h(key, sts).hexdigest() and rest.endswith(b"\r\n\r\n")


def decode_chunked(body, trailer_names):
    """aws-chunked (unsigned chunks or signed ones) -> data, trailers."""
    out = bytearray()
    rest = body
    while True:
        line, rest = rest.split(b"\r\n", 1)
        size = int(line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2:]
    trailers = {}
    for line in rest.split(b"\r\n"):
        if b":" in line:
            k, v = line.split(b":", 1)
            trailers[k.decode().lower()] = v.decode().strip()
    return bytes(out), trailers


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def handle_any(self):
        body = self.read_body()
        auth = self.headers.get("Authorization") or ""
        m = AUTH_RE.match(auth)
        record = {"method": self.command, "path": self.path, "key_id": None, "verified": False}
        query = parse_qs(urlsplit(self.path).query)
        if not m and "X-Amz-Signature" in query:
            return self.presigned(query, record)
        if not m:
            record["error"] = "no SigV4 Authorization"
            self.log(record)
            return self.reply(403, b"<Error><Code>AccessDenied</Code></Error>")
        key_id, _date, region, service, signed, signature = m.groups()
        record["key_id"] = key_id
        self.key_id = key_id
        record["token"] = self.headers.get("x-amz-security-token")
        known = keys_of(key_id)
        try:
            want = expected_signature(self, body, key_id, region, service, signed)
        except Exception as e:  # noqa: BLE001 - the test reads the log
            want = "error: %r" % e
        if known is None or want != signature or (known[1] and record["token"] != known[1]):
            record["error"] = "signature mismatch"
            self.log(record)
            xml = (
                "<Error><Code>SignatureDoesNotMatch</Code>"
                "<AWSAccessKeyId>%s</AWSAccessKeyId></Error>" % key_id
            ).encode()
            return self.reply(403, xml, {"Content-Type": "application/xml"})
        record["verified"] = True
        mode = self.headers.get("x-amz-content-sha256")
        if mode in ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"):
            record["chunks_ok"] = chunks_verify(body, signature, region, service,
                                                self.headers["x-amz-date"], mode.endswith("TRAILER"))
        if self.headers.get("Content-Encoding", "").startswith("aws-chunked"):
            body, trailers = decode_chunked(body, self.headers.get("x-amz-trailer"))
            record["trailers"] = sorted(trailers)
            crc = trailers.get("x-amz-checksum-crc32")
            if crc is not None:
                want_crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
                record["crc_ok"] = crc == want_crc
        record["size"] = len(body)
        self.log(record)
        if service == "sts":
            return self.sts(body)
        return self.s3(body)

    def presigned(self, query, record):
        cred = query["X-Amz-Credential"][0].split("/")
        key_id, region, service = cred[0], cred[2], cred[3]
        record["key_id"] = key_id
        self.key_id = key_id
        record["presigned"] = True
        record["token"] = query.get("X-Amz-Security-Token", [None])[0]
        known = keys_of(key_id) or (SECRET, TOKEN)
        creds = Credentials(key_id, known[0], known[1])
        signer = S3SigV4QueryAuth(creds, service, region, int(query["X-Amz-Expires"][0]))
        url = "https://" + self.headers["Host"] + self.path
        unsigned = url[: url.index("&X-Amz-Signature=")] if "&X-Amz-Signature=" in url else url
        signed = query["X-Amz-SignedHeaders"][0]
        headers = {n: ",".join(self.headers.get_all(n) or []) for n in signed.split(";")}
        req = AWSRequest(method=self.command, url=unsigned, headers=headers)
        req.context["timestamp"] = query["X-Amz-Date"][0]
        canonical = signer.canonical_request(req)
        want = signer.signature(signer.string_to_sign(req, canonical), req)
        if keys_of(key_id) is None or want != query["X-Amz-Signature"][0] or (known[1] and record["token"] != known[1]):
            record["error"] = "signature mismatch"
            self.log(record)
            return self.reply(403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>")
        record["verified"] = True
        self.log(record)
        return self.s3(b"")

    def log(self, record):
        with lock, open(LOG, "a") as f:
            f.write(json.dumps(record) + "\n")

    def sts(self, body):
        form = parse_qs(body.decode())
        if form.get("Action") == ["AssumeRole"]:
            key_id = "ASIA" + uuid.uuid4().hex[:16].upper()
            secret = "tmp/" + uuid.uuid4().hex + "+S"
            token = "IQoJb3JpZ2luX2VjE" + uuid.uuid4().hex
            with lock:
                issued[key_id] = (secret, token)
            seconds = int(form["DurationSeconds"][0])
            expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))
            self.log({"assumed": form["RoleArn"][0], "session": form["RoleSessionName"][0],
                      "issued_key_id": key_id, "issued_token": token, "issued_secret": secret})
            xml = (
                "<AssumeRoleResponse><AssumeRoleResult><Credentials>"
                "<AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s</SecretAccessKey>"
                "<SessionToken>%s</SessionToken><Expiration>%s</Expiration>"
                "</Credentials></AssumeRoleResult></AssumeRoleResponse>" % (key_id, secret, token, expires)
            ).encode()
            return self.reply(200, xml, {"Content-Type": "text/xml"})
        if form.get("Action") != ["GetCallerIdentity"]:
            return self.reply(400, b"<Error><Code>InvalidAction</Code></Error>")
        xml = (
            '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/agent</Arn>"
            "<UserId>%s</UserId><Account>123456789012</Account></GetCallerIdentityResult>"
            "<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>"
            "</GetCallerIdentityResponse>" % KEY_ID
        ).encode()
        self.reply(200, xml, {"Content-Type": "text/xml"})

    def s3(self, body):
        url = urlsplit(self.path)
        q = parse_qs(url.query, keep_blank_values=True)
        parts = url.path.lstrip("/").split("/", 1)
        bucket, key = parts[0], (parts[1] if len(parts) > 1 else "")
        etag = '"%s"' % hashlib.md5(body).hexdigest()
        if self.command == "PUT" and "partNumber" in q:
            with lock:
                uploads[q["uploadId"][0]][int(q["partNumber"][0])] = body
            return self.reply(200, b"", {"ETag": etag})
        if self.command == "PUT":
            with lock:
                objects[(bucket, key)] = body
            return self.reply(200, b"", {"ETag": etag})
        if self.command == "POST" and "uploads" in q:
            uid = uuid.uuid4().hex
            with lock:
                uploads[uid] = {}
            xml = (
                "<InitiateMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key>"
                "<UploadId>%s</UploadId></InitiateMultipartUploadResult>" % (bucket, key, uid)
            ).encode()
            return self.reply(200, xml, {"Content-Type": "application/xml"})
        if self.command == "POST" and "uploadId" in q:
            with lock:
                got = uploads.pop(q["uploadId"][0])
                objects[(bucket, key)] = b"".join(got[n] for n in sorted(got))
            xml = (
                "<CompleteMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key>"
                '<ETag>"x-%d"</ETag></CompleteMultipartUploadResult>' % (bucket, key, len(got))
            ).encode()
            return self.reply(200, xml, {"Content-Type": "application/xml"})
        if self.command == "GET" and key == "echo-keys":
            # An upstream that echoes the credentials it was sent.
            text = "<Echo><AWSAccessKeyId>%s</AWSAccessKeyId><Secret>%s</Secret><Token>%s</Token></Echo>"
            secret, token = keys_of(self.key_id)
            return self.reply(200, (text % (self.key_id, secret, token)).encode())
        if self.command in ("GET", "HEAD") and key:
            with lock:
                data = objects.get((bucket, key))
            if data is None:
                return self.reply(404, b"<Error><Code>NoSuchKey</Code></Error>")
            return self.reply(200, data, {"ETag": '"%s"' % hashlib.md5(data).hexdigest()})
        if self.command == "GET":
            with lock:
                keys = sorted(k for (b, k) in objects if b == bucket)
            contents = "".join(
                "<Contents><Key>%s</Key><Size>%d</Size></Contents>"
                % (k, len(objects[(bucket, k)]))
                for k in keys
            )
            xml = (
                '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                "<Name>%s</Name><KeyCount>%d</KeyCount><IsTruncated>false</IsTruncated>%s"
                "</ListBucketResult>" % (bucket, len(keys), contents)
            ).encode()
            return self.reply(200, xml, {"Content-Type": "application/xml"})
        return self.reply(400, b"<Error><Code>NotImplemented</Code></Error>")

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = handle_any


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
