//! Evidence before a refresh: an answer says a token expired only when the
//! token sat where its provider expects it. A sandbox that puts the
//! placeholder anywhere else cannot make airlock refresh, replay or mark the
//! account for reconnection.

use std::time::Duration;

use crate::support::clients::curl;
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{blocking, Airlock, TestCa};
use crate::vault::{acme_config, api, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_to_a_token_outside_its_slot_is_passed_through_untouched() {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(
        &ca,
        &["auth.acme.test", "api.acme.test"],
        "airlock-test-client",
        "cs_REALCLIENTSECRET_0123456789",
    )
    .await;
    let airlock = Airlock::start(&acme_config(&ca, provider.port(), "", ""));
    let w = World {
        ca,
        provider,
        airlock,
    };
    w.connect("tenant").await;
    let placeholder = w.airlock.var("ACME_TOKEN");
    let env = w.airlock.env.clone();
    let statuses = blocking(move || {
        (0..10)
            .map(|_| {
                let header = format!("X-Anything: {placeholder}");
                curl(
                    &env,
                    &[
                        "-s",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "-H",
                        &header,
                        "https://api.acme.test/api/me",
                    ],
                )
                .stdout
            })
            .collect::<Vec<_>>()
    })
    .await;
    // The API ignores the header and answers 401: passed through, ten times.
    assert!(statuses.iter().all(|s| s == "401"), "{statuses:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        w.provider.refresh_count(),
        0,
        "no refresh grant was provoked"
    );
    let (_, conns) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    assert_eq!(conns[0]["status"], "connected", "{conns}");
    // The real slot still works.
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
}
