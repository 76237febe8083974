//! Generic HMAC request signing (`kind = "hmac"`) end to end: Python in the
//! sandbox signs with the placeholder secret; the upstream receives the
//! request signed with the real secret, checked here with Python's own
//! `hmac` module.

use crate::support::clients::python;
use crate::support::upstream::Upstream;
use crate::support::{assert_not_leaked, blocking, with_env, Airlock, TestCa};

const API: &str = "api.signed.test";
const REAL: &str = "real-hmac-secret-0123456789abcdef";
const TEMPLATE: &str = r"{method}\n{path}\n{header:x-timestamp}\n{body_sha256}";

struct World {
    _ca: TestCa,
    api: Upstream,
    airlock: Airlock,
    env: Vec<(String, String)>,
}

async fn world() -> World {
    let ca = TestCa::new();
    let api = Upstream::start(&ca, &[API]).await;
    let cfg = format!(
        r#"[proxy]
upstream_ca = [{ca:?}]

[resolve]
{API:?} = "127.0.0.1:{port}"

[[secret]]
name = "SIGNING_SECRET"
kind = "hmac"
value = {REAL:?}
hosts = [{API:?}]
signature_header = "X-Signature"
signature_prefix = "sha256="
signature_template = "{TEMPLATE}"
timestamp_header = "X-Timestamp"
"#,
        ca = ca.cert_pem_path().display().to_string(),
        port = api.port(),
    );
    let airlock = Airlock::start(&cfg);
    let env = airlock.env.clone();
    World {
        _ca: ca,
        api,
        airlock,
        env,
    }
}

/// Python: sign with `$SIGNING_SECRET` (or `secret`), send, print the
/// status and `x-airlock-error`. `skew` shifts the timestamp.
fn client(secret: Option<&str>, skew: i64) -> String {
    let key = secret.map_or("os.environ['SIGNING_SECRET']".to_owned(), |s| {
        format!("{s:?}")
    });
    format!(
        r#"
import hashlib, hmac, os, time, requests
key = {key}
ts = str(int(time.time()) + {skew})
body = b'{{"order": 42}}'
path = "/v1/orders?dry=1"
msg = "\n".join(["POST", path, ts, hashlib.sha256(body).hexdigest()]).encode()
sig = "sha256=" + hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()
r = requests.post("https://{API}" + path, data=body,
                  headers={{"X-Timestamp": ts, "X-Signature": sig, "Content-Type": "application/json"}})
print(r.status_code, r.headers.get("x-airlock-error", "-"))
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_signed_with_the_placeholder_reach_the_api_signed_with_the_real_secret() {
    let w = world().await;
    let placeholder = w.airlock.var("SIGNING_SECRET");
    assert_ne!(placeholder, REAL);
    let env = w.env.clone();
    let out = blocking(move || python(&env, &client(None, 0))).await;
    assert_eq!(out.stdout.trim(), "200 -", "{}", out.stderr);
    let seen = w.api.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    let ts = r.header("x-timestamp").unwrap().to_owned();
    let sig = r.header("x-signature").unwrap().to_owned();
    let body = String::from_utf8(r.body_sample.clone()).unwrap();
    // An independent check: Python's hmac with the REAL secret.
    let check = format!(
        r#"
import hashlib, hmac
msg = "\n".join(["POST", "/v1/orders?dry=1", {ts:?}, hashlib.sha256({body:?}.encode()).hexdigest()]).encode()
want = "sha256=" + hmac.new({REAL:?}.encode(), msg, hashlib.sha256).hexdigest()
print("ok" if hmac.compare_digest(want, {sig:?}) else "mismatch")
"#
    );
    let verdict = blocking(move || python(&[], &check)).await;
    assert_eq!(verdict.stdout.trim(), "ok", "{}", verdict.stderr);
    assert_not_leaked(REAL, &[&out.stdout, &out.stderr, &w.airlock.logs()]);
    assert!(w.airlock.logs().contains("swapped=secret:SIGNING_SECRET"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_a_stale_timestamp_or_the_secret_as_text_are_refused() {
    let w = world().await;
    let env = w.env.clone();
    let wrong = blocking(move || python(&env, &client(Some("not-the-placeholder"), 0))).await;
    assert_eq!(
        wrong.stdout.trim(),
        "403 hmac_signature_mismatch",
        "{}",
        wrong.stderr
    );
    let env = w.env.clone();
    let stale = blocking(move || python(&env, &client(None, -900))).await;
    assert_eq!(stale.stdout.trim(), "403 clock_skew", "{}", stale.stderr);
    // The placeholder secret sent as a bearer token is not swapped for the real one.
    let env = with_env(&w.env, &[]);
    let text = blocking(move || {
        python(
            &env,
            &format!(
                r#"
import os, requests
r = requests.get("https://{API}/", headers={{"Authorization": "Bearer " + os.environ["SIGNING_SECRET"]}})
print(r.status_code, r.headers.get("x-airlock-error", "-"))
"#
            ),
        )
    })
    .await;
    assert_eq!(
        text.stdout.trim(),
        "403 signing_key_as_text",
        "{}",
        text.stderr
    );
    assert!(w.api.requests().is_empty(), "nothing was sent");
}
