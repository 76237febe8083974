//! A fleet on one PostgreSQL database: two vault replicas and two remote
//! proxies, each proxy following one replica's change stream. A disconnect
//! made on one replica reaches the proxy behind the other within a second
//! (LISTEN/NOTIFY between replicas, the change stream to proxies), and a
//! proxy whose vault is gone keeps serving the token it holds until it
//! expires, then answers a clear 503.

use std::time::{Duration, Instant};

use super::vault::{acme_config, api, World};
use super::vault_postgres::{fresh_database, KEY};
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{Airlock, TestCa};

const ADMIN: &str = "admin-token-for-the-fleet-0001";
const SERVICE: &str = "service-token-for-the-fleet-01";
/// Every process of a fleet test: one master key (a shared database), one
/// admin and one service token.
const FLEET_ENV: [(&str, &str); 3] = [
    ("AIRLOCK_MASTER_KEY", KEY),
    ("AIRLOCK_ADMIN_TOKEN", ADMIN),
    ("AIRLOCK_SERVICE_TOKEN", SERVICE),
];

async fn acme_provider(ca: &TestCa) -> OAuthProvider {
    OAuthProvider::start(
        ca,
        &["auth.acme.test", "api.acme.test"],
        "airlock-test-client",
        "cs_REALCLIENTSECRET_0123456789",
    )
    .await
}

/// `airlock vault` (shared gateway) with `vault_extra` in its `[vault]`.
fn start_vault(ca: &TestCa, provider: &OAuthProvider, vault_extra: &str) -> Airlock {
    let cfg = acme_config(ca, provider.port(), vault_extra, "require_auth = true");
    Airlock::start_cmd("vault", &cfg, &FLEET_ENV, None)
}

/// `airlock proxy` following `vault`.
fn start_proxy(ca: &TestCa, provider: &OAuthProvider, vault: &Airlock) -> Airlock {
    let cfg = acme_config(
        ca,
        provider.port(),
        &format!("url = {:?}", vault.proxy_url),
        "require_auth = true",
    );
    Airlock::start_cmd("proxy", &cfg, &FLEET_ENV, None)
}

/// Connects the tenant's account and creates a sandbox for it: its JSON.
async fn connected_sandbox(w: &World) -> serde_json::Value {
    w.connect("tenant").await;
    let (status, created) = api(
        &w.airlock,
        "POST",
        "/v1/sandboxes",
        Some(r#"{"providers":["acme"]}"#.into()),
        None,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created
}

/// A shared-mode sandbox's environment through a remote `proxy`: the
/// vault's variables, the proxy URL with the sandbox's credentials, and the
/// proxy's CA for curl.
pub(crate) fn through(proxy: &Airlock, created: &serde_json::Value) -> Vec<(String, String)> {
    let url = proxy.proxy_url.replace(
        "http://",
        &format!(
            "http://{}:{}@",
            created["id"].as_str().unwrap(),
            created["proxy_secret"].as_str().unwrap()
        ),
    );
    let mut env: Vec<(String, String)> = created["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .filter(|(k, _)| !k.to_ascii_lowercase().ends_with("_proxy") && k != "CURL_CA_BUNDLE")
        .collect();
    env.push(("HTTPS_PROXY".into(), url.clone()));
    env.push(("https_proxy".into(), url));
    let ca = proxy.data_dir.join("ca.pem").display().to_string();
    env.push(("CURL_CA_BUNDLE".into(), ca));
    env
}

/// Polls `env`'s proxy until the sandbox's request is refused; how long it took.
async fn time_until_refused(w: &World, env: &[(String, String)], since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(20);
    loop {
        let (status, body) = w.sandbox_get(env, "/api/me").await;
        if status != 200 {
            assert!(
                body.contains("no connected account"),
                "refused for the disconnect: {status} {body}"
            );
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "still served 20 s after the disconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_on_one_replica_reaches_every_proxy_within_a_second() {
    let Some(database) = fresh_database() else {
        return;
    };
    let db = database.url();
    let ca = TestCa::new();
    let provider = acme_provider(&ca).await;
    let db = format!("database_url = {db:?}");
    let vault_a = start_vault(&ca, &provider, &db);
    let vault_b = start_vault(&ca, &provider, &db);
    let proxy_a = start_proxy(&ca, &provider, &vault_a);
    let proxy_b = start_proxy(&ca, &provider, &vault_b);
    let w = World {
        ca,
        provider,
        airlock: vault_a,
    };
    let created = connected_sandbox(&w).await;
    let (env_a, env_b) = (through(&proxy_a, &created), through(&proxy_b, &created));
    // Both proxies hold the token now.
    for env in [&env_a, &env_b] {
        let (status, body) = w.sandbox_get(env, "/api/me").await;
        assert_eq!(status, 200, "{body}");
    }
    let calls_before = w.provider.api_authorizations().len();

    // Each proxy reported its request: replica B's recent requests show both.
    let deadline = Instant::now() + Duration::from_secs(10);
    let started = Instant::now();
    let reported = loop {
        let (status, list) = api(&vault_b, "GET", "/v1/requests", None, Some(ADMIN.into())).await;
        assert_eq!(status, 200, "{list}");
        let proxies: std::collections::BTreeSet<String> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["path"] == "/api/me" && r["status"] == 200)
            .filter_map(|r| r["proxy"].as_str().map(str::to_owned))
            .collect();
        if proxies.len() == 2 || Instant::now() > deadline {
            break (proxies, list);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("reported after {:?}", started.elapsed());
    assert_eq!(
        reported.0.len(),
        2,
        "both proxies' requests: {}",
        reported.1
    );
    w.assert_no_secret_in(&[&reported.1.to_string()]);

    // Disconnected on replica B: proxy A follows replica A, which only
    // hears of it from PostgreSQL.
    let (_, connections) = api(&vault_b, "GET", "/v1/connections", None, Some(ADMIN.into())).await;
    let id = connections[0]["id"].as_str().unwrap().to_owned();
    let disconnected = Instant::now();
    let (status, body) = api(
        &vault_b,
        "DELETE",
        &format!("/v1/connections/{id}"),
        None,
        Some(ADMIN.into()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let after_a = time_until_refused(&w, &env_a, disconnected).await;
    let after_b = time_until_refused(&w, &env_b, disconnected).await;
    eprintln!(
        "revocation reached proxy A (other replica) after {} ms, proxy B after {} ms",
        after_a.as_millis(),
        after_b.as_millis()
    );
    // The caches hold a token for up to 60 s without the change stream;
    // with it, a second (the bound is loose for a loaded CI machine).
    assert!(after_a < Duration::from_secs(3), "proxy A: {after_a:?}");
    assert!(after_b < Duration::from_secs(3), "proxy B: {after_b:?}");
    assert_eq!(
        w.provider.api_authorizations().len(),
        calls_before,
        "no request reached the API after the disconnect"
    );
    drop(vault_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_without_its_vault_serves_held_tokens_until_they_expire_then_503() {
    let ca = TestCa::new();
    let provider = acme_provider(&ca).await;
    // Tokens expire 40 s after they are granted: the cache's margin is 30 s.
    provider.set_access_token_lifetime(Duration::from_secs(40));
    let vault = start_vault(&ca, &provider, "refresh_interval_secs = 3600");
    let proxy = start_proxy(&ca, &provider, &vault);
    let mut w = World {
        ca,
        provider,
        airlock: vault,
    };
    let created = connected_sandbox(&w).await;
    let sandbox = through(&proxy, &created);
    let (status, body) = w.sandbox_get(&sandbox, "/api/me").await;
    assert_eq!(status, 200, "{body}");

    w.airlock.stop();
    // The change stream is gone, the vault too: the token it gave still serves.
    let (status, body) = w.sandbox_get(&sandbox, "/api/me").await;
    assert_eq!(status, 200, "the held token serves while valid: {body}");
    // Past its expiry (less the margin), a clear 503.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        let (status, body) = w.sandbox_get(&sandbox, "/api/me").await;
        if status != 200 || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("vault"), "{body}");
    w.assert_no_secret_in(&[&body, &proxy.logs()]);
}

/// `POST /v1/service/refresh` on `vault_url` with the failed token; the token it answers.
fn refresh_on(
    vault_url: &str,
    placeholder: &str,
    failed: &str,
    max_secs: u32,
) -> crate::support::clients::Output {
    let body = serde_json::json!({
        "sandbox": "default",
        "placeholder": placeholder,
        "failed_token": failed,
    })
    .to_string();
    let auth = format!("Authorization: Bearer {SERVICE}");
    let url = format!("{vault_url}/v1/service/refresh");
    let limit = max_secs.to_string();
    crate::support::clients::curl(
        &[],
        &[
            "--max-time",
            &limit,
            "-H",
            &auth,
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
            &url,
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_refresh_leaves_the_refresh_to_the_other() {
    let Some(database) = fresh_database() else {
        return;
    };
    let db = database.url();
    let ca = TestCa::new();
    let provider = acme_provider(&ca).await;
    // Nothing falls due by itself: every grant counted is the test's.
    provider.set_access_token_lifetime(Duration::from_secs(4 * 3600));
    let cfg = acme_config(
        &ca,
        provider.port(),
        &format!("database_url = {db:?}\nrefresh_interval_secs = 3600"),
        "",
    );
    let env = FLEET_ENV;
    let a = Airlock::start_with_env(&cfg, &env);
    let b = Airlock::start_with_env(&cfg, &env);
    let placeholder = a.var("ACME_TOKEN");
    let (a_url, b_url, a_pid) = (a.vault_url(), b.vault_url(), a.pid());
    let w = World {
        ca,
        provider,
        airlock: a,
    };
    w.connect("tenant").await;
    let old = w.provider.issued_access_tokens()[0].clone();

    // Replica A takes the lease and calls the provider, which is slow today.
    w.provider.set_token_delay(Duration::from_secs(3));
    let (ph, failed) = (placeholder.clone(), old.clone());
    let in_flight = tokio::task::spawn_blocking(move || refresh_on(&a_url, &ph, &failed, 10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.provider.token_requests("refresh_token") == 0 {
        assert!(
            Instant::now() < deadline,
            "replica A never asked the provider"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killed while the provider is answering.
    let killed = std::process::Command::new("kill")
        .args(["-9", &a_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = in_flight.await;
    w.provider.set_token_delay(Duration::ZERO);

    // Replica B, asked with the same failed token, finishes it once A's lease runs out.
    let started = Instant::now();
    let (ph, failed) = (placeholder.clone(), old.clone());
    let out = tokio::task::spawn_blocking(move || refresh_on(&b_url, &ph, &failed, 40))
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    let token = answer["token"].as_str().expect("a token");
    assert_ne!(token, old, "a new token");
    eprintln!(
        "replica B finished the refresh {} ms after A died",
        started.elapsed().as_millis()
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    // A's grant never completed (its connection went with it): one grant in all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(w.provider.refresh_count(), 1, "the provider saw one grant");
    assert_eq!(w.provider.issued_access_tokens().last().unwrap(), token);
    drop(b);
}

/// The provider's token endpoint down for a minute while the token runs
/// out: requests get a clear 503 (never "reconnect needed"), refreshes back
/// off instead of following every request, and the first request after the
/// provider is back is served with a new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_down_for_a_minute_costs_503s_not_the_connection() {
    let w = super::vault::world(
        "refresh_interval_secs = 2\nrefresh_window_secs = 10\nrefresh_backoff_secs = 5\nrefresh_backoff_max_secs = 10\nrefresh_cooldown_secs = 0",
        "",
    )
    .await;
    // Runs out 40 s after the grant: inside the outage.
    w.provider
        .set_access_token_lifetime(Duration::from_secs(40));
    w.connect("tenant").await;
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");

    w.provider.set_fail_with_5xx(true);
    let down = Instant::now();
    let before = w.provider.token_requests("refresh_token");
    let mut statuses = Vec::new();
    while down.elapsed() < Duration::from_secs(60) {
        let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
        assert!(
            status == 200 || status == 503,
            "during the outage: {status} {body}"
        );
        if status == 503 {
            assert!(!body.contains("reconnect"), "{body}");
        }
        statuses.push(status);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let during = w.provider.token_requests("refresh_token") - before;
    eprintln!(
        "outage: {} requests ({} served, {} answered 503), {during} refresh attempts",
        statuses.len(),
        statuses.iter().filter(|s| **s == 200).count(),
        statuses.iter().filter(|s| **s == 503).count()
    );
    assert!(
        statuses.contains(&503),
        "the token ran out during the outage"
    );
    // Backed off: far fewer grants than requests and background passes.
    assert!(during <= 12, "{during} refresh attempts in a minute");

    w.provider.set_fail_with_5xx(false);
    let back = Instant::now();
    let (status, body) = loop {
        let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
        if status == 200 || back.elapsed() > Duration::from_secs(20) {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        status, 200,
        "served again once the provider is back: {body}"
    );
    eprintln!(
        "served again {} ms after the provider came back",
        back.elapsed().as_millis()
    );
    let (_, connections) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    assert_eq!(connections[0]["status"], "connected", "{connections}");
    w.assert_no_secret_in(&[&body, &w.airlock.logs()]);
}

/// PostgreSQL restarted (and down for three seconds) while a sandbox keeps
/// calling through a remote proxy: every request is served from the tokens
/// the proxy holds, both replicas reconnect, their LISTEN too (a disconnect
/// made on one afterwards still reaches the proxy behind the other), and the
/// connection is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_under_load_loses_nothing() {
    let Some(pg) = crate::support::private_pg::PrivatePostgres::start() else {
        crate::support::skip(
            "the restart test needs root and PostgreSQL's server binaries (apt-get install postgresql)",
        );
        return;
    };
    let ca = TestCa::new();
    let provider = acme_provider(&ca).await;
    let db = format!("database_url = {:?}", pg.url());
    let vault_a = start_vault(&ca, &provider, &db);
    let vault_b = start_vault(&ca, &provider, &db);
    let proxy = start_proxy(&ca, &provider, &vault_a);
    let w = World {
        ca,
        provider,
        airlock: vault_a,
    };
    let created = connected_sandbox(&w).await;
    let sandbox = through(&proxy, &created);
    let (status, body) = w.sandbox_get(&sandbox, "/api/me").await;
    assert_eq!(status, 200, "{body}");

    // Load: four clients calling for twelve seconds.
    let load_env = sandbox.clone();
    let load = tokio::task::spawn_blocking(move || {
        let script = r#"
import os, time, requests, concurrent.futures
ph = os.environ['ACME_TOKEN']
def run():
    seen = {}
    end = time.time() + 12
    with requests.Session() as s:
        while time.time() < end:
            try:
                r = s.get('https://api.acme.test/api/me', headers={'Authorization': 'Bearer ' + ph}, timeout=10)
                seen[r.status_code] = seen.get(r.status_code, 0) + 1
            except Exception as e:
                seen[type(e).__name__] = seen.get(type(e).__name__, 0) + 1
            time.sleep(0.05)
    return seen
with concurrent.futures.ThreadPoolExecutor(4) as ex:
    total = {}
    for seen in ex.map(lambda _: run(), range(4)):
        for k, v in seen.items():
            total[str(k)] = total.get(str(k), 0) + v
print(total)
"#;
        let mut env = load_env;
        let bundle = env
            .iter()
            .find(|(k, _)| k == "CURL_CA_BUNDLE")
            .map(|(_, v)| v.clone())
            .unwrap();
        env.push(("REQUESTS_CA_BUNDLE".into(), bundle));
        crate::support::clients::python(&env, script)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.ctl("stop");
        std::thread::sleep(Duration::from_secs(3));
        pg.ctl("start");
        pg
    })
    .await
    .unwrap();
    let out = load.await.unwrap();
    eprintln!("load across the restart: {}", out.stdout.trim());
    let counts: serde_json::Value = serde_json::from_str(&out.stdout.trim().replace('\'', "\""))
        .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    let counts = counts.as_object().unwrap();
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["200"],
        "every request served: {counts:?}"
    );
    assert!(counts["200"].as_u64().unwrap() > 40, "{counts:?}");

    // Both replicas are back: B answers, and a disconnect made on B reaches
    // the proxy behind A (A listens again).
    let deadline = Instant::now() + Duration::from_secs(20);
    let connections = loop {
        let (status, list) =
            api(&vault_b, "GET", "/v1/connections", None, Some(ADMIN.into())).await;
        if status == 200 || Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        connections[0]["status"], "connected",
        "nothing lost: {connections}"
    );
    let id = connections[0]["id"].as_str().unwrap().to_owned();
    let disconnected = Instant::now();
    let (status, body) = api(
        &vault_b,
        "DELETE",
        &format!("/v1/connections/{id}"),
        None,
        Some(ADMIN.into()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let after = time_until_refused(&w, &sandbox, disconnected).await;
    eprintln!(
        "after the restart, a disconnect on B reached the proxy behind A in {} ms",
        after.as_millis()
    );
    assert!(after < Duration::from_secs(5), "{after:?}");
    drop(pg);
}
