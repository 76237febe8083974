//! OAuth 1.0a end to end: `airlock connect` runs the three-legged flow
//! against a fake X (tests/support/fake_x.py) whose every signature check is
//! oauthlib's own server side with the REAL consumer secret and token
//! secrets; then Python `requests_oauthlib` in the sandbox signs with the
//! four placeholders, and airlock checks that signature and signs again.

use std::process::Command;

use serde_json::Value;

use super::cli::{cli, run_cli};
use super::vault::api;
use crate::support::clients::{curl, python};
use crate::support::python_fake::PythonFake;
use crate::support::{assert_not_leaked, blocking, skip, Airlock, TestCa};

const X: &str = "api.x.test";
const OTHER: &str = "other.x.test";
const CONSUMER_KEY: &str = "ck_REALCONSUMERKEY_0123456789";
const CONSUMER_SECRET: &str = "cs_REALCONSUMERSECRET_abcdefghijklmnop";

/// The fake X: every signature checked by oauthlib with the real secrets.
fn fake_x(ca: &TestCa) -> PythonFake {
    PythonFake::start(
        ca,
        "fake_x.py",
        &[X, OTHER],
        &[CONSUMER_KEY, CONSUMER_SECRET],
        &[],
    )
}

fn have_oauthlib() -> bool {
    Command::new("python3")
        .args(["-c", "import oauthlib, requests_oauthlib"])
        .output()
        .is_ok_and(|o| o.status.success())
}

struct World {
    ca: TestCa,
    x: PythonFake,
    airlock: Airlock,
}

fn world() -> Option<World> {
    if !have_oauthlib() {
        skip("oauthlib or requests-oauthlib is missing (run scripts/test once)");
        return None;
    }
    let ca = TestCa::new();
    let x = fake_x(&ca);
    let port = x.port;
    let cfg = format!(
        r#"[proxy]
upstream_ca = [{ca:?}]

[resolve]
{X:?} = "127.0.0.1:{port}"
{OTHER:?} = "127.0.0.1:{port}"

[[provider]]
name = "xo"
display_name = "X legacy"
request_token_url = "https://{X}:{port}/oauth/request_token"
authorize_url = "https://{X}:{port}/oauth/authorize"
access_token_url = "https://{X}:{port}/oauth/access_token"
signature_method = "HMAC-SHA1"
hosts = [{X:?}]
env = "X_ACCESS_TOKEN"

[[app]]
provider = "xo"
client_id = {CONSUMER_KEY:?}
client_secret = {CONSUMER_SECRET:?}
"#,
        ca = ca.cert_pem_path().display().to_string(),
    );
    let airlock = Airlock::start(&cfg);
    Some(World { ca, x, airlock })
}

impl World {
    /// Follows an authorization URL through the fake's consent to the
    /// vault's callback: the page.
    async fn follow(&self, url: &str) -> String {
        let resolve = format!("{X}:{}:127.0.0.1", self.x.port);
        let ca = self.ca.cert_pem_path().display().to_string();
        let url = url.to_owned();
        let out =
            blocking(move || curl(&[], &["-L", "--cacert", &ca, "--resolve", &resolve, &url]))
                .await;
        assert!(out.success(), "authorize failed: {}", out.stderr);
        out.stdout
    }

    async fn control(&self, body: &str) {
        let resolve = format!("{X}:{}:127.0.0.1", self.x.port);
        let ca = self.ca.cert_pem_path().display().to_string();
        let url = format!("https://{X}:{}/_control", self.x.port);
        let body = body.to_owned();
        let out = blocking(move || {
            curl(
                &[],
                &[
                    "--cacert",
                    &ca,
                    "--resolve",
                    &resolve,
                    "--data-binary",
                    &body,
                    &url,
                ],
            )
        })
        .await;
        assert!(out.success(), "{}", out.stderr);
    }

    /// `airlock connect xo` and the user's consent: the callback page.
    async fn connect(&self) -> String {
        let url = cli(&self.airlock, &["connect", "xo"], &[]);
        assert!(
            url.trim().contains("oauth_token="),
            "the authorize URL names the request token: {url}"
        );
        self.follow(url.trim()).await
    }

    async fn connections(&self) -> Value {
        api(&self.airlock, "GET", "/v1/connections", None, None)
            .await
            .1
    }

    fn sandbox_env(&self) -> Vec<(String, String)> {
        self.airlock.env.clone()
    }

    /// Every text a real secret must not reach.
    fn assert_nothing_leaked(&self, texts: &[&str]) {
        let logs = self.airlock.logs();
        let mut all: Vec<&str> = texts.to_vec();
        all.push(&logs);
        assert_not_leaked(CONSUMER_SECRET, &all);
        for r in self.x.requests() {
            if let Some(t) = r["token"].as_str() {
                assert_not_leaked(t, &all);
            }
        }
    }
}

/// Python in the sandbox: `requests_oauthlib` signing with the placeholders.
/// `tweak` runs on the session before the calls (a wrong secret, a clock).
fn client(tweak: &str, calls: &str) -> String {
    format!(
        r#"
import os, json, time, requests
from requests_oauthlib import OAuth1
ck, cs = os.environ["X_CONSUMER_KEY"], os.environ["X_CONSUMER_SECRET"]
at, ts = os.environ["X_ACCESS_TOKEN"], os.environ["X_ACCESS_TOKEN_SECRET"]
extra = {{}}
{tweak}
auth = OAuth1(ck, cs, at, ts, **extra)
def show(r):
    print(r.status_code, r.headers.get("x-airlock-error", "-"), json.dumps(r.text))
{calls}
"#
    )
}

const BOTH_CALLS: &str = r#"
show(requests.get("https://api.x.test/1.1/account/verify_credentials.json?include_entities=true", auth=auth))
show(requests.post("https://api.x.test/1.1/statuses/update.json", data={"status": "Hello Ladies + Gentlemen, a signed OAuth request!"}, auth=auth))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn connect_then_requests_oauthlib_signs_with_placeholders_and_x_verifies_the_real_signature()
{
    let Some(w) = world() else { return };
    let env = w.sandbox_env();
    let var = |n: &str| {
        env.iter()
            .find(|(k, _)| k == n)
            .unwrap_or_else(|| panic!("{n} in the sandbox's environment"))
            .1
            .clone()
    };
    let placeholders = [
        var("X_ACCESS_TOKEN"),
        var("X_ACCESS_TOKEN_SECRET"),
        var("X_CONSUMER_KEY"),
        var("X_CONSUMER_SECRET"),
    ];
    for p in &placeholders {
        assert!(p.starts_with("miosa-tok-"), "{p}");
        assert_ne!(p, CONSUMER_KEY);
        assert_ne!(p, CONSUMER_SECRET);
    }

    let page = w.connect().await;
    assert!(page.contains("Connected"), "{page}");
    let conns = w.connections().await;
    assert_eq!(conns[0]["provider"], "xo", "{conns}");
    assert_eq!(conns[0]["status"], "connected", "{conns}");
    assert!(conns[0]["expires_at"].is_null(), "{conns}");
    assert_eq!(
        conns[0]["warnings"],
        serde_json::json!([]),
        "no refresh-token warning: OAuth 1.0a tokens do not expire"
    );
    // The vault's own calls passed oauthlib's checks.
    let flow: Vec<Value> = w.x.requests();
    let steps: Vec<(&str, bool)> = flow
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().split('?').next().unwrap(),
                r["verified"] == true,
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("/oauth/request_token", true),
            ("/oauth/authorize", true),
            ("/oauth/access_token", true)
        ],
        "{flow:?}"
    );
    assert!(
        flow[0]["authorization"]
            .as_str()
            .unwrap()
            .contains("oauth_callback=\"http"),
        "{flow:?}"
    );

    let script = client("", BOTH_CALLS);
    let out = blocking(move || python(&env, &script)).await;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(lines[0].starts_with("200 - "), "{}", out.stdout);
    assert!(lines[1].starts_with("200 - "), "{}", out.stdout);
    assert!(
        lines[1].contains("Hello Ladies + Gentlemen, a signed OAuth request!"),
        "the form body arrived as sent: {}",
        lines[1]
    );
    // The echoing upstream's credentials reach the sandbox as placeholders.
    let echoed: Value =
        serde_json::from_str(&serde_json::from_str::<String>(&lines[0][6..]).unwrap()).unwrap();
    assert_eq!(echoed["echo"]["oauth_token"], placeholders[0], "{echoed}");
    assert_eq!(
        echoed["echo"]["oauth_token_secret"], placeholders[1],
        "{echoed}"
    );
    assert_eq!(echoed["echo"]["consumer_key"], placeholders[2], "{echoed}");
    assert_eq!(
        echoed["echo"]["consumer_secret"], placeholders[3],
        "{echoed}"
    );

    let api_calls: Vec<Value> =
        w.x.requests()
            .into_iter()
            .filter(|r| r["path"].as_str().unwrap().starts_with("/1.1/"))
            .collect();
    assert_eq!(api_calls.len(), 2, "{api_calls:?}");
    for r in &api_calls {
        assert_eq!(r["verified"], true, "oauthlib verified {r}");
        assert_eq!(r["consumer_key"], CONSUMER_KEY, "{r}");
        let auth = r["authorization"].as_str().unwrap();
        assert!(
            !auth.contains("miosa-tok-"),
            "no placeholder upstream: {auth}"
        );
    }
    w.assert_nothing_leaked(&[&out.stdout, &out.stderr]);
    assert!(w.airlock.logs().contains("signing") || w.airlock.logs().contains("swapped="));

    // curl has no OAuth 1.0a client: the access token placeholder as
    // `Bearer` is signed from scratch.
    let env = w.sandbox_env();
    let bearer = format!("Authorization: Bearer {}", placeholders[0]);
    let out = blocking(move || {
        curl(
            &env,
            &[
                "-s",
                "-H",
                &bearer,
                "https://api.x.test/1.1/account/verify_credentials.json",
            ],
        )
    })
    .await;
    assert!(
        out.stdout.contains("\"screen_name\": \"airlock_test\""),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains(&placeholders[3]), "{}", out.stdout);
    let last = w.x.requests().pop().unwrap();
    assert_eq!(last["verified"], true, "oauthlib verified {last}");
    w.assert_nothing_leaked(&[&out.stdout, &out.stderr]);

    // Disconnect: the connection is gone, and the placeholders stop working.
    let id = w.connections().await[0]["id"].as_str().unwrap().to_owned();
    let (status, body) = api(
        &w.airlock,
        "DELETE",
        &format!("/v1/connections/{id}"),
        None,
        None,
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");
    let env = w.sandbox_env();
    let script = client("", BOTH_CALLS);
    let after = blocking(move || python(&env, &script)).await;
    assert!(
        after.stdout.lines().all(|l| !l.starts_with("200")),
        "{}",
        after.stdout
    );
    assert_eq!(
        w.x.requests()
            .iter()
            .filter(|r| r["path"].as_str().unwrap().starts_with("/1.1/"))
            .count(),
        3,
        "nothing was sent after the disconnect"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_secrets_skew_tampering_and_foreign_hosts_are_refused_and_nothing_is_sent() {
    let Some(w) = world() else { return };
    let page = w.connect().await;
    assert!(page.contains("Connected"), "{page}");
    let sent_before = w.x.requests().len();
    let run = |tweak: &str, calls: &str| {
        let env = w.sandbox_env();
        let script = client(tweak, calls);
        async move { blocking(move || python(&env, &script)).await }
    };

    // Signed with a consumer secret that is not the placeholder.
    let out = run("cs = 'guessed-secret'", BOTH_CALLS).await;
    assert!(
        out.stdout
            .lines()
            .all(|l| l.starts_with("403 oauth1_signature_mismatch ")),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // The token secret wrong.
    let out = run("ts = ts + 'x'", BOTH_CALLS).await;
    assert!(
        out.stdout
            .lines()
            .all(|l| l.starts_with("403 oauth1_signature_mismatch ")),
        "{}",
        out.stdout
    );
    // A sandbox clock ten minutes late.
    let skew = run(
        "extra = {'timestamp': str(int(time.time()) - 600)}",
        BOTH_CALLS,
    )
    .await;
    assert!(
        skew.stdout
            .lines()
            .all(|l| l.starts_with("403 clock_skew ")),
        "{}{}",
        skew.stdout,
        skew.stderr
    );
    // Tampered: the body changed after signing.
    let tampered = r#"
req = requests.Request("POST", "https://api.x.test/1.1/statuses/update.json", data={"status": "signed text"}, auth=auth).prepare()
req.body = "status=other+text"
req.headers["Content-Length"] = str(len(req.body))
s = requests.Session()
show(s.send(req, **s.merge_environment_settings(req.url, {}, None, None, None)))
"#;
    let out = run("", tampered).await;
    assert!(
        out.stdout.starts_with("403 oauth1_signature_mismatch "),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // The consumer key of someone else, signed correctly with the placeholders.
    let out = run("ck = 'not-the-placeholder-key'", BOTH_CALLS).await;
    assert!(
        out.stdout
            .lines()
            .all(|l| l.starts_with("403 oauth1_consumer_key ")),
        "{}",
        out.stdout
    );
    // A placeholder-signed request to a host the binding is not for.
    let foreign = r#"
show(requests.get("https://other.x.test/1.1/account/verify_credentials.json", auth=auth))
"#;
    let out = run("", foreign).await;
    assert!(
        out.stdout.starts_with("403 host_not_allowed "),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // The secret placeholders sent as text are refused, not swapped.
    let as_text = r#"
show(requests.get("https://api.x.test/1.1/account/verify_credentials.json", headers={"Authorization": "Bearer " + cs}))
show(requests.post("https://api.x.test/1.1/statuses/update.json", data={"status": ts}))
"#;
    let out = run("", as_text).await;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.len() == 2 && lines[0].starts_with("403 signing_key_as_text "),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // The provider's placeholders may not be in a body at all.
    assert!(
        lines[1].starts_with("403 location_not_allowed "),
        "{}",
        out.stdout
    );
    assert_eq!(
        w.x.requests().len(),
        sent_before,
        "nothing reached X: {:?}",
        &w.x.requests()[sent_before..]
    );
    w.assert_nothing_leaked(&[&w.airlock.logs()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_refusing_the_request_token_or_the_verifier_or_a_declined_consent_stores_nothing(
) {
    let Some(w) = world() else { return };
    // The request token is refused: `airlock connect` fails, naming the step.
    w.control(r#"{"refuse": "request_token"}"#).await;
    let out = run_cli(&w.airlock, &["connect", "xo"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("request-token") && stderr.contains("401"),
        "{stderr}"
    );
    assert_not_leaked(CONSUMER_SECRET, &[&stderr]);

    // The verifier is refused at the access-token call.
    w.control(r#"{"refuse": "access_token"}"#).await;
    let page = w.connect().await;
    assert!(page.contains("Not connected"), "{page}");
    assert!(page.contains("access-token"), "{page}");
    // The user declines at X.
    w.control(r#"{"refuse": null, "deny": true}"#).await;
    let page = w.connect().await;
    assert!(page.contains("Not connected"), "{page}");
    assert!(page.contains("access_denied"), "{page}");
    assert_eq!(
        w.connections().await,
        serde_json::json!([]),
        "nothing was stored"
    );
    w.assert_nothing_leaked(&[&page]);

    // No machine account of an OAuth 1.0a provider: there is no such grant.
    let (status, refused) = api(
        &w.airlock,
        "POST",
        "/v1/machine-accounts",
        Some(r#"{"name":"bot","provider":"xo","client_id":"id","client_secret":"secret"}"#.into()),
        None,
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.to_string().contains("OAuth 1.0a"), "{refused}");

    // And once X agrees again, the same commands connect.
    w.control(r#"{"refuse": null, "deny": false}"#).await;
    let page = w.connect().await;
    assert!(page.contains("Connected"), "{page}");
}
