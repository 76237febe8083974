//! The sandbox's status endpoint end to end: curl and Python ask
//! `airlock.internal` through the real `airlock up` over http and https,
//! find the account not connected, follow the one-time link through the
//! fake provider's consent, and then see it connected. No answer holds a
//! token; a used or expired link says so.

use std::time::Duration;

use serde_json::Value;

use crate::support::clients::{curl, python};
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{blocking, with_env, Airlock, TestCa};
use crate::vault::{acme_config, api, world, World, API, AUTH, CLIENT_ID, CLIENT_SECRET};

/// `curl URL` with `env`: (status, body).
pub(crate) async fn curl_get(env: &[(String, String)], url: &str) -> (u16, String) {
    let env = env.to_vec();
    let url = url.to_owned();
    let out = blocking(move || curl(&env, &["-w", "\n%{http_code}", &url])).await;
    let (body, status) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        format!("{body}{}", out.stderr),
    )
}

/// `requests.get(URL)` in Python with `env`: (status, body).
async fn python_get(env: &[(String, String)], url: &str) -> (u16, String) {
    let env = env.to_vec();
    let script = format!(
        "import requests\nr = requests.get({url:?}, timeout=30)\nprint(r.status_code)\nprint(r.text)"
    );
    let out = blocking(move || python(&env, &script)).await;
    let (status, body) = out.stdout.split_once('\n').unwrap_or(("0", ""));
    (
        status.trim().parse().unwrap_or(0),
        format!("{body}{}", out.stderr),
    )
}

pub(crate) fn json(body: &str) -> Value {
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The document's entry for `variable`.
pub(crate) fn entry<'a>(doc: &'a Value, variable: &str) -> &'a Value {
    doc["credentials"]
        .as_array()
        .unwrap_or_else(|| panic!("no credentials: {doc}"))
        .iter()
        .find(|c| c["variable"] == variable)
        .unwrap_or_else(|| panic!("no {variable}: {doc}"))
}

impl World {
    /// Opens a connect link in a "browser" (curl -L, no proxy): the final
    /// page and its status.
    pub(crate) async fn open_link(&self, link: &str) -> (u16, String) {
        let resolve = format!("{AUTH}:{}:127.0.0.1", self.provider.port());
        let ca = self.ca.cert_pem_path().display().to_string();
        let link = link.to_owned();
        let out = blocking(move || {
            curl(
                &[],
                &[
                    "-L",
                    "--cacert",
                    &ca,
                    "--resolve",
                    &resolve,
                    "-w",
                    "\n%{http_code}",
                    &link,
                ],
            )
        })
        .await;
        assert!(out.success(), "{}", out.stderr);
        let (page, status) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), page.to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_python_see_not_connected_follow_the_link_then_see_connected() {
    let w = world("", "").await;
    let env = w.airlock.env.clone();
    let mut bodies = Vec::new();

    // Plain http (curl reads http_proxy) and https (CONNECT, airlock's CA).
    let (status, body) = curl_get(&env, "http://airlock.internal/v1/status").await;
    assert_eq!(status, 200, "{body}");
    let doc = json(&body);
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["sandbox"], "default");
    let acme = entry(&doc, "ACME_TOKEN");
    assert_eq!(acme["kind"], "oauth");
    assert_eq!(acme["provider"], "acme");
    assert_eq!(acme["state"], "not_connected");
    let link = acme["connect_url"]
        .as_str()
        .expect("a connect link")
        .to_owned();
    assert!(
        link.starts_with(&format!("{}/connect/", w.airlock.vault_url())),
        "{link}"
    );
    bodies.push(body);
    let (status, body) = curl_get(&env, "https://airlock.internal/v1/status/ACME_TOKEN").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["credential"]["connect_url"], link.as_str());
    bodies.push(body);
    for url in [
        "http://airlock.internal/v1/status",
        "https://airlock.internal/v1/status",
    ] {
        let (status, body) = python_get(&env, url).await;
        assert_eq!(status, 200, "{url}: {body}");
        assert_eq!(
            entry(&json(&body), "ACME_TOKEN")["connect_url"],
            link.as_str(),
            "{url}: reading the status again hands out the same link"
        );
        bodies.push(body);
    }
    let (status, body) = curl_get(&env, "https://airlock.internal/v1/nothing").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(json(&body)["error"], "not_found");

    // The user opens the link: consent at the fake provider, back to the vault.
    let (status, page) = w.open_link(&link).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Connected"), "{page}");
    assert_eq!(w.provider.last_code_verifier_ok(), Some(true));

    let (status, body) = python_get(&env, "https://airlock.internal/v1/status/acme").await;
    assert_eq!(status, 200, "{body}");
    let acme = &json(&body)["credential"];
    assert_eq!(acme["state"], "connected");
    assert_eq!(acme["connect_url"], Value::Null);
    assert!(acme["expires_at"].as_i64().is_some(), "{acme}");
    assert!(!acme["scopes"].as_array().unwrap().is_empty(), "{acme}");
    bodies.push(body);
    // The sandbox's next request uses the new connection.
    let (status, body) = w.sandbox_get(&env, "/api/me").await;
    assert_eq!(status, 200, "{body}");

    // The link is used up.
    let (status, page) = w.open_link(&link).await;
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("already used"), "{page}");

    let texts: Vec<&str> = bodies.iter().map(String::as_str).collect();
    w.assert_no_secret_in(&texts);
    let logs = w.airlock.wait_for_log("internal_api");
    assert!(
        logs.contains("airlock.internal"),
        "audited like any request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_is_never_dialled_and_only_on_its_own_ports() {
    // Even an operator's [resolve] entry for the name does not send it anywhere.
    let ca = TestCa::new();
    let provider = OAuthProvider::start(&ca, &[AUTH, API], CLIENT_ID, CLIENT_SECRET).await;
    let config = acme_config(&ca, provider.port(), "", "").replace(
        "[resolve]\n",
        &format!(
            "[resolve]\n\"airlock.internal\" = \"127.0.0.1:{}\"\n",
            provider.port()
        ),
    );
    let w = World {
        airlock: Airlock::start(&config),
        ca,
        provider,
    };
    for url in [
        "http://airlock.internal/v1/status",
        "https://airlock.internal/v1/status",
    ] {
        let (status, body) = curl_get(&w.airlock.env, url).await;
        assert_eq!(status, 200, "{url}: {body}");
        assert_eq!(json(&body)["sandbox"], "default", "{url}: airlock answered");
    }
    let env = w.airlock.env.clone();
    let out = blocking(move || {
        curl(
            &env,
            &[
                "-w",
                "\n%{http_code} %{http_connect}",
                "https://airlock.internal:8443/v1/status",
            ],
        )
    })
    .await;
    assert!(!out.success(), "CONNECT to another port is refused");
    assert!(out.stdout.ends_with(" 403"), "{out:?}");
    let (status, body) = curl_get(&w.airlock.env, "http://airlock.internal:8080/v1/status").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("port"), "{body}");
    let logs = w.airlock.wait_for_log("port_not_allowed");
    assert!(!logs.contains("upstream_dns"), "never resolved: {logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_shows_reconnect_needed_with_a_link_that_fixes_it() {
    let w = world("refresh_fraction = 0.9\nrefresh_interval_secs = 3600", "").await;
    w.provider
        .set_access_token_lifetime(Duration::from_secs(10));
    w.connect("tenant").await;
    w.provider.set_refuse_refresh(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 401, "{body}");

    let (status, body) = curl_get(&w.airlock.env, "https://airlock.internal/v1/status").await;
    assert_eq!(status, 200, "{body}");
    let acme = entry(&json(&body), "ACME_TOKEN").clone();
    assert_eq!(acme["state"], "reconnect_needed", "{body}");
    let link = acme["connect_url"].as_str().expect("a link").to_owned();

    w.provider.set_refuse_refresh(false);
    let (status, page) = w.open_link(&link).await;
    assert_eq!(status, 200, "{page}");
    let (_, body2) = curl_get(&w.airlock.env, "https://airlock.internal/v1/status").await;
    assert_eq!(entry(&json(&body2), "ACME_TOKEN")["state"], "connected");
    let (status, _) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200);
    w.assert_no_secret_in(&[&body, &body2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_shows_each_sandbox_its_own_and_needs_a_credential() {
    let w = world("", "require_auth = true").await;
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
        sandboxes.push((created["id"].as_str().unwrap().to_owned(), env));
    }
    let ((a_id, a), (b_id, b)) = (&sandboxes[0], &sandboxes[1]);
    let (_, a_body) = curl_get(a, "https://airlock.internal/v1/status").await;
    let (_, b_body) = python_get(b, "http://airlock.internal/v1/status").await;
    let (a_doc, b_doc) = (json(&a_body), json(&b_body));
    assert_eq!(a_doc["sandbox"], a_id.as_str());
    assert_eq!(b_doc["sandbox"], b_id.as_str());
    let a_link = entry(&a_doc, "ACME_TOKEN")["connect_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let b_link = entry(&b_doc, "ACME_TOKEN")["connect_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(a_link, b_link);
    assert!(!b_body.contains(&a_link) && !b_body.contains(a_id.as_str()));

    // Alice's link connects Alice (user scope): Bob still is not.
    let (status, page) = w.open_link(&a_link).await;
    assert_eq!(status, 200, "{page}");
    let (_, a_body) = curl_get(a, "https://airlock.internal/v1/status/acme").await;
    assert_eq!(json(&a_body)["credential"]["state"], "connected");
    let (_, b_body) = curl_get(b, "https://airlock.internal/v1/status/acme").await;
    assert_eq!(json(&b_body)["credential"]["state"], "not_connected");
    let (status, _) = w.sandbox_get(a, "/api/me").await;
    assert_eq!(status, 200);
    let (status, body) = w.sandbox_get(b, "/api/me").await;
    assert_eq!(status, 401, "{body}");
    let (_, conns) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    assert_eq!(conns[0]["scope"], "user:alice", "{conns}");

    // No proxy credential: 407, no document.
    let anonymous = with_env(
        a,
        &[
            ("http_proxy", &w.airlock.proxy_url),
            ("HTTP_PROXY", &w.airlock.proxy_url),
            ("https_proxy", &w.airlock.proxy_url),
            ("HTTPS_PROXY", &w.airlock.proxy_url),
        ],
    );
    let (status, body) = curl_get(&anonymous, "http://airlock.internal/v1/status").await;
    assert_eq!(status, 407, "{body}");
    assert!(!body.contains("ACME_TOKEN"), "{body}");
    let out = blocking(move || {
        curl(
            &anonymous,
            &[
                "-w",
                "\n%{http_connect}",
                "https://airlock.internal/v1/status",
            ],
        )
    })
    .await;
    assert!(out.stdout.ends_with("407"), "{out:?}");
    assert!(!out.stdout.contains("ACME_TOKEN"), "{out:?}");
    w.assert_no_secret_in(&[&a_body, &b_body]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_says_so_and_a_new_one_is_handed_out() {
    let w = world("connect_link_ttl_secs = 1", "").await;
    let (_, body) = curl_get(&w.airlock.env, "http://airlock.internal/v1/status").await;
    let link = entry(&json(&body), "ACME_TOKEN")["connect_url"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, page) = w.open_link(&link).await;
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("expired"), "{page}");
    assert_eq!(w.provider.authorize_count(), 0, "no flow was started");
    let (_, body) = curl_get(&w.airlock.env, "http://airlock.internal/v1/status").await;
    let fresh = entry(&json(&body), "ACME_TOKEN")["connect_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(fresh, link);
}
