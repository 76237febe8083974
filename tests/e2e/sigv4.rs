//! AWS SigV4 signing end to end: boto3 and the aws CLI in the "sandbox"
//! hold only placeholder keys; airlock checks their signatures and signs
//! again with the real keys; a fake S3/STS (tests/support/fake_s3.py)
//! checks every signature with botocore's own signer and the REAL secret.

use std::process::Command;

use super::cli::cli;
use crate::support::clients::python;
use crate::support::python_fake::PythonFake;
use crate::support::{assert_not_leaked, blocking, skip, with_env, Airlock, TestCa};

const S3: &str = "s3.test";
const STS: &str = "sts.test";
const OTHER: &str = "other.test";
const REAL_KEY_ID: &str = "AKIAREALKEY7EXAMPLE1";
const REAL_SECRET: &str = "real/Secret+Key0123456789abcdefEXAMPLEKEY";

/// The fake S3/STS: every signature checked by botocore with the real secret.
fn fake_aws(ca: &TestCa, session_token: Option<&str>) -> PythonFake {
    let extra: Vec<&str> = session_token.into_iter().collect();
    PythonFake::start(
        ca,
        "fake_s3.py",
        &[S3, STS, OTHER],
        &[REAL_KEY_ID, REAL_SECRET],
        &extra,
    )
}

/// Whether boto3 and the aws CLI are installed (scripts/test's venv).
fn have_aws_tools() -> bool {
    let boto = Command::new("python3")
        .args(["-c", "import boto3"])
        .output()
        .is_ok_and(|o| o.status.success());
    let cli = Command::new("aws")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    boto && cli
}

struct World {
    _ca: TestCa,
    aws: PythonFake,
    airlock: Airlock,
    env: Vec<(String, String)>,
    /// `Keys::Vault`: the first run, where the keys were stored; its data
    /// folder is the one `airlock` runs on now.
    _storing: Option<Airlock>,
}

/// Where the real keys are kept.
#[derive(Clone, Copy)]
enum Keys<'a> {
    /// A config-file `[[secret]]`, with these extra keys.
    Config(&'a str),
    /// The vault, stored with `airlock secret add --kind aws_sigv4`.
    Vault,
}

fn world(extra_secret_keys: &str) -> Option<World> {
    world_with(extra_secret_keys, None)
}

fn world_with(extra_secret_keys: &str, session_token: Option<&str>) -> Option<World> {
    world_in(Keys::Config(extra_secret_keys), session_token)
}

fn world_in(keys: Keys<'_>, session_token: Option<&str>) -> Option<World> {
    if !have_aws_tools() {
        skip("boto3 or the aws CLI is missing (run scripts/test once)");
        return None;
    }
    let ca = TestCa::new();
    let aws = fake_aws(&ca, session_token);
    let base = format!(
        r#"[proxy]
upstream_ca = [{ca:?}]

[resolve]
{S3:?} = "127.0.0.1:{port}"
{STS:?} = "127.0.0.1:{port}"
{OTHER:?} = "127.0.0.1:{port}"

[[secret]]
name = "OTHER_TOKEN"
value = "other-real-token"
hosts = [{OTHER:?}]
"#,
        ca = ca.cert_pem_path().display().to_string(),
        port = aws.port,
    );
    let real_env = [
        ("REAL_AWS_KEY_ID", REAL_KEY_ID),
        ("REAL_AWS_SECRET", REAL_SECRET),
        ("REAL_AWS_TOKEN", session_token.unwrap_or("")),
    ];
    let (airlock, storing) = match keys {
        Keys::Config(extra_secret_keys) => {
            let cfg = format!(
                r#"{base}
[[secret]]
name = "AWS_ACCESS_KEY_ID"
kind = "aws_sigv4"
access_key_id = {REAL_KEY_ID:?}
secret_access_key_env = "REAL_AWS_SECRET"
hosts = [{S3:?}, {STS:?}]
{extra_secret_keys}
"#
            );
            (Airlock::start_with_env(&cfg, &real_env), None)
        }
        Keys::Vault => {
            let mut storing = Airlock::start(&base);
            let mut args = vec![
                "secret",
                "add",
                "AWS_ACCESS_KEY_ID",
                "--kind",
                "aws_sigv4",
                "--access-key-id-env",
                "REAL_AWS_KEY_ID",
                "--secret-access-key-env",
                "REAL_AWS_SECRET",
                "--host",
                S3,
                "--host",
                STS,
            ];
            if session_token.is_some() {
                args.extend(["--session-token-env", "REAL_AWS_TOKEN"]);
            }
            let stored = cli(&storing, &args, &real_env);
            assert!(
                stored.contains("secret AWS_ACCESS_KEY_ID (aws_sigv4) stored"),
                "{stored}"
            );
            let listed = cli(&storing, &["secret", "list", "--json"], &[]);
            let row: serde_json::Value = serde_json::from_str(&listed).unwrap();
            assert_eq!(row[0]["kind"], "aws_sigv4", "{listed}");
            for real in [REAL_KEY_ID, REAL_SECRET].into_iter().chain(session_token) {
                assert_not_leaked(real, &[&stored, &listed, &storing.logs()]);
            }
            storing.stop();
            // The sidecar binds the vault's secrets when it starts; the real
            // keys are in no variable of airlock's now, only in the vault.
            let airlock = Airlock::restart_in(&base, &storing.data_dir);
            (airlock, Some(storing))
        }
    };
    let home = tempfile::tempdir().unwrap().keep();
    let env = with_env(
        &airlock.env,
        &[
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("HOME", home.to_str().unwrap()),
        ],
    );
    Some(World {
        _ca: ca,
        aws,
        airlock,
        env,
        _storing: storing,
    })
}

const BOTO: &str = r#"
import boto3, botocore.config, io, sys
cfg = botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
s3 = boto3.client("s3", endpoint_url="https://s3.test", config=cfg)
s3.put_object(Bucket="bkt", Key="dir/hello.txt", Body=b"hello from the sandbox")
got = s3.get_object(Bucket="bkt", Key="dir/hello.txt")["Body"].read()
assert got == b"hello from the sandbox", got
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="bkt")["Contents"]]
assert keys == ["dir/hello.txt"], keys
big = bytes(range(256)) * (9 * 4096)  # 9 MiB: a multipart upload
s3.upload_fileobj(io.BytesIO(big), "bkt", "big.bin",
    Config=boto3.s3.transfer.TransferConfig(multipart_threshold=8 * 1024 * 1024))
assert s3.get_object(Bucket="bkt", Key="big.bin")["Body"].read() == big
sts = boto3.client("sts", endpoint_url="https://sts.test", config=cfg)
print(sts.get_caller_identity()["UserId"])
"#;

#[tokio::test(flavor = "multi_thread")]
async fn boto3_and_the_aws_cli_work_with_placeholder_keys_only() {
    let Some(w) = world("") else { return };
    boto3_and_the_aws_cli_work(&w).await;
}

/// The same with the keys stored in the vault (`airlock secret add`).
#[tokio::test(flavor = "multi_thread")]
async fn boto3_and_the_aws_cli_work_with_keys_stored_in_the_vault() {
    let Some(w) = world_in(Keys::Vault, None) else {
        return;
    };
    assert!(
        w.env.iter().all(|(k, _)| k != "AWS_SESSION_TOKEN"),
        "no session token stored, none given"
    );
    boto3_and_the_aws_cli_work(&w).await;
}

/// boto3 (a multipart upload among its calls) and the aws CLI sign with
/// the placeholders; every request reaches S3/STS signed with the real keys.
async fn boto3_and_the_aws_cli_work(w: &World) {
    let key_ph = w.airlock.var("AWS_ACCESS_KEY_ID");
    let secret_ph = w.airlock.var("AWS_SECRET_ACCESS_KEY");
    assert_ne!(key_ph, REAL_KEY_ID);
    assert_ne!(secret_ph, REAL_SECRET);
    assert!(
        !w.env
            .iter()
            .any(|(_, v)| v.contains(REAL_SECRET) || v.contains(REAL_KEY_ID)),
        "the sandbox's environment holds only placeholders"
    );
    let env = w.env.clone();
    let out = blocking(move || python(&env, BOTO)).await;
    assert!(
        out.success(),
        "boto3: {}\n{}\nupstream saw {:?}\nairlock: {}",
        out.stdout,
        out.stderr.lines().last().unwrap_or(""),
        w.aws.requests(),
        w.airlock.logs()
    );
    // STS echoed the real key id: the sandbox sees its placeholder.
    assert_eq!(out.stdout.trim(), key_ph);

    // The aws CLI: a multipart `s3 cp` of a 9 MiB file, then an STS call.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, vec![7u8; 9 * 1024 * 1024]).unwrap();
    let env = w.env.clone();
    let file_arg = file.display().to_string();
    let cp = blocking(move || {
        crate::support::clients::command(
            "aws",
            &env,
            &[
                "--endpoint-url",
                "https://s3.test",
                "s3",
                "cp",
                &file_arg,
                "s3://bkt/cli.bin",
            ],
        )
    })
    .await;
    assert!(cp.success(), "aws s3 cp: {}\n{}", cp.stdout, cp.stderr);
    let env = w.env.clone();
    let who = blocking(move || {
        crate::support::clients::command(
            "aws",
            &env,
            &[
                "--endpoint-url",
                "https://sts.test",
                "sts",
                "get-caller-identity",
                "--output",
                "text",
                "--query",
                "UserId",
            ],
        )
    })
    .await;
    assert!(who.success(), "aws sts: {}", who.stderr);
    assert_eq!(who.stdout.trim(), key_ph);

    let requests = w.aws.requests();
    assert!(requests.len() >= 10, "{requests:?}");
    for r in &requests {
        assert_eq!(r["verified"], true, "botocore verified {r}");
        assert_eq!(r["key_id"], REAL_KEY_ID, "{r}");
    }
    let parts = requests
        .iter()
        .filter(|r| r["path"].as_str().unwrap().contains("partNumber="))
        .count();
    assert!(
        parts >= 4,
        "two multipart uploads of two parts: {requests:?}"
    );
    assert!(
        requests.iter().any(|r| r["crc_ok"] == true),
        "an aws-chunked upload with a checksum trailer went through: {requests:?}"
    );
    let logs = w.airlock.logs();
    assert_not_leaked(REAL_SECRET, &[&logs, &out.stdout, &out.stderr, &cp.stderr]);
    assert_not_leaked(REAL_KEY_ID, &[&out.stdout, &who.stdout]);
    assert!(
        logs.contains("secret:AWS_ACCESS_KEY_ID"),
        "audit names the binding"
    );
}

/// boto3 with `overrides` of its keys, one call to S3; (status, airlock error).
async fn one_call(w: &World, overrides: &[(&str, &str)], prelude: &str) -> (String, String) {
    let env = with_env(&w.env, overrides);
    let script = format!(
        r#"
import boto3, botocore.config, botocore.exceptions
{prelude}
cfg = botocore.config.Config(s3={{"addressing_style": "path"}}, retries={{"max_attempts": 1}})
s3 = boto3.client("s3", endpoint_url="https://s3.test", config=cfg)
try:
    s3.put_object(Bucket="bkt", Key="k", Body=b"x")
    print("ok -")
except botocore.exceptions.ClientError as e:
    h = e.response["ResponseMetadata"]["HTTPHeaders"]
    print(e.response["ResponseMetadata"]["HTTPStatusCode"], h.get("x-airlock-error", "-"))
"#
    );
    let out = blocking(move || python(&env, &script)).await;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    let line = out.stdout.trim().to_owned();
    let (status, code) = line.split_once(' ').unwrap_or((&line, ""));
    (status.to_owned(), code.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_signatures_are_refused_and_nothing_is_sent() {
    let Some(w) = world("") else { return };
    let key_ph = w.airlock.var("AWS_ACCESS_KEY_ID");
    // Signed with a secret that is not the placeholder.
    let wrong = one_call(&w, &[("AWS_SECRET_ACCESS_KEY", "not-the-placeholder")], "").await;
    assert_eq!(wrong, ("403".into(), "sigv4_signature_mismatch".into()));
    // A clock ten minutes off.
    let skew = one_call(
        &w,
        &[],
        "import datetime, botocore.auth\n\
         botocore.auth.get_current_datetime = lambda: datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=10)",
    )
    .await;
    assert_eq!(skew, ("403".into(), "clock_skew".into()));
    // A key id that is a placeholder but of no binding.
    let unknown = one_call(
        &w,
        &[(
            "AWS_ACCESS_KEY_ID",
            "miosa-tok-AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )],
        "",
    )
    .await;
    assert_eq!(unknown.0, "403");
    assert_eq!(unknown.1, "unknown_placeholder");
    // A malformed Authorization header, by curl.
    let env = w.env.clone();
    let auth = format!("Authorization: AWS4-HMAC-SHA256 Credential={key_ph}/bad");
    let out = blocking(move || {
        crate::support::clients::curl(
            &env,
            &[
                "-s",
                "-o",
                "/dev/null",
                "-D",
                "-",
                "-H",
                &auth,
                "https://s3.test/bkt/k",
            ],
        )
    })
    .await;
    assert!(
        out.stdout.contains("x-airlock-error: sigv4_malformed"),
        "{}",
        out.stdout
    );
    assert!(
        w.aws.requests().is_empty(),
        "nothing reached the upstream: {:?}",
        w.aws.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_placeholder_key_id_is_refused_on_a_host_it_is_not_bound_to() {
    let Some(w) = world("") else { return };
    // other.test is intercepted (another binding's host) but not the AWS binding's.
    let env = w.env.clone();
    let out = blocking(move || {
        python(
            &env,
            r#"
import boto3, botocore.config, botocore.exceptions
cfg = botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
try:
    boto3.client("s3", endpoint_url="https://other.test", config=cfg).list_objects_v2(Bucket="b")
    print("ok -")
except botocore.exceptions.ClientError as e:
    h = e.response["ResponseMetadata"]["HTTPHeaders"]
    print(e.response["ResponseMetadata"]["HTTPStatusCode"], h.get("x-airlock-error", "-"))
"#,
        )
    })
    .await;
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "403 host_not_allowed");
    assert!(w.aws.requests().is_empty(), "{:?}", w.aws.requests());
}

const PRESIGN_AND_ECHO: &str = r#"
import boto3, botocore.config, requests, os
cfg = botocore.config.Config(s3={"addressing_style": "path"}, signature_version="s3v4")
s3 = boto3.client("s3", endpoint_url="https://s3.test", config=cfg)
s3.put_object(Bucket="bkt", Key="shared.txt", Body=b"presigned body")
url = s3.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "shared.txt"}, ExpiresIn=600)
r = requests.get(url)
assert r.status_code == 200 and r.content == b"presigned body", (r.status_code, r.text, r.headers)
print(s3.get_object(Bucket="bkt", Key="echo-keys")["Body"].read().decode())
"#;

const REAL_TOKEN: &str = "FwoGZXIvYXdzEREAL/session+token0123456789";

#[tokio::test(flavor = "multi_thread")]
async fn presigned_urls_and_echoed_keys_with_a_session_token() {
    let Some(w) = world_with(r#"session_token_env = "REAL_AWS_TOKEN""#, Some(REAL_TOKEN)) else {
        return;
    };
    presigned_urls_and_echoed_keys(&w).await;
}

/// The same with the keys and token stored in the vault; `airlock env`
/// prints the three placeholders `airlock up` did.
#[tokio::test(flavor = "multi_thread")]
async fn presigned_urls_and_echoed_keys_with_a_session_token_stored_in_the_vault() {
    let Some(w) = world_in(Keys::Vault, Some(REAL_TOKEN)) else {
        return;
    };
    let a = &w.airlock;
    let out = std::process::Command::new(crate::support::airlock::binary())
        .args(["env", "--format", "json", "--config"])
        .arg(&a.config_path)
        .arg("--data-dir")
        .arg(&a.data_dir)
        .output()
        .unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_str(&printed).unwrap();
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        assert_eq!(printed[var], a.var(var).as_str(), "{var}: {printed}");
    }
    for real in [REAL_KEY_ID, REAL_SECRET, REAL_TOKEN] {
        assert_not_leaked(real, &[&printed.to_string()]);
    }
    presigned_urls_and_echoed_keys(&w).await;
}

/// boto3 presigns a URL and reads keys the upstream echoes, all with the
/// placeholders and the session token placeholder.
async fn presigned_urls_and_echoed_keys(w: &World) {
    let key_ph = w.airlock.var("AWS_ACCESS_KEY_ID");
    let secret_ph = w.airlock.var("AWS_SECRET_ACCESS_KEY");
    let token_ph = w.airlock.var("AWS_SESSION_TOKEN");
    assert_ne!(token_ph, REAL_TOKEN);
    let env = w.env.clone();
    let out = blocking(move || python(&env, PRESIGN_AND_ECHO)).await;
    assert!(
        out.success(),
        "{}\n{}\nupstream saw {:?}",
        out.stdout,
        out.stderr,
        w.aws.requests()
    );
    // The upstream echoed the real key id, secret and token: the sandbox
    // reads its placeholders instead.
    let echoed = out.stdout.trim();
    assert!(echoed.contains(&key_ph), "{echoed}");
    assert!(echoed.contains(&secret_ph), "{echoed}");
    assert!(echoed.contains(&token_ph), "{echoed}");
    assert_not_leaked(REAL_SECRET, &[&out.stdout, &out.stderr, &w.airlock.logs()]);
    assert_not_leaked(REAL_TOKEN, &[&out.stdout, &out.stderr, &w.airlock.logs()]);
    assert_not_leaked(REAL_KEY_ID, &[&out.stdout, &out.stderr]);
    let requests = w.aws.requests();
    assert!(
        requests.iter().any(|r| r["presigned"] == true),
        "{requests:?}"
    );
    for r in &requests {
        assert_eq!(r["verified"], true, "{r}");
        assert_eq!(r["token"], REAL_TOKEN, "{r}");
    }
}

/// A client of the `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` mode (which
/// botocore does not use): the seed signed by botocore's S3SigV4Auth, each
/// chunk by the spec's chain, all with the sandbox's placeholder secret.
const SIGNED_CHUNKS: &str = r#"
import hashlib, hmac, os, requests, boto3, botocore.config
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
class Streaming(S3SigV4Auth):
    def payload(self, request):
        return STREAMING
creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
chunks = [bytes(range(256)) * 256, b"tail" * 250, b""]
length = sum(len("%x" % len(c)) + 17 + 64 + 2 + len(c) + 2 for c in chunks)
url = "https://s3.test/bkt/chunked.bin"
req = AWSRequest(method="PUT", url=url, headers={
    "Content-Encoding": "aws-chunked", "Content-Length": str(length),
    "x-amz-decoded-content-length": str(sum(len(c) for c in chunks))})
Streaming(creds, "s3", "us-east-1").add_auth(req)
seed = req.headers["Authorization"].rsplit("Signature=", 1)[1]
date = req.headers["X-Amz-Date"]
key = ("AWS4" + creds.secret_key).encode()
for part in (date[:8], "us-east-1", "s3", "aws4_request"):
    key = hmac.new(key, part.encode(), hashlib.sha256).digest()
scope = date[:8] + "/us-east-1/s3/aws4_request"
body, prev = b"", seed
for c in chunks:
    sts = "\n".join(("AWS4-HMAC-SHA256-PAYLOAD", date, scope, prev,
                     hashlib.sha256(b"").hexdigest(), hashlib.sha256(c).hexdigest()))
    prev = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    body += ("%x;chunk-signature=%s\r\n" % (len(c), prev)).encode() + c + b"\r\n"
assert len(body) == length
r = requests.put(url, data=body, headers=dict(req.headers.items()))
print(r.status_code, r.headers.get("x-airlock-error", "-"))
if r.status_code == 200:
    s3 = boto3.client("s3", endpoint_url="https://s3.test",
                      config=botocore.config.Config(s3={"addressing_style": "path"}))
    got = s3.get_object(Bucket="bkt", Key="chunked.bin")["Body"].read()
    assert got == b"".join(chunks), len(got)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn signed_aws_chunked_uploads_are_signed_again_chunk_by_chunk() {
    let Some(w) = world("") else { return };
    let env = w.env.clone();
    let out = blocking(move || python(&env, SIGNED_CHUNKS)).await;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.stdout.trim(), "200 -", "{}", w.airlock.logs());
    let requests = w.aws.requests();
    let put = requests
        .iter()
        .find(|r| r["path"] == "/bkt/chunked.bin" && r["method"] == "PUT")
        .expect("the upload arrived");
    assert_eq!(put["verified"], true, "{put}");
    assert_eq!(
        put["chunks_ok"], true,
        "every chunk signature checks with the real secret: {put}"
    );

    // The same body with a chunk signed by another secret: refused, cut.
    let env = with_env(&w.env, &[]);
    let tampered = SIGNED_CHUNKS.replace(
        "body += (\"%x;chunk-signature=%s\\r\\n\" % (len(c), prev))",
        "body += (\"%x;chunk-signature=%s\\r\\n\" % (len(c), prev if c else \"0\" * 64))",
    );
    assert_ne!(tampered, SIGNED_CHUNKS);
    let before = w.aws.requests().len();
    let out = blocking(move || python(&env, &tampered)).await;
    assert!(
        !out.stdout.starts_with("200"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    // The chunks before the bad one went on signed again; the upload was
    // then cut, so no complete upload with valid signatures arrived.
    let after = w.aws.requests();
    assert!(
        !after[before..].iter().any(|r| r["chunks_ok"] == true),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_rules_apply_to_signed_requests() {
    let Some(w) = world(r#"rules = ["allow GET /bkt/**", "allow HEAD /bkt/**"]"#) else {
        return;
    };
    // A PUT the rules do not allow: refused before anything is signed or sent.
    let put = one_call(&w, &[], "").await;
    assert_eq!(put, ("403".into(), "rule_denied".into()));
    assert!(w.aws.requests().is_empty(), "{:?}", w.aws.requests());
    let env = w.env.clone();
    let out = blocking(move || {
        python(
            &env,
            r#"
import boto3, botocore.config, botocore.exceptions
cfg = botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
s3 = boto3.client("s3", endpoint_url="https://s3.test", config=cfg)
try:
    s3.get_object(Bucket="bkt", Key="missing")
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
"#,
        )
    })
    .await;
    assert_eq!(out.stdout.trim(), "NoSuchKey", "{}", out.stderr);
    assert_eq!(w.aws.requests().len(), 1, "the GET went through");
    assert!(w.airlock.logs().contains("outcome=\"rule_denied\""));
}

/// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: chunks as above, then a
/// CRC32 trailer signed from the last chunk's signature.
const SIGNED_TRAILER: &str = r#"
import base64, hashlib, hmac, os, zlib, requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
MODE = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
class Streaming(S3SigV4Auth):
    def payload(self, request):
        return MODE
creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
data = [b"x" * 70000, b"end"]
crc = base64.b64encode(zlib.crc32(b"".join(data)).to_bytes(4, "big")).decode()
trailer = "x-amz-checksum-crc32:" + crc
def frame(sigs, tsig):
    body = b""
    for c, s in zip(data + [b""], sigs):
        body += ("%x;chunk-signature=%s\r\n" % (len(c), s)).encode() + c + (b"\r\n" if c else b"")
    return body + (trailer + "\r\nx-amz-trailer-signature:" + tsig + "\r\n\r\n").encode()
length = len(frame(["0" * 64] * 3, "0" * 64))
req = AWSRequest(method="PUT", url="https://s3.test/bkt/trailer.bin", headers={
    "Content-Encoding": "aws-chunked", "Content-Length": str(length),
    "x-amz-decoded-content-length": str(sum(map(len, data))),
    "x-amz-trailer": "x-amz-checksum-crc32"})
Streaming(creds, "s3", "us-east-1").add_auth(req)
prev = req.headers["Authorization"].rsplit("Signature=", 1)[1]
date = req.headers["X-Amz-Date"]
key = ("AWS4" + creds.secret_key).encode()
for part in (date[:8], "us-east-1", "s3", "aws4_request"):
    key = hmac.new(key, part.encode(), hashlib.sha256).digest()
scope = date[:8] + "/us-east-1/s3/aws4_request"
sigs = []
for c in data + [b""]:
    sts = "\n".join(("AWS4-HMAC-SHA256-PAYLOAD", date, scope, prev,
                     hashlib.sha256(b"").hexdigest(), hashlib.sha256(c).hexdigest()))
    prev = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    sigs.append(prev)
sts = "\n".join(("AWS4-HMAC-SHA256-TRAILER", date, scope, prev,
                 hashlib.sha256((trailer + "\n").encode()).hexdigest()))
tsig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
r = requests.put(req.url, data=frame(sigs, tsig), headers=dict(req.headers.items()))
print(r.status_code, r.headers.get("x-airlock-error", "-"))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn signed_trailers_are_signed_again() {
    let Some(w) = world("") else { return };
    let env = w.env.clone();
    let out = blocking(move || python(&env, SIGNED_TRAILER)).await;
    assert_eq!(
        out.stdout.trim(),
        "200 -",
        "{}\n{}",
        out.stderr,
        w.airlock.logs()
    );
    let requests = w.aws.requests();
    let put = requests
        .iter()
        .find(|r| r["path"] == "/bkt/trailer.bin")
        .expect("the upload arrived");
    assert_eq!(put["verified"], true, "{put}");
    assert_eq!(
        put["chunks_ok"], true,
        "chunks and trailer check with the real secret: {put}"
    );
    assert_eq!(put["crc_ok"], true, "{put}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_secret_signs_with_temporary_credentials_from_sts() {
    let role = r#"role_arn = "arn:aws:iam::123456789012:role/agent"
sts_endpoint = "https://sts.test"
role_duration_secs = 900"#;
    let Some(w) = world(role) else { return };
    let token_ph = w.airlock.var("AWS_SESSION_TOKEN");
    let key_ph = w.airlock.var("AWS_ACCESS_KEY_ID");
    let secret_ph = w.airlock.var("AWS_SECRET_ACCESS_KEY");
    let env = w.env.clone();
    let out = blocking(move || python(&env, PRESIGN_AND_ECHO)).await;
    assert!(
        out.success(),
        "{}\n{}\nupstream saw {:?}\n{}",
        out.stdout,
        out.stderr,
        w.aws.requests(),
        w.airlock.logs()
    );
    let requests = w.aws.requests();
    let assumed: Vec<_> = requests
        .iter()
        .filter(|r| r.get("assumed").is_some())
        .collect();
    assert_eq!(assumed.len(), 1, "one AssumeRole at start: {requests:?}");
    assert_eq!(
        assumed[0]["assumed"],
        "arn:aws:iam::123456789012:role/agent"
    );
    let temp_key = assumed[0]["issued_key_id"].as_str().unwrap().to_owned();
    let temp_token = assumed[0]["issued_token"].as_str().unwrap().to_owned();
    let temp_secret = assumed[0]["issued_secret"].as_str().unwrap().to_owned();
    let signed: Vec<_> = requests
        .iter()
        .filter(|r| r.get("verified").is_some())
        .collect();
    // The AssumeRole call itself, signed with the configured keys, then the
    // sandbox's requests, signed with the temporary ones.
    assert_eq!(signed[0]["key_id"], REAL_KEY_ID, "{requests:?}");
    assert_eq!(signed[0]["verified"], true);
    for r in &signed[1..] {
        assert_eq!(r["verified"], true, "{r}");
        assert_eq!(r["key_id"], temp_key.as_str(), "{r}");
        assert_eq!(r["token"], temp_token.as_str(), "{r}");
    }
    assert!(signed.len() >= 4, "{requests:?}");
    // Echoed temporary keys come back as the sandbox's placeholders.
    let echoed = out.stdout.trim();
    assert!(
        echoed.contains(&key_ph) && echoed.contains(&secret_ph) && echoed.contains(&token_ph),
        "{echoed}"
    );
    assert_not_leaked(&temp_secret, &[&out.stdout, &out.stderr, &w.airlock.logs()]);
    assert_not_leaked(&temp_token, &[&out.stdout, &out.stderr, &w.airlock.logs()]);
    assert_not_leaked(REAL_SECRET, &[&w.airlock.logs()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn airlock_does_not_start_when_sts_refuses_the_role() {
    if !have_aws_tools() {
        skip("boto3 is missing (run scripts/test once)");
        return;
    }
    let ca = TestCa::new();
    let aws = fake_aws(&ca, None);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            r#"[proxy]
upstream_ca = [{ca:?}]

[resolve]
{STS:?} = "127.0.0.1:{port}"

[[secret]]
name = "AWS_ACCESS_KEY_ID"
kind = "aws_sigv4"
access_key_id = {REAL_KEY_ID:?}
secret_access_key = "not-the-real-secret"
role_arn = "arn:aws:iam::123456789012:role/agent"
sts_endpoint = "https://sts.test"
hosts = [{S3:?}]
"#,
            ca = ca.cert_pem_path().display().to_string(),
            port = aws.port,
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let args: Vec<String> = [
        "up",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--vault-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::support::airlock::run(&args)
    })
    .await;
    assert!(!out.0, "airlock must not start: {}", out.2);
    assert!(
        out.2.contains("STS AssumeRole for arn:aws:iam::123456789012:role/agent was refused: HTTP 403 SignatureDoesNotMatch"),
        "{}",
        out.2
    );
    assert_not_leaked("not-the-real-secret", &[&out.1, &out.2]);
}
