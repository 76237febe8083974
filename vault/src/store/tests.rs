use super::*;
use crate::crypto::{Kek, Keyring};
use secrecy::{ExposeSecret, SecretString};

/// A fresh SQLite file, and a fresh PostgreSQL database when the server on
/// 127.0.0.1:5432 is reachable (said clearly when it is not).
async fn backends() -> Vec<(String, Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let mut out = vec![(
        sqlite_url.clone(),
        Store::open(&sqlite_url).await.unwrap(),
        Some(dir),
    )];
    if let Some(url) = postgres_for("store tests").await {
        out.push((url.clone(), Store::open(&url).await.unwrap(), None));
    }
    out
}

/// [`fresh_postgres`] for `what`; with no server, says the PostgreSQL run is
/// skipped, and fails under CI (`CI=true`), where the server must be there.
pub(crate) async fn postgres_for(what: &str) -> Option<String> {
    let url = fresh_postgres().await;
    if url.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what}: no PostgreSQL server at 127.0.0.1:5432 (database test), and CI=true"
        );
        eprintln!("SKIPPED PostgreSQL for {what}: no server at 127.0.0.1:5432 (database test)");
    }
    url
}

/// A fresh database on the local PostgreSQL, if one answers.
pub(crate) async fn fresh_postgres() -> Option<String> {
    use sqlx::ConnectOptions;
    sqlx::any::install_default_drivers();
    let admin_url = std::env::var("AIRLOCK_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let options: sqlx::any::AnyConnectOptions = admin_url.parse().ok()?;
    let mut conn = tokio::time::timeout(Duration::from_secs(3), options.connect())
        .await
        .ok()?
        .ok()?;
    let name = new_id("airlock_test");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .ok()?;
    let base = admin_url.rsplit_once('/').map(|(b, _)| b.to_owned())?;
    Some(format!("{base}/{name}"))
}

#[tokio::test]
async fn migrations_are_idempotent_and_data_survives_reopen() {
    for (url, store, _keep) in backends().await {
        let ring = Keyring::new(Kek::generate(), vec![]);
        let sealed = ring.seal(
            "apps.client_secret",
            "app_1",
            &SecretString::from("client-secret-value"),
        );
        store
            .upsert_app(
                "app_1",
                "default",
                "acme",
                "default",
                "cid",
                Some((&sealed, "alue")),
            )
            .await
            .unwrap();
        drop(store);
        let reopened = Store::open(&url).await.unwrap();
        let app = reopened
            .app("default", "acme", "default")
            .await
            .unwrap()
            .expect("app survives");
        assert_eq!(app.client_id, "cid");
        assert_eq!(app.client_secret, Some(sealed), "{url}");
    }
}

#[tokio::test]
async fn states_are_taken_once() {
    for (url, store, _keep) in backends().await {
        let ring = Keyring::new(Kek::generate(), vec![]);
        let row = StateRow {
            tenant: "t".into(),
            scope_kind: ScopeKind::Tenant,
            scope_name: String::new(),
            provider: "acme".into(),
            scopes: "read".into(),
            environment: "default".into(),
            pkce_verifier: ring.seal("oauth_states.pkce_verifier", "h", &SecretString::from("v")),
            expires_at: now() + 60,
            connect_link: Some("link-hash".into()),
            name: "work".into(),
            redirect_uri: Some("https://connect.customer.example/cb".into()),
            app_tenant: Some("default".into()),
            return_to: None,
        };
        store.insert_state("h", &row).await.unwrap();
        let peeked = store.unused_state("h").await.unwrap().expect("unused");
        assert_eq!(peeked.redirect_uri, row.redirect_uri, "{url}");
        let taken = store.take_state("h").await.unwrap().expect("the state");
        assert_eq!(taken.connect_link.as_deref(), Some("link-hash"), "{url}");
        assert_eq!(
            taken.redirect_uri.as_deref(),
            Some("https://connect.customer.example/cb"),
            "{url}"
        );
        assert_eq!(taken.app_tenant.as_deref(), Some("default"), "{url}");
        assert!(store.unused_state("h").await.unwrap().is_none(), "{url}");
        assert_eq!(taken.name, "work", "{url}");
        assert!(
            store.take_state("h").await.unwrap().is_none(),
            "{url}: a state is single-use"
        );
        assert!(store.take_state("other").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn connect_links_are_found_while_live_and_used_once() {
    for (url, store, _keep) in backends().await {
        let ring = Keyring::new(Kek::generate(), vec![]);
        let link = |hash: &str, expires_at: i64| LinkRow {
            id_hash: hash.into(),
            link_id: ring.seal("connect_links.link_id", hash, &SecretString::from("id")),
            sandbox_id: "sbx".into(),
            provider: "acme".into(),
            created_at: now(),
            expires_at,
            used_at: None,
            scopes: None,
            connection_name: None,
        };
        store.insert_link(&link("old", now() + 10)).await.unwrap();
        store.insert_link(&link("new", now() + 100)).await.unwrap();
        let live = store
            .live_link("sbx", "acme", None, None, now())
            .await
            .unwrap();
        assert_eq!(live.unwrap().id_hash, "new", "{url}: the longest-lived");
        assert!(store
            .live_link("sbx", "acme", None, None, now() + 200)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .live_link("other", "acme", None, None, now())
            .await
            .unwrap()
            .is_none());
        assert!(store.use_link("new").await.unwrap());
        assert!(!store.use_link("new").await.unwrap(), "{url}: once");
        let live = store
            .live_link("sbx", "acme", None, None, now())
            .await
            .unwrap();
        assert_eq!(
            live.unwrap().id_hash,
            "old",
            "{url}: a used link is not handed out"
        );
        store.unuse_link("new").await.unwrap();
        assert!(store.link("new").await.unwrap().unwrap().used_at.is_none());
        assert!(store.link("missing").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn the_most_specific_connection_wins() {
    for (url, store, _keep) in backends().await {
        let ring = Keyring::new(Kek::generate(), vec![]);
        for (kind, name) in [
            (ScopeKind::Tenant, ""),
            (ScopeKind::Workspace, "ws"),
            (ScopeKind::User, "alice"),
            (ScopeKind::Machine, "bot"),
        ] {
            let id = store
                .upsert_connection(&NewConnection {
                    tenant: "t",
                    scope_kind: kind,
                    scope_name: name,
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
            let token = ring.seal(
                "connections.access_token",
                &id,
                &SecretString::from(format!("tok-{kind}")),
            );
            store
                .store_tokens(
                    &id,
                    &TokenUpdate {
                        access_token: token,
                        refresh_token: None,
                        expires_at: None,
                    },
                )
                .await
                .unwrap();
        }
        let pick = |ws: Option<&'static str>, user: Option<&'static str>| {
            let store = store.clone();
            async move {
                store
                    .visible_connection("t", "default", "acme", ws, user)
                    .await
                    .unwrap()
                    .unwrap()
                    .scope_kind
            }
        };
        assert_eq!(
            pick(Some("ws"), Some("alice")).await,
            ScopeKind::User,
            "{url}"
        );
        assert_eq!(pick(Some("ws"), Some("bob")).await, ScopeKind::Workspace);
        assert_eq!(pick(None, Some("bob")).await, ScopeKind::Tenant);
        assert!(store
            .visible_connection("other", "default", "acme", None, None)
            .await
            .unwrap()
            .is_none());
    }
}

async fn connection_with_token(store: &Store, ring: &Keyring, provider: &str) -> String {
    let id = store
        .upsert_connection(&NewConnection {
            tenant: "t",
            scope_kind: ScopeKind::Tenant,
            scope_name: "",
            provider,
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
    let update = TokenUpdate {
        access_token: ring.seal("connections.access_token", &id, &SecretString::from("a0")),
        refresh_token: Some(ring.seal("connections.refresh_token", &id, &SecretString::from("r0"))),
        expires_at: Some(now() + 60),
    };
    store.store_tokens(&id, &update).await.unwrap();
    id
}

#[tokio::test]
async fn a_revoke_pending_connection_is_never_handed_out_or_brought_back() {
    for (url, store, _keep) in backends().await {
        let ring = Keyring::new(Kek::generate(), vec![]);
        let new = NewConnection {
            tenant: "t",
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
        };
        let id = store.upsert_connection(&new).await.unwrap();
        let update = |v: &str| TokenUpdate {
            access_token: ring.seal(
                "connections.access_token",
                &id,
                &SecretString::from(v.to_owned()),
            ),
            refresh_token: None,
            expires_at: None,
        };
        store.store_tokens(&id, &update("a1")).await.unwrap();
        assert!(store
            .visible_connection("t", "default", "acme", None, None)
            .await
            .unwrap()
            .is_some());
        store.mark_revoke_pending(&id, "HTTP 500").await.unwrap();
        let row = store.connection(&id).await.unwrap().unwrap();
        assert_eq!(row.status, ConnectionStatus::RevokePending, "{url}");
        assert!(store
            .visible_connection("t", "default", "acme", None, None)
            .await
            .unwrap()
            .is_none());
        // A refresh finishing late, or a refused one, does not revive it.
        store.store_tokens(&id, &update("a2")).await.unwrap();
        store
            .set_status(&id, ConnectionStatus::ReconnectNeeded, Some("x"))
            .await
            .unwrap();
        let row = store.connection(&id).await.unwrap().unwrap();
        assert_eq!(row.status, ConnectionStatus::RevokePending);
        // Connecting the same account again waits for the revocation.
        assert!(matches!(
            store.upsert_connection(&new).await,
            Err(VaultError::Conflict(_))
        ));
        assert_eq!(store.revoke_pending().await.unwrap().len(), 1);
        store.clear_token(&id, false).await.unwrap();
        assert!(store
            .connection(&id)
            .await
            .unwrap()
            .unwrap()
            .access_token
            .is_none());
        assert!(store.delete_revoked(&id).await.unwrap());
        assert!(store.connection(&id).await.unwrap().is_none());
        assert!(store.upsert_connection(&new).await.is_ok());
    }
}

#[tokio::test]
async fn one_lease_holder_at_a_time_and_no_transaction_held() {
    for (url, store, _keep) in backends().await {
        let ring = Keyring::new(Kek::generate(), vec![]);
        let id = connection_with_token(&store, &ring, "acme").await;
        let version = store.connection(&id).await.unwrap().unwrap().token_version;
        // Twenty callers race for the lease: exactly one gets it.
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let (store, id) = (store.clone(), id.clone());
                tokio::spawn(async move {
                    store
                        .take_lease(&id, &format!("owner{i}"), now() + 60, version)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1, "{url}");
        let row = store.connection(&id).await.unwrap().unwrap();
        let owner = row.lease_owner.clone().unwrap();
        assert!(row.leased(now()));
        // While it is held, other writers are not blocked (no open transaction).
        let other = connection_with_token(&store, &ring, "other").await;
        let other_row = store.connection(&other).await.unwrap().unwrap();
        assert_ne!(other_row.id, id);
        store
            .set_status(&other, ConnectionStatus::Connected, None)
            .await
            .unwrap();
        // Keep an answer, then end with new tokens: one compare-and-set.
        let answer = ring.seal(
            "connections.pending_grant",
            &id,
            &SecretString::from("200 1 e30="),
        );
        assert!(store.keep_answer(&id, &owner, &answer).await.unwrap());
        assert!(!store.keep_answer(&id, "intruder", &answer).await.unwrap());
        let pending = store.connection(&id).await.unwrap().unwrap();
        assert_eq!(pending.pending_grant, Some(answer), "{url}");
        let update = TokenUpdate {
            access_token: ring.seal("connections.access_token", &id, &SecretString::from("a1")),
            refresh_token: None,
            expires_at: Some(now() + 120),
        };
        assert!(
            !store
                .finish_lease(&id, "intruder", version, &LeaseEnd::Tokens(update))
                .await
                .unwrap(),
            "{url}: only the holder writes"
        );
        let update = TokenUpdate {
            access_token: ring.seal("connections.access_token", &id, &SecretString::from("a1")),
            refresh_token: None,
            expires_at: Some(now() + 120),
        };
        assert!(store
            .finish_lease(&id, &owner, version, &LeaseEnd::Tokens(update))
            .await
            .unwrap());
        let row = store.connection(&id).await.unwrap().unwrap();
        assert_eq!(row.token_version, version + 1);
        assert!(
            row.lease_owner.is_none() && row.pending_grant.is_none(),
            "{url}"
        );
        assert!(row.refreshed_at.is_some());
        assert!(
            row.refresh_token.is_some(),
            "{url}: a grant without one keeps the old"
        );
        let opened = ring
            .open(
                "connections.access_token",
                &id,
                row.access_token.as_ref().unwrap(),
            )
            .unwrap();
        assert_eq!(opened.expose_secret(), "a1");
    }
}

#[tokio::test]
async fn a_reconnect_during_a_refresh_wins_and_dead_leases_run_out() {
    for (url, store, _keep) in backends().await {
        let ring = Keyring::new(Kek::generate(), vec![]);
        let id = connection_with_token(&store, &ring, "acme").await;
        let version = store.connection(&id).await.unwrap().unwrap().token_version;
        assert!(store
            .take_lease(&id, "slow", now() + 60, version)
            .await
            .unwrap());
        // Reconnect: same tenant, scope and provider.
        connection_with_token(&store, &ring, "acme").await;
        let status = LeaseEnd::Status {
            status: ConnectionStatus::ReconnectNeeded,
            reason: Some("invalid_grant".into()),
        };
        assert!(
            !store
                .finish_lease(&id, "slow", version, &status)
                .await
                .unwrap(),
            "{url}: the refresh result of the old grant is dropped"
        );
        let row = store.connection(&id).await.unwrap().unwrap();
        assert_eq!(row.status, ConnectionStatus::Connected);
        assert!(row.lease_owner.is_none(), "a reconnect clears the lease");
        // A holder that died: its lease runs out and can be taken over.
        let version = row.token_version;
        assert!(store
            .take_lease(&id, "dead", now() - 1, version)
            .await
            .unwrap());
        assert!(store
            .take_lease(&id, "next", now() + 60, version)
            .await
            .unwrap());
        assert!(!store
            .take_lease(&id, "third", now() + 60, version)
            .await
            .unwrap());
        // Stale leases are dropped at start: all of them, or the expired ones.
        assert_eq!(store.release_stale_leases(false).await.unwrap(), 0, "{url}");
        assert_eq!(store.release_stale_leases(true).await.unwrap(), 1, "{url}");
        assert!(store
            .take_lease(&id, "after-restart", now() + 60, version)
            .await
            .unwrap());
        assert!(store
            .finish_lease(&id, "after-restart", version, &LeaseEnd::Release)
            .await
            .unwrap());
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_sqlite_file_is_created_for_its_owner_only_without_mode_in_the_url() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    // No `?mode=rwc`: SQLite alone would refuse with "unable to open database file".
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    // Opening migrated it: SQLite wrote the schema into the file made above.
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    drop(store);

    // An existing file readable by others is tightened.
    let wide = dir.path().join("wide.db");
    std::fs::write(&wide, b"").unwrap();
    std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o644)).unwrap();
    Store::open(&format!("sqlite:{}?mode=rwc", wide.display()))
        .await
        .unwrap();
    assert_eq!(mode(&wide), 0o600);
    for wal in ["wide.db-wal", "wide.db-shm"] {
        let p = dir.path().join(wal);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{wal}");
        }
    }

    // A read-only URL for a missing file is SQLite's to refuse: nothing is created.
    let missing = dir.path().join("missing.db");
    assert!(
        Store::open(&format!("sqlite://{}?mode=ro", missing.display()))
            .await
            .is_err()
    );
    assert!(!missing.exists());
}

/// A database of schema 8 with connections, a sandbox and a binding in it
/// keeps them all through migration 9: the unnamed connection stays
/// unnamed in environment `default`, a machine account is named after
/// itself, the sandbox is in `default` and its binding unpinned.
#[tokio::test]
async fn migration_9_keeps_connections_sandboxes_and_bindings() {
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("m.db").display()
    )];
    match fresh_postgres().await {
        Some(url) => urls.push(url),
        None => eprintln!("SKIPPED PostgreSQL migration test: no server at 127.0.0.1:5432"),
    }
    for url in urls {
        let old = Store::open_at(&url, 8).await.unwrap();
        for (id, kind, name) in [("conn_t", "tenant", ""), ("conn_m", "machine", "bot")] {
            sqlx::query(
                "INSERT INTO connections (id, tenant, scope_kind, scope_name, provider, grant_kind, status, scopes, \
                 environment, created_at, updated_at) VALUES ($1, 't', $2, $3, 'acme', 'authorization_code', \
                 'connected', 'read', 'default', 1, 1)",
            )
            .bind(id)
            .bind(kind)
            .bind(name)
            .execute(&old.pool)
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO sandboxes (id, tenant, secret_hash, created_at) VALUES ('sbx', 't', 'h', 1)",
        )
        .execute(&old.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO bindings (placeholder, sandbox_id, env_name, target_kind, target) \
             VALUES ('ph', 'sbx', 'ACME_TOKEN', 'provider', 'acme')",
        )
        .execute(&old.pool)
        .await
        .unwrap();
        drop(old);

        let store = Store::open(&url).await.unwrap();
        let tenant = store.connection("conn_t").await.unwrap().unwrap();
        assert_eq!(
            (tenant.name.as_str(), tenant.environment.as_str()),
            ("", "default"),
            "{url}"
        );
        assert_eq!(tenant.scopes, "read");
        let machine = store.connection("conn_m").await.unwrap().unwrap();
        assert_eq!(machine.name, "bot", "{url}");
        assert_eq!(
            store.sandbox("sbx").await.unwrap().unwrap().environment,
            "default"
        );
        let binding = store.binding("ph").await.unwrap().unwrap();
        assert_eq!(binding.connection_name, None);
        assert_eq!(binding.id(), "provider:acme");
        let seen = store
            .visible_connection("t", "default", "acme", None, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            seen.id, "conn_t",
            "{url}: the tenant's before the machine account"
        );

        // Now the same owner's account may be connected in production too,
        // and under a name beside the unnamed one.
        let new = |environment: &'static str,
                   name: &'static str,
                   scope: (ScopeKind, &'static str)| NewConnection {
            tenant: "t",
            scope_kind: scope.0,
            scope_name: scope.1,
            provider: "acme",
            grant_kind: GrantKind::AuthorizationCode,
            scopes: "",
            environment,
            client_id: None,
            token_url: None,
            name,
            env_name: None,
            hosts: None,
            app_tenant: None,
        };
        let prod = store
            .upsert_connection(&new("production", "", (ScopeKind::Tenant, "")))
            .await
            .unwrap();
        assert_ne!(prod, "conn_t", "{url}");
        let work = store
            .upsert_connection(&new("default", "work", (ScopeKind::Tenant, "")))
            .await
            .unwrap();
        // Reconnecting a name is the same row; another owner may not take it.
        assert_eq!(
            store
                .upsert_connection(&new("default", "work", (ScopeKind::Tenant, "")))
                .await
                .unwrap(),
            work
        );
        let err = store
            .upsert_connection(&new("default", "work", (ScopeKind::User, "alice")))
            .await
            .unwrap_err();
        assert!(matches!(err, VaultError::Conflict(_)), "{url}: {err}");
        assert!(err.to_string().contains("\"work\""), "{err}");
        // The machine account's name is taken in its environment only.
        store
            .upsert_connection(&new("production", "bot", (ScopeKind::Tenant, "")))
            .await
            .unwrap();
        assert!(store
            .upsert_connection(&new("default", "bot", (ScopeKind::Tenant, "")))
            .await
            .is_err());
        assert_eq!(store.connections().await.unwrap().len(), 5, "{url}");
        assert_eq!(
            store.environments().await.unwrap(),
            ["default", "production"]
        );
    }
}

/// Migration 12 (white-label) keeps every connection working as before: a
/// tenant that used the default tenant's app keeps using it (and is marked
/// so), one with its own app keeps that, machine accounts carry their own.
#[tokio::test]
async fn migration_12_records_whose_app_each_connection_uses() {
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("m12.db").display()
    )];
    if let Some(url) = postgres_for("migration 12").await {
        urls.push(url);
    }
    let before = MIGRATIONS
        .iter()
        .position(|m| m.contains("CREATE TABLE tenant_settings"))
        .expect("the white-label migration");
    for url in urls {
        let old = Store::open_at(&url, before).await.unwrap();
        for (tenant, provider) in [("default", "acme"), ("own", "acme")] {
            sqlx::query(
                "INSERT INTO apps (id, tenant, provider, environment, client_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'default', 'cid', 1, 1)",
            )
            .bind(format!("app_{tenant}"))
            .bind(tenant)
            .bind(provider)
            .execute(&old.pool)
            .await
            .unwrap();
        }
        for (id, tenant, kind, client) in [
            ("conn_fallback", "borrower", "tenant", None),
            ("conn_own", "own", "tenant", None),
            ("conn_default", "default", "tenant", None),
            ("conn_machine", "borrower", "machine", Some("m-cid")),
        ] {
            sqlx::query(
                "INSERT INTO connections (id, tenant, scope_kind, scope_name, provider, grant_kind, status, scopes, \
                 environment, created_at, updated_at, client_id, name) VALUES ($1, $2, $3, '', 'acme', 'authorization_code', \
                 'connected', 'read', 'default', 1, 1, $4, $5)",
            )
            .bind(id)
            .bind(tenant)
            .bind(kind)
            .bind(client)
            .bind(if kind == "machine" { "bot" } else { "" })
            .execute(&old.pool)
            .await
            .unwrap();
        }
        drop(old);

        let store = Store::open(&url).await.unwrap();
        let issuer = |id: &'static str| {
            let store = store.clone();
            async move { store.connection(id).await.unwrap().unwrap().app_tenant }
        };
        assert_eq!(
            issuer("conn_fallback").await.as_deref(),
            Some("default"),
            "{url}"
        );
        assert_eq!(issuer("conn_own").await.as_deref(), Some("own"), "{url}");
        assert_eq!(
            issuer("conn_default").await.as_deref(),
            Some("default"),
            "{url}"
        );
        assert_eq!(issuer("conn_machine").await, None, "{url}");
        let borrower = store
            .tenant("borrower")
            .await
            .unwrap()
            .expect("kept on the fallback");
        assert_eq!(borrower.use_default_apps, 1, "{url}");
        assert!(store.tenant("own").await.unwrap().is_none(), "{url}");
        let conn = store.connection("conn_own").await.unwrap().unwrap();
        assert_eq!(
            (conn.scopes.as_str(), conn.status),
            ("read", ConnectionStatus::Connected)
        );
    }
}

/// Migration 13 (an OAuth 1.0a connection's token secret) keeps the
/// connections of the schema before it, without a token secret; an OAuth
/// 1.0a grant then writes its token and token secret in one statement.
#[tokio::test]
async fn migration_13_keeps_connections_and_adds_the_token_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("m13.db").display()
    )];
    if let Some(url) = postgres_for("migration 13").await {
        urls.push(url);
    }
    let ring = Keyring::new(Kek::generate(), vec![]);
    let before_13 = MIGRATIONS
        .iter()
        .position(|m| m.contains("ADD COLUMN token_secret"))
        .expect("migration 13 is listed");
    for url in urls {
        let old = Store::open_at(&url, before_13).await.unwrap();
        let token = ring.seal(
            "connections.access_token",
            "conn_o",
            &SecretString::from("at-old".to_owned()),
        );
        sqlx::query(
            "INSERT INTO connections (id, tenant, scope_kind, scope_name, provider, grant_kind, status, scopes, \
             environment, created_at, updated_at, access_token, name) VALUES ('conn_o', 't', 'tenant', '', 'acme', \
             'authorization_code', 'connected', 'read', 'default', 1, 1, $1, '')",
        )
        .bind(token.encode())
        .execute(&old.pool)
        .await
        .unwrap();
        drop(old);

        let store = Store::open(&url).await.unwrap();
        let row = store.connection("conn_o").await.unwrap().unwrap();
        assert_eq!(row.scopes, "read", "{url}");
        assert_eq!(
            row.access_token.as_ref().map(Sealed::encode),
            Some(token.encode())
        );
        assert!(row.token_secret.is_none(), "{url}");

        let update = TokenUpdate {
            access_token: ring.seal(
                "connections.access_token",
                "conn_o",
                &SecretString::from("at-new".to_owned()),
            ),
            refresh_token: None,
            expires_at: None,
        };
        let secret = ring.seal(
            "connections.token_secret",
            "conn_o",
            &SecretString::from("ts-new".to_owned()),
        );
        store
            .store_oauth1_tokens("conn_o", &update, &secret)
            .await
            .unwrap();
        let row = store.connection("conn_o").await.unwrap().unwrap();
        let open = |kind: &str, s: &Option<Sealed>| {
            ring.open(kind, "conn_o", s.as_ref().unwrap())
                .unwrap()
                .expose_secret()
                .to_owned()
        };
        assert_eq!(
            open("connections.access_token", &row.access_token),
            "at-new"
        );
        assert_eq!(
            open("connections.token_secret", &row.token_secret),
            "ts-new"
        );
        assert_eq!(row.expires_at, None);
        // Key rotation knows the new column.
        assert!(store
            .sealed_values()
            .await
            .unwrap()
            .iter()
            .any(|c| c.column == "token_secret" && c.kind() == "connections.token_secret"));
    }
}

/// Migration 14 (secrets of a signing kind) keeps the secrets written
/// before it as `static`, their value as sealed; a signing secret then
/// keeps its sealed keys, and key rotation knows them.
#[tokio::test]
async fn migration_14_keeps_old_secrets_static_and_seals_signing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("m14.db").display()
    )];
    if let Some(url) = postgres_for("migration 14").await {
        urls.push(url);
    }
    let ring = Keyring::new(Kek::generate(), vec![]);
    let before_14 = MIGRATIONS
        .iter()
        .position(|m| m.contains("ADD COLUMN secret_access_key"))
        .expect("migration 14 is listed");
    for url in urls {
        let old = Store::open_at(&url, before_14).await.unwrap();
        let value = ring.seal("secrets.value", "sec_old", &SecretString::from("old-value"));
        sqlx::query(
            "INSERT INTO secrets (id, tenant, name, value, hosts, swap_in, created_at) \
             VALUES ('sec_old', 'default', 'OLD', $1, '[\"a.test\"]', '[\"header\"]', 1)",
        )
        .bind(value.encode())
        .execute(&old.pool)
        .await
        .unwrap();
        drop(old);

        let store = Store::open(&url).await.unwrap();
        let row = store.secret("default", "OLD").await.unwrap().unwrap();
        assert_eq!(row.kind, airlock_vault_client::SecretKind::Static, "{url}");
        assert_eq!(row.value, value);
        assert!(
            row.signing.is_none() && row.secret_access_key.is_none() && row.session_token.is_none()
        );

        let sealed =
            |kind: &str, v: &str| ring.seal(kind, "sec_aws", &SecretString::from(v.to_owned()));
        let aws = SecretRow {
            id: "sec_aws".into(),
            tenant: "default".into(),
            name: "AWS_ACCESS_KEY_ID".into(),
            value: sealed("secrets.value", "AKIA1"),
            hosts: vec!["s3.test".into()],
            swap_in: vec!["header".into()],
            kind: airlock_vault_client::SecretKind::AwsSigV4,
            signing: Some(r#"{"secret_variable":"AWS_SECRET_ACCESS_KEY"}"#.into()),
            secret_access_key: Some(sealed("secrets.secret_access_key", "sk1")),
            session_token: Some(sealed("secrets.session_token", "st1")),
        };
        store.upsert_secret(&aws).await.unwrap();
        let back = store
            .secret("default", "AWS_ACCESS_KEY_ID")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.kind, aws.kind);
        assert_eq!(back.signing, aws.signing);
        assert_eq!(back.secret_access_key, aws.secret_access_key);
        assert_eq!(back.session_token, aws.session_token);
        // Written again as static, its keys go.
        store
            .upsert_secret(&SecretRow {
                kind: airlock_vault_client::SecretKind::Static,
                signing: None,
                secret_access_key: None,
                session_token: None,
                ..aws.clone()
            })
            .await
            .unwrap();
        let back = store
            .secret("default", "AWS_ACCESS_KEY_ID")
            .await
            .unwrap()
            .unwrap();
        assert!(back.secret_access_key.is_none() && back.session_token.is_none());
        store.upsert_secret(&aws).await.unwrap();
        let cells = store.sealed_values().await.unwrap();
        for column in ["secret_access_key", "session_token"] {
            let cell = cells
                .iter()
                .find(|c| c.table == "secrets" && c.column == column)
                .unwrap_or_else(|| panic!("{column} is rotated"));
            assert!(ring
                .open(
                    &cell.kind(),
                    &cell.key,
                    &Sealed::decode(&cell.value).unwrap()
                )
                .is_ok());
        }
    }
}
