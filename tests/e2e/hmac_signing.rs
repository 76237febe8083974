//! Generic HMAC request signing (`kind = "hmac"`) end to end: Python in the
//! sandbox signs with the placeholder secret; the upstream receives the
//! request signed with the real secret, checked here with Python's own
//! `hmac` module.

use super::cli::cli;
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
    /// Stored in the vault: the run that stored it (its data folder is in use).
    _storing: Option<Airlock>,
}

async fn world() -> World {
    world_in(false).await
}

/// With `in_vault`, the secret is stored with `airlock secret add --kind
/// hmac` and airlock started again on that vault, the config holding none.
async fn world_in(in_vault: bool) -> World {
    let ca = TestCa::new();
    let api = Upstream::start(&ca, &[API]).await;
    let base = format!(
        r#"[proxy]
upstream_ca = [{ca:?}]

[resolve]
{API:?} = "127.0.0.1:{port}"
"#,
        ca = ca.cert_pem_path().display().to_string(),
        port = api.port(),
    );
    let (airlock, storing) = if in_vault {
        let mut storing = Airlock::start(&base);
        // The template with real line breaks, as `$'…'` gives them in bash.
        let template = TEMPLATE.replace(r"\n", "\n");
        let stored = cli(
            &storing,
            &[
                "secret",
                "add",
                "SIGNING_SECRET",
                "--kind",
                "hmac",
                "--value-env",
                "REAL_HMAC",
                "--host",
                API,
                "--signature-header",
                "X-Signature",
                "--signature-prefix",
                "sha256=",
                "--signature-template",
                &template,
                "--timestamp-header",
                "X-Timestamp",
            ],
            &[("REAL_HMAC", REAL)],
        );
        assert!(
            stored.contains("secret SIGNING_SECRET (hmac) stored"),
            "{stored}"
        );
        let listed = cli(&storing, &["secret", "list"], &[]);
        assert!(listed.contains("SIGNING_SECRET kind=hmac"), "{listed}");
        assert_not_leaked(REAL, &[&stored, &listed, &storing.logs()]);
        storing.stop();
        let airlock = Airlock::restart_in(&base, &storing.data_dir);
        (airlock, Some(storing))
    } else {
        let cfg = format!(
            r#"{base}
[[secret]]
name = "SIGNING_SECRET"
kind = "hmac"
value = {REAL:?}
hosts = [{API:?}]
signature_header = "X-Signature"
signature_prefix = "sha256="
signature_template = "{TEMPLATE}"
timestamp_header = "X-Timestamp"
"#
        );
        (Airlock::start(&cfg), None)
    };
    let env = airlock.env.clone();
    World {
        _ca: ca,
        api,
        airlock,
        env,
        _storing: storing,
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
    signed_again_with_the_real_secret(&world().await).await;
}

/// The same with the secret and its signing settings stored in the vault.
#[tokio::test(flavor = "multi_thread")]
async fn a_secret_stored_in_the_vault_signs_requests_again() {
    let w = world_in(true).await;
    signed_again_with_the_real_secret(&w).await;
    // A wrong signature is refused as for a config secret.
    let env = w.env.clone();
    let wrong = blocking(move || python(&env, &client(Some("not-the-placeholder"), 0))).await;
    assert_eq!(
        wrong.stdout.trim(),
        "403 hmac_signature_mismatch",
        "{}",
        wrong.stderr
    );
    assert_eq!(w.api.requests().len(), 1, "the refused one was not sent");
}

/// Python signs with the placeholder; the API gets the request signed
/// with the real secret, checked by Python's own `hmac`.
async fn signed_again_with_the_real_secret(w: &World) {
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
