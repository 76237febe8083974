//! The vault's refresh path end to end (issue 13): no database lock across a
//! provider call, a back-off that ends, no provider answer lost (also across
//! `kill -9`), a refresh budget, no `reconnect_needed` from one 401 without a
//! refresh token, and the background refresher ahead of expiry.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::vault::{acme_config, api, World};
use crate::support::clients::python;
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{blocking, Airlock, TestCa};

const CLIENT_ID: &str = "airlock-test-client";
const CLIENT_SECRET: &str = "cs_REALCLIENTSECRET_0123456789";
const AUTH: &str = "auth.acme.test";
const API: &str = "api.acme.test";

async fn start(vault_extra: &str, probe: bool) -> World {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(&ca, &[AUTH, API], CLIENT_ID, CLIENT_SECRET).await;
    let airlock = Airlock::start(&config(&ca, &provider, vault_extra, probe));
    World {
        ca,
        provider,
        airlock,
    }
}

fn config(ca: &TestCa, provider: &OAuthProvider, vault_extra: &str, probe: bool) -> String {
    let mut cfg = acme_config(ca, provider.port(), vault_extra, "");
    if probe {
        let line = format!(
            "env = \"ACME_TOKEN\"\nprobe_url = \"https://{API}:{}/api/me\"",
            provider.port()
        );
        cfg = cfg.replace("env = \"ACME_TOKEN\"", &line);
    }
    cfg
}

fn service_token(airlock: &Airlock) -> String {
    std::fs::read_to_string(airlock.data_dir.join("service.token"))
        .expect("service.token")
        .trim()
        .to_owned()
}

/// What a remote proxy does after an upstream 401: `/v1/service/refresh`.
async fn service_refresh(
    airlock: &Airlock,
    sandbox: &str,
    placeholder: &str,
    failed: &str,
) -> (u16, Value) {
    let body = serde_json::json!({
        "sandbox": sandbox, "placeholder": placeholder, "failed_token": failed,
    })
    .to_string();
    api(
        airlock,
        "POST",
        "/v1/service/refresh",
        Some(body),
        Some(service_token(airlock)),
    )
    .await
}

async fn connections(airlock: &Airlock) -> Vec<Value> {
    let (status, conns) = api(airlock, "GET", "/v1/connections", None, None).await;
    assert_eq!(status, 200, "{conns}");
    conns.as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_provoked_refreshes_cause_at_most_one_grant() {
    let w = start("refresh_interval_secs = 3600", false).await;
    w.connect("tenant").await;
    let placeholder = w.airlock.var("ACME_TOKEN");
    let mut current = w.provider.issued_access_tokens()[0].clone();
    let started = Instant::now();
    for i in 0..100 {
        let (status, answer) = service_refresh(&w.airlock, "default", &placeholder, &current).await;
        assert_eq!(status, 200, "call {i}: {answer}");
        current = answer["token"].as_str().expect("token").to_owned();
        // Stay well inside the cool-down (60 s by default).
        assert!(started.elapsed() < Duration::from_secs(50));
    }
    assert!(
        w.provider.refresh_count() <= 1,
        "{} refresh grants",
        w.provider.refresh_count()
    );
    // The sandbox still works with the one token.
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
    // The budget's refusals are counted where operators look.
    let url = format!("{}/metrics", w.airlock.metrics_url());
    let metrics =
        crate::support::blocking(move || crate::support::clients::curl(&[], &["-s", &url]).stdout)
            .await;
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("airlock_vault_refreshes{reason=\"refused_by_budget\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .unwrap_or(0);
    assert!(refused >= 98, "refused_by_budget = {refused}: {metrics}");
    w.assert_no_secret_in(&[&w.airlock.logs()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_provoked_401s_from_a_sandbox_cause_at_most_one_grant() {
    let w = start("refresh_interval_secs = 3600", false).await;
    w.connect("tenant").await;
    // The placeholder in a header the API ignores: every answer is a 401.
    let env = w.airlock.env.clone();
    let script = format!(
        r#"
import os, requests
s = requests.Session()
tok = os.environ['ACME_TOKEN']
codes = [s.get('https://{API}/api/me', headers={{'X-Anything': tok}}).status_code for _ in range(100)]
print(len(codes), sorted(set(codes)))
"#
    );
    let out = blocking(move || python(&env, &script)).await;
    assert_eq!(out.stdout.trim(), "100 [401]", "{}", out.stderr);
    eprintln!(
        "100 provoked 401s: {} refresh grants",
        w.provider.refresh_count()
    );
    assert!(
        w.provider.refresh_count() <= 1,
        "{} refresh grants",
        w.provider.refresh_count()
    );
    assert_eq!(connections(&w.airlock).await[0]["status"], "connected");
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_hanging_20s_delays_only_the_connection_it_refreshes() {
    let w = start("refresh_interval_secs = 3600", false).await;
    w.connect("tenant").await;
    let tenant_refresh = w.provider.current_refresh_token().unwrap();
    w.connect("user:alice").await;
    let issued = w.provider.issued_access_tokens();
    let (tenant_token, alice_token) = (issued[0].clone(), issued[1].clone());
    let body = r#"{"user":"alice","providers":["acme"]}"#.to_owned();
    let (status, alice) = api(&w.airlock, "POST", "/v1/sandboxes", Some(body), None).await;
    assert_eq!(status, 201, "{alice}");
    let alice_sandbox = alice["id"].as_str().unwrap().to_owned();
    let alice_placeholder = alice["env"]["ACME_TOKEN"].as_str().unwrap().to_owned();
    let conns = connections(&w.airlock).await;
    let alice_id = conns.iter().find(|c| c["scope"] == "user:alice").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The tenant connection's refresh hangs at the provider for 20 s.
    w.provider
        .set_refresh_delay_for(&tenant_refresh, Duration::from_secs(20));
    let hung = {
        let vault = w.airlock.vault_url();
        let service = service_token(&w.airlock);
        let placeholder = w.airlock.var("ACME_TOKEN");
        let script = format!(
            r#"
import json, urllib.request
req = urllib.request.Request({url:?}, method='POST',
    data=json.dumps({{'sandbox': 'default', 'placeholder': {placeholder:?}, 'failed_token': {tenant_token:?}}}).encode(),
    headers={{'authorization': 'Bearer {service}', 'content-type': 'application/json'}})
print(json.load(urllib.request.urlopen(req, timeout=60))['token'] != {tenant_token:?})
"#,
            url = format!("{vault}/v1/service/refresh"),
        );
        tokio::task::spawn_blocking(move || python(&[], &script))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.provider.token_requests("refresh_token") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        w.provider.token_requests("refresh_token"),
        1,
        "the hung refresh started"
    );

    let started = Instant::now();
    // Another connection's refresh.
    let (status, answer) =
        service_refresh(&w.airlock, &alice_sandbox, &alice_placeholder, &alice_token).await;
    assert_eq!(status, 200, "{answer}");
    assert_ne!(
        answer["token"],
        alice_token.as_str(),
        "alice's token was refreshed"
    );
    let refreshed_other = started.elapsed();
    // A connect flow starts (writes its state), an app is written.
    let (status, started_flow) = api(
        &w.airlock,
        "POST",
        "/v1/connections",
        Some(r#"{"provider":"acme","scope":"workspace:ws"}"#.into()),
        None,
    )
    .await;
    assert_eq!(status, 201, "{started_flow}");
    let app = format!(r#"{{"provider":"acme","client_id":"{CLIENT_ID}"}}"#);
    let (status, answer) = api(&w.airlock, "PUT", "/v1/apps", Some(app), None).await;
    assert_eq!(status, 200, "{answer}");
    // A disconnect.
    let (status, answer) = api(
        &w.airlock,
        "DELETE",
        &format!("/v1/connections/{alice_id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let all = started.elapsed();
    eprintln!("while a refresh hung: other refresh {refreshed_other:?}, all four {all:?}");
    assert!(all < Duration::from_secs(5), "took {all:?}");
    assert!(!hung.is_finished(), "the hung refresh is still waiting");

    // The hung refresh completes with a new token once the provider answers.
    let out = hung.await.unwrap();
    assert_eq!(out.stdout.trim(), "True", "{}", out.stderr);
    let conns = connections(&w.airlock).await;
    let tenant = conns.iter().find(|c| c["scope"] == "tenant").unwrap();
    assert_eq!(tenant["status"], "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_recovers_is_used_on_the_next_call_after_the_back_off() {
    let w = start(
        "refresh_interval_secs = 3600\nrefresh_backoff_secs = 2",
        false,
    )
    .await;
    w.provider.set_access_token_lifetime(Duration::from_secs(2));
    w.connect("tenant").await;
    w.provider
        .set_access_token_lifetime(Duration::from_secs(3600));
    w.provider.set_fail_with_5xx(true);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    // Expired, provider down: a clear 503, and one attempt.
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 503, "{body}");
    let failed_at = Instant::now();
    assert_eq!(w.provider.token_requests("refresh_token"), 1);
    w.provider.set_fail_with_5xx(false);
    // A sandbox polling every 200 ms does not push the window out.
    let mut polls = 0;
    loop {
        let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
        polls += 1;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("waiting before the next refresh"), "{body}");
        assert!(
            failed_at.elapsed() < Duration::from_secs(6),
            "still refused after {:?}",
            failed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recovered = failed_at.elapsed();
    eprintln!("recovered {recovered:?} after the failure, {polls} polls");
    assert!(recovered < Duration::from_secs(4), "{recovered:?}");
    assert_eq!(
        w.provider.token_requests("refresh_token"),
        2,
        "one failure, then one success: the polls did not call the provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_in_as_a_string_and_an_unreadable_answer_lose_no_token() {
    let w = start(
        "refresh_interval_secs = 3600\nrefresh_backoff_secs = 1\nrefresh_cooldown_secs = 0",
        false,
    )
    .await;
    w.connect("tenant").await;
    let placeholder = w.airlock.var("ACME_TOKEN");

    // `"expires_in": "3600"` is read like a number.
    w.provider.set_expires_in_as_string(true);
    let first = w.provider.issued_access_tokens()[0].clone();
    let (status, answer) = service_refresh(&w.airlock, "default", &placeholder, &first).await;
    assert_eq!(status, 200, "{answer}");
    let second = answer["token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let conns = connections(&w.airlock).await;
    let left = conns[0]["expires_at"].as_i64().unwrap()
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
    assert!((3500..=3600).contains(&left), "expires in {left} s");
    assert!(!w.airlock.logs().contains("unexpected response"));

    // An answer that cannot be used, carrying a rotated refresh token: the
    // current token stays, the new refresh token is kept.
    w.provider.set_garbage_refresh_answers(true);
    let (status, answer) = service_refresh(&w.airlock, "default", &placeholder, &second).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["token"],
        second.as_str(),
        "the current token is kept"
    );
    assert_eq!(w.provider.refresh_count(), 2, "the provider rotated");
    let logs = w.airlock.wait_for_log("kept the rotated refresh token");
    assert!(logs.contains("kept the rotated refresh token"), "{logs}");

    // After the back-off, the next refresh presents the rotated token: the
    // provider (which refuses rotated-out tokens) accepts it.
    w.provider.set_garbage_refresh_answers(false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, answer) = service_refresh(&w.airlock, "default", &placeholder, &second).await;
    assert_eq!(status, 200, "{answer}");
    assert_ne!(answer["token"], second.as_str());
    assert_eq!(w.provider.refresh_count(), 3);
    assert_eq!(connections(&w.airlock).await[0]["status"], "connected");
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
    w.assert_no_secret_in(&[&w.airlock.logs()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_refresh_leaves_no_torn_record() {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(&ca, &[AUTH, API], CLIENT_ID, CLIENT_SECRET).await;
    let cfg = config(&ca, &provider, "refresh_interval_secs = 3600", false);
    let w = World {
        ca,
        provider,
        airlock: Airlock::start(&cfg),
    };
    w.provider.set_access_token_lifetime(Duration::from_secs(2));
    w.connect("tenant").await;
    w.provider
        .set_access_token_lifetime(Duration::from_secs(3600));
    w.provider.set_token_delay(Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The expired token makes this request refresh; the provider hangs.
    let env = w.airlock.env.clone();
    let request = tokio::spawn({
        let url = format!("https://{API}/api/me");
        let placeholder = w.airlock.var("ACME_TOKEN");
        blocking(move || {
            let auth = format!("Authorization: Bearer {placeholder}");
            crate::support::clients::curl(&env, &["-s", "--max-time", "30", "-H", &auth, &url])
        })
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.provider.token_requests("refresh_token") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(w.provider.token_requests("refresh_token"), 1);
    let data_dir = w.airlock.data_dir.clone();
    let World {
        ca,
        provider,
        mut airlock,
    } = w;
    let killed = Instant::now();
    airlock.stop(); // SIGKILL
    let _ = request.await;
    eprintln!("client returned {:?} after the kill", killed.elapsed());
    provider.set_token_delay(Duration::ZERO);
    let again = Airlock::restart_in(&cfg, &data_dir);
    eprintln!("restarted {:?} after the kill", killed.elapsed());
    let w = World {
        ca,
        provider,
        airlock: again,
    };
    // Working, or clearly reconnect_needed: never anything in between.
    for _ in 0..3 {
        let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
        let conns = connections(&w.airlock).await;
        let state = conns[0]["status"].as_str().unwrap().to_owned();
        match status {
            200 => assert_eq!(state, "connected", "{body}"),
            401 => {
                assert!(body.contains("must be reconnected"), "{body}");
                assert_eq!(state, "reconnect_needed");
            }
            other => panic!("neither working nor reconnect_needed: {other} {body} ({state})"),
        }
    }
    eprintln!(
        "after kill -9 ({:?}): refresh requests {}, refreshes {}",
        killed.elapsed(),
        w.provider.token_requests("refresh_token"),
        w.provider.refresh_count()
    );
    drop(airlock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_refresher_refreshes_short_tokens_ahead_of_expiry() {
    let w = start("refresh_interval_secs = 2", false).await;
    w.provider
        .set_access_token_lifetime(Duration::from_secs(10));
    w.connect("tenant").await;
    let connected = Instant::now();
    let deadline = connected + Duration::from_secs(15);
    while w.provider.refresh_count() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = connected.elapsed();
    assert!(w.provider.refresh_count() >= 1, "no background refresh");
    assert!(
        after < Duration::from_secs(10),
        "refreshed {after:?} after connect: not ahead of the 10 s expiry"
    );
    assert!(
        w.provider.api_authorizations().is_empty(),
        "no sandbox request was needed"
    );
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
}

/// A provider whose refresh tokens lapse when idle says `refresh_keepalive`:
/// with hour-long access tokens and no traffic, the background refresher
/// still refreshes its grant once it has not been refreshed for that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_s_refresh_keepalive_refreshes_an_idle_grant_with_no_traffic() {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(&ca, &[AUTH, API], CLIENT_ID, CLIENT_SECRET).await;
    let cfg = config(&ca, &provider, "refresh_interval_secs = 1", false).replace(
        "env = \"ACME_TOKEN\"",
        "env = \"ACME_TOKEN\"\nrefresh_keepalive = \"2s\"",
    );
    assert!(cfg.contains("refresh_keepalive"), "{cfg}");
    let w = World {
        ca,
        provider,
        airlock: Airlock::start(&cfg),
    };
    w.connect("tenant").await;
    let first = w.provider.current_refresh_token().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.provider.refresh_count() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        w.provider.refresh_count() >= 1,
        "no keep-alive refresh of an idle grant"
    );
    assert_ne!(
        w.provider.current_refresh_token().unwrap(),
        first,
        "the refresh token was used (and rotated)"
    );
    assert!(
        w.provider.api_authorizations().is_empty(),
        "no sandbox request was needed"
    );
    // The rotated grant is the one the sandbox now gets.
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
    assert!(w.airlock.logs().contains("keep its refresh token alive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_401_without_a_refresh_token_does_not_condemn_the_connection() {
    // Without probe_url: a 401 is passed on, the connection stays connected.
    let w = start("refresh_interval_secs = 3600", false).await;
    w.provider.set_issue_refresh_tokens(false);
    w.connect("tenant").await;
    assert!(w.provider.current_refresh_token().is_none());
    w.provider.set_expire_all_access_tokens();
    for _ in 0..3 {
        let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
        assert_eq!(status, 401, "{body}");
        assert!(!body.contains("must be reconnected"), "{body}");
    }
    assert_eq!(connections(&w.airlock).await[0]["status"], "connected");
    assert_eq!(w.provider.token_requests("refresh_token"), 0);

    // With probe_url: a live token is kept, a dead one needs a reconnect.
    let w = start(
        "refresh_interval_secs = 3600\nrefresh_cooldown_secs = 0",
        true,
    )
    .await;
    w.provider.set_issue_refresh_tokens(false);
    w.connect("tenant").await;
    let placeholder = w.airlock.var("ACME_TOKEN");
    let token = w.provider.issued_access_tokens()[0].clone();
    let (status, answer) = service_refresh(&w.airlock, "default", &placeholder, &token).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["token"], token.as_str(), "the probe found it live");
    assert_eq!(connections(&w.airlock).await[0]["status"], "connected");
    w.provider.set_expire_all_access_tokens();
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        connections(&w.airlock).await[0]["status"],
        "reconnect_needed",
        "the probe answered 401"
    );
}
