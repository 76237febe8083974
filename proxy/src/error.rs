//! The proxy's one error type. Each error knows which side failed; this module
//! is the one place that turns an error into the status the sandbox gets, the
//! text it reads, and the audit outcome. No message carries a token.

use std::fmt;

use airlock_vault_client::{ErrorCode, SwapLocation, TokenError};
use bytes::Bytes;
use http::{header, Response, StatusCode};

use crate::body::{full, ProxyBody};
use crate::egress::DialError;

/// Which party a failure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The sandbox sent something the proxy refuses.
    Sandbox,
    /// The upstream could not be reached, verified or understood.
    Upstream,
    /// The token vault could not give a token.
    Vault,
    /// The proxy itself.
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A client that speaks plain HTTP into a tunnel meant for TLS.
    #[error(
        "expected a TLS ClientHello for {host} after CONNECT; got something else (plain HTTP?)"
    )]
    NotTls { host: String },
    #[error("proxy authentication required: {0}")]
    ProxyAuth(&'static str),
    #[error("port {port} is not allowed (allowed ports: {allowed})")]
    PortNotAllowed { port: u16, allowed: String },
    #[error("misdirected request: {0}")]
    Misdirected(String),
    /// A redirected connection whose original destination is not an
    /// address of the name its SNI or `Host` gave.
    #[error("this connection was sent to {original}, which is not an address of {host} (the name it asked for); it was not forwarded")]
    DestinationMismatch {
        host: String,
        original: std::net::SocketAddr,
    },
    /// A redirected connection from an address no sandbox is configured for.
    #[error("no sandbox is configured for redirected connections from {0} (transparent.sources)")]
    UnknownSource(std::net::IpAddr),
    #[error(
        "placeholder of binding {binding} may not be sent to {host} (allowed hosts: {allowed})"
    )]
    HostNotAllowed {
        binding: String,
        host: String,
        allowed: String,
    },
    #[error("placeholder of binding {binding} may not be used in the {location} of a request (allowed: {allowed})")]
    LocationNotAllowed {
        binding: String,
        location: &'static str,
        allowed: String,
    },
    #[error("placeholder of binding {binding} was sent over plain http://; credentials are only swapped on https:// connections")]
    PlainHttp { binding: String },
    /// A binding's request rules refused the request (`rule` names which:
    /// `rule 2 (deny DELETE /**)`, `the default (deny)`, `require`).
    #[error("the rules of binding {binding} refuse this request: {rule}")]
    RuleDenied { binding: String, rule: String },
    /// A human must connect (or reconnect) the account: the error, with the
    /// link that does it.
    #[error("{error}; connect it at {connect_url}")]
    ConsentNeeded {
        error: TokenError,
        connect_url: String,
    },
    #[error("{limit} requests are already waiting for consent; retry later")]
    TooManyHeld { limit: usize },
    #[error("request holds a placeholder that no binding of this sandbox knows")]
    UnknownPlaceholder,
    #[error("{0}")]
    Token(TokenError),
    #[error(
        "the token of binding {binding} cannot be put in a header (it holds forbidden characters)"
    )]
    InvalidToken { binding: String },
    #[error("egress denied: {0}")]
    EgressDenied(String),
    #[error("upstream DNS failure: {0}")]
    Dns(String),
    #[error("upstream connection failed: {0}")]
    Connect(String),
    #[error("upstream TLS verification failed for {host}: {reason}")]
    UpstreamTls { host: String, reason: String },
    #[error("upstream timed out: {0}")]
    Timeout(String),
    #[error("upstream error: {0}")]
    Upstream(String),
    /// The upstream closed (or reset) the connection before any of its
    /// answer came, as a pooled keep-alive connection can be closed just as
    /// a request goes out.
    #[error("upstream error: {host} closed the connection before answering ({detail})")]
    UpstreamClosed {
        host: String,
        /// Whether the upstream may have acted on the request.
        after: ClosedAfter,
        detail: String,
    },
    #[error("too many failed proxy authentications from this address; retry in {retry_after} s")]
    TooManyAuthFailures { retry_after: u64 },
    #[error("sandbox {sandbox} already has {limit} connections open")]
    TooManyConnections { sandbox: String, limit: usize },
    #[error("the proxy already holds {limit} connections; retry in {retry_after} s")]
    ProxyBusy { limit: usize, retry_after: u64 },
    #[error(
        "the proxy holds all {limit} sockets its open-files limit allows; retry in {retry_after} s"
    )]
    OutOfDescriptors { limit: usize, retry_after: u64 },
    #[error("compressed request bodies being decoded already use the proxy's {budget}-byte budget; retry in {retry_after} s")]
    DecompressionBudget { budget: usize, retry_after: u64 },
    #[error("the request body sent nothing for {} s", .after.as_secs())]
    BodyReadTimeout { after: std::time::Duration },
    #[error("request body too large: {0}")]
    BodyTooLarge(String),
    #[error("the request head is {size} bytes; at most {max} are accepted (max_header_bytes)")]
    HeadTooLarge { size: usize, max: usize },
    #[error("a placeholder was found in a body that keeps its Content-Length (binary upload); send the credential in a header")]
    BodyNotSwappable,
    #[error("the sandbox's request body ended early: {0}")]
    ClientBody(String),
    /// A request signed with a signing binding's placeholders (AWS SigV4)
    /// that airlock will not sign again.
    #[error("{0}")]
    Signing(#[from] crate::signing::SigningError),
    #[error("internal proxy error: {0}")]
    Internal(String),
}

/// What an upstream that closed a connection before answering had of the
/// request: whether sending it again could make it act twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedAfter {
    /// It said it did not act on it (an HTTP/2 `REFUSED_STREAM`, or a
    /// `GOAWAY` naming an earlier stream as its last).
    Unprocessed,
    /// It was sent: whether the upstream acted on it is not known.
    Sent,
}

impl ProxyError {
    pub fn location_not_allowed(
        binding: &airlock_vault_client::Binding,
        location: SwapLocation,
    ) -> Self {
        Self::LocationNotAllowed {
            binding: binding.id.clone(),
            location: location.as_str(),
            allowed: binding
                .swap_in
                .iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    pub fn side(&self) -> Side {
        match self {
            Self::BadRequest(_)
            | Self::NotTls { .. }
            | Self::ProxyAuth(_)
            | Self::PortNotAllowed { .. }
            | Self::Misdirected(_)
            | Self::DestinationMismatch { .. }
            | Self::UnknownSource(_)
            | Self::HostNotAllowed { .. }
            | Self::LocationNotAllowed { .. }
            | Self::PlainHttp { .. }
            | Self::RuleDenied { .. }
            | Self::ConsentNeeded { .. }
            | Self::TooManyHeld { .. }
            | Self::UnknownPlaceholder
            | Self::BodyTooLarge(_)
            | Self::HeadTooLarge { .. }
            | Self::TooManyAuthFailures { .. }
            | Self::TooManyConnections { .. }
            | Self::ProxyBusy { .. }
            | Self::DecompressionBudget { .. }
            | Self::BodyReadTimeout { .. }
            | Self::BodyNotSwappable
            | Self::ClientBody(_)
            | Self::Signing(_)
            | Self::EgressDenied(_) => Side::Sandbox,
            Self::Token(TokenError::Unavailable(_) | TokenError::ReconnectNeeded { .. }) => {
                Side::Vault
            }
            Self::Token(_) => Side::Sandbox,
            Self::InvalidToken { .. } => Side::Vault,
            Self::Dns(_)
            | Self::Connect(_)
            | Self::UpstreamTls { .. }
            | Self::Timeout(_)
            | Self::Upstream(_)
            | Self::UpstreamClosed { .. } => Side::Upstream,
            Self::Internal(_) | Self::OutOfDescriptors { .. } => Side::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::NotTls { .. } | Self::ClientBody(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BodyReadTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::ProxyBusy { .. }
            | Self::OutOfDescriptors { .. }
            | Self::DecompressionBudget { .. }
            | Self::TooManyHeld { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::ConsentNeeded { error, .. } => Self::Token(error.clone()).status(),
            Self::TooManyAuthFailures { .. } | Self::TooManyConnections { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::BodyNotSwappable => StatusCode::FORBIDDEN,
            Self::Signing(e) => e.status(),
            Self::ProxyAuth(_) | Self::Token(TokenError::BadCredential) => {
                StatusCode::PROXY_AUTHENTICATION_REQUIRED
            }
            Self::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::PortNotAllowed { .. }
            | Self::DestinationMismatch { .. }
            | Self::UnknownSource(_)
            | Self::HostNotAllowed { .. }
            | Self::LocationNotAllowed { .. }
            | Self::PlainHttp { .. }
            | Self::RuleDenied { .. }
            | Self::UnknownPlaceholder
            | Self::EgressDenied(_)
            | Self::Token(
                TokenError::UnknownPlaceholder
                | TokenError::WrongSandbox { .. }
                | TokenError::Revoked { .. }
                | TokenError::Narrowed { .. },
            ) => StatusCode::FORBIDDEN,
            // No usable account behind the placeholder (never connected,
            // disconnected, or its grant refused): a human can fix it by
            // connecting, so 401 like the connected-account products.
            Self::Token(TokenError::NotConnected { .. } | TokenError::ReconnectNeeded { .. }) => {
                StatusCode::UNAUTHORIZED
            }
            Self::Token(TokenError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Dns(_)
            | Self::Connect(_)
            | Self::UpstreamTls { .. }
            | Self::Upstream(_)
            | Self::UpstreamClosed { .. } => StatusCode::BAD_GATEWAY,
            Self::InvalidToken { .. } | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short machine-readable code: the `x-airlock-error` header, the audit
    /// outcome and, later, the metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) | Self::NotTls { .. } => "bad_request",
            Self::ProxyAuth(_) | Self::Token(TokenError::BadCredential) => "proxy_auth",
            Self::PortNotAllowed { .. } => "port_not_allowed",
            Self::Misdirected(_) => "misdirected",
            Self::DestinationMismatch { .. } => "destination_mismatch",
            Self::UnknownSource(_) => "unknown_source",
            Self::HostNotAllowed { .. } => "host_not_allowed",
            Self::LocationNotAllowed { .. } => "location_not_allowed",
            Self::PlainHttp { .. } => "plain_http",
            Self::RuleDenied { .. } => "rule_denied",
            Self::ConsentNeeded { error, .. } => error.code().as_str(),
            Self::TooManyHeld { .. } => "too_many_held",
            Self::UnknownPlaceholder => ErrorCode::UnknownPlaceholder.as_str(),
            // The vault's codes, as the vault sent them.
            Self::Token(
                e @ (TokenError::UnknownPlaceholder
                | TokenError::WrongSandbox { .. }
                | TokenError::Revoked { .. }
                | TokenError::NotConnected { .. }
                | TokenError::ReconnectNeeded { .. }
                | TokenError::Narrowed { .. }),
            ) => e.code().as_str(),
            Self::Token(TokenError::Unavailable(_)) => "vault_unavailable",
            Self::InvalidToken { .. } => "invalid_token",
            Self::EgressDenied(_) => "egress_denied",
            Self::Dns(_) => "upstream_dns",
            Self::Connect(_) => "upstream_connect",
            Self::UpstreamTls { .. } => "upstream_tls",
            Self::Timeout(_) => "upstream_timeout",
            // The same code as any other upstream failure: it is one.
            Self::Upstream(_) | Self::UpstreamClosed { .. } => "upstream_error",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::HeadTooLarge { .. } => "header_too_large",
            Self::TooManyAuthFailures { .. } => "auth_rate_limited",
            Self::TooManyConnections { .. } => "too_many_connections",
            Self::ProxyBusy { .. } => "proxy_busy",
            Self::OutOfDescriptors { .. } => "out_of_descriptors",
            Self::DecompressionBudget { .. } => "decompression_budget",
            Self::BodyReadTimeout { .. } => "body_read_timeout",
            Self::BodyNotSwappable => "body_not_swappable",
            Self::ClientBody(_) => "client_body",
            Self::Signing(e) => e.code(),
            Self::Internal(_) => "internal",
        }
    }

    /// The response the sandbox gets: a plain-text body naming what was wrong.
    pub fn to_response(&self) -> Response<ProxyBody> {
        let mut builder = Response::builder()
            .status(self.status())
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header("x-airlock-error", self.code());
        if self.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            builder = builder.header(header::PROXY_AUTHENTICATE, "Basic realm=\"airlock\"");
        }
        if let Self::ConsentNeeded { connect_url, .. } = self {
            if let Ok(v) = http::HeaderValue::from_str(connect_url) {
                builder = builder.header("x-airlock-connect-url", v);
            }
        }
        if let Self::TooManyHeld { .. } = self {
            builder = builder.header(header::RETRY_AFTER, 5);
        }
        if let Self::TooManyAuthFailures { retry_after }
        | Self::ProxyBusy { retry_after, .. }
        | Self::OutOfDescriptors { retry_after, .. }
        | Self::DecompressionBudget { retry_after, .. } = self
        {
            builder = builder.header(header::RETRY_AFTER, *retry_after);
        }
        if matches!(
            self,
            Self::BodyReadTimeout { .. } | Self::ProxyBusy { .. } | Self::NotTls { .. }
        ) {
            // The connection is closed: its body was not read, or it is one too many.
            builder = builder.header(header::CONNECTION, "close");
        }
        builder
            .body(full(Bytes::from(self.body_text())))
            .expect("static response parts are valid")
    }

    fn body_text(&self) -> String {
        format!("airlock: {self}\n")
    }

    /// The same answer as [`Self::to_response`], as HTTP/1.1 bytes, for a
    /// stream no HTTP server runs on (plain HTTP where TLS was expected).
    pub fn to_http1_bytes(&self) -> Vec<u8> {
        let response = self.to_response();
        let body = self.body_text();
        let status = response.status();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or("")
        )
        .into_bytes();
        for (name, value) in response.headers() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body.as_bytes());
        out
    }
}

impl From<TokenError> for ProxyError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::UnknownPlaceholder => Self::UnknownPlaceholder,
            other => Self::Token(other),
        }
    }
}

impl From<&DialError> for ProxyError {
    fn from(err: &DialError) -> Self {
        let msg = err.to_string();
        match err {
            DialError::Denied { .. }
            | DialError::BadHost { .. }
            | DialError::Policy { .. }
            | DialError::OwnListener { .. }
            | DialError::Reserved { .. } => Self::EgressDenied(msg),
            DialError::Dns { .. } | DialError::NoAddress { .. } => Self::Dns(msg),
            DialError::Connect { .. } => Self::Connect(msg),
            DialError::Timeout { .. } => Self::Timeout(msg),
            DialError::OutOfDescriptors { limit, .. } => Self::OutOfDescriptors {
                limit: *limit,
                retry_after: 1,
            },
        }
    }
}

impl From<DialError> for ProxyError {
    fn from(err: DialError) -> Self {
        Self::from(&err)
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sandbox => "sandbox",
            Self::Upstream => "upstream",
            Self::Vault => "vault",
            Self::Internal => "internal",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A placeholder whose account is gone (disconnected, never connected)
    /// or must be reconnected answers 401; one the sandbox may never use
    /// here answers 403. The code is the vault's either way.
    #[test]
    fn no_account_is_401_and_a_forbidden_placeholder_403() {
        let binding = || "provider:acme".to_owned();
        for (error, status, code) in [
            (
                TokenError::NotConnected { binding: binding() },
                StatusCode::UNAUTHORIZED,
                "not_connected",
            ),
            (
                TokenError::ReconnectNeeded { binding: binding() },
                StatusCode::UNAUTHORIZED,
                "reconnect_needed",
            ),
            (
                TokenError::Revoked { binding: binding() },
                StatusCode::FORBIDDEN,
                "revoked",
            ),
            (
                TokenError::WrongSandbox { binding: binding() },
                StatusCode::FORBIDDEN,
                "wrong_sandbox",
            ),
        ] {
            let e = ProxyError::from(error);
            assert_eq!((e.status(), e.code()), (status, code), "{e}");
            let response = e.to_response();
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()["x-airlock-error"], code);
        }
        let consent = ProxyError::ConsentNeeded {
            error: TokenError::NotConnected { binding: binding() },
            connect_url: "http://127.0.0.1:8090/connect/abc".into(),
        };
        assert_eq!(consent.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(consent.code(), "not_connected");
    }
}
