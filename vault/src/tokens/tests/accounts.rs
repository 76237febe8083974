//! Choosing the account: environments, named connections and pinned
//! bindings, machine accounts with variables of their own, and the clear
//! refusals of each. Against the fake token endpoint of `fixtures`.

use airlock_vault_client::{BindingKind, SandboxId, TokenError, TokenSource};
use secrecy::SecretString;

use super::fixtures::*;
use super::*;
use crate::sandboxes::ConnectionPin;
use crate::store::{now, GrantKind, NewConnection, ScopeKind, TokenUpdate};
use crate::{MachineAccountSpec, NewSandbox, Scope, Vault, VaultError, VaultSettings};

/// A connected connection of `acme` holding `token`.
async fn named(
    vault: &Vault,
    environment: &str,
    scope: (ScopeKind, &str),
    name: &str,
    token: &str,
) -> String {
    let id = vault
        .store
        .upsert_connection(&NewConnection {
            tenant: "default",
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
        })
        .await
        .unwrap();
    let update = TokenUpdate {
        access_token: vault.keyring.seal(
            "connections.access_token",
            &id,
            &SecretString::from(token.to_owned()),
        ),
        refresh_token: None,
        expires_at: Some(now() + 3600),
    };
    vault.store.store_tokens(&id, &update).await.unwrap();
    id
}

fn new_sandbox(environment: &str) -> NewSandbox {
    NewSandbox {
        tenant: "default".into(),
        workspace: None,
        user: None,
        providers: vec![],
        secrets: vec![],
        id: None,
        rules: Default::default(),
        consent_wait_secs: None,
        environment: environment.into(),
        connections: vec![],
    }
}

fn pin(text: &str) -> ConnectionPin {
    text.parse().unwrap()
}

/// (sandbox, variable → placeholder) of a new sandbox.
async fn create(
    vault: &Vault,
    new: NewSandbox,
) -> Result<(SandboxId, Vec<(String, String)>), VaultError> {
    let created = vault.create_sandbox(new).await?;
    Ok((SandboxId::new(created.id), created.env))
}

fn var<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    &env.iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

async fn app(vault: &Vault, environment: &str) {
    vault
        .set_app(
            "default",
            "acme",
            environment,
            "cid",
            Some(SecretString::from("csecret")),
        )
        .await
        .unwrap();
}

fn machine(name: &str, provider: Option<&str>, expose: Option<&str>) -> MachineAccountSpec {
    MachineAccountSpec {
        tenant: "default".into(),
        environment: "default".into(),
        name: name.into(),
        provider: provider.map(str::to_owned),
        client_id: format!("{name}-id"),
        client_secret: SecretString::from(format!("{name}-secret")),
        token_url: None,
        scopes: vec![],
        expose_as_env: expose.map(str::to_owned),
        hosts: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_environment_resolves_its_own_connections() {
    let (_fake, w) = acme_world(settings()).await;
    let v = &w.vault;
    app(v, "default").await;
    app(v, "production").await;
    named(v, "default", (ScopeKind::Tenant, ""), "", "dev-token").await;
    named(v, "production", (ScopeKind::Tenant, ""), "", "prod-token").await;
    assert_eq!(v.environments().await.unwrap(), ["default", "production"]);

    let mut dev = new_sandbox("default");
    dev.providers = vec!["acme".into()];
    let (dev_id, dev_env) = create(v, dev).await.unwrap();
    let mut prod = new_sandbox("production");
    prod.providers = vec!["acme".into()];
    let (prod_id, prod_env) = create(v, prod).await.unwrap();
    assert_eq!(
        token_of(v, &dev_id, var(&dev_env, "ACME_TOKEN")).await,
        "dev-token"
    );
    assert_eq!(
        token_of(v, &prod_id, var(&prod_env, "ACME_TOKEN")).await,
        "prod-token"
    );
    // A placeholder of one environment's sandbox is still refused in the other's.
    assert!(matches!(
        v.resolve(&prod_id, var(&dev_env, "ACME_TOKEN")).await,
        Err(TokenError::WrongSandbox { .. })
    ));

    // A connect in production makes a production connection with
    // production's app; the default one is untouched.
    let started = v
        .start_connect(
            "default",
            &Scope::User("alice".into()),
            "acme",
            None,
            "production",
        )
        .await
        .unwrap();
    let state = url::Url::parse(&started.authorization_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let made = v
        .finish_connect(&state, Some("code"), None, None)
        .await
        .unwrap();
    assert_eq!(made.environment, "production");
    assert_eq!(made.scope, "user:alice");
    let all = v.connections().await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all.iter().filter(|c| c.environment == "default").count(), 1);

    // A sandbox in an environment nothing is registered in is refused,
    // naming those there are; so is a connect there.
    let err = create(v, new_sandbox("prodution")).await.unwrap_err();
    assert!(matches!(err, VaultError::Invalid(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("unknown environment \"prodution\""), "{text}");
    assert!(text.contains("default, production"), "{text}");
    let err = v
        .start_connect("default", &Scope::Tenant, "acme", None, "staging")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown environment \"staging\""),
        "{err}"
    );
    // Nothing was made by the refusals.
    assert_eq!(v.sandboxes().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_binding_resolves_its_named_connection_and_never_another() {
    let (_fake, w) = acme_world(settings()).await;
    let v = &w.vault;
    app(v, "default").await;
    named(v, "default", (ScopeKind::Tenant, ""), "", "unnamed-token").await;
    let work = named(v, "default", (ScopeKind::Tenant, ""), "work", "work-token").await;
    named(
        v,
        "default",
        (ScopeKind::User, "alice"),
        "personal",
        "personal-token",
    )
    .await;

    let mut new = new_sandbox("default");
    new.user = Some("alice".into());
    new.providers = vec![];
    new.connections = vec![pin("acme:work"), pin("ACME_PERSONAL_TOKEN=acme:personal")];
    let (sbx, env) = create(v, new).await.unwrap();
    let work_ph = var(&env, "ACME_TOKEN").to_owned();
    let personal_ph = var(&env, "ACME_PERSONAL_TOKEN").to_owned();
    assert_eq!(token_of(v, &sbx, &work_ph).await, "work-token");
    assert_eq!(token_of(v, &sbx, &personal_ph).await, "personal-token");
    let resolved = v.resolve(&sbx, &work_ph).await.unwrap();
    assert_eq!(resolved.binding.id, "provider:acme/work");
    assert!(
        matches!(&resolved.binding.kind, BindingKind::OAuth { connection_id } if *connection_id == work)
    );

    // Unpinned, alice's sandbox sees her own (named) connection first: the
    // most specific still wins.
    let mut plain = new_sandbox("default");
    plain.user = Some("alice".into());
    plain.providers = vec!["acme".into()];
    let (plain_id, plain_env) = create(v, plain).await.unwrap();
    assert_eq!(
        token_of(v, &plain_id, var(&plain_env, "ACME_TOKEN")).await,
        "personal-token"
    );
    // Without a user, the tenant's unnamed one before the named one.
    let mut tenant = new_sandbox("default");
    tenant.providers = vec!["acme".into()];
    let (tenant_id, tenant_env) = create(v, tenant).await.unwrap();
    assert_eq!(
        token_of(v, &tenant_id, var(&tenant_env, "ACME_TOKEN")).await,
        "unnamed-token"
    );

    // The status names each variable's own account.
    let status = v.sandbox_status(&sbx).await.unwrap();
    assert_eq!(status.credentials.len(), 2);

    // The work connection goes: its pin is not connected, and never falls
    // back to the unnamed or the personal account.
    assert!(v.store.delete_connection(&work).await.unwrap());
    v.bump_generation();
    match v.resolve(&sbx, &work_ph).await {
        Err(TokenError::NotConnected { binding }) => assert_eq!(binding, "provider:acme/work"),
        other => panic!("expected not connected, got {other:?}"),
    }
    assert_eq!(token_of(v, &sbx, &personal_ph).await, "personal-token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pins_are_refused_clearly_and_make_nothing() {
    let fake = Fake::new();
    let port = serve(fake.clone()).await;
    let catalog = format!(
        "{}{}",
        provider_toml("acme", "ACME_TOKEN", port, false),
        provider_toml("other", "OTHER_TOKEN", port, false)
    );
    let w = world(&catalog, settings()).await;
    let v = &w.vault;
    app(v, "default").await;
    app(v, "production").await;
    named(v, "default", (ScopeKind::Tenant, ""), "", "t").await;
    named(v, "default", (ScopeKind::Tenant, ""), "work", "w").await;
    named(v, "production", (ScopeKind::Tenant, ""), "prod-only", "p").await;
    named(v, "default", (ScopeKind::User, "bob"), "bobs", "b").await;
    // The same name for two providers.
    v.store
        .upsert_connection(&NewConnection {
            tenant: "default",
            scope_kind: ScopeKind::Tenant,
            scope_name: "",
            provider: "other",
            grant_kind: GrantKind::AuthorizationCode,
            scopes: "",
            environment: "default",
            client_id: None,
            token_url: None,
            name: "work",
            env_name: None,
            hosts: None,
            app_tenant: None,
        })
        .await
        .unwrap();

    let cases: Vec<(Vec<&str>, Option<&str>, &str)> = vec![
        (
            vec!["acme:nope"],
            None,
            "no acme connection is called \"nope\" in environment default",
        ),
        (
            vec!["acme:prod-only"],
            None,
            "that name is acme in environment production",
        ),
        (
            vec!["other:bobs"],
            None,
            "that name is acme in environment default",
        ),
        (vec!["nope:work"], None, "provider \"nope\""),
        (vec!["work"], None, "is used by providers acme, other"),
        (vec!["acme:bobs"], Some("alice"), "belongs to user:bob"),
        (
            vec!["acme:work", "acme:work"],
            None,
            "two bindings would use the variable ACME_TOKEN",
        ),
        (
            vec!["lower=acme:work"],
            None,
            "must be an upper-case environment variable name",
        ),
    ];
    for (pins, user, expected) in cases {
        let mut new = new_sandbox("default");
        new.user = user.map(str::to_owned);
        new.connections = pins.iter().map(|p| pin(p)).collect();
        let err = create(v, new).await.unwrap_err();
        assert!(err.to_string().contains(expected), "{pins:?}: {err}");
    }
    // An unpinned binding and a pin may not claim one variable either.
    let mut new = new_sandbox("default");
    new.providers = vec!["acme".into()];
    new.connections = vec![pin("acme:work")];
    let err = create(v, new).await.unwrap_err();
    assert!(err.to_string().contains("ACME_TOKEN"), "{err}");
    for bad in ["", "=acme:work", "acme:", "X=:work"] {
        let err = bad.parse::<ConnectionPin>().unwrap_err();
        assert!(
            err.to_string().contains("[VARIABLE=][PROVIDER:]NAME"),
            "{bad:?}: {err}"
        );
    }
    assert!(v.sandboxes().await.unwrap().is_empty(), "nothing was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_picks_one_connection_per_provider_and_environment() {
    let (_fake, w) = acme_world(settings()).await;
    let v = &w.vault;
    app(v, "default").await;
    app(v, "production").await;
    named(v, "default", (ScopeKind::User, "alice"), "work", "a").await;
    // Another owner may not take the name: refused before the user consents.
    let request = |scope: Scope, environment: &str| crate::ConnectRequest {
        tenant: "default".into(),
        scope,
        provider: "acme".into(),
        scopes: None,
        environment: environment.into(),
        name: Some("work".into()),
    };
    let err = v
        .start_connect_request(&request(Scope::Tenant, "default"))
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Conflict(_)), "{err}");
    assert!(
        err.to_string()
            .contains("already used by another acme connection"),
        "{err}"
    );
    assert!(err.to_string().contains("user:alice"), "{err}");
    // The same owner reconnects it; another environment has its own names.
    v.start_connect_request(&request(Scope::User("alice".into()), "default"))
        .await
        .unwrap();
    v.start_connect_request(&request(Scope::Tenant, "production"))
        .await
        .unwrap();
    // The database refuses it too (a race past the first check).
    let err = v
        .store
        .upsert_connection(&NewConnection {
            tenant: "default",
            scope_kind: ScopeKind::Tenant,
            scope_name: "",
            provider: "acme",
            grant_kind: GrantKind::AuthorizationCode,
            scopes: "",
            environment: "default",
            client_id: None,
            token_url: None,
            name: "work",
            env_name: None,
            hosts: None,
            app_tenant: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Conflict(_)), "{err}");
    let bad = v
        .start_connect_request(&crate::ConnectRequest {
            name: Some("has space".into()),
            ..request(Scope::Tenant, "default")
        })
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("name \"has space\""), "{bad}");
    assert_eq!(v.connections().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_accounts_of_one_provider_each_resolve_to_themselves() {
    let (fake, w) = acme_world(settings()).await;
    let v = &w.vault;
    let ci = v
        .add_machine_account(machine("ci", Some("acme"), Some("ACME_CI_TOKEN")))
        .await
        .unwrap();
    assert_eq!(ci.variable.as_deref(), Some("ACME_CI_TOKEN"));
    assert_eq!(ci.name.as_deref(), Some("ci"));
    let deploy = v
        .add_machine_account(machine("deploy", Some("acme"), Some("ACME_DEPLOY_TOKEN")))
        .await
        .unwrap();
    assert_eq!(fake.granted(), 2);
    assert_ne!(ci.id, deploy.id);
    // A third with the provider's variable, then a fourth that would share it.
    v.add_machine_account(machine("plain", Some("acme"), None))
        .await
        .unwrap();
    let err = v
        .add_machine_account(machine("again", Some("acme"), None))
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Conflict(_)), "{err}");
    assert!(
        err.to_string().contains("machine account \"plain\""),
        "{err}"
    );
    assert!(err.to_string().contains("expose_as_env"), "{err}");
    let err = v
        .add_machine_account(machine("third", Some("acme"), Some("ACME_CI_TOKEN")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"ci\""), "{err}");
    assert_eq!(fake.granted(), 3, "refused before asking the provider");

    let mut new = new_sandbox("default");
    new.connections = vec![pin("acme:ci"), pin("deploy")];
    let (sbx, env) = create(v, new).await.unwrap();
    let ci_token = token_of(v, &sbx, var(&env, "ACME_CI_TOKEN")).await;
    let deploy_token = token_of(v, &sbx, var(&env, "ACME_DEPLOY_TOKEN")).await;
    assert_eq!((ci_token.as_str(), deploy_token.as_str()), ("at1", "at2"));

    // The sidecar gets each account's own variable, pinned to it.
    let bound = v
        .ensure_sandbox(SandboxId::DEFAULT, "default", &["acme".into()], &[])
        .await
        .unwrap();
    let names: Vec<&str> = bound.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["ACME_CI_TOKEN", "ACME_DEPLOY_TOKEN", "ACME_TOKEN"]);
    let sidecar = SandboxId::default_sandbox();
    assert_eq!(token_of(v, &sidecar, &bound[1].1).await, "at2");
    // The provider's own variable reaches the account without one of its
    // own, never one that has its own.
    assert_eq!(token_of(v, &sidecar, &bound[2].1).await, "at3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_account_in_one_call_needs_no_provider_first() {
    let fake = Fake::new();
    let port = serve(fake.clone()).await;
    let w = world(
        &provider_toml("other", "OTHER_TOKEN", port, false),
        settings(),
    )
    .await;
    let v = &w.vault;
    let spec = |token_url: Option<String>, expose: Option<&str>, hosts: Option<Vec<String>>| {
        MachineAccountSpec {
            token_url,
            expose_as_env: expose.map(str::to_owned),
            hosts,
            environment: "internal".into(),
            scopes: vec!["read".into()],
            ..machine("billing-api", None, None)
        }
    };
    let url = format!("http://127.0.0.1:{port}/token");
    let hosts = Some(vec!["billing.internal.test".to_owned()]);
    // Each missing field is named.
    let err = v
        .add_machine_account(spec(None, Some("BILLING_TOKEN"), hosts.clone()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("needs token_url"), "{err}");
    let err = v
        .add_machine_account(spec(Some(url.clone()), None, None))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("needs expose_as_env, hosts"),
        "{err}"
    );
    let err = v
        .add_machine_account(spec(
            Some("ftp://x".into()),
            Some("BILLING_TOKEN"),
            hosts.clone(),
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("token_url"), "{err}");
    let err = v
        .add_machine_account(spec(Some(url.clone()), Some("billing"), hosts.clone()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("upper-case environment variable"),
        "{err}"
    );
    let err = v
        .add_machine_account(spec(Some(url.clone()), Some("BILLING_TOKEN"), Some(vec![])))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("hosts"), "{err}");
    assert_eq!(fake.requests(), 0, "nothing was asked of the provider");
    assert!(v.provider("billing-api").is_err(), "and no provider made");

    let made = v
        .add_machine_account(spec(
            Some(url.clone()),
            Some("BILLING_TOKEN"),
            hosts.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(made.environment, "internal");
    assert_eq!(made.provider, "billing-api");
    let provider = v.provider("billing-api").unwrap();
    assert_eq!(provider.env, "BILLING_TOKEN");
    assert_eq!(provider.hosts, ["billing.internal.test"]);
    // The environment exists now; a sandbox there gets the account.
    let mut new = new_sandbox("internal");
    new.connections = vec![pin("billing-api")];
    let (sbx, env) = create(v, new).await.unwrap();
    // Through its provider's binding as well.
    let mut by_provider = new_sandbox("internal");
    by_provider.providers = vec!["billing-api".into()];
    let (other, other_env) = create(v, by_provider).await.unwrap();
    assert_eq!(
        token_of(v, &other, var(&other_env, "BILLING_TOKEN")).await,
        "at1"
    );
    let placeholder = var(&env, "BILLING_TOKEN").to_owned();
    let resolved = v.resolve(&sbx, &placeholder).await.unwrap();
    assert!(resolved
        .binding
        .hosts
        .iter()
        .any(|h| h.matches("billing.internal.test")));
    assert!(!resolved
        .binding
        .hosts
        .iter()
        .any(|h| h.matches("api.acme.test")));
    assert!(v.is_bound_host(&sbx, "billing.internal.test").await);

    // Adding it again updates the provider made for it.
    let more = Some(vec![
        "billing.internal.test".to_owned(),
        "billing2.internal.test".to_owned(),
    ]);
    v.add_machine_account(spec(Some(url.clone()), Some("BILLING_TOKEN"), more))
        .await
        .unwrap();
    assert_eq!(v.provider("billing-api").unwrap().hosts.len(), 2);
    assert_eq!(v.connections().await.unwrap().len(), 1, "the same account");
    // A provider not made for a machine account is never replaced by one.
    let err = v
        .add_machine_account(MachineAccountSpec {
            name: "other".into(),
            ..spec(Some(url.clone()), Some("X_TOKEN"), hosts.clone())
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("provider \"other\" exists"),
        "{err}"
    );
    assert_eq!(v.provider("other").unwrap().env, "OTHER_TOKEN", "untouched");
    let catalog_vault = acme_world(settings()).await.1;
    let err = catalog_vault
        .vault
        .add_machine_account(MachineAccountSpec {
            token_url: Some(url),
            expose_as_env: Some("X_TOKEN".into()),
            hosts,
            ..machine("acme", None, None)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Conflict(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_account_is_renewed_before_expiry_and_after_a_401() {
    // A token is due in the last 100% of its lifetime, at most 300 s: a
    // 10 s token at once, a 3600 s one not.
    let (fake, w) = acme_world(VaultSettings {
        refresh_fraction: 1.0,
        refresh_cooldown: Duration::ZERO,
        ..settings()
    })
    .await;
    let v = &w.vault;
    fake.lifetime.store(10, Ordering::SeqCst);
    v.add_machine_account(machine("ci", Some("acme"), Some("ACME_CI_TOKEN")))
        .await
        .unwrap();
    let mut new = new_sandbox("default");
    new.connections = vec![pin("acme:ci")];
    let (sbx, env) = create(v, new).await.unwrap();
    let ph = var(&env, "ACME_CI_TOKEN").to_owned();
    // Due: asked again with client credentials before it is handed out.
    assert_eq!(token_of(v, &sbx, &ph).await, "at2");
    assert_eq!(fake.granted(), 2);
    // An upstream 401 with it: a new one, once.
    fake.lifetime.store(3600, Ordering::SeqCst);
    let after = v
        .refresh(&sbx, &ph, &SecretString::from("at2"))
        .await
        .unwrap();
    assert_eq!(after.token.expose_secret(), "at3");
    assert_eq!(token_of(v, &sbx, &ph).await, "at3");
    assert_eq!(fake.granted(), 3);
    // The background pass renews one about to expire, with no traffic.
    fake.lifetime.store(10, Ordering::SeqCst);
    let short = v
        .refresh(&sbx, &ph, &SecretString::from("at3"))
        .await
        .unwrap();
    assert_eq!(short.token.expose_secret(), "at4");
    fake.lifetime.store(3600, Ordering::SeqCst);
    assert_eq!(v.refresh_due(Duration::from_secs(60)).await, 1);
    assert_eq!(fake.granted(), 5, "renewed ahead of expiry");
    assert_eq!(token_of(v, &sbx, &ph).await, "at5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_binding_s_connect_link_reconnects_that_account() {
    let (_fake, w) = acme_world(settings()).await;
    let v = &w.vault;
    app(v, "default").await;
    named(v, "default", (ScopeKind::Tenant, ""), "", "unnamed-token").await;
    let work = named(
        v,
        "default",
        (ScopeKind::User, "alice"),
        "work",
        "work-token",
    )
    .await;
    let mut new = new_sandbox("default");
    new.user = Some("alice".into());
    new.connections = vec![pin("ACME_WORK_TOKEN=acme:work")];
    new.providers = vec!["acme".into()];
    let (sbx, _) = create(v, new).await.unwrap();
    v.store
        .set_status(&work, crate::ConnectionStatus::ReconnectNeeded, Some("x"))
        .await
        .unwrap();
    let status = v.sandbox_status(&sbx).await.unwrap();
    let pinned = status
        .credentials
        .iter()
        .find(|c| c.variable == "ACME_WORK_TOKEN")
        .unwrap();
    assert_eq!(
        pinned.state,
        airlock_vault_client::CredentialState::ReconnectNeeded
    );
    let link = pinned.connect_url.clone().expect("a connect link");
    // Unpinned, alice's own account is still the most specific she sees:
    // the same state, but a link of its own (it connects her unnamed one).
    let plain = status
        .credentials
        .iter()
        .find(|c| c.variable == "ACME_TOKEN")
        .unwrap();
    assert_eq!(
        plain.state,
        airlock_vault_client::CredentialState::ReconnectNeeded
    );
    assert!(plain.connect_url.as_ref().is_some_and(|l| *l != link));
    let id = link.rsplit('/').next().unwrap();
    let started = v.open_connect_link(id).await.unwrap();
    let state = url::Url::parse(&started.authorization_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let made = v
        .finish_connect(&state, Some("code"), None, None)
        .await
        .unwrap();
    assert_eq!(made.id, work, "the same connection, reconnected");
    assert_eq!(made.name.as_deref(), Some("work"));
    assert_eq!(made.scope, "user:alice");
    assert_eq!(v.connections().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_gets_no_link_to_reconnect_an_account_it_does_not_own() {
    let (_fake, w) = acme_world(settings()).await;
    let v = &w.vault;
    app(v, "default").await;
    let shared = named(
        v,
        "default",
        (ScopeKind::Tenant, ""),
        "shared",
        "shared-token",
    )
    .await;
    v.add_machine_account(machine("ci", Some("acme"), Some("ACME_CI_TOKEN")))
        .await
        .unwrap();
    let mut new = new_sandbox("default");
    new.user = Some("alice".into());
    new.connections = vec![pin("acme:shared"), pin("acme:ci")];
    let (sbx, _) = create(v, new).await.unwrap();
    v.store
        .set_status(&shared, crate::ConnectionStatus::ReconnectNeeded, Some("x"))
        .await
        .unwrap();
    let status = v.sandbox_status(&sbx).await.unwrap();
    let pinned = status
        .credentials
        .iter()
        .find(|c| c.variable == "ACME_TOKEN")
        .unwrap();
    assert_eq!(
        pinned.state,
        airlock_vault_client::CredentialState::ReconnectNeeded
    );
    assert_eq!(pinned.connection.as_deref(), Some("shared"));
    // The tenant's account: alice's sandbox may not re-consent it.
    assert!(pinned.connect_url.is_none());
    // A tenant-wide sandbox may, in place.
    let mut tenant = new_sandbox("default");
    tenant.connections = vec![pin("acme:shared")];
    let (tenant_sbx, _) = create(v, tenant).await.unwrap();
    let status = v.sandbox_status(&tenant_sbx).await.unwrap();
    let link = status.credentials[0].connect_url.clone().expect("a link");
    let started = v
        .open_connect_link(link.rsplit('/').next().unwrap())
        .await
        .unwrap();
    let state = url::Url::parse(&started.authorization_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let made = v
        .finish_connect(&state, Some("code"), None, None)
        .await
        .unwrap();
    assert_eq!(
        (made.id.as_str(), made.scope.as_str()),
        (shared.as_str(), "tenant")
    );
}
