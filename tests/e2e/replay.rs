//! Refresh and replay: an expired token is refreshed once and the request replayed, with the body kept or not.

use super::bodies::*;
use super::vault::{acme_config, World};
use crate::support::clients::{curl, python};
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{blocking, Airlock, TestCa, Upstream};
use std::time::Duration;

async fn oauth_world(proxy_extra: &str) -> World {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(
        &ca,
        &["auth.acme.test", API],
        "airlock-test-client",
        "cs_REALCLIENTSECRET_0123456789",
    )
    .await;
    let airlock = Airlock::start(&acme_config(
        &ca,
        provider.port(),
        // These tests expire tokens on purpose, several times a minute.
        "refresh_interval_secs = 3600\nrefresh_cooldown_secs = 0",
        proxy_extra,
    ));
    let w = World {
        ca,
        provider,
        airlock,
    };
    w.connect("tenant").await;
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refreshed_and_the_request_replayed_once() {
    let w = oauth_world("").await;
    let env = w.airlock.env.clone();
    let upload = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(upload.path(), vec![b'u'; 200 * 1024]).unwrap();
    let upload_path = upload.path().display().to_string();
    // GET, JSON POST and a streamed (chunked) upload, each after the provider expired every token.
    let cases: Vec<Vec<String>> = vec![
        vec!["https://api.acme.test/api/get".into()],
        vec![
            "-X".into(),
            "POST".into(),
            "-H".into(),
            "content-type: application/json".into(),
            "--data".into(),
            r#"{"a":1}"#.into(),
            "https://api.acme.test/api/json".into(),
        ],
        vec![
            "-H".into(),
            "transfer-encoding: chunked".into(),
            "-T".into(),
            upload_path,
            "https://api.acme.test/api/upload".into(),
        ],
    ];
    for (i, case) in cases.into_iter().enumerate() {
        w.provider.set_expire_all_access_tokens();
        let env = env.clone();
        let placeholder = w.airlock.var("ACME_TOKEN");
        let out = blocking(move || {
            let auth = format!("Authorization: Bearer {placeholder}");
            let mut args = vec!["-s", "-w", "\n%{http_code}", "-H", auth.as_str()];
            args.extend(case.iter().map(String::as_str));
            curl(&env, &args)
        })
        .await;
        assert!(
            out.stdout.ends_with("200"),
            "case {i}: {} {}",
            out.stdout,
            out.stderr
        );
        assert_eq!(w.provider.refresh_count(), i + 1, "case {i}: one refresh");
    }
    // Python too.
    w.provider.set_expire_all_access_tokens();
    let script = format!(
        "import os, requests\nr = requests.post('https://{API}/api/py', json={{'k': 'v'}}, headers={{'Authorization': 'Bearer ' + os.environ['ACME_TOKEN']}})\nprint(r.status_code)"
    );
    let out = blocking(move || python(&env, &script)).await;
    assert_eq!(out.stdout.trim(), "200", "{}", out.stderr);
    assert_eq!(w.provider.refresh_count(), 4);
    let logs = w.airlock.wait_for_log("refreshed_replayed");
    assert_eq!(
        logs.matches("outcome=\"refreshed_replayed\"").count(),
        4,
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_401s_cause_one_refresh() {
    let w = oauth_world("").await;
    w.provider.set_token_delay(Duration::from_millis(200));
    w.provider.set_expire_all_access_tokens();
    let env = w.airlock.env.clone();
    let script = format!(
        r#"
import os, requests, concurrent.futures
tok = os.environ['ACME_TOKEN']
s = requests.Session()
def call(i):
    return requests.get('https://{API}/api/c/%d' % i, headers={{'Authorization': 'Bearer ' + tok}}).status_code
with concurrent.futures.ThreadPoolExecutor(100) as ex:
    codes = list(ex.map(call, range(100)))
print(len(codes), sorted(set(codes)))
"#
    );
    let out = blocking(move || python(&env, &script)).await;
    assert_eq!(out.stdout.trim(), "100 [200]", "{}", out.stderr);
    assert_eq!(
        w.provider.refresh_count(),
        1,
        "exactly one refresh at the provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_replay_bound_gets_the_401_and_the_next_request_succeeds() {
    let w = oauth_world("replay_buffer_bytes = 1024").await;
    w.provider.set_expire_all_access_tokens();
    let placeholder = w.airlock.var("ACME_TOKEN");
    let env = w.airlock.env.clone();
    let body = "x".repeat(8 * 1024);
    let out = blocking(move || {
        let auth = format!("Authorization: Bearer {placeholder}");
        let post = || {
            curl(
                &env,
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    &auth,
                    "--data",
                    &body,
                    "https://api.acme.test/api/big",
                ],
            )
        };
        // The same request twice: the first meets the expired token.
        let first = post();
        let second = post();
        (first, second)
    })
    .await;
    assert_eq!(
        out.0.stdout, "401",
        "the large body was not kept, so no replay"
    );
    assert_eq!(
        out.1.stdout, "200",
        "but the refresh happened for the next request"
    );
    assert_eq!(w.provider.refresh_count(), 1);
    assert!(w
        .airlock
        .wait_for_log("refreshed_not_replayed")
        .contains("refreshed_not_replayed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_gives_a_clear_401_and_no_replay() {
    let w = oauth_world("").await;
    w.provider.set_refuse_refresh(true);
    w.provider.set_expire_all_access_tokens();
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("must be reconnected"), "{body}");
    assert_eq!(
        w.provider.api_authorizations().len(),
        1,
        "the API saw the first try only"
    );
    assert_eq!(w.provider.token_requests("refresh_token"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_rule_can_treat_403_with_a_marker_as_expired() {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(
        &ca,
        &["auth.acme.test", API],
        "airlock-test-client",
        "cs_REALCLIENTSECRET_0123456789",
    )
    .await;
    let other = Upstream::start(&ca, &["files.acme.test"]).await;
    let cfg = acme_config(&ca, provider.port(), "refresh_interval_secs = 3600", "")
        .replace("hosts = [\"api.acme.test\"]", "hosts = [\"api.acme.test\", \"files.acme.test\"]\nexpired_on = [{ status = 401 }, { status = 403, body_contains = \"status 403\" }]")
        .replace("[resolve]\n", &format!("[resolve]\n\"files.acme.test\" = \"127.0.0.1:{}\"\n", other.port()));
    let w = World {
        ca,
        provider,
        airlock: Airlock::start(&cfg),
    };
    w.connect("tenant").await;
    let env = w.airlock.env.clone();
    let placeholder = w.airlock.var("ACME_TOKEN");
    let out = blocking(move || {
        let auth = format!("Authorization: Bearer {placeholder}");
        (
            curl(
                &env,
                &[
                    "-s",
                    "-w",
                    "%{http_code}",
                    "-o",
                    "/dev/null",
                    "-H",
                    &auth,
                    "https://files.acme.test/status/404",
                ],
            ),
            curl(
                &env,
                &[
                    "-s",
                    "-w",
                    "%{http_code}",
                    "-o",
                    "/dev/null",
                    "-H",
                    &auth,
                    "https://files.acme.test/status/403",
                ],
            ),
        )
    })
    .await;
    assert_eq!(out.0.stdout, "404");
    assert_eq!(out.1.stdout, "403");
    assert_eq!(
        w.provider.refresh_count(),
        1,
        "only the 403 with the marker caused a refresh"
    );
    assert_eq!(other.requests().len(), 3, "404 once; 403, then its replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_replay_does_not_disturb_the_proxy() {
    let w = oauth_world("").await;
    w.provider.set_token_delay(Duration::from_millis(1500));
    w.provider.set_expire_all_access_tokens();
    let env = w.airlock.env.clone();
    let placeholder = w.airlock.var("ACME_TOKEN");
    let gone = blocking(move || {
        let auth = format!("Authorization: Bearer {placeholder}");
        curl(
            &env,
            &[
                "-s",
                "--max-time",
                "0.5",
                "-H",
                &auth,
                "--data",
                "{}",
                "https://api.acme.test/api/leave",
            ],
        )
    })
    .await;
    assert!(!gone.success(), "the client gave up");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    w.provider.set_token_delay(Duration::ZERO);
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/after").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        w.provider.refresh_count(),
        1,
        "the refresh finished for the next request"
    );
    w.assert_no_secret_in(&[&w.airlock.logs(), &body]);
}
