//! Consent on demand, end to end: a request that meets an account no one
//! connected waits (`Prefer: wait=N`) while a human follows the connect
//! link, then goes through with the real token; without opt-in, or on
//! timeout, the error carries the link; the number held is bounded and a
//! client that goes away frees its place.

use std::time::{Duration, Instant};

use crate::status::{curl_get, entry, json};
use crate::support::clients::{curl, python};
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{blocking, Airlock, TestCa};
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
    // Meanwhile the user opens the link from the status.
    tokio::time::sleep(Duration::from_millis(800)).await;
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
    assert_eq!(status, 403, "{answer}");
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
    assert_eq!(status, 403, "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(answer.contains("x-airlock-connect-url"), "{answer}");
    // One place: a second held request is refused at once; a client that
    // gives up frees its place.
    let first = curl_api(&w, &["-H", "Prefer: wait=30", "--max-time", "3"]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
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
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, answer) = blocking({
        let h = curl_api(&w, &["-H", "Prefer: wait=1"]);
        move || h.join().unwrap()
    })
    .await;
    assert_eq!(
        status, 403,
        "held again (not 503), then timed out: {answer}"
    );
    assert!(
        w.provider.api_authorizations().is_empty(),
        "nothing was sent"
    );
}
