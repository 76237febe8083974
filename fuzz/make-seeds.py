#!/usr/bin/env python3
"""Writes the seed corpus in fuzz/corpus/<target>/ (the files are committed;
run this again after changing an input layout). The layouts are described at
the top of each fuzz_targets/<target>.rs."""

import base64
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

P = "miosa-tok-"
OK = "AbCdEfGhIjKlMnOpQrStUv"
OTHER = "ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210"
HEADER_ONLY = "HdrOnly0123456789abcdefghijKLMNOP"
JSON_P = "miosa\\u002dtok\\u002d"
PCT_P = "miosa%2Dtok%2D"


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def scanner():
    def seed(name, prefix_idx, cut, text):
        write("scanner", name, bytes([prefix_idx]) + struct.pack("<H", cut) + text.encode())

    seed("plain-text", 0, 5, "hello world, no placeholder here")
    seed("one-placeholder", 0, 20, f"Authorization: Bearer {P}{OK}\r\n")
    seed("json-escaped", 0, 9, f'{{"token":"{JSON_P}{OK}"}}')
    seed("percent", 0, 30, f"a=1&token={PCT_P}{OK}&b=2")
    seed("short-and-long-runs", 0, 40, f"{P}short {P}{'A' * 140} end")
    seed("held-partial-prefix", 0, 0xFFFF, "data: chunk ends in miosa-to")
    seed("sse-event", 0, 7, "data: event\n\n")
    seed("xy-prefix", 1, 6, f"x x-y-{OK}{OK} x%2Dy%2D{OK}")
    seed("underscore-prefix", 2, 3, f"tok_{OK} tok_ab")
    seed("double-dash-prefix", 3, 11, f"a--b{OK} a%2D%2Db{OK} a\\u002d\\u002db{OK}")


def swap_stream():
    def seed(name, flags, lengths, body):
        write("swap_stream", name, bytes([flags, len(lengths)] + lengths) + body.encode())

    seed("raw-header-like", 0, [5, 10, 3], f"token {P}{OK} end")
    seed("json", 1, [12, 4], f'{{"token":"{P}{OK}","n":1}}')
    seed("json-escaped", 1, [3, 3, 3, 3, 3, 3, 3, 3, 3], f'{{"t":"{JSON_P}{OK}"}}')
    seed("form", 2, [11, 0, 7], f"a=1&token={PCT_P}{OK}&b=2")
    seed("form-plain", 2, [20], f"a=1&token={P}{OK}")
    seed("one-byte-chunks", 64 | 1, [], f'["{P}{OK}", "{P}{OK}"]')
    seed("refuse-any", 4, [8], f"binary {P}{OK} upload")
    seed("trailers-and-prefix", 8 | 128, [4, 4, 4, 4], f"xx {P}{OK} yy {P}{OK}")
    seed("other-host", 0, [16], f"x {P}{OTHER} y")
    seed("header-only-in-body", 0, [16], f"x {P}{HEADER_ONLY} y")
    seed("unknown-longer", 0, [16], f"x {P}{OK}X y")
    seed("xy-prefix", 0x10, [3, 9], f"x-y-{OK} x%2Dy%2D{OK}")
    seed("no-placeholder", 0, [1, 2, 3], "just a plain body with mio and miosa-t in it")


def basic_auth():
    def seed(name, flags, text):
        write("basic_auth", name, bytes([flags]) + (text if isinstance(text, bytes) else text.encode()))

    seed("git-basic", 0, f"x-access-token:{P}{OK}")
    seed("lowercase-scheme-json-spelling", 1, f"user:{JSON_P}{OK}")
    seed("spaces", 4 | 8, f"{P}{OK}:x-oauth-basic")
    seed("no-placeholder", 2, "user:password")
    seed("other-host", 0, f"u:{P}{OTHER}")
    seed("header-only", 3, f"u:{P}{HEADER_ONLY}")
    seed("no-colon", 0, f"{P}{OK}")
    seed("raw-bearer", 16, f"Bearer {P}{OK}")
    seed("raw-basic", 16, "Basic " + base64.b64encode(f"a:{P}{OK}".encode()).decode())
    seed("raw-not-base64", 16, "basic    !!not*base64==")
    seed("binary-credential", 0, b"\x00\xff:" + f"{P}{OK}".encode() + b"\xc3")


def connect_target():
    for i, text in enumerate([
        "api.github.com:443",
        "API.GitHub.COM.:443",
        "[::1]:443",
        "[::ffff:127.0.0.1]:8443",
        "127.0.0.1:8080",
        "user@host.test:443",
        "host.test",
        "2130706433:443",
        "0x7f.1:443",
        "exa_mple.com:443",
        "a..b:443",
        ":443",
        "[fe80::1%25eth0]:443",
        "xn--hst-sna.se:443",
    ]):
        write("connect_target", f"seed-{i:02}", text)


def egress_classify():
    import ipaddress

    def seed(name, v4, v6, text):
        data = ipaddress.IPv4Address(v4).packed + ipaddress.IPv6Address(v6).packed + text.encode()
        write("egress_classify", name, data)

    seed("loopback", "127.0.0.1", "::ffff:127.0.0.1", "[::ffff:127.0.0.1]")
    seed("metadata", "169.254.169.254", "fd00:ec2::254", "169.254.169.254")
    seed("public", "8.8.8.8", "2606:4700::1111", "[64:ff9b::7f00:1]")
    seed("private-6to4", "10.0.0.1", "2002:c0a8:101::1", "192.168.1.1.")
    seed("cgnat-linklocal", "100.64.0.1", "fe80::1", "[::]")
    seed("nat64-local", "192.0.2.1", "64:ff9b:1::a00:1", "[::10.0.0.1]")
    seed("compat-broadcast", "255.255.255.255", "::a9fe:a9fe", "0.0.0.0")


def config():
    def seed(name, layout, text):
        write("config", name, bytes([layout]) + text.encode())

    seed("prefix-only", 0, "")
    seed("prefix-other-order", 1, "")
    seed("no-ports", 0, "\n[proxy]\nallowed_ports = []\n")
    seed(
        "env-secret",
        1,
        '\n[[secret]]\nname = "FROM_ENV"\nvalue_env = "AIRLOCK_FUZZ_SECRET"\nhosts = ["*.example.com"]\nswap_in = ["body", "query"]\n',
    )
    seed(
        "file-secret",
        0,
        '\n[[secret]]\nname = "FROM_FILE"\nvalue_file = "secret.txt"\nhosts = ["api.test"]\n'
        '[[secret]]\nname = "EMPTY"\nvalue_file = "empty.txt"\nhosts = ["api.test"]\n',
    )
    seed(
        "bad-everything",
        0,
        'placeholder = "miosa-tok-short"\n[[secret]]\nname = "1BAD"\nvalue = "a\\r\\nb"\nvalue_env = "X"\nhosts = ["*", "a b"]\nswap_in = []\n'
        '[resolve]\n"api.test" = "not-an-ip"\n"*.x" = "1.2.3.4"\n',
    )
    seed(
        "readme",
        2,
        """data_dir = "/var/lib/airlock"
placeholder_prefix = "miosa-tok-"

[proxy]
listen = "127.0.0.1:8080"
public_url = "http://airlock:8080"
intercept = "bound"
allowed_ports = [443]
allow_private_destinations = false
upstream_ca = ["extra-roots.pem"]
require_auth = false
add_via = false
connect_timeout_secs = 10
max_header_bytes = 65536
scrub_responses = true

[resolve]
"api.github.test" = "127.0.0.1"
"*.internal.test" = "10.0.0.7:8443"

[[secret]]
name = "GITHUB_TOKEN"
value_env = "AIRLOCK_FUZZ_SECRET"
placeholder = "miosa-tok-AbCdEfGhIjKlMnOpQrStUv"
hosts = ["api.github.com", "*.githubusercontent.com"]
swap_in = ["header", "basic"]

[log]
format = "json"
level = "info"

[vault]
listen = "127.0.0.1:8090"
public_url = "http://127.0.0.1:8090"
database_url = "sqlite://airlock.db"
refresh_fraction = 0.1

[[provider]]
name = "acme"
authorize_url = "https://auth.acme.test/authorize"
token_url = "https://auth.acme.test/token"
scopes = ["read"]
hosts = ["api.acme.test"]
inject = "bearer"
env = "ACME_TOKEN"
client_auth = "basic"
swap_in = ["header", "basic"]
expired_on = [{ status = 401 }]

[[app]]
provider = "acme"
client_id = "client"
client_secret_file = "secret.txt"
""",
    )
    seed("bad-prefix-and-provider", 2, 'placeholder_prefix = "a b"\n[[provider]]\nname = ""\ntoken_url = "ftp://x"\nhosts = []\ninject = "weird"\nenv = "1"\n')
    seed("toml-syntax-error", 0, '\n[[secret]\nname = "x\n')
    seed("inline-secret", 3, '[proxy]\nallowed_ports = [443, 8443]\n[[secret]]\nname = "B"\nvalue = "v"\nhosts = ["b.test"]\n')
    seed("override-bare", 2, "PROXY__MAX_HEADERS\n")
    seed("override-array", 2 + 5 * 4, "PROXY__ALLOWED_PORTS\n")
    seed("override-quoted", 2 + 5 * 1, "VAULT__DATABASE_URL\n")
    seed("value-line-ends", 4, '   # the value line, continued\nswap_in = ["header"]\n')


if __name__ == "__main__":
    scanner()
    swap_stream()
    basic_auth()
    connect_target()
    egress_classify()
    config()
