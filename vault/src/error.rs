//! The vault's one error type. Messages name what was wrong and never carry a
//! token, refresh token, client secret or key.

/// Which exchange with a provider an error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CodeExchange,
    Refresh,
    ClientCredentials,
    Revocation,
    /// OAuth 1.0a: asking for a request token.
    RequestToken,
    /// OAuth 1.0a: trading the verified request token for an access token.
    AccessToken,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CodeExchange => "authorization-code exchange",
            Self::Refresh => "token refresh",
            Self::ClientCredentials => "client-credentials grant",
            Self::Revocation => "token revocation",
            Self::RequestToken => "OAuth 1.0a request-token call",
            Self::AccessToken => "OAuth 1.0a access-token call",
        })
    }
}

/// The `error` codes of RFC 6749 §5.2 and §4.1.2.1 and RFC 7009 §2.2.1 that
/// the vault acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    AccessDenied,
    TemporarilyUnavailable,
    ServerError,
    SlowDown,
    UnsupportedTokenType,
}

impl OAuthErrorCode {
    const ALL: [Self; 11] = [
        Self::InvalidRequest,
        Self::InvalidClient,
        Self::InvalidGrant,
        Self::UnauthorizedClient,
        Self::UnsupportedGrantType,
        Self::InvalidScope,
        Self::AccessDenied,
        Self::TemporarilyUnavailable,
        Self::ServerError,
        Self::SlowDown,
        Self::UnsupportedTokenType,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::ServerError => "server_error",
            Self::SlowDown => "slow_down",
            Self::UnsupportedTokenType => "unsupported_token_type",
        }
    }

    /// `None` for codes outside the RFCs (kept as text in the answer).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// An OAuth error answer: `error` and `error_description` (RFC 6749 §5.2),
/// cleaned of control characters and cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthAnswer {
    pub error: String,
    pub description: Option<String>,
}

impl OAuthAnswer {
    pub fn new(error: &str, description: Option<&str>) -> Self {
        Self {
            error: clean(error, 64),
            description: description.map(|d| clean(d, 300)).filter(|d| !d.is_empty()),
        }
    }

    /// The `error` as a known code.
    pub fn code(&self) -> Option<OAuthErrorCode> {
        OAuthErrorCode::parse(&self.error)
    }
}

impl std::fmt::Display for OAuthAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.description {
            Some(d) => write!(f, "{}: {d}", self.error),
            None => f.write_str(&self.error),
        }
    }
}

/// Printable characters only, at most `max` of them: provider text goes into
/// pages, logs and terminals.
pub fn clean(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A failed exchange with a provider, by what went wrong at which step.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider {provider} did not answer the {step} in time")]
    Timeout {
        provider: String,
        step: Step,
        #[source]
        source: Option<reqwest::Error>,
    },
    #[error("provider {provider} refused the connection for the {step} (is it down?)")]
    ConnectionRefused {
        provider: String,
        step: Step,
        #[source]
        source: reqwest::Error,
    },
    #[error("provider {provider} could not be reached for the {step}")]
    Unreachable {
        provider: String,
        step: Step,
        #[source]
        source: reqwest::Error,
    },
    #[error("provider {provider} answered the {step} with HTTP {status}{}", answer.as_ref().map(|a| format!(" ({a})")).unwrap_or_default())]
    Status {
        provider: String,
        step: Step,
        status: u16,
        answer: Option<OAuthAnswer>,
    },
    #[error("provider {provider} refused the {step}: {answer}")]
    Refused {
        provider: String,
        step: Step,
        answer: OAuthAnswer,
    },
    #[error("provider {provider} sent an unreadable answer to the {step} ({bytes} bytes)")]
    Unreadable {
        provider: String,
        step: Step,
        bytes: usize,
    },
    #[error("provider {provider}: the {step} failed: {detail}")]
    Other {
        provider: String,
        step: Step,
        detail: String,
    },
}

impl ProviderError {
    /// A transport failure, told apart as timeout, refused connection or other.
    pub fn transport(provider: &str, step: Step, source: reqwest::Error) -> Self {
        let provider = provider.to_owned();
        if source.is_timeout() {
            return Self::Timeout {
                provider,
                step,
                source: Some(source),
            };
        }
        if is_refused(&source) {
            return Self::ConnectionRefused {
                provider,
                step,
                source,
            };
        }
        Self::Unreachable {
            provider,
            step,
            source,
        }
    }

    /// Worth trying again later (as opposed to a refusal that will repeat).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::Refused { answer, .. } => matches!(
                answer.code(),
                Some(OAuthErrorCode::TemporarilyUnavailable | OAuthErrorCode::ServerError)
            ),
            _ => true,
        }
    }
}

fn is_refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = err.source();
    }
    false
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// Something that existed and can no longer be used (an expired or used connect link).
    #[error("{0}")]
    Gone(String),
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
    /// The user (or the provider) cancelled the consent: `error` on the callback.
    #[error("not connected: provider {provider} did not grant access ({answer})")]
    ConsentDenied {
        provider: String,
        answer: OAuthAnswer,
    },
    /// A first connect whose code the provider would not exchange.
    #[error("the provider {provider} refused the authorization code ({answer}); start the connection again")]
    CodeRefused {
        provider: String,
        answer: OAuthAnswer,
    },
    /// `invalid_client`: the app's (or machine account's) id or secret is wrong.
    #[error("the provider {provider} refused the client credentials of app {client_id} ({answer}); check its client_id and client_secret")]
    ClientRefused {
        provider: String,
        client_id: String,
        answer: OAuthAnswer,
    },
    #[error(transparent)]
    Provider(#[from] ProviderError),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_cleaned_and_messages_name_provider_and_step() {
        let a = OAuthAnswer::new("invalid_client\n", Some("bad\x1b[31m secret"));
        assert_eq!(a.error, "invalid_client");
        assert_eq!(a.code(), Some(OAuthErrorCode::InvalidClient));
        assert_eq!(OAuthAnswer::new("made_up", None).code(), None);
        assert_eq!(a.description.as_deref(), Some("bad[31m secret"));
        let e = ProviderError::Status {
            provider: "acme".into(),
            step: Step::Revocation,
            status: 500,
            answer: Some(OAuthAnswer::new("server_error", Some("db down"))),
        };
        assert_eq!(
            e.to_string(),
            "provider acme answered the token revocation with HTTP 500 (server_error: db down)"
        );
        assert!(e.is_transient());
        let long = "x".repeat(1000);
        assert_eq!(
            OAuthAnswer::new("e", Some(&long))
                .description
                .unwrap()
                .len(),
            300
        );
    }

    #[tokio::test]
    async fn timeouts_and_refused_connections_are_told_apart() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(300))
            .build()
            .unwrap();
        // Accepts, never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", silent.local_addr().unwrap());
        let _held = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                kept.push(s);
            }
        });
        let err = http.post(&url).send().await.unwrap_err();
        let e = ProviderError::transport("acme", Step::Refresh, err);
        assert!(matches!(e, ProviderError::Timeout { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "provider acme did not answer the token refresh in time"
        );
        // Nothing listens.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", closed.local_addr().unwrap());
        drop(closed);
        let err = http.post(&url).send().await.unwrap_err();
        let e = ProviderError::transport("acme", Step::CodeExchange, err);
        assert!(
            matches!(e, ProviderError::ConnectionRefused { .. }),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .contains("refused the connection for the authorization-code exchange"));
    }
}
