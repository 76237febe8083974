//! The refresh path in-process, against a small fake token endpoint on
//! loopback (plain HTTP, which the catalog allows there).

use std::time::Instant;

use airlock_vault_client::{SandboxId, TokenError, TokenSource};
use secrecy::{ExposeSecret, SecretString};

use super::*;
use crate::oauth::RawAnswer;
use crate::store::{now, ConnectionStatus, GrantKind, NewConnection, ScopeKind};
use crate::VaultSettings;

mod accounts;
mod fixtures;

use fixtures::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_provoked_refreshes_cause_one_grant() {
    let (fake, w) = acme_world(settings()).await;
    connection(&w.vault, "acme", true, 3600).await;
    let (sbx, ph) = sandbox(&w.vault, "acme").await;
    for _ in 0..100 {
        let current = SecretString::from(token_of(&w.vault, &sbx, &ph).await);
        w.vault.refresh(&sbx, &ph, &current).await.unwrap();
    }
    // And concurrently, with the token of before the first refresh.
    let old = SecretString::from("at0");
    let calls = (0..50).map(|_| w.vault.refresh(&sbx, &ph, &old)).collect();
    for r in join_all(calls).await {
        assert_eq!(r.unwrap().token.expose_secret(), "at1");
    }
    assert_eq!(fake.granted(), 1, "one grant at the provider");
    let stats = w.vault.refresh_stats();
    assert_eq!(stats.granted, 1);
    assert_eq!(stats.refused_by_budget, 99);
}

/// Polls the futures together, so they race for the same lease.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(|r| r.unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_provider_delays_only_its_own_connection() {
    hanging_provider(None).await;
    match crate::store::tests::fresh_postgres().await {
        Some(url) => hanging_provider(Some(url)).await,
        None => eprintln!("SKIPPED the PostgreSQL run: no server at 127.0.0.1:5432"),
    }
}

async fn hanging_provider(postgres: Option<String>) {
    let (slow, fast) = (Fake::new(), Fake::new());
    let (slow_port, fast_port) = (serve(slow.clone()).await, serve(fast.clone()).await);
    let catalog = format!(
        "{}\n{}",
        provider_toml("slow", "SLOW_TOKEN", slow_port, false),
        provider_toml("fast", "FAST_TOKEN", fast_port, false)
    );
    let w = match postgres {
        Some(url) => World {
            vault: open(&url, &catalog, settings()).await,
            url,
            _dir: tempfile::tempdir().unwrap(),
        },
        None => world(&catalog, settings()).await,
    };
    connection(&w.vault, "slow", true, 3600).await;
    let fast_id = connection(&w.vault, "fast", true, 3600).await;
    let (slow_sbx, slow_ph) = sandbox(&w.vault, "slow").await;
    let (fast_sbx, fast_ph) = sandbox(&w.vault, "fast").await;
    slow.delay_ms.store(20_000, Ordering::SeqCst);
    let vault = w.vault.clone();
    let (s, p) = (slow_sbx.clone(), slow_ph.clone());
    let hanging =
        tokio::spawn(async move { vault.refresh(&s, &p, &SecretString::from("at0")).await });
    while slow.requests() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    // Another connection refreshes, a connect flow starts, an app is
    // written, a still-valid token of the hanging one is served, and the
    // other connection is disconnected.
    let fresh = w
        .vault
        .refresh(&fast_sbx, &fast_ph, &SecretString::from("at0"))
        .await
        .unwrap();
    assert_eq!(fresh.token.expose_secret(), "at1");
    w.vault
        .start_connect(
            "default",
            &crate::Scope::User("u".into()),
            "slow",
            None,
            "default",
        )
        .await
        .unwrap();
    w.vault
        .set_app("default", "slow", "default", "cid2", None)
        .await
        .unwrap();
    assert_eq!(token_of(&w.vault, &slow_sbx, &slow_ph).await, "at0");
    w.vault.disconnect(&fast_id, false).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} while a refresh hung"
    );
    assert!(!hanging.is_finished(), "the slow refresh is still running");
    hanging.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_does_not_abandon_the_refresh() {
    let (fake, w) = acme_world(settings()).await;
    let id = connection(&w.vault, "acme", true, 3600).await;
    let (sbx, ph) = sandbox(&w.vault, "acme").await;
    fake.delay_ms.store(500, Ordering::SeqCst);
    let gone = tokio::time::timeout(
        Duration::from_millis(100),
        w.vault.refresh(&sbx, &ph, &SecretString::from("at0")),
    )
    .await;
    assert!(gone.is_err(), "the caller gave up");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let row = w.vault.store.connection(&id).await.unwrap().unwrap();
        if row.lease_owner.is_none() {
            assert_eq!(row.token_version, 2, "the refresh was written");
            break;
        }
        assert!(Instant::now() < deadline, "the lease was left behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fake.delay_ms.store(0, Ordering::SeqCst);
    let got = w
        .vault
        .refresh(&sbx, &ph, &SecretString::from("at0"))
        .await
        .unwrap();
    assert_eq!(got.token.expose_secret(), "at1");
    assert_eq!(fake.granted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_off_ends_and_callers_in_the_window_do_not_extend_it() {
    let (fake, w) = acme_world(settings()).await;
    // Already expired: every resolve wants a refresh.
    connection(&w.vault, "acme", true, -10).await;
    let (sbx, ph) = sandbox(&w.vault, "acme").await;
    fake.set(Mode::Down);
    let first = token_of(&w.vault, &sbx, &ph).await;
    assert!(first.contains("unavailable"), "{first}");
    assert_eq!(fake.requests(), 1);
    fake.set(Mode::Ok);
    // Poll every 50 ms: the window (1 s base, jitter 50-100 %) still ends.
    let started = Instant::now();
    let mut answer = String::new();
    while started.elapsed() < Duration::from_secs(5) {
        answer = token_of(&w.vault, &sbx, &ph).await;
        if answer == "at1" {
            break;
        }
        assert!(
            answer.contains("waiting before the next refresh"),
            "{answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        answer, "at1",
        "the provider was used again after the window"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        fake.requests(),
        2,
        "callers in the window did not call the provider"
    );
    assert!(w.vault.refresh_stats().backed_off > 0);
}

#[test]
fn back_off_doubles_with_jitter_up_to_the_cap() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let settings = VaultSettings {
            refresh_backoff: Duration::from_secs(10),
            refresh_backoff_max: Duration::from_secs(60),
            ..VaultSettings::default()
        };
        let w = world(&provider_toml("acme", "ACME_TOKEN", 9, false), settings).await;
        let id = connection(&w.vault, "acme", true, 3600).await;
        let row = w.vault.store.connection(&id).await.unwrap().unwrap();
        for (step, (low, high)) in [(5, 10), (10, 20), (20, 40), (30, 60), (30, 60)]
            .into_iter()
            .enumerate()
        {
            let before = Instant::now();
            w.vault.back_off(&row, "test");
            let wait = w.vault.backoff.get(&id).unwrap().until - before;
            assert!(
                wait >= Duration::from_secs(low) - Duration::from_millis(50)
                    && wait <= Duration::from_secs(high) + Duration::from_millis(50),
                "step {step}: {wait:?}"
            );
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_in_as_a_string_works() {
    let (fake, w) = acme_world(settings()).await;
    let id = connection(&w.vault, "acme", true, -1).await;
    let (sbx, ph) = sandbox(&w.vault, "acme").await;
    fake.set(Mode::StringExpiry);
    fake.lifetime.store(60, Ordering::SeqCst);
    assert_eq!(token_of(&w.vault, &sbx, &ph).await, "at1");
    let row = w.vault.store.connection(&id).await.unwrap().unwrap();
    let left = row.expires_at.unwrap() - now();
    assert!((58..=60).contains(&left), "{left}");
    assert!(row.pending_grant.is_none() && row.lease_owner.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_answer_keeps_its_rotated_refresh_token() {
    let (fake, w) = acme_world(settings()).await;
    let id = connection(&w.vault, "acme", true, 30).await;
    let (sbx, ph) = sandbox(&w.vault, "acme").await;
    fake.set(Mode::Garbage);
    // Unreadable: the still-valid token is served, the new refresh token kept.
    let got = w
        .vault
        .refresh(&sbx, &ph, &SecretString::from("at0"))
        .await
        .unwrap();
    assert_eq!(got.token.expose_secret(), "at0");
    let row = w.vault.store.connection(&id).await.unwrap().unwrap();
    let refresh = w
        .vault
        .keyring
        .open(
            "connections.refresh_token",
            &id,
            row.refresh_token.as_ref().unwrap(),
        )
        .unwrap();
    assert_eq!(
        refresh.expose_secret(),
        "rt1",
        "the rotated refresh token was kept"
    );
    assert!(row.pending_grant.is_none() && row.lease_owner.is_none());
    assert_eq!(w.vault.refresh_stats().salvaged, 1);
    // After the back-off, the next refresh uses it and the provider accepts it.
    fake.set(Mode::Ok);
    w.vault.backoff.clear();
    let got = w
        .vault
        .refresh(&sbx, &ph, &SecretString::from("at0"))
        .await
        .unwrap();
    assert_eq!(got.token.expose_secret(), "at2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_kept_before_a_crash_is_read_at_the_next_start() {
    let fake = Fake::new();
    let port = serve(fake.clone()).await;
    let catalog = provider_toml("acme", "ACME_TOKEN", port, false);
    let w = world(&catalog, settings()).await;
    let id = connection(&w.vault, "acme", true, 3600).await;
    // A refresh got its answer and kept it, then the process died.
    let row = w.vault.store.connection(&id).await.unwrap().unwrap();
    assert!(w
        .vault
        .store
        .take_lease(&id, "dead-process", now() + 60, row.token_version)
        .await
        .unwrap());
    let answer = RawAnswer {
        status: 200,
        body: br#"{"access_token":"at-kept","expires_in":"120","refresh_token":"rt-kept"}"#
            .to_vec(),
        received_at: now(),
    };
    let sealed = w
        .vault
        .keyring
        .seal("connections.pending_grant", &id, &answer.to_secret());
    assert!(w
        .vault
        .store
        .keep_answer(&id, "dead-process", &sealed)
        .await
        .unwrap());
    let again = open(&w.url, &catalog, settings()).await;
    let row = again.store.connection(&id).await.unwrap().unwrap();
    assert!(
        row.pending_grant.is_none() && row.lease_owner.is_none(),
        "recovered at start"
    );
    let open_col = |col: &str, v: &crate::crypto::Sealed| {
        again
            .keyring
            .open(col, &id, v)
            .unwrap()
            .expose_secret()
            .to_owned()
    };
    assert_eq!(
        open_col(
            "connections.access_token",
            row.access_token.as_ref().unwrap()
        ),
        "at-kept"
    );
    assert_eq!(
        open_col(
            "connections.refresh_token",
            row.refresh_token.as_ref().unwrap()
        ),
        "rt-kept"
    );
    assert_eq!(row.status, ConnectionStatus::Connected);
    assert_eq!(fake.requests(), 0, "nothing was asked of the provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_401_without_a_refresh_token_is_checked_not_condemned() {
    let fake = Fake::new();
    let port = serve(fake.clone()).await;
    let catalog = format!(
        "{}\n{}",
        provider_toml("probed", "PROBED_TOKEN", port, true),
        provider_toml("plain", "PLAIN_TOKEN", port, false)
    );
    let w = world(&catalog, settings()).await;
    let probed = connection(&w.vault, "probed", false, 3600).await;
    let plain = connection(&w.vault, "plain", false, 3600).await;
    let (ps, pp) = sandbox(&w.vault, "probed").await;
    let (ns, np) = sandbox(&w.vault, "plain").await;
    let at0 = SecretString::from("at0");
    // No probe_url: the token comes back unchanged, whatever the sandbox does.
    for _ in 0..5 {
        let r = w.vault.refresh(&ns, &np, &at0).await.unwrap();
        assert_eq!(r.token.expose_secret(), "at0");
    }
    // The probe says the token is fine: unchanged; a second 401 within
    // the cool-down is not probed again.
    let r = w.vault.refresh(&ps, &pp, &at0).await.unwrap();
    assert_eq!(r.token.expose_secret(), "at0");
    w.vault.refresh(&ps, &pp, &at0).await.unwrap();
    assert_eq!(fake.probes.load(Ordering::SeqCst), 1);
    for id in [&probed, &plain] {
        let row = w.vault.store.connection(id).await.unwrap().unwrap();
        assert_eq!(row.status, ConnectionStatus::Connected);
    }
    // The probe says 401: now it needs a reconnect.
    fake.probe_status.store(401, Ordering::SeqCst);
    w.vault.probed.clear();
    let e = w.vault.refresh(&ps, &pp, &at0).await.err().unwrap();
    assert!(matches!(e, TokenError::ReconnectNeeded { .. }), "{e}");
    let row = w.vault.store.connection(&probed).await.unwrap().unwrap();
    assert_eq!(row.status, ConnectionStatus::ReconnectNeeded);
    assert_eq!(fake.requests(), 0, "no grant was tried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_refresher_refreshes_short_tokens_ahead_of_expiry() {
    let (fake, w) = acme_world(settings()).await;
    // 60 s token: due only in its last 6 s, but the next pass is 30 s away.
    let id = connection(&w.vault, "acme", true, 60).await;
    assert_eq!(
        w.vault.refresh_due(Duration::from_secs(5)).await,
        0,
        "not yet"
    );
    assert_eq!(w.vault.refresh_due(Duration::from_secs(60)).await, 1);
    let row = w.vault.store.connection(&id).await.unwrap().unwrap();
    assert!(
        row.expires_at.unwrap() > now() + 3000,
        "the new token was stored"
    );
    assert_eq!(fake.granted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_token_stays_guarded_until_it_expires() {
    let (_fake, w) = acme_world(settings()).await;
    connection(&w.vault, "acme", true, 3600).await;
    let (sbx, ph) = sandbox(&w.vault, "acme").await;
    // A refresh replaces at0, which still works for an hour: a proxy that
    // never saw it must still keep its echo from the sandbox.
    w.vault
        .refresh(&sbx, &ph, &SecretString::from("at0"))
        .await
        .unwrap();
    let guarded = w.vault.guarded_tokens(&sbx).await.unwrap();
    let mut tokens: Vec<&str> = guarded.iter().map(|g| g.token.expose_secret()).collect();
    tokens.sort();
    assert_eq!(tokens, ["at0", "at1"]);
    assert!(guarded.iter().all(|g| g.placeholder == ph));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_replaced_token_is_no_longer_guarded() {
    let (_fake, w) = acme_world(settings()).await;
    connection(&w.vault, "acme", true, -1).await;
    let (sbx, ph) = sandbox(&w.vault, "acme").await;
    assert_eq!(token_of(&w.vault, &sbx, &ph).await, "at1");
    let guarded = w.vault.guarded_tokens(&sbx).await.unwrap();
    let tokens: Vec<&str> = guarded.iter().map(|g| g.token.expose_secret()).collect();
    assert_eq!(tokens, ["at1"], "at0 had expired: nothing can obtain it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_grant_is_refreshed_to_keep_its_refresh_token_alive() {
    let keepalive = Duration::from_secs(24 * 3600);
    let (fake, w) = acme_world(VaultSettings {
        keepalive_refresh: keepalive,
        ..settings()
    })
    .await;
    // Hour-long tokens, far from expiry: never due.
    let idle = connection(&w.vault, "acme", true, 3600).await;
    assert_eq!(w.vault.refresh_due(Duration::from_secs(30)).await, 0);
    assert_eq!(fake.granted(), 0, "tokens obtained just now are left alone");

    // Obtained more than a day ago: one keep-alive grant, then quiet again.
    let day_ago = now() - keepalive.as_secs() as i64 - 60;
    w.vault.store.backdate_tokens(&idle, day_ago).await;
    assert_eq!(w.vault.refresh_due(Duration::from_secs(30)).await, 1);
    assert_eq!(fake.granted(), 1);
    let row = w.vault.store.connection(&idle).await.unwrap().unwrap();
    assert!(
        row.obtained_at.unwrap() > day_ago + 60,
        "the new tokens were stored"
    );
    assert_eq!(row.status, ConnectionStatus::Connected);
    assert_eq!(w.vault.refresh_due(Duration::from_secs(30)).await, 0);
    assert_eq!(fake.granted(), 1);

    // Without a refresh token there is nothing to keep alive, and nothing is marked.
    let (_, w2) = acme_world(VaultSettings {
        keepalive_refresh: keepalive,
        ..settings()
    })
    .await;
    let plain = connection(&w2.vault, "acme", false, 3600).await;
    w2.vault.store.backdate_tokens(&plain, day_ago).await;
    assert_eq!(w2.vault.refresh_due(Duration::from_secs(30)).await, 0);
    let row = w2.vault.store.connection(&plain).await.unwrap().unwrap();
    assert_eq!(row.status, ConnectionStatus::Connected);

    // Off: no keep-alive grant however old the tokens.
    let (fake3, w3) = acme_world(VaultSettings {
        keepalive_refresh: Duration::ZERO,
        ..settings()
    })
    .await;
    let old = connection(&w3.vault, "acme", true, 3600).await;
    w3.vault.store.backdate_tokens(&old, day_ago).await;
    assert_eq!(w3.vault.refresh_due(Duration::from_secs(30)).await, 0);
    assert_eq!(fake3.granted(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spawned_refresher_refreshes_with_no_traffic_and_stops_with_the_vault() {
    let (fake, w) = acme_world(settings()).await;
    // A 1 s token: due (a tenth of its lifetime left) within a second.
    let id = connection(&w.vault, "acme", true, 1).await;
    let task = w.vault.spawn_refresher(Duration::from_millis(50));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // The fake counts its grant before the vault has stored the answer:
    // wait for the row, not the counter.
    let stored = || async {
        let row = w.vault.store.connection(&id).await.unwrap().unwrap();
        row.expires_at.unwrap() > now() + 3000
    };
    while !stored().await && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stored().await, "the new token was stored");
    assert_eq!(fake.granted(), 1, "one background grant, no request made");
    // The task holds only a weak reference: it ends once the vault is gone.
    drop(w);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the refresher stopped with its vault")
        .unwrap();
}

#[tokio::test]
async fn an_app_is_not_deleted_while_a_connection_falls_back_to_it() {
    let (_fake, w) = acme_world(settings()).await;
    let v = &w.vault;
    // A tenant without an app of its own connects with the default tenant's.
    connection(v, "acme", true, 3600).await; // sets the default app
    v.store
        .upsert_connection(&NewConnection {
            tenant: "other",
            scope_kind: ScopeKind::Tenant,
            scope_name: "",
            provider: "acme",
            grant_kind: GrantKind::AuthorizationCode,
            scopes: "",
            environment: "default",
            client_id: None,
            token_url: None,
            name: "",
            env_name: None,
            hosts: None,
            app_tenant: None,
        })
        .await
        .unwrap();
    let of = |tenant: &'static str| async move {
        v.connections()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.tenant == tenant)
            .unwrap()
            .id
    };
    // The default tenant's own connection gone, the other tenant's still
    // refreshes with this app.
    v.store
        .delete_connection(&of("default").await)
        .await
        .unwrap();
    let err = v
        .delete_app("default", "acme", "default")
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Conflict(_)), "{err}");
    let other = of("other").await;
    assert!(err.to_string().contains(&other), "{err}");
    // With an app of its own, the other tenant no longer needs the default one.
    v.set_app(
        "other",
        "acme",
        "default",
        "cid2",
        Some(SecretString::from("s2")),
    )
    .await
    .unwrap();
    v.delete_app("default", "acme", "default").await.unwrap();
    // Its own app is in use by its connection.
    assert!(matches!(
        v.delete_app("other", "acme", "default").await.unwrap_err(),
        VaultError::Conflict(_)
    ));
    v.store.delete_connection(&other).await.unwrap();
    v.delete_app("other", "acme", "default").await.unwrap();
    assert!(v.apps().await.unwrap().is_empty());
    let err = v
        .delete_app("default", "acme", "default")
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn a_secret_of_the_sidecar_alone_is_deleted_with_its_placeholder() {
    let (_fake, w) = acme_world(settings()).await;
    let v = &w.vault;
    v.add_secret(
        "default",
        "LINEAR_KEY",
        SecretString::from("lin_value_1234"),
        vec!["api.linear.test".into()],
        None,
    )
    .await
    .unwrap();
    let sidecar = SandboxId::default_sandbox();
    let bound = v
        .ensure_sandbox(sidecar.as_str(), "default", &[], &["LINEAR_KEY".into()])
        .await
        .unwrap();
    let placeholder = bound[0].1.clone();
    assert!(v.resolve(&sidecar, &placeholder).await.is_ok());
    // `airlock up`'s own sandbox does not keep the secret alive.
    v.delete_secret("default", "LINEAR_KEY").await.unwrap();
    assert!(v
        .store
        .bindings_of(sidecar.as_str())
        .await
        .unwrap()
        .is_empty());
    let gone = v.resolve(&sidecar, &placeholder).await.unwrap_err();
    assert!(matches!(gone, TokenError::UnknownPlaceholder), "{gone}");
    assert!(matches!(
        v.delete_secret("default", "LINEAR_KEY").await.unwrap_err(),
        VaultError::NotFound(_)
    ));
}

/// Two providers on their own fake token endpoints, one with its own
/// `refresh_keepalive` line; a tenant connection of each, tokens an hour
/// from expiry (never due).
async fn keepalive_world(
    own: &str,
    global: Duration,
    postgres: Option<String>,
) -> (
    std::sync::Arc<Fake>,
    std::sync::Arc<Fake>,
    World,
    String,
    String,
) {
    let (own_fake, other_fake) = (Fake::new(), Fake::new());
    let (own_port, other_port) = (
        serve(own_fake.clone()).await,
        serve(other_fake.clone()).await,
    );
    let catalog = format!(
        "{}refresh_keepalive = \"{own}\"\n{}",
        provider_toml("own", "OWN_TOKEN", own_port, false),
        provider_toml("other", "OTHER_TOKEN", other_port, false)
    );
    let settings = VaultSettings {
        keepalive_refresh: global,
        ..settings()
    };
    let w = match postgres {
        Some(url) => World {
            vault: open(&url, &catalog, settings).await,
            url,
            _dir: tempfile::tempdir().unwrap(),
        },
        None => world(&catalog, settings).await,
    };
    let own_id = connection(&w.vault, "own", true, 3600).await;
    let other_id = connection(&w.vault, "other", true, 3600).await;
    (own_fake, other_fake, w, own_id, other_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_s_refresh_keepalive_overrides_the_vault_s() {
    provider_keepalive(None).await;
    if let Some(url) = crate::store::tests::postgres_for("the provider keep-alive test").await {
        provider_keepalive(Some(url)).await;
    }
}

async fn provider_keepalive(postgres: Option<String>) {
    let hour = 3600;
    let ahead = Duration::from_secs(30);
    // The vault's keep-alive off; "own" asks for an hour.
    let (own, other, w, own_id, other_id) =
        keepalive_world("1h", Duration::ZERO, postgres.clone()).await;
    // Refreshed half an hour ago: within the hour, left alone.
    w.vault
        .store
        .backdate_tokens(&own_id, now() - hour / 2)
        .await;
    w.vault
        .store
        .backdate_tokens(&other_id, now() - 2 * hour)
        .await;
    assert_eq!(w.vault.refresh_due(ahead).await, 0);
    assert_eq!((own.granted(), other.granted()), (0, 0));
    // Not refreshed for two hours: "own" gets one keep-alive grant; "other"
    // follows the vault's setting (off) however old its tokens.
    let two_hours_ago = now() - 2 * hour;
    w.vault.store.backdate_tokens(&own_id, two_hours_ago).await;
    assert_eq!(w.vault.refresh_due(ahead).await, 1);
    assert_eq!((own.granted(), other.granted()), (1, 0));
    let row = w.vault.store.connection(&own_id).await.unwrap().unwrap();
    assert!(row.obtained_at.unwrap() >= now() - 5, "new tokens stored");
    assert_eq!(row.status, ConnectionStatus::Connected);
    // Then quiet until the hour has passed again.
    assert_eq!(w.vault.refresh_due(ahead).await, 0);
    assert_eq!(own.granted(), 1);

    // The vault keeps grants alive daily; "own" says "0s": off for it alone.
    let day = 24 * hour;
    let again = match postgres {
        Some(_) => crate::store::tests::postgres_for("the provider keep-alive test").await,
        None => None,
    };
    let (own, other, w, own_id, other_id) =
        keepalive_world("0s", Duration::from_secs(day as u64), again).await;
    for id in [&own_id, &other_id] {
        w.vault.store.backdate_tokens(id, now() - 2 * day).await;
    }
    assert_eq!(w.vault.refresh_due(ahead).await, 1);
    assert_eq!((own.granted(), other.granted()), (0, 1));
}

/// The spawned background task, with no request at all: a provider whose
/// grants must be refreshed every second gets one while its access token
/// is an hour from expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spawned_refresher_keeps_a_provider_s_idle_grant_alive() {
    let (own, other, w, own_id, _) = keepalive_world("1s", Duration::ZERO, None).await;
    let first = w.vault.store.connection(&own_id).await.unwrap().unwrap();
    let task = w.vault.spawn_refresher(Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(15);
    let refreshed = || async {
        let row = w.vault.store.connection(&own_id).await.unwrap().unwrap();
        row.token_version > first.token_version && row.refreshed_at.is_some()
    };
    while !refreshed().await && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refreshed().await, "the idle grant was refreshed and stored");
    assert!(own.granted() >= 1);
    let row = w.vault.store.connection(&own_id).await.unwrap().unwrap();
    assert!(
        row.expires_at.unwrap() > now() + 3000,
        "an hour-long token again"
    );
    assert_eq!(
        other.granted(),
        0,
        "the other provider's grant was left alone"
    );
    drop(w);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the refresher stopped with its vault")
        .unwrap();
}
