//! The API's edge: where a [`VaultError`] or [`TokenError`] becomes a status
//! and a JSON body. The error types themselves know nothing of HTTP.

use airlock_vault_client::contract::ErrorAnswer;
use airlock_vault_client::{ErrorCode, TokenError};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::BODY_LIMIT;
use crate::error::{ProviderError, VaultError};

/// The status a vault error is answered with.
pub fn status(e: &VaultError) -> StatusCode {
    match e {
        VaultError::Invalid(_) | VaultError::CodeRefused { .. } => StatusCode::BAD_REQUEST,
        VaultError::ConsentDenied { .. } => StatusCode::FORBIDDEN,
        VaultError::NotFound(_) => StatusCode::NOT_FOUND,
        VaultError::Conflict(_) => StatusCode::CONFLICT,
        VaultError::Gone(_) => StatusCode::GONE,
        VaultError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        VaultError::Reconnect(_) => StatusCode::CONFLICT,
        VaultError::Provider(ProviderError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
        VaultError::ProviderUnavailable(_)
        | VaultError::OAuth(_)
        | VaultError::Provider(_)
        | VaultError::ClientRefused { .. } => StatusCode::BAD_GATEWAY,
        VaultError::Config(_) | VaultError::Crypto(_) | VaultError::Store(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The status a service API refusal is answered with.
pub fn token_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UnknownPlaceholder => StatusCode::NOT_FOUND,
        ErrorCode::WrongSandbox | ErrorCode::NarrowedRefused => StatusCode::FORBIDDEN,
        ErrorCode::Revoked => StatusCode::GONE,
        ErrorCode::ReconnectNeeded | ErrorCode::NotConnected => StatusCode::CONFLICT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::BadCredential => StatusCode::UNAUTHORIZED,
    }
}

/// A service API refusal: its status, and the body the remote client reads.
pub fn token_error(e: TokenError) -> Response {
    (token_status(e.code()), Json(ErrorAnswer::from(&e))).into_response()
}

/// Errors as `{"error": "…"}` with the status the error maps to.
pub struct ApiError(pub VaultError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            status(&self.0),
            Json(json!({ "error": self.0.to_string() })),
        )
            .into_response()
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        Self(e)
    }
}

/// `Json<T>` whose rejections (bad JSON, missing fields, too large) use the API's error shape.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => {
                let status = rejection.status();
                let message = match status {
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        format!("request body is larger than {BODY_LIMIT} bytes")
                    }
                    // The body text names the field and the problem, never values of secrets
                    // (serde reports types and field names).
                    _ => rejection.body_text(),
                };
                Err((status, Json(json!({ "error": message }))).into_response())
            }
        }
    }
}
