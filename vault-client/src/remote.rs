//! The vault's service API, as a [`TokenSource`] for a proxy that runs apart
//! from its vault (`airlock proxy`). Uses hyper, not reqwest: this is the
//! proxy's data path.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::{
    Binding, BindingKind, HostPattern, Resolved, SandboxId, SwapLocation, TokenError, TokenSource,
};

const TIMEOUT: Duration = Duration::from_secs(15);
const MAX_RESPONSE: usize = 256 * 1024;

pub struct RemoteVault {
    base: String,
    service_token: SecretString,
    prefix: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
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
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<(StatusCode, Value), TokenError> {
        let unavailable =
            |what: String| TokenError::Unavailable(format!("vault {}: {what}", self.base));
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header(
                "authorization",
                format!("Bearer {}", self.service_token.expose_secret()),
            )
            .body(Full::new(Bytes::from(body.to_string())))
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
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status == StatusCode::UNAUTHORIZED && value.get("code").is_none() {
            return Err(unavailable("the service token was refused".into()));
        }
        Ok((status, value))
    }

    fn error_from(value: &Value) -> TokenError {
        let binding = value["binding"].as_str().unwrap_or("?").to_owned();
        match value["code"].as_str() {
            Some("unknown_placeholder") => TokenError::UnknownPlaceholder,
            Some("wrong_sandbox") => TokenError::WrongSandbox { binding },
            Some("revoked") => TokenError::Revoked { binding },
            Some("reconnect_needed") => TokenError::ReconnectNeeded { binding },
            Some("not_connected") => TokenError::NotConnected { binding },
            Some("bad_credential") => TokenError::BadCredential,
            _ => TokenError::Unavailable(
                value["error"]
                    .as_str()
                    .unwrap_or("unexpected vault answer")
                    .to_owned(),
            ),
        }
    }

    fn resolved_from(sandbox: &SandboxId, value: &Value) -> Result<Resolved, TokenError> {
        let b = &value["binding"];
        let bad = || TokenError::Unavailable("vault answer is missing fields".into());
        let hosts = b["hosts"]
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .filter_map(|h| HostPattern::parse(h.as_str()?).ok())
            .collect();
        let swap_in = serde_json::from_value::<Vec<SwapLocation>>(b["swap_in"].clone())
            .map_err(|_| bad())?
            .into_iter()
            .collect();
        Ok(Resolved {
            binding: Arc::new(Binding {
                id: b["id"].as_str().ok_or_else(bad)?.to_owned(),
                name: b["name"].as_str().unwrap_or_default().to_owned(),
                sandbox: sandbox.clone(),
                hosts,
                swap_in,
                kind: match b["connection_id"].as_str() {
                    Some(id) => BindingKind::OAuth {
                        connection_id: id.to_owned(),
                    },
                    None => BindingKind::Static,
                },
                expired_on: serde_json::from_value(b["expired_on"].clone()).unwrap_or_default(),
            }),
            token: SecretString::from(value["token"].as_str().ok_or_else(bad)?.to_owned()),
            expires_at: value["expires_at"].as_i64(),
        })
    }
}

#[async_trait::async_trait]
impl TokenSource for RemoteVault {
    fn placeholder_prefix(&self) -> &str {
        &self.prefix
    }

    async fn resolve(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
    ) -> Result<Resolved, TokenError> {
        let (status, value) = self
            .post(
                "/v1/service/resolve",
                json!({ "sandbox": sandbox.as_str(), "placeholder": placeholder }),
            )
            .await?;
        if status.is_success() {
            Self::resolved_from(sandbox, &value)
        } else {
            Err(Self::error_from(&value))
        }
    }

    async fn is_bound_host(&self, sandbox: &SandboxId, host: &str) -> bool {
        match self
            .post(
                "/v1/service/bound-host",
                json!({ "sandbox": sandbox.as_str(), "host": host }),
            )
            .await
        {
            Ok((status, value)) if status.is_success() => value["bound"].as_bool().unwrap_or(false),
            _ => false,
        }
    }

    async fn authenticate(&self, sandbox_id: &str, secret: &str) -> Result<SandboxId, TokenError> {
        let (status, value) = self
            .post(
                "/v1/service/authenticate",
                json!({ "sandbox": sandbox_id, "secret": secret }),
            )
            .await?;
        if status.is_success() {
            Ok(SandboxId::new(
                value["sandbox"].as_str().unwrap_or(sandbox_id),
            ))
        } else {
            Err(Self::error_from(&value))
        }
    }

    async fn refresh(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
        failed: &SecretString,
    ) -> Result<Resolved, TokenError> {
        let (status, value) = self
            .post(
                "/v1/service/refresh",
                json!({ "sandbox": sandbox.as_str(), "placeholder": placeholder, "failed_token": failed.expose_secret() }),
            )
            .await?;
        if status.is_success() {
            Self::resolved_from(sandbox, &value)
        } else {
            Err(Self::error_from(&value))
        }
    }
}
