//! Consent on demand, end to end: a request that meets an account no one
//! connected waits (`Prefer: wait=N`) while a human follows the connect
//! link, then goes through with the real token; without opt-in, or on
//! timeout, the error carries the link; the number held is bounded and a
//! client that goes away frees its place.

use std::time::{Duration, Instant};

use crate::status::{curl_get, entry, json};
use crate::support::airlock::config_check;
use crate::support::clients::{curl, node, python};
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{blocking, skip, Airlock, TestCa, Upstream, NODE_MODULES};
use crate::vault::{acme_config, World, API, AUTH, CLIENT_ID, CLIENT_SECRET};

async fn consent_world(proxy_extra: &str) -> World {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(&ca, &[AUTH, API], CLIENT_ID, CLIENT_SECRET).await;
    let airlock = Airlock::start(&acme_config(&ca, provider.port(), "", proxy_extra));
    World {
        ca,
        provider,
        airlock,
    }
}

/// curl through airlock with the placeholder: (status, headers and body).
fn curl_api(w: &World, extra: &[&str]) -> std::thread::JoinHandle<(u16, String)> {
    let env = w.airlock.env.clone();
    let auth = format!("Authorization: Bearer {}", w.airlock.var("ACME_TOKEN"));
    let url = format!("https://{API}/api/me");
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    std::thread::spawn(move || {
        let mut args = vec!["-s", "-i", "-w", "\n%{http_code}", "-H", auth.as_str()];
        args.extend(extra.iter().map(String::as_str));
        args.push(&url);
        let out = curl(&env, &args);
        let (rest, status) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), rest.to_owned())
    })
}

/// Waits (bounded) until the proxy holds `n` requests, by its metric: a
/// test must not consent before the request it means to hold is held.
async fn wait_until_held(w: &World, n: u64) {
    let url = format!("{}/metrics", w.airlock.metrics_url());
    let want = format!("airlock_held_requests {n}\n");
    for _ in 0..100 {
        let url = url.clone();
        let metrics = blocking(move || curl(&[], &["-s", &url])).await;
        if metrics.stdout.contains(&want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    panic!("the proxy never held {n} request(s)");
}

async fn link_of(w: &World) -> String {
    let (_, doc) = curl_get(&w.airlock.env, "http://airlock.internal/v1/status").await;
    let doc = json(&doc);
    let acme = entry(&doc, "ACME_TOKEN");
    assert_eq!(acme["state"], "not_connected", "{doc}");
    acme["connect_url"].as_str().expect("a link").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_goes_through_once_the_user_consents() {
    let w = consent_world("").await;
    // The agent asks first, with Python: it waits up to 60 s.
    let env = w.airlock.env.clone();
    let script = format!(
        r#"
import os, requests, time
t = time.time()
r = requests.get("https://{API}/api/me", headers={{"Authorization": "Bearer " + os.environ["ACME_TOKEN"], "Prefer": "wait=60"}}, timeout=90)
print(r.status_code, r.headers.get("x-airlock-held-ms"), round(time.time() - t, 1))
print(r.text)
"#
    );
    let agent = std::thread::spawn(move || python(&env, &script));
    // Once it is held, the user opens the link from the status.
    wait_until_held(&w, 1).await;
    let link = link_of(&w).await;
    let (code, page) = w.open_link(&link).await;
    assert_eq!(code, 200, "{page}");
    let out = blocking(move || agent.join().unwrap()).await;
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    let first = out.stdout.lines().next().unwrap_or("");
    let fields: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(fields[0], "200", "{}", out.stdout);
    let held_ms: u64 = fields[1].parse().expect("x-airlock-held-ms");
    assert!(held_ms >= 500, "it was held: {held_ms} ms");
    assert!(out.stdout.contains("\"ok\":true"), "{}", out.stdout);
    // The upstream got the real token; the sandbox saw none.
    let real = w.provider.issued_access_tokens();
    assert_eq!(
        w.provider.api_authorizations(),
        [format!("Bearer {}", real[0])]
    );
    w.assert_no_secret_in(&[&out.stdout, &out.stderr]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_opt_in_or_after_the_wait_the_error_carries_the_link() {
    let w = consent_world("max_held_requests = 1").await;
    let (status, answer) = blocking({
        let h = curl_api(&w, &[]);
        move || h.join().unwrap()
    })
    .await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-airlock-error: not_connected"),
        "{answer}"
    );
    let link = link_of(&w).await;
    assert!(
        answer.contains(&format!("x-airlock-connect-url: {link}")),
        "{answer}"
    );
    assert!(
        answer.contains(&format!("connect it at {link}")),
        "{answer}"
    );
    // A short wait runs out: the same error, after about the wait.
    let started = Instant::now();
    let (status, answer) = blocking({
        let h = curl_api(&w, &["-H", "Prefer: wait=1"]);
        move || h.join().unwrap()
    })
    .await;
    assert_eq!(status, 401, "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(answer.contains("x-airlock-connect-url"), "{answer}");
    // One place: a second held request is refused at once; a client that
    // gives up frees its place.
    let first = curl_api(&w, &["-H", "Prefer: wait=30", "--max-time", "3"]);
    wait_until_held(&w, 1).await;
    let (status, answer) = blocking({
        let h = curl_api(&w, &["-H", "Prefer: wait=30"]);
        move || h.join().unwrap()
    })
    .await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.contains("x-airlock-error: too_many_held"),
        "{answer}"
    );
    let (status, _) = blocking(move || first.join().unwrap()).await;
    assert_eq!(status, 0, "curl gave up waiting");
    wait_until_held(&w, 0).await;
    let (status, answer) = blocking({
        let h = curl_api(&w, &["-H", "Prefer: wait=1"]);
        move || h.join().unwrap()
    })
    .await;
    assert_eq!(
        status, 401,
        "held again (not 503), then timed out: {answer}"
    );
    assert!(
        w.provider.api_authorizations().is_empty(),
        "nothing was sent"
    );
}

fn browser_present() -> bool {
    let chromium = std::path::Path::new("/usr/bin/chromium").exists();
    let playwright = std::path::Path::new(NODE_MODULES)
        .join("playwright-core")
        .exists();
    if !(chromium && playwright) {
        skip("the consent browser test needs /usr/bin/chromium and playwright-core (scripts/test installs both)");
    }
    chromium && playwright
}

/// HMAC-SHA256 of `TIMESTAMP.BODY`, hex: what the webhook's signature must be.
fn expected_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    ring::hmac::sign(&key, &message)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_consents_while_the_request_waits_and_the_operator_hears_of_it() {
    if !browser_present() {
        return;
    }
    const HOOKS: &str = "hooks.test";
    const HOOK_SECRET: &str = "whsec_consent_0123456789";
    let ca = TestCa::new();
    let provider = OAuthProvider::start(&ca, &[AUTH, API], CLIENT_ID, CLIENT_SECRET).await;
    let hooks = Upstream::start(&ca, &[HOOKS]).await;
    let proxy_extra = format!(
        "consent_webhook_url = \"https://{HOOKS}/airlock/consent\"\nconsent_webhook_secret = {HOOK_SECRET:?}"
    );
    let cfg = acme_config(&ca, provider.port(), "", &proxy_extra).replace(
        "[resolve]\n",
        &format!("[resolve]\n\"{HOOKS}\" = \"127.0.0.1:{}\"\n", hooks.port()),
    );
    let w = World {
        ca,
        provider,
        airlock: Airlock::start(&cfg),
    };
    let env = w.airlock.env.clone();
    let script = format!(
        r#"
import os, requests
r = requests.get("https://{API}/api/me", headers={{"Authorization": "Bearer " + os.environ["ACME_TOKEN"], "Prefer": "wait=90"}}, timeout=120)
print(r.status_code, r.headers.get("x-airlock-held-ms"))
print(r.text)
"#
    );
    let agent = std::thread::spawn(move || python(&env, &script));
    // The operator's webhook hears of it, signed.
    let mut delivered = None;
    for _ in 0..60 {
        if let Some(r) = hooks.requests().into_iter().next() {
            delivered = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let hook = delivered.expect("the webhook was called");
    assert_eq!(hook.method, "POST");
    assert_eq!(hook.path_and_query, "/airlock/consent");
    let timestamp = hook
        .header("x-airlock-timestamp")
        .expect("a timestamp")
        .to_owned();
    assert_eq!(
        hook.header("x-airlock-signature"),
        Some(
            format!(
                "sha256={}",
                expected_signature(HOOK_SECRET, &timestamp, &hook.body_sample)
            )
            .as_str()
        )
    );
    let event: serde_json::Value = serde_json::from_slice(&hook.body_sample).unwrap();
    assert_eq!(event["event"], "consent_needed");
    assert_eq!(event["request"]["binding"], "provider:acme");
    assert_eq!(event["request"]["reason"], "not_connected");
    let link = event["request"]["connect_url"]
        .as_str()
        .expect("the link")
        .to_owned();
    assert_eq!(
        link,
        link_of(&w).await,
        "the status hands out the same link"
    );
    // The console lists it; the user approves in chromium.
    let shots =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let node_env = vec![
        (
            "CONSOLE_URL".to_owned(),
            format!("{}/", w.airlock.vault_url()),
        ),
        ("ADMIN_TOKEN".to_owned(), w.airlock.admin_token()),
        ("CONNECT_URL".to_owned(), link),
        ("SCREENSHOTS".to_owned(), shots.display().to_string()),
        ("RESOLVER_RULES".to_owned(), format!("MAP {AUTH} 127.0.0.1")),
        ("NODE_PATH".to_owned(), NODE_MODULES.to_owned()),
    ];
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/consent.test.mjs");
    let browser = blocking(move || node(&node_env, &format!("import({driver:?})"))).await;
    assert!(browser.success(), "{}\n{}", browser.stdout, browser.stderr);
    assert!(
        browser
            .stdout
            .contains("waiting: default provider:acme not_connected GET api.acme.test/api/me"),
        "{}",
        browser.stdout
    );
    let out = blocking(move || agent.join().unwrap()).await;
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("200 "), "{}", out.stdout);
    assert!(out.stdout.contains("\"ok\":true"), "{}", out.stdout);
    w.assert_no_secret_in(&[&out.stdout, &out.stderr, &browser.stdout, &w.airlock.logs()]);
    assert!(!w.airlock.logs().contains(HOOK_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_receiver_that_is_down_costs_nothing_but_a_log_line() {
    // Port 9 on loopback: nothing listens there.
    let proxy_extra =
        "consent_webhook_url = \"https://hooks.down.test:9/x\"\nconsent_webhook_secret = \"k\"";
    let ca = TestCa::new();
    let provider = OAuthProvider::start(&ca, &[AUTH, API], CLIENT_ID, CLIENT_SECRET).await;
    let cfg = acme_config(&ca, provider.port(), "", proxy_extra).replace(
        "[resolve]\n",
        "[resolve]\n\"hooks.down.test\" = \"127.0.0.1\"\n",
    );
    let w = World {
        ca,
        provider,
        airlock: Airlock::start(&cfg),
    };
    let waiting = curl_api(&w, &["-H", "Prefer: wait=30"]);
    w.airlock.wait_for_log("consent webhook failed");
    let link = link_of(&w).await;
    let (code, page) = w.open_link(&link).await;
    assert_eq!(code, 200, "{page}");
    let (status, answer) = blocking(move || waiting.join().unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    let metrics = w.airlock.scrape_metrics().await;
    assert!(
        metrics
            .stdout
            .contains("airlock_consent_webhooks_total{reason=\"failed\"} 1"),
        "{}",
        metrics.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_url_without_a_key_is_a_config_error() {
    let (ok, stderr) = config_check("[proxy]\nconsent_webhook_url = \"ftp://x\"\n");
    assert!(!ok);
    assert!(
        stderr.contains("proxy.consent_webhook_url \"ftp://x\" must be an http:// or https:// URL"),
        "{stderr}"
    );
    let (ok, stderr) = config_check("[proxy]\nconsent_webhook_url = \"https://hooks.test/x\"\n");
    assert!(!ok && stderr.contains("needs a signing key"), "{stderr}");
    let (ok, stderr) = config_check("[proxy]\nconsent_webhook_secret_env = \"K\"\n");
    assert!(
        !ok && stderr.contains("without proxy.consent_webhook_url"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_meets_reconnect_needed_waits_for_the_reconnect() {
    let w = crate::vault::world("refresh_fraction = 0.9\nrefresh_interval_secs = 3600", "").await;
    w.provider
        .set_access_token_lifetime(Duration::from_secs(10));
    w.connect("tenant").await;
    w.provider.set_refuse_refresh(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Without opt-in: 401 reconnect_needed, with the link.
    let (status, answer) = blocking({
        let h = curl_api(&w, &[]);
        move || h.join().unwrap()
    })
    .await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer.contains("x-airlock-error: reconnect_needed"),
        "{answer}"
    );
    assert!(answer.contains("x-airlock-connect-url: "), "{answer}");
    // With opt-in: held until the user reconnects, then 200.
    let waiting = curl_api(&w, &["-H", "Prefer: wait=60"]);
    wait_until_held(&w, 1).await;
    let (_, doc) = curl_get(&w.airlock.env, "http://airlock.internal/v1/status").await;
    let doc = json(&doc);
    let acme = entry(&doc, "ACME_TOKEN");
    assert_eq!(acme["state"], "reconnect_needed", "{doc}");
    let link = acme["connect_url"].as_str().expect("a link").to_owned();
    w.provider.set_refuse_refresh(false);
    let (code, page) = w.open_link(&link).await;
    assert_eq!(code, 200, "{page}");
    let (status, answer) = blocking(move || waiting.join().unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("x-airlock-held-ms"), "{answer}");
    w.assert_no_secret_in(&[&answer]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_can_wait_by_default_without_asking() {
    let w = crate::vault::world("", "require_auth = true").await;
    // `airlock sandbox create --consent-wait 60` for a shared gateway's sandbox.
    let out = std::process::Command::new(crate::support::airlock::binary())
        .args([
            "sandbox",
            "create",
            "--user",
            "carol",
            "--provider",
            "acme",
            "--consent-wait",
            "60",
            "--json",
            "--config",
            w.airlock.config_path.to_str().unwrap(),
            "--data-dir",
            w.airlock.data_dir.to_str().unwrap(),
            "--vault-url",
            &w.airlock.vault_url(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let env: Vec<(String, String)> = created["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let (_, doc) = curl_get(&env, "http://airlock.internal/v1/status").await;
    let doc = json(&doc);
    assert_eq!(doc["consent_wait_secs"], 60, "{doc}");
    let link = entry(&doc, "ACME_TOKEN")["connect_url"]
        .as_str()
        .unwrap()
        .to_owned();
    // No Prefer header: the sandbox's setting holds the request.
    let placeholder = env
        .iter()
        .find(|(k, _)| k == "ACME_TOKEN")
        .unwrap()
        .1
        .clone();
    let waiting = std::thread::spawn({
        let env = env.clone();
        move || {
            let auth = format!("Authorization: Bearer {placeholder}");
            curl(
                &env,
                &[
                    "-s",
                    "-w",
                    "\n%{http_code}",
                    "-H",
                    &auth,
                    &format!("https://{API}/api/me"),
                ],
            )
        }
    });
    wait_until_held(&w, 1).await;
    let (code, page) = w.open_link(&link).await;
    assert_eq!(code, 200, "{page}");
    let out = blocking(move || waiting.join().unwrap()).await;
    assert!(out.stdout.ends_with("\n200"), "{}", out.stdout);
}
