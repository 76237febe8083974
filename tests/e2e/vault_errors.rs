//! Errors and warnings that say what happened: failed revocation at
//! disconnect (revoke_pending, background retry, --force), consent
//! cancelled, bad code, bad client secret, provider timeout and refused
//! connection, no refresh token issued.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::vault::{acme_config, api, World};
use crate::support::clients::curl;
use crate::support::oauth_provider::{OAuthProvider, RevokeMode};
use crate::support::{airlock, blocking, Airlock, TestCa};

const CLIENT_ID: &str = "airlock-test-client";
const CLIENT_SECRET: &str = "cs_REALCLIENTSECRET_0123456789";
const AUTH: &str = "auth.acme.test";

async fn world_with(config: impl FnOnce(&TestCa, u16) -> String) -> World {
    let ca = TestCa::new();
    let provider =
        OAuthProvider::start(&ca, &[AUTH, "api.acme.test"], CLIENT_ID, CLIENT_SECRET).await;
    let airlock = Airlock::start(&config(&ca, provider.port()));
    World {
        ca,
        provider,
        airlock,
    }
}

async fn world(vault_extra: &str) -> World {
    world_with(|ca, port| acme_config(ca, port, vault_extra, "")).await
}

/// `airlock ARGS` against the world's vault: (exit ok, stdout, stderr).
fn cli(a: &Airlock, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(airlock::binary())
        .args(args)
        .args([
            "--config",
            a.config_path.to_str().unwrap(),
            "--data-dir",
            a.data_dir.to_str().unwrap(),
            "--vault-url",
            &a.vault_url(),
        ])
        .env_remove("AIRLOCK_ADMIN_TOKEN")
        .output()
        .expect("run airlock");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn connections(w: &World) -> Value {
    api(&w.airlock, "GET", "/v1/connections", None, None)
        .await
        .1
}

/// Starts a connect and lets the provider answer, without following its
/// redirect: the callback URL (with code or error).
async fn callback_url(w: &World) -> String {
    let (status, started) = api(
        &w.airlock,
        "POST",
        "/v1/connections",
        Some(r#"{"provider":"acme"}"#.into()),
        None,
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let resolve = format!("{AUTH}:{}:127.0.0.1", w.provider.port());
    let ca = w.ca.cert_pem_path().display().to_string();
    let authorize = started["authorization_url"].as_str().unwrap().to_owned();
    blocking(move || {
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
    .await
    .stdout
}

/// GET `url`: (status, body).
async fn get(url: String) -> (u16, String) {
    let out = blocking(move || curl(&[], &["-s", "-w", "\n%{http_code}", &url])).await;
    let (body, status) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

fn secrets(w: &World) -> Vec<String> {
    let mut all = w.provider.issued_access_tokens();
    all.extend(w.provider.current_refresh_token());
    all.push(CLIENT_SECRET.to_owned());
    all
}

fn assert_nothing_leaked(w: &World, texts: &[&str]) {
    let logs = w.airlock.logs();
    for secret in secrets(w) {
        crate::support::assert_not_leaked(&secret, texts);
        crate::support::assert_not_leaked(&secret, &[&logs]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_revocation_fails_the_disconnect_and_is_retried_until_confirmed() {
    let w = world("revoke_retry_secs = 1\nrevoke_retry_max_secs = 2").await;
    w.connect("tenant").await;
    let refresh = w.provider.current_refresh_token().unwrap();
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
    let id = connections(&w).await[0]["id"].as_str().unwrap().to_owned();

    w.provider.set_revoke_mode(RevokeMode::ServerError);
    let (ok, stdout, stderr) = cli(&w.airlock, &["disconnect", &id]);
    assert!(!ok, "a failed revocation is a failed disconnect: {stdout}");
    for said in [
        "502",
        "HTTP 500",
        "server_error: revocation backend down",
        "provider acme",
        "token revocation",
        "revoke_pending",
        "--force",
    ] {
        assert!(stderr.contains(said), "{said:?} missing: {stderr}");
    }

    // Marked, and no longer handed out.
    let conns = connections(&w).await;
    assert_eq!(conns[0]["status"], "revoke_pending", "{conns}");
    assert!(
        conns[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("HTTP 500"),
        "{conns}"
    );
    let listed = cli(&w.airlock, &["connections"]).1;
    assert!(
        listed.contains("revoke_pending") && listed.contains("not confirmed"),
        "{listed}"
    );
    let seen = w.provider.api_authorizations().len();
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        w.provider.api_authorizations().len(),
        seen,
        "the token was not sent again"
    );
    // The same account cannot be connected again while it is being revoked.
    let page = w.follow(&callback_url(&w).await).await;
    assert!(page.contains("being disconnected"), "{page}");

    // The provider recovers: the background retry revokes, then deletes.
    w.provider.set_revoke_mode(RevokeMode::Normal);
    let mut gone = false;
    for _ in 0..40 {
        if connections(&w).await == serde_json::json!([]) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        gone,
        "deleted after a successful retry: {}",
        connections(&w).await
    );
    assert!(w.provider.revocations().contains(&refresh));
    w.airlock.wait_for_log("revocation succeeded on retry");
    assert_nothing_leaked(&w, &[&stdout, &stderr, &listed]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_revocation_times_out_and_force_deletes_at_once() {
    let w = world("revoke_timeout_secs = 1\nrevoke_retry_secs = 3600").await;
    w.connect("tenant").await;
    let id = connections(&w).await[0]["id"].as_str().unwrap().to_owned();
    w.provider.set_revoke_mode(RevokeMode::Hang);
    let (status, body) = api(
        &w.airlock,
        "DELETE",
        &format!("/v1/connections/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["status"], "revoke_pending", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("provider acme did not answer the token revocation in time"),
        "{body}"
    );
    assert_eq!(body["revoked"], serde_json::json!([]), "{body}");

    let asked = w.provider.revoke_requests();
    assert_eq!(
        asked, 1,
        "an unreachable provider is not asked for the second token"
    );
    let (ok, stdout, stderr) = cli(&w.airlock, &["disconnect", "--force", &id]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("disconnected {id}")), "{stdout}");
    assert!(
        stderr.contains("may still be live at provider acme"),
        "{stderr}"
    );
    assert_eq!(
        w.provider.revoke_requests(),
        asked,
        "an already revoke-pending connection is deleted without waiting for the provider"
    );
    assert_eq!(connections(&w).await, serde_json::json!([]));
    assert_nothing_leaked(&w, &[&stdout, &stderr, &body.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_disconnect_says_what_was_revoked() {
    let w = world("").await;
    w.connect("tenant").await;
    let id = connections(&w).await[0]["id"].as_str().unwrap().to_owned();
    let (ok, stdout, stderr) = cli(&w.airlock, &["disconnect", &id]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("revoked at the provider: refresh_token, access_token"),
        "{stdout}"
    );
    assert_eq!(connections(&w).await, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_cancelled_bad_code_and_bad_client_secret_say_so() {
    let w = world("").await;
    // Cancelled consent: the provider's description, not a 502.
    w.provider.deny_next_authorization();
    let (status, page) = get(callback_url(&w).await).await;
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains("did not grant access")
            && page.contains("access_denied: The user cancelled the consent"),
        "{page}"
    );

    // A code the provider will not exchange, at first connect.
    let url = callback_url(&w).await;
    let (head, rest) = url.split_once("code=").unwrap();
    let state = rest.split_once('&').map(|(_, s)| s).unwrap_or("");
    let (status, page) = get(format!("{head}code=not-a-real-code&{state}")).await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("the provider acme refused the authorization code")
            && page.contains("invalid_grant"),
        "{page}"
    );
    assert!(!page.contains("reconnected"), "{page}");

    // A machine account with a wrong secret.
    let body = serde_json::json!({
        "name": "ci", "provider": "acme", "client_id": CLIENT_ID, "client_secret": "wrong-secret-value"
    });
    let (status, answer) = api(
        &w.airlock,
        "POST",
        "/v1/machine-accounts",
        Some(body.to_string()),
        None,
    )
    .await;
    assert_eq!(status, 502, "{answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "the provider acme refused the client credentials of app {CLIENT_ID}"
        )) && message.contains("invalid_client"),
        "{message}"
    );
    assert!(!message.contains("reconnected") && !message.contains("wrong-secret-value"));
    assert_eq!(
        connections(&w).await,
        serde_json::json!([]),
        "nothing stored"
    );
    assert_nothing_leaked(&w, &[&page, message]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_app_secret_is_named_at_connect() {
    let w = world_with(|ca, port| {
        acme_config(ca, port, "", "").replace(CLIENT_SECRET, "cs_WRONGSECRET_000000000000")
    })
    .await;
    let (status, page) = get(callback_url(&w).await).await;
    assert_eq!(status, 502, "{page}");
    assert!(
        page.contains(&format!(
            "the provider acme refused the client credentials of app {CLIENT_ID}"
        )),
        "{page}"
    );
    assert!(!page.contains("reconnected") && !page.contains("cs_WRONGSECRET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_names_the_provider_and_the_step() {
    let w = world("").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let body = serde_json::json!({
        "name": "ci", "provider": "acme", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "token_url": format!("https://127.0.0.1:{port}/token"),
    });
    let (status, answer) = api(
        &w.airlock,
        "POST",
        "/v1/machine-accounts",
        Some(body.to_string()),
        None,
    )
    .await;
    assert_eq!(status, 502, "{answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(
        message.contains("provider acme refused the connection for the client-credentials grant"),
        "{message}"
    );
    assert!(!message.contains("client error"), "{message}");
    assert_nothing_leaked(&w, &[message]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_without_refresh_token_warns_everywhere() {
    let w = world("").await;
    w.provider.set_issue_refresh_tokens(false);
    let page = w.connect("tenant").await;
    let warning = "no refresh token: this account must be reconnected when the token expires";
    assert!(
        page.contains("Connected") && page.contains(warning),
        "{page}"
    );
    assert!(
        page.contains("prompt=consent / access_type=offline"),
        "{page}"
    );

    let conns = connections(&w).await;
    assert!(
        conns[0]["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with(warning),
        "{conns}"
    );
    let listed = cli(&w.airlock, &["connections"]).1;
    assert!(listed.contains(&format!("warning: {warning}")), "{listed}");

    // The console's account row.
    let cookies = w.airlock.data_dir.join("console-cookies");
    let (vault, token, jar) = (
        w.airlock.vault_url(),
        w.airlock.admin_token(),
        cookies.display().to_string(),
    );
    let page = blocking(move || {
        let login = format!("{vault}/console/login");
        let form = format!("token={token}");
        curl(
            &[],
            &[
                "-s",
                "-c",
                &jar,
                "-H",
                &format!("Origin: {vault}"),
                "--data-urlencode",
                &form,
                &login,
            ],
        );
        curl(&[], &["-s", "-b", &jar, &format!("{vault}/")])
    })
    .await
    .stdout;
    assert!(page.contains(warning), "{page}");

    // With a refresh token the warning goes away on reconnect.
    w.provider.set_issue_refresh_tokens(true);
    w.connect("tenant").await;
    let conns = connections(&w).await;
    assert_eq!(conns[0]["warnings"], serde_json::json!([]), "{conns}");
}

/// Signs in to the console with curl; returns (cookie jar, CSRF token, page).
async fn console_login(w: &World) -> (String, String, String) {
    let jar = w.airlock.data_dir.join("console-jar").display().to_string();
    let (vault, token) = (w.airlock.vault_url(), w.airlock.admin_token());
    let jar2 = jar.clone();
    let page = blocking(move || {
        let form = format!("token={token}");
        curl(
            &[],
            &[
                "-s",
                "-c",
                &jar2,
                "--data-urlencode",
                &form,
                &format!("{vault}/console/login"),
            ],
        );
        curl(&[], &["-s", "-b", &jar2, &format!("{vault}/")])
    })
    .await
    .stdout;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a CSRF field")
        .to_owned();
    (jar, csrf, page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_says_when_revocation_failed_and_can_delete_anyway() {
    let w = world("revoke_retry_secs = 3600").await;
    w.connect("tenant").await;
    let id = connections(&w).await[0]["id"].as_str().unwrap().to_owned();
    w.provider.set_revoke_mode(RevokeMode::ServerError);
    let (jar, csrf, _) = console_login(&w).await;
    let post = |form: String| {
        let (jar, url) = (
            jar.clone(),
            format!("{}/console/disconnect/{id}", w.airlock.vault_url()),
        );
        blocking(move || {
            curl(
                &[],
                &[
                    "-s",
                    "-b",
                    &jar,
                    "-w",
                    "\n%{http_code}",
                    "--data",
                    &form,
                    &url,
                ],
            )
        })
    };
    let out = post(format!("csrf={csrf}")).await.stdout;
    assert!(out.ends_with("502"), "{out}");
    assert!(
        out.contains("Revocation failed") && out.contains("HTTP 500"),
        "{out}"
    );
    // A new session (and CSRF token) in the same jar.
    let (_, csrf, page) = console_login(&w).await;
    assert!(
        page.contains("Revocation pending") && page.contains("Delete anyway"),
        "{page}"
    );
    let out = post(format!("csrf={csrf}&force=1")).await.stdout;
    assert!(out.contains("may still be live at provider acme"), "{out}");
    assert_eq!(connections(&w).await, serde_json::json!([]));
    assert_nothing_leaked(&w, &[&out, &page]);
}
