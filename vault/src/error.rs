//! The vault's one error type. Messages name what was wrong and never carry a
//! token, refresh token, client secret or key.

use axum::http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("configuration error: {0}")]
    Config(String),
    #[error("encryption error: {0}")]
    Crypto(String),
    #[error("database error: {0}")]
    Store(String),
    /// The provider refused the grant: the user must connect again.
    #[error("the provider refused the grant ({0}); the account must be reconnected")]
    Reconnect(String),
    /// The provider could not be reached or failed; worth retrying later.
    #[error("the provider is unavailable: {0}")]
    ProviderUnavailable(String),
    #[error("OAuth error: {0}")]
    OAuth(String),
}

impl VaultError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Reconnect(_) => StatusCode::CONFLICT,
            Self::ProviderUnavailable(_) | Self::OAuth(_) => StatusCode::BAD_GATEWAY,
            Self::Config(_) | Self::Crypto(_) | Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for VaultError {
    fn from(err: sqlx::Error) -> Self {
        // sqlx errors name tables and constraints, never bound values.
        match err {
            sqlx::Error::RowNotFound => Self::NotFound("record".into()),
            other => Self::Store(other.to_string()),
        }
    }
}
