//! The vault's service API, as a [`TokenSource`] for a proxy that runs apart
//! from its vault (`airlock proxy`). Uses hyper, not reqwest: this is the
//! proxy's data path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::contract::{
    paths, AuthenticateAnswer, AuthenticateRequest, BoundHostAnswer, BoundHostRequest,
    ChangeNotice, ErrorAnswer, GuardedAnswer, GuardedRequest, RequestBatch, RequestsAccepted,
    ResolveRequest, ResolvedAnswer, SandboxStatus, StatusRequest, StepUpRequest,
    CHANGE_KEEPALIVE_SECS,
};
use crate::{Guarded, HostPolicy, Resolved, SandboxId, StepUp, TokenError, TokenSource};

const TIMEOUT: Duration = Duration::from_secs(15);
const MAX_RESPONSE: usize = 256 * 1024;

type VaultClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct RemoteVault {
    base: String,
    service_token: SecretString,
    prefix: String,
    client: VaultClient,
    /// Bumped at each change the vault's change stream reports (and when
    /// the stream is lost), so caches in front of this source drop what
    /// they hold: a disconnect reaches this proxy in well under a second.
    generation: Arc<AtomicU64>,
}

impl RemoteVault {
    /// `base_url` like `http://vault:8090`; `tls` verifies an https vault.
    pub fn new(
        base_url: &str,
        service_token: SecretString,
        tls: rustls::ClientConfig,
        prefix: &str,
    ) -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            base: base_url.trim_end_matches('/').to_owned(),
            service_token,
            prefix: prefix.to_owned(),
            // Idle connections are dropped before the vault closes them (60 s),
            // so a request never goes out on one the vault is closing.
            client: Client::builder(TokioExecutor::new())
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            generation: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Follows the vault's change stream until this source is dropped.
    /// Call once, inside the runtime.
    pub fn follow_changes(&self) -> tokio::task::JoinHandle<()> {
        let follower = ChangeFollower {
            url: format!("{}{}", self.base, paths::CHANGES),
            service_token: self.service_token.clone(),
            client: self.client.clone(),
            generation: self.generation.clone(),
        };
        tokio::spawn(follower.run())
    }

    /// POSTs `body` and reads the answer: `Ok` for a 2xx, the vault's refusal otherwise.
    async fn call<Req: Serialize, Answer: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Answer, TokenError> {
        let unavailable =
            |what: String| TokenError::Unavailable(format!("vault {}: {what}", self.base));
        let body = serde_json::to_vec(body).map_err(|e| unavailable(e.to_string()))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header(
                "authorization",
                format!("Bearer {}", self.service_token.expose_secret()),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unavailable(e.to_string()))?;
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| unavailable("timed out".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|_| TokenError::Unavailable("vault answer is missing fields".into()));
        }
        match serde_json::from_slice::<ErrorAnswer>(&bytes) {
            Ok(answer) if answer.code.is_some() => Err(answer.into_token_error()),
            _ if status == StatusCode::UNAUTHORIZED => {
                Err(unavailable("the service token was refused".into()))
            }
            Ok(answer) => Err(answer.into_token_error()),
            Err(_) => Err(TokenError::Unavailable("unexpected vault answer".into())),
        }
    }

    /// Reports finished requests for the console (`POST /v1/service/requests`).
    pub async fn report_requests(&self, batch: &RequestBatch) -> Result<usize, TokenError> {
        let answer: RequestsAccepted = self.call(paths::REQUESTS, batch).await?;
        Ok(answer.accepted)
    }

    async fn bound_host(&self, sandbox: &SandboxId, host: &str) -> Option<BoundHostAnswer> {
        let request = BoundHostRequest {
            host: host.to_owned(),
            sandbox: sandbox.as_str().to_owned(),
        };
        self.call(paths::BOUND_HOST, &request).await.ok()
    }
}

/// Reads `GET /v1/service/changes` and bumps the generation at each
/// change, reconnecting with back-off.
struct ChangeFollower {
    url: String,
    service_token: SecretString,
    client: VaultClient,
    generation: Arc<AtomicU64>,
}

/// Longest wait between attempts to reopen the change stream.
const FOLLOW_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A stream that says nothing for this long is taken for dead.
const FOLLOW_SILENCE: Duration = Duration::from_secs(CHANGE_KEEPALIVE_SECS * 2 + 5);
/// A line longer than this is not a notice.
const MAX_NOTICE_LINE: usize = 4096;

impl ChangeFollower {
    async fn run(self) {
        let mut backoff = Duration::from_millis(250);
        // Only the follower holds the generation once the source is gone.
        while Arc::strong_count(&self.generation) > 1 {
            if self.follow_once().await {
                backoff = Duration::from_millis(250);
            }
            // While the stream was down anything may have changed.
            self.generation.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(FOLLOW_BACKOFF_MAX);
        }
    }

    /// Reads one stream until it ends; whether it was opened at all.
    async fn follow_once(&self) -> bool {
        let Ok(request) = Request::builder()
            .method(Method::GET)
            .uri(&self.url)
            .header(
                "authorization",
                format!("Bearer {}", self.service_token.expose_secret()),
            )
            .body(Full::new(Bytes::new()))
        else {
            return false;
        };
        let response = match tokio::time::timeout(TIMEOUT, self.client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => response,
            Ok(Ok(response)) => {
                tracing::warn!(status = %response.status(), "the vault refused its change stream");
                return false;
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot open the vault's change stream");
                return false;
            }
            Err(_) => return false,
        };
        let mut body = response.into_body();
        let mut pending = Vec::new();
        let mut last_seen = None;
        loop {
            let frame = match tokio::time::timeout(FOLLOW_SILENCE, body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                _ => return true,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if let Ok(notice) = serde_json::from_slice::<ChangeNotice>(&line) {
                    if last_seen != Some(notice.generation) {
                        last_seen = Some(notice.generation);
                        self.generation.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if pending.len() > MAX_NOTICE_LINE {
                return true;
            }
        }
    }
}

#[async_trait::async_trait]
impl TokenSource for RemoteVault {
    fn placeholder_prefix(&self) -> &str {
        &self.prefix
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    async fn resolve(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
    ) -> Result<Resolved, TokenError> {
        let request = ResolveRequest {
            failed_token: None,
            placeholder: placeholder.to_owned(),
            sandbox: sandbox.as_str().to_owned(),
        };
        let answer: ResolvedAnswer = self.call(paths::RESOLVE, &request).await?;
        Ok(answer.into_resolved(sandbox))
    }

    async fn is_bound_host(&self, sandbox: &SandboxId, host: &str) -> bool {
        self.bound_host(sandbox, host)
            .await
            .is_some_and(|a| a.bound)
    }

    async fn guarded(&self, sandbox: &SandboxId) -> Result<Vec<Guarded>, TokenError> {
        let request = GuardedRequest {
            sandbox: sandbox.as_str().to_owned(),
        };
        let answer: GuardedAnswer = self.call(paths::GUARDED, &request).await?;
        Ok(answer.guarded.into_iter().map(Guarded::from).collect())
    }

    async fn host_policy(&self, sandbox: &SandboxId, host: &str) -> HostPolicy {
        // When the vault cannot say, nothing is required or injected:
        // resolving a placeholder needs the vault anyway.
        self.bound_host(sandbox, host)
            .await
            .map(|a| a.policy)
            .unwrap_or_default()
    }

    async fn step_up(
        &self,
        sandbox: &SandboxId,
        connection_id: &str,
        needed: &[String],
    ) -> Result<StepUp, TokenError> {
        let request = StepUpRequest {
            sandbox: sandbox.as_str().to_owned(),
            connection_id: connection_id.to_owned(),
            needed: needed.to_vec(),
        };
        self.call(paths::STEP_UP, &request).await
    }

    async fn status(&self, sandbox: &SandboxId) -> Result<SandboxStatus, TokenError> {
        let request = StatusRequest {
            sandbox: sandbox.as_str().to_owned(),
        };
        let mut status: SandboxStatus = self.call(paths::STATUS, &request).await?;
        // The document is about the sandbox that asked, whatever came back.
        status.sandbox = sandbox.as_str().to_owned();
        Ok(status)
    }

    async fn may_swap_body(&self, sandbox: &SandboxId, host: &str) -> bool {
        // When the vault cannot say, assume a swap may happen.
        self.bound_host(sandbox, host)
            .await
            .is_none_or(|a| a.body_swap)
    }

    async fn authenticate(&self, sandbox_id: &str, secret: &str) -> Result<SandboxId, TokenError> {
        let request = AuthenticateRequest {
            sandbox: sandbox_id.to_owned(),
            secret: SecretString::from(secret.to_owned()),
        };
        let answer: AuthenticateAnswer = self.call(paths::AUTHENTICATE, &request).await?;
        Ok(SandboxId::new(answer.sandbox))
    }

    async fn refresh(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
        failed: &SecretString,
    ) -> Result<Resolved, TokenError> {
        let request = ResolveRequest {
            failed_token: Some(failed.clone()),
            placeholder: placeholder.to_owned(),
            sandbox: sandbox.as_str().to_owned(),
        };
        let answer: ResolvedAnswer = self.call(paths::REFRESH, &request).await?;
        Ok(answer.into_resolved(sandbox))
    }
}

#[cfg(test)]
mod tests {
    //! Against a small in-process server that answers like the vault, so
    //! what the client sends and how it reads each answer are pinned here.

    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use serde_json::{json, Value};

    use super::*;

    /// What the server saw: path, authorization header, body.
    type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

    /// Serves `answer(path)` (status, body text) for every request.
    async fn server(answer: fn(&str) -> (u16, String)) -> (String, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = req.into_body().collect().await?.to_bytes();
                        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        log.lock().unwrap().push((path.clone(), auth, body));
                        let (status, text) = answer(&path);
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(text)))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (base, seen)
    }

    fn client(base: &str) -> RemoteVault {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        RemoteVault::new(
            base,
            SecretString::from("svc-token".to_owned()),
            tls,
            crate::DEFAULT_PREFIX,
        )
    }

    fn resolved_body() -> String {
        json!({
            "binding": {
                "connection_id": "conn_1",
                "expired_on": [{ "status": 401, "body_contains": null }],
                "hosts": ["api.github.com", "not a host pattern"],
                "id": "provider:github",
                "inject": "bearer",
                "name": "GITHUB_TOKEN",
                "on_foreign_body": "refuse",
                "sandbox": "sb",
                "swap_in": ["header"],
            },
            "expires_at": 99,
            "token": "real-token",
        })
        .to_string()
    }

    #[tokio::test]
    async fn resolve_and_refresh_send_the_contract_and_read_the_binding() {
        let (base, seen) = server(|_| (200, resolved_body())).await;
        let vault = client(&base);
        let sb = SandboxId::new("sb");
        let r = vault.resolve(&sb, "miosa-tok-abc").await.unwrap();
        assert_eq!(r.token.expose_secret(), "real-token");
        assert_eq!(r.expires_at, Some(99));
        assert_eq!(r.binding.id, "provider:github");
        assert_eq!(
            r.binding.kind,
            crate::BindingKind::OAuth {
                connection_id: "conn_1".into()
            }
        );
        assert_eq!(
            r.binding.hosts.len(),
            1,
            "an unreadable pattern is left out"
        );
        assert_eq!(r.binding.on_foreign_body, crate::ForeignBody::Refuse);
        assert_eq!(r.binding.inject, Some(crate::Injection::Bearer));
        vault
            .refresh(&sb, "miosa-tok-abc", &SecretString::from("old".to_owned()))
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0],
            (
                "/v1/service/resolve".to_owned(),
                "Bearer svc-token".to_owned(),
                json!({ "placeholder": "miosa-tok-abc", "sandbox": "sb" })
            )
        );
        assert_eq!(seen[1].0, "/v1/service/refresh");
        assert_eq!(
            seen[1].2,
            json!({ "failed_token": "old", "placeholder": "miosa-tok-abc", "sandbox": "sb" })
        );
    }

    #[tokio::test]
    async fn refusals_become_token_errors_by_code() {
        let (base, _) = server(|path| match path {
            "/v1/service/resolve" => (
                409,
                r#"{"binding":"provider:github","code":"reconnect_needed","error":"x"}"#.into(),
            ),
            "/v1/service/authenticate" => (
                401,
                r#"{"binding":null,"code":"bad_credential","error":"proxy credential rejected"}"#
                    .into(),
            ),
            "/v1/service/guarded" => (503, r#"{"error":"database down"}"#.into()),
            _ => (500, "not json".into()),
        })
        .await;
        let vault = client(&base);
        let sb = SandboxId::new("sb");
        let err = vault.resolve(&sb, "p").await.unwrap_err();
        assert!(
            matches!(&err, TokenError::ReconnectNeeded { binding } if binding == "provider:github"),
            "{err:?}"
        );
        let err = vault.authenticate("sb", "secret").await.unwrap_err();
        assert!(matches!(err, TokenError::BadCredential), "{err:?}");
        let err = vault.guarded(&sb).await.unwrap_err();
        assert!(
            matches!(&err, TokenError::Unavailable(m) if m == "database down"),
            "{err:?}"
        );
        let err = vault
            .refresh(&sb, "p", &SecretString::from("t".to_owned()))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TokenError::Unavailable(m) if m == "unexpected vault answer"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_service_token_is_told_apart_from_a_refused_credential() {
        let (base, _) = server(|_| (401, r#"{"error":"unauthorized: …"}"#.into())).await;
        let err = client(&base)
            .resolve(&SandboxId::new("sb"), "p")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TokenError::Unavailable(m) if m.ends_with("the service token was refused")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn status_sends_the_sandbox_and_reads_the_document() {
        let (base, seen) = server(|_| {
            (
                200,
                json!({
                    "version": 1,
                    "sandbox": "sb",
                    "credentials": [{
                        "variable": "GITHUB_TOKEN",
                        "kind": "oauth",
                        "provider": "github",
                        "hosts": ["api.github.com"],
                        "state": "not_connected",
                        "scopes": [],
                        "expires_at": null,
                        "connect_url": "http://vault/connect/abc",
                    }],
                })
                .to_string(),
            )
        })
        .await;
        let status = client(&base).status(&SandboxId::new("sb")).await.unwrap();
        assert_eq!(status.credentials.len(), 1);
        assert_eq!(
            status.credentials[0].state,
            crate::CredentialState::NotConnected
        );
        assert_eq!(
            status.credentials[0].connect_url.as_deref(),
            Some("http://vault/connect/abc")
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0, "/v1/service/status");
        assert_eq!(seen[0].2, json!({ "sandbox": "sb" }));
    }

    #[tokio::test]
    async fn bound_host_answers_and_their_defaults() {
        let (base, _) = server(|_| (200, r#"{"bound":true}"#.into())).await;
        let vault = client(&base);
        let sb = SandboxId::new("sb");
        assert!(vault.is_bound_host(&sb, "api.github.com").await);
        assert!(
            vault.may_swap_body(&sb, "api.github.com").await,
            "an older vault that does not say: a swap may happen"
        );
        let (base, _) = server(|_| (503, "{}".into())).await;
        let vault = client(&base);
        assert!(!vault.is_bound_host(&sb, "api.github.com").await);
        assert!(vault.may_swap_body(&sb, "api.github.com").await);
    }
}
