//! The API in-process on loopback: credentials, the error shape, body
//! limits, and the service contract as the remote proxy's client reads it.

use std::sync::Arc;

use airlock_vault_client::{
    ExposeSecret, RemoteVault, SandboxId, SecretString, TokenError, TokenSource,
};
use serde_json::{json, Value};

use super::{serve, ApiState};
use crate::crypto::{Kek, Keyring};
use crate::{Catalog, NewSandbox, Store, Vault, VaultSettings};

const ADMIN: &str = "admin-token-for-tests";
const SERVICE: &str = "service-token-for-tests";
const SECRET_VALUE: &str = "ghp_real_secret_value_123456";

struct Api {
    base: String,
    vault: Arc<Vault>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("v.db").display());
        let store = Store::open(&url).await.unwrap();
        let vault = Vault::open(
            store,
            Keyring::new(Kek::generate(), vec![]),
            Catalog::built_in(),
            reqwest::Client::new(),
            VaultSettings::default(),
        )
        .await
        .unwrap();
        let state = ApiState::new(
            vault.clone(),
            &SecretString::from(ADMIN.to_owned()),
            &SecretString::from(SERVICE.to_owned()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let limits = super::Limits {
            max_connections: 64,
            idle_timeout: std::time::Duration::from_secs(30),
            admit: || Some(()),
        };
        tokio::spawn(serve(listener, state, limits));
        Self {
            base,
            vault,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// A sandbox `sb` bound to a static secret for `api.github.com`; its placeholder.
    async fn sandbox_with_secret(&self) -> String {
        self.vault
            .add_secret(
                "default",
                "GITHUB_TOKEN",
                SecretString::from(SECRET_VALUE.to_owned()),
                vec!["api.github.com".into()],
                None,
            )
            .await
            .unwrap();
        let created = self
            .vault
            .create_sandbox(NewSandbox {
                tenant: "default".into(),
                workspace: None,
                user: None,
                providers: vec![],
                secrets: vec!["GITHUB_TOKEN".into()],
                id: Some("sb".into()),
                rules: Default::default(),
                consent_wait_secs: None,
                environment: "default".into(),
                connections: Vec::new(),
            })
            .await
            .unwrap();
        created
            .env
            .iter()
            .find(|(k, _)| k == "GITHUB_TOKEN")
            .map(|(_, v)| v.clone())
            .unwrap()
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn remote(&self, service_token: &str) -> RemoteVault {
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        RemoteVault::new(
            &self.base,
            SecretString::from(service_token.to_owned()),
            tls,
            airlock_vault_client::DEFAULT_PREFIX,
        )
    }
}

#[tokio::test]
async fn each_api_takes_only_its_own_credential() {
    let api = Api::start().await;
    let list = |token: Option<&'static str>| {
        let mut r = api.http.get(format!("{}/v1/secrets", api.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    for token in [None, Some(SERVICE), Some("wrong")] {
        let response = list(token).await.unwrap();
        assert_eq!(response.status(), 401, "{token:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({ "error": "unauthorized: send the admin token as Authorization: Bearer …" })
        );
    }
    assert_eq!(list(Some(ADMIN)).await.unwrap().status(), 200);

    let resolve = json!({ "sandbox": "sb", "placeholder": "x" });
    for token in [None, Some(ADMIN)] {
        let (status, body) = api
            .post("/v1/service/resolve", token, resolve.clone())
            .await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(
            body,
            json!({ "error": "unauthorized: send the service token as Authorization: Bearer …" })
        );
    }
}

#[tokio::test]
async fn unknown_routes_bad_bodies_and_large_bodies_answer_in_the_error_shape() {
    let api = Api::start().await;
    let response = api
        .http
        .get(format!("{}/v1/nothing-here", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "error": "route not found" })
    );

    // A missing field: 422, naming the field.
    let (status, body) = api
        .post(
            "/v1/service/resolve",
            Some(SERVICE),
            json!({ "sandbox": "sb" }),
        )
        .await;
    assert_eq!(status, 422);
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("placeholder"), "{error}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");

    let big = "x".repeat(70 * 1024);
    let (status, body) = api
        .post(
            "/v1/service/resolve",
            Some(SERVICE),
            json!({ "sandbox": "sb", "placeholder": big }),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(
        body,
        json!({ "error": "request body is larger than 65536 bytes" })
    );

    // Refresh needs the refused token.
    let (status, body) = api
        .post(
            "/v1/service/refresh",
            Some(SERVICE),
            json!({ "sandbox": "sb", "placeholder": "p" }),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({ "error": "invalid request: failed_token is required" })
    );
}

#[tokio::test]
async fn the_service_api_resolves_and_refuses_with_codes() {
    let api = Api::start().await;
    let placeholder = api.sandbox_with_secret().await;

    let (status, body) = api
        .post(
            "/v1/service/resolve",
            Some(SERVICE),
            json!({ "sandbox": "sb", "placeholder": placeholder }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token"], SECRET_VALUE);
    assert_eq!(body["binding"]["id"], "secret:GITHUB_TOKEN");
    assert_eq!(body["binding"]["hosts"], json!(["api.github.com"]));
    assert_eq!(body["binding"]["connection_id"], Value::Null);

    let (status, body) = api
        .post(
            "/v1/service/resolve",
            Some(SERVICE),
            json!({ "sandbox": "sb", "placeholder": "miosa-tok-nothing-like-it-0000000000" }),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "unknown_placeholder");
    assert_eq!(body["binding"], Value::Null);

    let (status, body) = api
        .post(
            "/v1/service/resolve",
            Some(SERVICE),
            json!({ "sandbox": "other", "placeholder": placeholder }),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "wrong_sandbox");
    assert_eq!(body["binding"], "secret:GITHUB_TOKEN");

    let (status, body) = api
        .post(
            "/v1/service/bound-host",
            Some(SERVICE),
            json!({ "sandbox": "sb", "host": "api.github.com" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({ "body_swap": false, "bound": true }));
}

#[tokio::test]
async fn the_remote_client_reads_what_the_vault_writes() {
    let api = Api::start().await;
    let placeholder = api.sandbox_with_secret().await;
    let remote = api.remote(SERVICE);
    let sb = SandboxId::new("sb");

    let resolved = remote.resolve(&sb, &placeholder).await.unwrap();
    assert_eq!(resolved.token.expose_secret(), SECRET_VALUE);
    assert_eq!(resolved.binding.id, "secret:GITHUB_TOKEN");
    assert!(resolved.binding.allows_host("api.github.com"));
    let refreshed = remote
        .refresh(&sb, &placeholder, &resolved.token.to_secret_string())
        .await
        .unwrap();
    assert_eq!(refreshed.token.expose_secret(), SECRET_VALUE);

    assert!(remote.is_bound_host(&sb, "api.github.com").await);
    assert!(!remote.is_bound_host(&sb, "example.com").await);
    assert!(!remote.may_swap_body(&sb, "api.github.com").await);

    let guarded = remote.guarded(&sb).await.unwrap();
    assert_eq!(guarded.len(), 1);
    assert_eq!(guarded[0].placeholder, placeholder);

    let err = remote
        .resolve(&SandboxId::new("other"), &placeholder)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TokenError::WrongSandbox { binding } if binding == "secret:GITHUB_TOKEN"),
        "{err:?}"
    );
    let err = remote
        .authenticate("sb", "not-the-secret")
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::BadCredential), "{err:?}");

    let refused = api.remote("not-the-service-token");
    let err = refused.resolve(&sb, &placeholder).await.unwrap_err();
    assert!(
        matches!(&err, TokenError::Unavailable(m) if m.ends_with("the service token was refused")),
        "{err:?}"
    );
}

#[tokio::test]
async fn status_is_a_service_call_and_its_connect_link_redirects_to_the_provider() {
    let api = Api::start().await;
    api.vault
        .set_app(
            "default",
            "github",
            "default",
            "gh-client",
            Some(SecretString::from("gh-secret-value".to_owned())),
        )
        .await
        .unwrap();
    api.vault
        .create_sandbox(NewSandbox {
            tenant: "default".into(),
            workspace: None,
            user: None,
            providers: vec!["github".into()],
            secrets: vec![],
            id: Some("sb".into()),
            rules: Default::default(),
            consent_wait_secs: None,
            environment: "default".into(),
            connections: Vec::new(),
        })
        .await
        .unwrap();
    let (status, _) = api
        .post(
            "/v1/service/status",
            Some(ADMIN),
            json!({ "sandbox": "sb" }),
        )
        .await;
    assert_eq!(status, 401, "the admin token is not the service token");
    let (status, doc) = api
        .post(
            "/v1/service/status",
            Some(SERVICE),
            json!({ "sandbox": "sb" }),
        )
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["credentials"][0]["state"], "not_connected");
    assert!(!doc.to_string().contains("gh-secret-value"));
    let remote = api
        .remote(SERVICE)
        .status(&SandboxId::new("sb"))
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(&remote).unwrap(), doc);

    let link = doc["credentials"][0]["connect_url"].as_str().unwrap();
    let id = link.rsplit('/').next().unwrap();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let opened = no_redirects
        .get(format!("{}/connect/{id}", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 303);
    let location = opened.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://github.com/login/oauth/authorize?"),
        "{location}"
    );
    assert!(location.contains("client_id=gh-client"), "{location}");
    let unknown = no_redirects
        .get(format!("{}/connect/not-a-link", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown
        .text()
        .await
        .unwrap()
        .contains("connect link not found"));
}

/// A remote proxy following the change stream sees a deleted sandbox as a
/// new generation at once, and its placeholder is refused next time.
#[tokio::test]
async fn the_change_stream_tells_a_remote_proxy_of_a_deleted_sandbox() {
    let api = Api::start().await;
    let placeholder = api.sandbox_with_secret().await;
    let remote = api.remote(SERVICE);
    let follower = remote.follow_changes();
    let sandbox = SandboxId::new("sb");
    assert!(remote.resolve(&sandbox, &placeholder).await.is_ok());
    // The stream's first line counts as a change (anything may have come before).
    let opened = wait_for_change(&remote, 1).await;
    api.vault.delete_sandbox("sb").await.unwrap();
    wait_for_change(&remote, opened).await;
    assert!(remote.resolve(&sandbox, &placeholder).await.is_err());
    // Without the service token, no stream.
    let refused = api
        .http
        .get(format!("{}/v1/service/changes", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    drop(remote);
    follower.abort();
}

/// Waits (at most 5 s) until the remote's generation passes `seen`.
async fn wait_for_change(remote: &RemoteVault, seen: u64) -> u64 {
    for _ in 0..500 {
        let now = remote.generation();
        if now > seen {
            return now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no change seen after generation {seen}");
}

/// Environments, names and machine accounts over the admin API: each bad
/// input answers the status its error type maps to, naming what was wrong,
/// and a client secret given is never echoed.
#[tokio::test]
async fn environments_names_and_machine_accounts_refuse_bad_input() {
    let api = Api::start().await;
    let admin = Some(ADMIN);
    let environments: Value = api
        .http
        .get(format!("{}/v1/environments", api.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(environments, json!(["default"]));
    api.vault
        .set_app("default", "github", "production", "cid", None)
        .await
        .unwrap();
    let sandbox =
        |environment: &str| json!({ "providers": ["github"], "environment": environment });
    let (status, body) = api.post("/v1/sandboxes", admin, sandbox("prodution")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("known: default, production"),
        "{body}"
    );
    let (status, created) = api
        .post("/v1/sandboxes", admin, sandbox("production"))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    // A flow for that sandbox in another environment.
    let (status, body) = api
        .post(
            "/v1/connect-flows",
            admin,
            json!({ "provider": "github", "sandbox": id, "environment": "default" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("resolves environment production"),
        "{body}"
    );
    // Pins: unknown name (404), unknown field in a pin (422).
    let (status, body) = api
        .post(
            "/v1/sandboxes",
            admin,
            json!({ "connections": [{ "provider": "github", "name": "work" }] }),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = api
        .post(
            "/v1/sandboxes",
            admin,
            json!({ "connections": [{ "name": "work", "owner": "x" }] }),
        )
        .await;
    assert_eq!(status, 422);
    // A machine account without a provider and without a token URL.
    let (status, body) = api
        .post(
            "/v1/machine-accounts",
            admin,
            json!({ "name": "billing", "client_id": "id", "client_secret": SECRET_VALUE,
                    "expose_as_env": "BILLING_TOKEN", "hosts": ["api.billing.test"] }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("needs token_url"),
        "{body}"
    );
    assert!(!body.to_string().contains(SECRET_VALUE));
    let (status, _) = api
        .post(
            "/v1/machine-accounts",
            admin,
            json!({ "name": "billing", "client_id": "id", "client_secret": SECRET_VALUE, "host": "x" }),
        )
        .await;
    assert_eq!(status, 422, "unknown fields are refused");
    assert!(api.vault.connections().await.unwrap().is_empty());
    assert_eq!(api.vault.sandboxes().await.unwrap().len(), 1);
}
