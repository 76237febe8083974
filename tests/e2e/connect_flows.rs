//! The connect flow API for platforms, end to end: the real `airlock up`,
//! the fake OAuth provider, a browser-like curl, and a platform that
//! long-polls `GET /v1/connect-flows/{id}?wait=…` (or runs
//! `airlock connect --wait`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::vault::{api, world, World, AUTH};
use crate::support::airlock;
use crate::support::blocking;
use crate::support::clients::curl;

/// A long-poll from another client: (status, body, how long it took).
fn spawn_poll(w: &World, id: &str, wait: u64) -> tokio::task::JoinHandle<(u16, Value, Duration)> {
    let url = format!(
        "{}/v1/connect-flows/{id}?wait={wait}",
        w.airlock.vault_url()
    );
    let auth = format!("Authorization: Bearer {}", w.airlock.admin_token());
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let out = curl(&[], &["-s", "-H", &auth, "-w", "\n%{http_code}", &url]);
        let took = started.elapsed();
        let (body, status) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        (
            status.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
            took,
        )
    })
}

impl World {
    async fn start_flow(&self, body: Value) -> Value {
        let (status, started) = api(
            &self.airlock,
            "POST",
            "/v1/connect-flows",
            Some(body.to_string()),
            None,
        )
        .await;
        assert_eq!(status, 201, "{started}");
        started
    }

    async fn flow(&self, id: &str) -> (u16, Value) {
        api(
            &self.airlock,
            "GET",
            &format!("/v1/connect-flows/{id}"),
            None,
            None,
        )
        .await
    }

    /// Follows an authorization URL to the vault's callback: (status, page).
    async fn follow_status(&self, url: &str) -> (u16, String) {
        let resolve = format!("{AUTH}:{}:127.0.0.1", self.provider.port());
        let ca = self.ca.cert_pem_path().display().to_string();
        let url = url.to_owned();
        let out = blocking(move || {
            curl(
                &[],
                &[
                    "-s",
                    "-L",
                    "--cacert",
                    &ca,
                    "--resolve",
                    &resolve,
                    "-w",
                    "\n%{http_code}",
                    &url,
                ],
            )
        })
        .await;
        let (page, status) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), page.to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_long_polls_a_flow_to_connected_denied_and_cancelled() {
    let w = world("", "").await;
    let mut seen = Vec::new();

    // Connected: the waiter started before the consent hears of it promptly.
    let started = w.start_flow(json!({ "provider": "acme" })).await;
    for field in ["id", "authorization_url", "expires_at", "redirect_uri"] {
        assert!(!started[field].is_null(), "{field} in {started}");
    }
    let id = started["id"].as_str().unwrap().to_owned();
    let (status, pending) = w.flow(&id).await;
    assert_eq!(
        (status, pending["outcome"].clone()),
        (200, json!("pending"))
    );
    let poll = spawn_poll(&w, &id, 60);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, page) = w
        .follow_status(started["authorization_url"].as_str().unwrap())
        .await;
    assert_eq!(status, 200, "{page}");
    let (status, done, took) = poll.await.unwrap();
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["outcome"], "connected", "{done}");
    assert!(took < Duration::from_secs(20), "the wait took {took:?}");
    let (_, conns) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    assert_eq!(done["connection_id"], conns[0]["id"], "{conns}");
    seen.push(done.to_string());

    // The old start still works, now with an id.
    let (status, old) = api(
        &w.airlock,
        "POST",
        "/v1/connections",
        Some(r#"{"provider":"acme","scope":"user:bob"}"#.into()),
        None,
    )
    .await;
    assert_eq!(status, 201, "{old}");
    assert!(
        old["authorization_url"].is_string() && old["id"].is_string(),
        "{old}"
    );
    let (_, flow) = w.flow(old["id"].as_str().unwrap()).await;
    assert_eq!(
        (flow["outcome"].clone(), flow["scope"].clone()),
        (json!("pending"), json!("user:bob"))
    );

    // Denied: the provider's reason comes back.
    w.provider.deny_next_authorization();
    let started = w
        .start_flow(json!({ "provider": "acme", "scope": "user:carol" }))
        .await;
    let id = started["id"].as_str().unwrap();
    let poll = spawn_poll(&w, id, 60);
    let (_, page) = w
        .follow_status(started["authorization_url"].as_str().unwrap())
        .await;
    assert!(page.contains("access_denied"), "{page}");
    let (_, denied, took) = poll.await.unwrap();
    assert_eq!(denied["outcome"], "denied", "{denied}");
    assert_eq!(denied["provider_error"], "access_denied");
    assert_eq!(
        denied["provider_error_description"],
        "The user cancelled the consent"
    );
    assert!(took < Duration::from_secs(20), "the wait took {took:?}");
    seen.push(denied.to_string());

    // Cancelled: waiters hear it; the late callback connects nothing.
    let started = w
        .start_flow(json!({ "provider": "acme", "scope": "user:dave" }))
        .await;
    let id = started["id"].as_str().unwrap();
    let poll = spawn_poll(&w, id, 60);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, cancelled) = api(
        &w.airlock,
        "DELETE",
        &format!("/v1/connect-flows/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, cancelled["outcome"].clone()),
        (200, json!("cancelled"))
    );
    let (_, heard, _) = poll.await.unwrap();
    assert_eq!(heard["outcome"], "cancelled", "{heard}");
    let codes_before = w.provider.token_requests("authorization_code");
    let (status, page) = w
        .follow_status(started["authorization_url"].as_str().unwrap())
        .await;
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("this connect was cancelled"), "{page}");
    assert_eq!(
        w.provider.token_requests("authorization_code"),
        codes_before,
        "no code was exchanged"
    );
    let (_, conns) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    assert_eq!(conns.as_array().unwrap().len(), 1, "{conns}");

    // Bad input: clear errors, nothing changes.
    let (status, again) = api(
        &w.airlock,
        "DELETE",
        &format!("/v1/connect-flows/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 409, "{again}");
    assert!(
        again["error"]
            .as_str()
            .unwrap()
            .contains("already ended: cancelled"),
        "{again}"
    );
    let connected_id = done["id"].as_str().unwrap();
    let (status, body) = api(
        &w.airlock,
        "DELETE",
        &format!("/v1/connect-flows/{connected_id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("connected"),
        "{body}"
    );
    let (status, body) = w.flow("flow_unknown").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("connect flow"),
        "{body}"
    );
    let (status, body) = w.flow(&format!("{id}?wait=soon")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("wait must be a whole number"),
        "{body}"
    );
    let (status, body) = w.flow(&format!("{id}?wait=-1")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = w.flow(&format!("{id}?timeout=5")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api(
        &w.airlock,
        "DELETE",
        "/v1/connect-flows/flow_unknown",
        None,
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api(
        &w.airlock,
        "POST",
        "/v1/connect-flows",
        Some(r#"{"provider":"acme","sandbox":"default","scope":"user:x"}"#.into()),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("either sandbox"),
        "{body}"
    );
    let (status, body) = api(
        &w.airlock,
        "POST",
        "/v1/connect-flows",
        Some(r#"{"provider":"acme","sandbox":"sbx_nope"}"#.into()),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = api(
        &w.airlock,
        "GET",
        &format!("/v1/connect-flows/{id}"),
        None,
        Some("not-the-admin-token".into()),
    )
    .await;
    assert_eq!(status, 401);
    let (_, after) = w.flow(id).await;
    assert_eq!(after["outcome"], "cancelled", "{after}");
    let (_, conns) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    assert_eq!(conns.as_array().unwrap().len(), 1, "{conns}");

    // A flow for the sidecar's sandbox connects at its scope.
    let started = w
        .start_flow(json!({ "provider": "acme", "sandbox": "default" }))
        .await;
    let (_, flow) = w.flow(started["id"].as_str().unwrap()).await;
    assert_eq!(flow["sandbox"], "default", "{flow}");

    let logs = w.airlock.logs();
    seen.push(logs);
    let seen: Vec<&str> = seen.iter().map(String::as_str).collect();
    w.assert_no_secret_in(&seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_nobody_completes_expires_and_its_callback_is_refused() {
    let w = world("state_ttl_secs = 1", "").await;
    let started = w.start_flow(json!({ "provider": "acme" })).await;
    let id = started["id"].as_str().unwrap();
    // The slow poll notices the expiry well before the wait ends.
    let (status, flow, took) = spawn_poll(&w, id, 60).await.unwrap();
    assert_eq!(status, 200, "{flow}");
    assert_eq!(flow["outcome"], "expired", "{flow}");
    assert!(took < Duration::from_secs(20), "the wait took {took:?}");
    let (status, page) = w
        .follow_status(started["authorization_url"].as_str().unwrap())
        .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("expired"), "{page}");
    let (_, conns) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    assert_eq!(conns, json!([]));
    assert_eq!(w.provider.token_requests("authorization_code"), 0);
}

/// Runs `airlock connect acme ARGS --wait`, completes the consent at the
/// URL it prints, and returns (exit success, stdout, stderr).
async fn cli_connect_wait(w: &World, args: &[&str], consent: bool) -> (bool, String, String) {
    let mut cmd = Command::new(airlock::binary());
    cmd.args(["connect", "acme", "--wait"])
        .args(args)
        .args([
            "--config",
            w.airlock.config_path.to_str().unwrap(),
            "--data-dir",
            w.airlock.data_dir.to_str().unwrap(),
            "--vault-url",
            &w.airlock.vault_url(),
        ])
        .env_remove("AIRLOCK_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run airlock connect");
    let stdout = child.stdout.take().unwrap();
    let (url, reader) = blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut url = String::new();
        reader.read_line(&mut url).unwrap();
        (url.trim().to_owned(), reader)
    })
    .await;
    assert!(url.starts_with("https://auth.acme.test:"), "{url}");
    if consent {
        w.follow_status(&url).await;
    }
    blocking(move || {
        let mut rest = String::new();
        let mut reader = reader;
        std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            rest,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airlock_connect_wait_prints_the_outcome_and_exits_zero_only_when_connected() {
    let w = world("", "").await;
    let (ok, out, err) = cli_connect_wait(&w, &["--scope", "user:alice"], true).await;
    assert!(ok, "{out}{err}");
    let (_, conns) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    let conn = conns[0]["id"].as_str().unwrap();
    assert_eq!(out, format!("connected: {conn}\n"), "{err}");

    w.provider.deny_next_authorization();
    let (ok, denied, denied_err) = cli_connect_wait(&w, &["--scope", "user:bob"], true).await;
    assert!(!ok, "{denied}{denied_err}");
    assert_eq!(
        denied, "denied: access_denied (The user cancelled the consent)\n",
        "{denied_err}"
    );
    assert!(denied_err.contains("ended denied"), "{denied_err}");

    let (ok, pending, pending_err) =
        cli_connect_wait(&w, &["--scope", "user:carol", "--timeout", "1"], false).await;
    assert!(!ok, "{pending}{pending_err}");
    assert_eq!(pending, "pending\n", "{pending_err}");

    let (_, conns) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    assert_eq!(conns.as_array().unwrap().len(), 1, "{conns}");
    w.assert_no_secret_in(&[&out, &err, &denied, &denied_err, &pending, &pending_err]);
}
