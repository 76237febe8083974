//! The vault end to end: a fake OAuth provider, the real `airlock up`, real
//! clients. Connect, use, refresh, refuse, disconnect, restart.

use std::time::Duration;

use serde_json::Value;

use crate::support::clients::{curl, python};
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{assert_not_leaked, blocking, with_env, Airlock, TestCa};

pub(crate) const CLIENT_ID: &str = "airlock-test-client";
pub(crate) const CLIENT_SECRET: &str = "cs_REALCLIENTSECRET_0123456789";
pub(crate) const AUTH: &str = "auth.acme.test";
pub(crate) const API: &str = "api.acme.test";

pub fn acme_config(ca: &TestCa, port: u16, vault_extra: &str, proxy_extra: &str) -> String {
    format!(
        r#"
[proxy]
upstream_ca = [{ca:?}]
{proxy_extra}

[resolve]
"{AUTH}" = "127.0.0.1:{port}"
"{API}" = "127.0.0.1:{port}"

[vault]
{vault_extra}

[[provider]]
name = "acme"
display_name = "Acme"
authorize_url = "https://{AUTH}:{port}/authorize"
token_url = "https://{AUTH}:{port}/token"
revoke_url = "https://{AUTH}:{port}/revoke"
scopes = ["read", "write"]
hosts = ["{API}"]
inject = "bearer"
env = "ACME_TOKEN"

[[app]]
provider = "acme"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
"#,
        ca = ca.cert_pem_path().display().to_string(),
    )
}

pub struct World {
    pub ca: TestCa,
    pub provider: OAuthProvider,
    pub airlock: Airlock,
}

pub(crate) async fn world(vault_extra: &str, proxy_extra: &str) -> World {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(&ca, &[AUTH, API], CLIENT_ID, CLIENT_SECRET).await;
    let airlock = Airlock::start(&acme_config(&ca, provider.port(), vault_extra, proxy_extra));
    World {
        ca,
        provider,
        airlock,
    }
}

/// A call to the vault's API with curl: (status, JSON body).
pub async fn api(
    airlock: &Airlock,
    method: &str,
    path: &str,
    body: Option<String>,
    token: Option<String>,
) -> (u16, Value) {
    let url = format!("{}{path}", airlock.vault_url());
    let token = token.unwrap_or_else(|| airlock.admin_token());
    let method = method.to_owned();
    let out = blocking(move || {
        let auth = format!("Authorization: Bearer {token}");
        let mut args = vec![
            "-s",
            "-X",
            method.as_str(),
            "-H",
            auth.as_str(),
            "-w",
            "\n%{http_code}",
            url.as_str(),
        ];
        let body_arg;
        if let Some(b) = &body {
            body_arg = b.clone();
            args.extend([
                "-H",
                "content-type: application/json",
                "--data-binary",
                body_arg.as_str(),
            ]);
        }
        curl(&[], &args)
    })
    .await;
    let (body, status) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    )
}

impl World {
    /// Runs the connect flow like a browser would: open the authorization
    /// URL, follow the provider's redirect to the vault's callback.
    pub async fn connect(&self, scope: &str) -> String {
        let body = format!(r#"{{"provider":"acme","scope":"{scope}"}}"#);
        let (status, started) =
            api(&self.airlock, "POST", "/v1/connections", Some(body), None).await;
        assert_eq!(status, 201, "{started}");
        self.follow(
            started["authorization_url"]
                .as_str()
                .expect("authorization_url"),
        )
        .await
    }

    /// Follows an authorization URL to the callback page; returns the page.
    pub async fn follow(&self, url: &str) -> String {
        let resolve = format!("{AUTH}:{}:127.0.0.1", self.provider.port());
        let ca = self.ca.cert_pem_path().display().to_string();
        let url = url.to_owned();
        let out =
            blocking(move || curl(&[], &["-L", "--cacert", &ca, "--resolve", &resolve, &url]))
                .await;
        assert!(out.success(), "authorize failed: {}", out.stderr);
        out.stdout
    }

    /// curl through the proxy with the placeholder: (status, body).
    pub async fn sandbox_get(&self, env: &[(String, String)], path: &str) -> (u16, String) {
        let placeholder = env
            .iter()
            .find(|(k, _)| k == "ACME_TOKEN")
            .expect("ACME_TOKEN")
            .1
            .clone();
        let env = env.to_vec();
        let url = format!("https://{API}{path}");
        let out = blocking(move || {
            let auth = format!("Authorization: Bearer {placeholder}");
            curl(&env, &["-w", "\n%{http_code}", "-H", &auth, &url])
        })
        .await;
        let (body, status) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        (
            status.trim().parse().unwrap_or(0),
            format!("{body}{}", out.stderr),
        )
    }

    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut all = self.provider.issued_access_tokens();
        all.extend(self.provider.current_refresh_token());
        all.push(CLIENT_SECRET.to_owned());
        all
    }

    pub fn assert_no_secret_in(&self, texts: &[&str]) {
        for secret in self.secrets() {
            assert_not_leaked(&secret, texts);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_then_curl_and_python_send_the_real_token() {
    let w = world("", "").await;
    let page = w.connect("tenant").await;
    assert!(page.contains("Connected"), "{page}");
    assert_eq!(
        w.provider.last_code_verifier_ok(),
        Some(true),
        "PKCE verifier checked"
    );

    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ok\":true"), "{body}");
    let env = w.airlock.env.clone();
    let script = format!(
        "import os, requests\nr = requests.post('https://{API}/api/items', json={{'x': 1}}, headers={{'Authorization': 'Bearer ' + os.environ['ACME_TOKEN']}})\nprint(r.status_code)"
    );
    let py = blocking(move || python(&env, &script)).await;
    assert_eq!(py.stdout.trim(), "200", "{}", py.stderr);

    let issued = w.provider.issued_access_tokens();
    let seen = w.provider.api_authorizations();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter().all(|a| a == &format!("Bearer {}", issued[0])),
        "the API saw the real token"
    );
    let placeholder = w.airlock.var("ACME_TOKEN");
    assert!(
        !w.provider.raw_contains(&placeholder),
        "the placeholder reached the provider"
    );

    // Nothing secret in API answers, logs, or the database file.
    let (_, apps) = api(&w.airlock, "GET", "/v1/apps", None, None).await;
    assert_eq!(apps[0]["client_secret"], "••••6789");
    let (_, conns) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    assert_eq!(conns[0]["status"], "connected");
    let db = std::fs::read(w.airlock.data_dir.join("airlock.db")).unwrap();
    let mut db_text = String::from_utf8_lossy(&db).into_owned();
    for wal in ["airlock.db-wal"] {
        if let Ok(bytes) = std::fs::read(w.airlock.data_dir.join(wal)) {
            db_text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    let logs = w.airlock.logs();
    w.assert_no_secret_in(&[
        &apps.to_string(),
        &conns.to_string(),
        &db_text,
        &logs,
        &py.stdout,
        &py.stderr,
        &body,
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nearly_expired_token_is_refreshed_once_under_fifty_concurrent_requests() {
    // Refresh when less than 90% of the lifetime is left: a 10 s token is due after 1 s.
    let w = world("refresh_fraction = 0.9\nrefresh_interval_secs = 3600", "").await;
    w.provider
        .set_access_token_lifetime(Duration::from_secs(10));
    w.connect("tenant").await;
    w.provider
        .set_access_token_lifetime(Duration::from_secs(3600));
    w.provider.set_token_delay(Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let env = w.airlock.env.clone();
    let script = format!(
        r#"
import os, requests, concurrent.futures
tok = os.environ['ACME_TOKEN']
def call(i):
    return requests.get('https://{API}/api/n/%d' % i, headers={{'Authorization': 'Bearer ' + tok}}).status_code
with concurrent.futures.ThreadPoolExecutor(50) as ex:
    print(sorted(set(ex.map(call, range(50)))))
"#
    );
    let out = blocking(move || python(&env, &script)).await;
    assert_eq!(out.stdout.trim(), "[200]", "{}", out.stderr);
    assert_eq!(w.provider.refresh_count(), 1, "exactly one refresh");
    let issued = w.provider.issued_access_tokens();
    assert_eq!(issued.len(), 2);
    // Every request used a valid token; most the refreshed one.
    assert!(w
        .provider
        .api_authorizations()
        .iter()
        .any(|a| a.ends_with(&issued[1])));
    let logs = w.airlock.wait_for_log("token refreshed");
    w.assert_no_secret_in(&[&logs, &out.stdout]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_refresh_marks_reconnect_needed_without_a_retry_storm() {
    let w = world("refresh_fraction = 0.9\nrefresh_interval_secs = 3600", "").await;
    w.provider
        .set_access_token_lifetime(Duration::from_secs(10));
    w.connect("tenant").await;
    w.provider.set_refuse_refresh(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..5 {
        let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("must be reconnected"), "{body}");
        assert!(body.contains("provider:acme"), "{body}");
    }
    assert_eq!(
        w.provider.token_requests("refresh_token"),
        1,
        "one refused refresh, then no more tries"
    );
    let (_, conns) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    assert_eq!(conns[0]["status"], "reconnect_needed");
    // Reconnecting fixes it.
    w.provider.set_refuse_refresh(false);
    w.connect("tenant").await;
    let (status, _) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_keeps_the_current_valid_token() {
    let w = world("refresh_fraction = 0.9\nrefresh_interval_secs = 3600", "").await;
    w.provider
        .set_access_token_lifetime(Duration::from_secs(30));
    w.connect("tenant").await;
    w.provider.set_fail_with_5xx(true);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for _ in 0..3 {
        let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        w.provider.token_requests("refresh_token") >= 1,
        "a refresh was attempted"
    );
    assert_eq!(w.provider.issued_access_tokens().len(), 1);
    let logs = w.airlock.wait_for_log("refresh failed");
    assert!(logs.contains("will retry"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_expired_replayed_state_and_denial_store_nothing() {
    let w = world("state_ttl_secs = 1", "").await;
    let callback = format!("{}/oauth/callback", w.airlock.vault_url());
    // Bad state.
    let url = format!("{callback}?state=forged&code=abc");
    let page = blocking(move || curl(&[], &["-s", "-w", "%{http_code}", &url])).await;
    assert!(
        page.stdout.ends_with("400") && page.stdout.contains("unknown or already used state"),
        "{}",
        page.stdout
    );

    // Denied by the user.
    w.provider.deny_next_authorization();
    let page = w.connect("tenant").await;
    assert!(
        page.contains("did not grant access") && page.contains("access_denied"),
        "{page}"
    );

    // Expired: the link is older than state_ttl.
    let (_, started) = api(
        &w.airlock,
        "POST",
        "/v1/connections",
        Some(r#"{"provider":"acme"}"#.into()),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let page = w
        .follow(started["authorization_url"].as_str().unwrap())
        .await;
    assert!(page.contains("expired"), "{page}");

    let (_, conns) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    assert_eq!(conns, serde_json::json!([]), "nothing was stored");

    // Replayed callback: the first use connects, the second is refused.
    let (_, started) = api(
        &w.airlock,
        "POST",
        "/v1/connections",
        Some(r#"{"provider":"acme"}"#.into()),
        None,
    )
    .await;
    let resolve = format!("{AUTH}:{}:127.0.0.1", w.provider.port());
    let ca = w.ca.cert_pem_path().display().to_string();
    let authorize = started["authorization_url"].as_str().unwrap().to_owned();
    let redirect = blocking(move || {
        curl(
            &[],
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{redirect_url}",
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                &authorize,
            ],
        )
    })
    .await;
    let callback_url = redirect.stdout.clone();
    let first = blocking({
        let u = callback_url.clone();
        move || curl(&[], &["-s", &u])
    })
    .await;
    assert!(first.stdout.contains("Connected"), "{}", first.stdout);
    let second = blocking(move || curl(&[], &["-s", &callback_url])).await;
    assert!(second.stdout.contains("already used"), "{}", second.stdout);
    assert_eq!(
        w.provider.token_requests("authorization_code"),
        1,
        "the code was exchanged once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_cannot_use_each_others_placeholders() {
    let w = world("", "require_auth = true").await;
    w.connect("tenant").await;
    let mut sandboxes = Vec::new();
    for user in ["alice", "bob"] {
        let body = format!(r#"{{"user":"{user}","providers":["acme"]}}"#);
        let (status, created) = api(&w.airlock, "POST", "/v1/sandboxes", Some(body), None).await;
        assert_eq!(status, 201, "{created}");
        let env: Vec<(String, String)> = created["env"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        sandboxes.push(env);
    }
    let (a, b) = (&sandboxes[0], &sandboxes[1]);
    let (status, body) = w.sandbox_get(a, "/api/me").await;
    assert_eq!(status, 200, "{body}");
    // A's placeholder through B's proxy credential.
    let a_placeholder = a.iter().find(|(k, _)| k == "ACME_TOKEN").unwrap().1.clone();
    let b_with_a = with_env(b, &[("ACME_TOKEN", &a_placeholder)]);
    let (status, body) = w.sandbox_get(&b_with_a, "/api/me").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("another sandbox"), "{body}");
    // No credential at all: 407.
    let anonymous = with_env(
        a,
        &[
            ("HTTPS_PROXY", &w.airlock.proxy_url),
            ("https_proxy", &w.airlock.proxy_url),
        ],
    );
    let (status, _) = w.sandbox_get(&anonymous, "/api/me").await;
    assert_eq!(status, 0, "curl fails the CONNECT with 407");
    let logs = w.airlock.wait_for_log("wrong_sandbox");
    assert!(logs.contains("proxy_auth"), "{logs}");

    // Deleting a sandbox kills its placeholders.
    let id = b
        .iter()
        .find(|(k, _)| k == "HTTPS_PROXY")
        .unwrap()
        .1
        .split("//")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let (status, _) = api(
        &w.airlock,
        "DELETE",
        &format!("/v1/sandboxes/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = w.sandbox_get(b, "/api/me").await;
    assert_ne!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_revokes_at_the_provider_and_refuses_later_requests() {
    let w = world("", "").await;
    w.connect("tenant").await;
    let refresh = w.provider.current_refresh_token().unwrap();
    let (_, conns) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    let id = conns[0]["id"].as_str().unwrap().to_owned();
    let (status, result) = api(
        &w.airlock,
        "DELETE",
        &format!("/v1/connections/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{result}");
    assert!(
        w.provider.revocations().contains(&refresh),
        "refresh token revoked (RFC 7009)"
    );
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("no connected account") && body.contains("provider:acme"),
        "{body}"
    );
    assert!(w.provider.api_authorizations().is_empty());
}
