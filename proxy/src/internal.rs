//! `airlock.internal`: the name airlock answers itself. A sandbox asks it,
//! with no SDK, what its credentials are and which need a human
//! (`GET /v1/status`, `GET /v1/status/{variable or provider}`), over plain
//! `http://` (port 80) or through CONNECT (port 443, intercepted with a leaf
//! of airlock's CA). It is never resolved or dialled (`egress` refuses the
//! name too), and the sandbox is the one the listener already identified,
//! so `require_auth` applies as to any request.
//!
//! The answer is built from [`TokenSource::status`], whose document has no
//! field that can hold a token (names, hosts, states, scopes, times, a link:
//! see `CredentialStatus`). It still passes [`screen`] with the sandbox's
//! response firewall like an upstream answer, so even a token that reached
//! a field by mistake would leave as its placeholder.
//!
//! [`TokenSource::status`]: airlock_vault_client::TokenSource::status

use airlock_vault_client::{
    CredentialStatus, SandboxId, SandboxStatus, TokenError, STATUS_VERSION,
};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use serde::Serialize;

use crate::audit::{AuditRecord, Outcome};
use crate::body::full;
use crate::error::ProxyError;
use crate::pipeline::close::{on_body_end, refuse};
use crate::screen::{screen, Decoding, ToSandbox};
use crate::shared::Shared;

/// The port `airlock.internal` is served on over plain `http://`.
pub(crate) const PLAIN_PORT: u16 = 80;
/// The port a CONNECT to `airlock.internal` must name.
pub(crate) const TLS_PORT: u16 = 443;

/// Whether `host` (normalised) is airlock's own name.
pub(crate) fn is_internal(host: &str) -> bool {
    host == crate::INTERNAL_HOST
}

/// The refusal of `airlock.internal` on a port it is not served on.
pub(crate) fn wrong_port(port: u16, served: u16) -> ProxyError {
    ProxyError::PortNotAllowed {
        port,
        allowed: format!("{served} for {}", crate::INTERNAL_HOST),
    }
}

/// What a request to `airlock.internal` asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// `GET /v1/status`
    Status,
    /// `GET /v1/status/{variable or provider}`
    One(&'a str),
}

/// Why `airlock.internal` did not answer with a document: its `error` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum ApiError {
    NotFound,
    MethodNotAllowed,
    Unavailable,
}

impl ApiError {
    fn status(self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    version: u32,
    error: ApiError,
    message: &'a str,
}

/// `GET /v1/status/{name}`: one credential of the sandbox.
#[derive(Serialize)]
struct OneBody<'a> {
    version: u32,
    sandbox: &'a str,
    credential: &'a CredentialStatus,
}

fn route(path: &str) -> Option<Route<'_>> {
    match path {
        "/v1/status" => Some(Route::Status),
        _ => path
            .strip_prefix("/v1/status/")
            .filter(|name| !name.is_empty() && !name.contains('/'))
            .map(Route::One),
    }
}

/// Answers one request to `airlock.internal` for `audit.sandbox`. The
/// request's body, if any, is not read.
pub(crate) async fn handle(
    shared: &Shared,
    method: &Method,
    path: &str,
    mut audit: AuditRecord,
) -> ToSandbox {
    let sandbox = audit.sandbox.clone();
    audit.outcome = Outcome::InternalApi;
    let (status, body, allow) = match answer(shared, method, path, &sandbox).await {
        Ok(body) => (StatusCode::OK, body, false),
        Err((error, message)) => {
            if let ApiError::Unavailable = error {
                tracing::warn!(%sandbox, %message, "sandbox status unavailable");
                // Counted and audited like any request the vault could not serve.
                let err = ProxyError::from(TokenError::Unavailable(message.clone()));
                audit.outcome = Outcome::from(&err);
            }
            let body = serde_json::to_vec(&ErrorBody {
                version: STATUS_VERSION,
                error,
                message: &message,
            })
            .expect("an error body serialises");
            (error.status(), body, error == ApiError::MethodNotAllowed)
        }
    };
    let length = body.len();
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // States change when a human acts: never served from a cache.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if allow {
        headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    audit.status = status.as_u16();
    let firewall = if shared.settings.scrub_responses {
        shared.ledger.firewall(&sandbox).await
    } else {
        None
    };
    let decoding = Decoding {
        max: shared.settings.max_decoded_body,
        budget: &shared.decompression,
    };
    match screen(response, firewall, decoding).await {
        Ok(answer) => on_body_end(audit, answer),
        Err(err) => refuse(&mut audit, err),
    }
}

/// The JSON document for `path`, or why there is none.
async fn answer(
    shared: &Shared,
    method: &Method,
    path: &str,
    sandbox: &SandboxId,
) -> Result<Vec<u8>, (ApiError, String)> {
    let Some(route) = route(path) else {
        return Err((
            ApiError::NotFound,
            format!(
                "no such path on {}: try GET /v1/status",
                crate::INTERNAL_HOST
            ),
        ));
    };
    if method != Method::GET {
        return Err((
            ApiError::MethodNotAllowed,
            format!("{method} is not allowed here: use GET"),
        ));
    }
    let status: SandboxStatus = shared
        .tokens
        .status(sandbox)
        .await
        .map_err(|e: TokenError| {
            (
                ApiError::Unavailable,
                format!("the credential status cannot be read now: {e}"),
            )
        })?;
    let json = match route {
        Route::Status => serde_json::to_vec(&status),
        Route::One(name) => {
            // A variable name first, then a provider's name.
            let found = status
                .credentials
                .iter()
                .find(|c| c.variable == name)
                .or_else(|| {
                    status
                        .credentials
                        .iter()
                        .find(|c| c.provider.as_deref() == Some(name))
                });
            let Some(credential) = found else {
                return Err((
                    ApiError::NotFound,
                    format!(
                        "this sandbox has no credential named {name:?} (a variable or a provider)"
                    ),
                ));
            };
            serde_json::to_vec(&OneBody {
                version: STATUS_VERSION,
                sandbox: &status.sandbox,
                credential,
            })
        }
    };
    json.map_err(|e| (ApiError::Unavailable, e.to_string()))
}

#[cfg(test)]
mod tests;
