//! Deleting and duplicating providers, and the app and secret deletes beside
//! them, on SQLite and PostgreSQL.

use airlock_vault_client::SecretString;
use secrecy::ExposeSecret;

use super::*;
use crate::store::{GrantKind, NewConnection, ScopeKind};
use crate::testing::acme_vault_at;
use crate::{NewSandbox, VaultSettings};

/// A SQLite file, and a PostgreSQL database when the server answers.
async fn databases(what: &str) -> Vec<(String, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("v.db").display());
    let mut out = vec![(sqlite, Some(dir))];
    if let Some(url) = crate::store::tests::postgres_for(what).await {
        out.push((url, None));
    }
    out
}

fn custom(name: &str, token_url: &str) -> Provider {
    toml::from_str(&format!(
        "name = {name:?}\ntoken_url = {token_url:?}\nauthorize_url = \"https://auth.acme2.test/authorize\"\n\
         hosts = [\"api.acme2.test\"]\nenv = \"ACME2_TOKEN\"\nscopes = [\"read\"]\n"
    ))
    .unwrap()
}

async fn tenant_connection(vault: &Vault, provider: &str) -> String {
    vault
        .store
        .upsert_connection(&NewConnection {
            tenant: "default",
            scope_kind: ScopeKind::Tenant,
            scope_name: "",
            provider,
            grant_kind: GrantKind::AuthorizationCode,
            scopes: "read",
            environment: "default",
            client_id: None,
            token_url: None,
            name: "",
            env_name: None,
            hosts: None,
            app_tenant: None,
        })
        .await
        .unwrap()
}

async fn bound_sandbox(vault: &Vault, provider: &str) -> String {
    vault
        .create_sandbox(NewSandbox {
            tenant: "default".into(),
            workspace: None,
            user: None,
            providers: vec![provider.into()],
            secrets: vec![],
            id: None,
            rules: Default::default(),
            consent_wait_secs: None,
            connections: vec![],
            environment: "default".into(),
        })
        .await
        .unwrap()
        .id
}

fn conflict(e: VaultError) -> String {
    match e {
        VaultError::Conflict(why) => why,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn a_provider_in_use_is_kept_and_named_until_its_users_are_gone() {
    for (url, _dir) in databases("provider delete tests").await {
        let vault = acme_vault_at(&url, 9, VaultSettings::default()).await;
        vault
            .add_provider(custom("acme2", "https://auth.acme2.test/token"))
            .await
            .unwrap();
        vault
            .set_app(
                "default",
                "acme2",
                "default",
                "cid",
                Some(SecretString::from("a-client-secret-0001")),
            )
            .await
            .unwrap();
        let conn = tenant_connection(&vault, "acme2").await;
        let sandbox = bound_sandbox(&vault, "acme2").await;

        let why = conflict(vault.delete_provider("acme2").await.unwrap_err());
        for said in [
            "provider \"acme2\" is still used by",
            "1 connection(s)",
            conn.as_str(),
            "1 app(s): default/default",
            "1 sandbox(es)",
            sandbox.as_str(),
            "airlock disconnect ID",
        ] {
            assert!(why.contains(said), "{said:?} missing: {why}");
        }
        // Refused: everything is where it was.
        assert!(vault.provider("acme2").is_ok());
        assert!(vault
            .store
            .providers()
            .await
            .unwrap()
            .iter()
            .any(|p| p.name == "acme2"));
        assert!(vault.store.connection(&conn).await.unwrap().is_some());
        assert_eq!(vault.apps().await.unwrap().len(), 1);

        // One user at a time goes; each refusal names only what is left.
        vault.delete_sandbox(&sandbox).await.unwrap();
        vault.store.delete_connection(&conn).await.unwrap();
        let why = conflict(vault.delete_provider("acme2").await.unwrap_err());
        assert!(
            why.contains("1 app(s)") && !why.contains("connection"),
            "{why}"
        );
        vault
            .delete_app("default", "acme2", "default")
            .await
            .unwrap();

        // The sidecar's binding does not hold it; it goes with the provider.
        vault
            .ensure_sandbox(
                airlock_vault_client::SandboxId::DEFAULT,
                "default",
                &["acme2".into()],
                &[],
            )
            .await
            .unwrap();
        vault.delete_provider("acme2").await.unwrap();
        assert!(matches!(
            vault.provider("acme2"),
            Err(VaultError::NotFound(_))
        ));
        assert!(vault.store.providers().await.unwrap().is_empty());
        assert!(vault
            .store
            .bindings_of(airlock_vault_client::SandboxId::DEFAULT)
            .await
            .unwrap()
            .iter()
            .all(|b| b.target != "acme2"));
        // Gone for good: a vault opened again on the database does not know it.
        let again = acme_vault_at(&url, 9, VaultSettings::default()).await;
        assert!(again.provider("acme2").is_err());
        assert!(matches!(
            vault.delete_provider("acme2").await,
            Err(VaultError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn catalog_providers_are_not_deleted_and_a_stored_override_gives_way() {
    for (url, _dir) in databases("provider delete tests").await {
        let vault = acme_vault_at(&url, 9, VaultSettings::default()).await;
        // `acme` is the catalog's (in tests: the catalog given to the vault).
        let why = conflict(vault.delete_provider("acme").await.unwrap_err());
        assert!(why.contains("part of the catalog"), "{why}");
        assert!(why.contains("[[provider]]"), "{why}");
        let original = vault.provider("acme").unwrap();
        assert!(matches!(
            vault.delete_provider("nope").await,
            Err(VaultError::NotFound(_))
        ));

        // Stored over the catalog's, then deleted: the catalog's is back.
        let mut over = original.clone();
        over.token_url = "https://elsewhere.acme.test/token".into();
        vault.add_provider(over).await.unwrap();
        assert_eq!(
            vault.provider("acme").unwrap().token_url,
            "https://elsewhere.acme.test/token"
        );
        vault.delete_provider("acme").await.unwrap();
        assert_eq!(vault.provider("acme").unwrap(), original);
        let why = conflict(vault.delete_provider("acme").await.unwrap_err());
        assert!(why.contains("part of the catalog"), "{why}");
    }
}

#[tokio::test]
async fn a_duplicate_copies_the_setup_under_a_new_name_and_variable() {
    for (url, _dir) in databases("provider duplicate tests").await {
        let vault = acme_vault_at(&url, 9, VaultSettings::default()).await;
        let source = vault.provider("acme").unwrap();
        vault
            .set_app(
                "default",
                "acme",
                "default",
                "cid-acme",
                Some(SecretString::from("a-client-secret-0002")),
            )
            .await
            .unwrap();

        let copy = vault
            .duplicate_provider(
                "acme",
                DuplicateProvider {
                    name: "acme-work".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(copy.name, "acme-work");
        assert_eq!(copy.env, "ACME_WORK_TOKEN");
        assert_eq!(copy.display_name, None);
        // Everything else is the source's.
        let mut expected = source.clone();
        expected.name = "acme-work".into();
        expected.env = "ACME_WORK_TOKEN".into();
        expected.display_name = None;
        assert_eq!(copy, expected);
        assert_eq!(vault.provider("acme-work").unwrap(), copy);
        // Without `apps`, no app came along.
        assert!(vault
            .apps()
            .await
            .unwrap()
            .iter()
            .all(|a| a.provider != "acme-work"));
        // Kept: a vault opened again knows it, and it is deletable.
        let again = acme_vault_at(&url, 9, VaultSettings::default()).await;
        assert_eq!(again.provider("acme-work").unwrap(), copy);

        // With apps, its own variable and label; the secret opens under the copy.
        let with_apps = vault
            .duplicate_provider(
                "acme",
                DuplicateProvider {
                    name: "acme-ci".into(),
                    env: Some("ACME_CI".into()),
                    display_name: Some("Acme (CI)".into()),
                    apps: true,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (with_apps.env.as_str(), with_apps.label()),
            ("ACME_CI", "Acme (CI)")
        );
        let creds = vault
            .app_creds("default", "acme-ci", "default")
            .await
            .unwrap();
        assert_eq!(creds.client_id, "cid-acme");
        assert_eq!(
            creds.client_secret.unwrap().expose_secret(),
            "a-client-secret-0002"
        );

        // Bad input: nothing is written.
        let name_taken = vault
            .duplicate_provider(
                "acme",
                DuplicateProvider {
                    name: "acme-work".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(conflict(name_taken).contains("\"acme-work\" exists already"),);
        let over_catalog = vault
            .duplicate_provider(
                "acme-work",
                DuplicateProvider {
                    name: "acme".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(conflict(over_catalog).contains("exists already"));
        assert_eq!(
            vault.provider("acme").unwrap(),
            source,
            "the catalog's untouched"
        );
        assert!(matches!(
            vault
                .duplicate_provider(
                    "nope",
                    DuplicateProvider {
                        name: "nope-2".into(),
                        ..Default::default()
                    },
                )
                .await,
            Err(VaultError::NotFound(_))
        ));
        for (name, env) in [("Bad Name", None), ("fine", Some("lower-case"))] {
            let err = vault
                .duplicate_provider(
                    "acme",
                    DuplicateProvider {
                        name: name.into(),
                        env: env.map(Into::into),
                        ..Default::default()
                    },
                )
                .await
                .unwrap_err();
            assert!(matches!(err, VaultError::Invalid(_)), "{err:?}");
            assert!(vault.provider(name).is_err());
        }
        let stored: Vec<String> = vault
            .store
            .providers()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(stored, ["acme-ci", "acme-work"]);

        // The copy is the API's like any other: deleted once unused.
        vault
            .delete_app("default", "acme-ci", "default")
            .await
            .unwrap();
        vault.delete_provider("acme-ci").await.unwrap();
        vault.delete_provider("acme-work").await.unwrap();
        assert!(vault.provider("acme-work").is_err());
        assert!(vault.provider("acme").is_ok());
    }
}

#[test]
fn a_copy_s_variable_comes_from_its_name() {
    assert_eq!(env_for("github-work"), "GITHUB_WORK_TOKEN");
    assert_eq!(env_for("acme_2"), "ACME_2_TOKEN");
}

/// The app and secret deletes beside the provider's, on both databases:
/// refused while in use (naming the user, nothing lost), then done.
#[tokio::test]
async fn app_and_secret_deletes_refuse_while_in_use_on_both_databases() {
    for (url, _dir) in databases("app and secret delete tests").await {
        let vault = acme_vault_at(&url, 9, VaultSettings::default()).await;
        vault
            .set_app(
                "default",
                "acme",
                "default",
                "cid",
                Some(SecretString::from("a-client-secret-0003")),
            )
            .await
            .unwrap();
        let conn = tenant_connection(&vault, "acme").await;
        let why = conflict(
            vault
                .delete_app("default", "acme", "default")
                .await
                .unwrap_err(),
        );
        assert!(why.contains(&conn), "{why}");
        assert_eq!(vault.apps().await.unwrap().len(), 1, "kept");
        vault.store.delete_connection(&conn).await.unwrap();
        vault
            .delete_app("default", "acme", "default")
            .await
            .unwrap();
        assert!(vault.apps().await.unwrap().is_empty());

        vault
            .add_secret(
                "default",
                "LINEAR_KEY",
                SecretString::from("lin_value_0004"),
                vec!["api.linear.test".into()],
                None,
            )
            .await
            .unwrap();
        let sandbox = vault
            .create_sandbox(NewSandbox {
                tenant: "default".into(),
                workspace: None,
                user: None,
                providers: vec![],
                secrets: vec!["LINEAR_KEY".into()],
                id: None,
                rules: Default::default(),
                consent_wait_secs: None,
                connections: vec![],
                environment: "default".into(),
            })
            .await
            .unwrap()
            .id;
        let why = conflict(
            vault
                .delete_secret("default", "LINEAR_KEY")
                .await
                .unwrap_err(),
        );
        assert!(why.contains(&sandbox), "{why}");
        assert!(vault
            .store
            .secret("default", "LINEAR_KEY")
            .await
            .unwrap()
            .is_some());
        vault.delete_sandbox(&sandbox).await.unwrap();
        vault.delete_secret("default", "LINEAR_KEY").await.unwrap();
        assert!(vault
            .store
            .secret("default", "LINEAR_KEY")
            .await
            .unwrap()
            .is_none());
    }
}

/// Two replicas on one PostgreSQL database: a provider added, duplicated or
/// deleted on one is seen by the other once it hears the change (it used
/// to need a restart).
#[tokio::test]
async fn another_replica_sees_providers_added_and_deleted() {
    let Some(url) = crate::store::tests::postgres_for("provider changes across replicas").await
    else {
        return;
    };
    let a = acme_vault_at(&url, 9, VaultSettings::default()).await;
    let b = acme_vault_at(&url, 9, VaultSettings::default()).await;
    a.spawn_change_sync();
    b.spawn_change_sync();
    // Until b listens, a's notice could go unheard (b then reloads anyway).
    let mut changes = b.subscribe_changes();
    tokio::time::timeout(std::time::Duration::from_secs(10), changes.changed())
        .await
        .expect("b listens")
        .unwrap();
    let seen_by_b = |name: &'static str, present: bool| {
        let b = b.clone();
        async move {
            for _ in 0..100 {
                if b.provider(name).is_ok() == present {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("replica b: provider {name} present should be {present}");
        }
    };
    a.add_provider(custom("acme2", "https://auth.acme2.test/token"))
        .await
        .unwrap();
    seen_by_b("acme2", true).await;
    a.duplicate_provider(
        "acme2",
        DuplicateProvider {
            name: "acme3".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    seen_by_b("acme3", true).await;
    assert_eq!(b.provider("acme3").unwrap().env, "ACME3_TOKEN");
    a.delete_provider("acme2").await.unwrap();
    seen_by_b("acme2", false).await;
    // The catalog's own provider stays.
    assert!(b.provider("acme").is_ok());
    assert!(b.provider("acme3").is_ok());
}
