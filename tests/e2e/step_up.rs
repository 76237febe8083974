//! Scope step-up end to end: the fake provider refuses a token that lacks a
//! scope in each of four real providers' ways (RFC 6750, GitHub, Google,
//! Slack); airlock recognises each from the provider's catalog data, the
//! sandbox's answer names the missing scope and carries a link that asks for
//! the granted scopes plus it, the status says `insufficient_scope`, and
//! after the consent the same connection has the new scope and the request
//! goes through.

use crate::status::{curl_get, entry, json};
use crate::support::clients::curl;
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{blocking, Airlock, TestCa};
use crate::vault::{acme_config, api, World, API, AUTH, CLIENT_ID, CLIENT_SECRET};

const SIGNALS: &str = r#"insufficient_scope = [
  { www_authenticate = true },
  { status = [403, 404], needed_header = "x-accepted-oauth-scopes", granted_header = "x-oauth-scopes", needed_any = true },
  { status = [403], www_authenticate = true, body_pointer = "/error/errors/0/reason", body_equals = "insufficientPermissions" },
  { status = [200], body_pointer = "/error", body_equals = "missing_scope", needed_pointer = "/needed" },
]"#;

async fn step_up_world() -> World {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(&ca, &[AUTH, API], CLIENT_ID, CLIENT_SECRET).await;
    let cfg = acme_config(&ca, provider.port(), "", "").replace(
        "env = \"ACME_TOKEN\"",
        &format!("env = \"ACME_TOKEN\"\n{SIGNALS}"),
    );
    let airlock = Airlock::start(&cfg);
    World {
        ca,
        provider,
        airlock,
    }
}

/// Connects the tenant's account granting only `read`.
async fn connect_with_read_only(w: &World) {
    let body = r#"{"provider":"acme","scope":"tenant","scopes":["read"]}"#;
    let (status, started) = api(
        &w.airlock,
        "POST",
        "/v1/connections",
        Some(body.into()),
        None,
    )
    .await;
    assert_eq!(status, 201, "{started}");
    w.follow(started["authorization_url"].as_str().unwrap())
        .await;
}

struct Answer {
    status: u16,
    headers: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

async fn call(w: &World, path: &str) -> Answer {
    let env = w.airlock.env.clone();
    let placeholder = w.airlock.var("ACME_TOKEN");
    let url = format!("https://{API}{path}");
    let out = blocking(move || {
        let auth = format!("Authorization: Bearer {placeholder}");
        curl(
            &env,
            &[
                "-s",
                "-D",
                "-",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &auth,
                &url,
            ],
        )
    })
    .await;
    let (headers, status) = out.stdout.rsplit_once("\r\n\r\n").unwrap_or(("", "0"));
    Answer {
        status: status.trim().parse().unwrap_or(0),
        headers: headers.to_owned(),
    }
}

async fn connection(w: &World) -> serde_json::Value {
    let (status, list) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    assert_eq!(status, 200, "{list}");
    let list = list.as_array().expect("a list").clone();
    assert_eq!(
        list.len(),
        1,
        "one connection, stepped up in place: {list:?}"
    );
    list[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_providers_scope_signal_leads_to_a_step_up_that_fixes_the_request() {
    let w = step_up_world().await;
    connect_with_read_only(&w).await;
    let id = connection(&w).await["id"].clone();
    let mut granted = vec!["read".to_owned()];
    for (style, scope, upstream_status) in [
        ("rfc6750", "s.one", 403),
        ("github", "s.two", 403),
        ("google", "s.three", 403),
        ("slack", "s.four", 200),
    ] {
        let path = format!("/api/scoped/{style}/{scope}");
        let refused = call(&w, &path).await;
        assert_eq!(
            refused.status, upstream_status,
            "{style}: {}",
            refused.headers
        );
        assert_eq!(
            refused.header("x-airlock-error").as_deref(),
            Some("insufficient_scope"),
            "{style}: {}",
            refused.headers
        );
        assert_eq!(
            refused.header("x-airlock-missing-scopes").as_deref(),
            Some(scope),
            "{style}"
        );
        let link = refused
            .header("x-airlock-connect-url")
            .expect("a step-up link");
        // The status says so, with the same link (a second step-up shares it).
        let (code, doc) = curl_get(&w.airlock.env, "http://airlock.internal/v1/status").await;
        assert_eq!(code, 200, "{doc}");
        let doc = json(&doc);
        let acme = entry(&doc, "ACME_TOKEN");
        assert_eq!(acme["state"], "insufficient_scope", "{style}: {doc}");
        assert_eq!(acme["connect_url"].as_str(), Some(link.as_str()));
        let again = call(&w, &path).await;
        assert_eq!(
            again.header("x-airlock-connect-url"),
            Some(link.clone()),
            "{style}"
        );
        // The user consents; the same connection now has the scope.
        let (code, page) = w.open_link(&link).await;
        assert_eq!(code, 200, "{style}: {page}");
        granted.push(scope.to_owned());
        let c = connection(&w).await;
        assert_eq!(c["id"], id, "{style}: updated in place");
        assert_eq!(
            c["scopes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect::<Vec<_>>(),
            granted,
            "{style}: granted plus needed, in order"
        );
        let fixed = call(&w, &path).await;
        assert_eq!(fixed.status, 200, "{style}: {}", fixed.headers);
        assert_eq!(fixed.header("x-airlock-error"), None, "{style}");
        let (_, doc) = curl_get(
            &w.airlock.env,
            "http://airlock.internal/v1/status/ACME_TOKEN",
        )
        .await;
        assert_eq!(
            json(&doc)["credential"]["state"],
            "connected",
            "{style}: {doc}"
        );
    }
    let logs = w.airlock.wait_for_log("outcome=\"insufficient_scope\"");
    w.assert_no_secret_in(&[&logs]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_the_token_has_is_not_a_step_up() {
    let w = step_up_world().await;
    w.connect("tenant").await;
    // Granted: read and write (the provider's defaults).
    let fine = call(&w, "/api/scoped/github/write").await;
    assert_eq!(fine.status, 200, "{}", fine.headers);
    assert_eq!(fine.header("x-airlock-error"), None);
    let (_, doc) = curl_get(
        &w.airlock.env,
        "http://airlock.internal/v1/status/ACME_TOKEN",
    )
    .await;
    assert_eq!(json(&doc)["credential"]["state"], "connected", "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_waits_for_the_step_up_and_is_replayed_with_the_new_token() {
    let w = step_up_world().await;
    connect_with_read_only(&w).await;
    // The agent's request, willing to wait: held after the GitHub-style refusal.
    let env = w.airlock.env.clone();
    let placeholder = w.airlock.var("ACME_TOKEN");
    let agent = std::thread::spawn(move || {
        let auth = format!("Authorization: Bearer {placeholder}");
        curl(
            &env,
            &[
                "-s",
                "-i",
                "-H",
                &auth,
                "-H",
                "Prefer: wait=60",
                &format!("https://{API}/api/scoped/github/repo"),
            ],
        )
    });
    // The step-up link shows in the status; the user consents.
    let mut link = None;
    for _ in 0..40 {
        let (_, doc) = curl_get(
            &w.airlock.env,
            "http://airlock.internal/v1/status/ACME_TOKEN",
        )
        .await;
        let doc = json(&doc);
        if doc["credential"]["state"] == "insufficient_scope" {
            link = doc["credential"]["connect_url"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let link = link.expect("the status shows the step-up");
    let (code, page) = w.open_link(&link).await;
    assert_eq!(code, 200, "{page}");
    let out = blocking(move || agent.join().unwrap()).await;
    assert!(
        out.stdout.starts_with("HTTP/1.1 200") || out.stdout.starts_with("HTTP/2 200"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("x-airlock-held-ms"), "{}", out.stdout);
    assert!(!out.stdout.contains("x-airlock-error"), "{}", out.stdout);
    // Two tokens went upstream: the first (refused), then the stepped-up one.
    let issued = w.provider.issued_access_tokens();
    let sent = w.provider.api_authorizations();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1], format!("Bearer {}", issued.last().unwrap()));
    assert_ne!(sent[0], sent[1]);
    w.assert_no_secret_in(&[&out.stdout, &out.stderr]);
}
