//! The proxy ↔ vault wire contract: the bodies of the vault's service API
//! (`POST /v1/service/*`), the error codes both ends speak, and the
//! connection status both ends name. The vault answers with these types
//! (`vault/src/api.rs`), [`RemoteVault`](crate::RemoteVault) reads them.
//!
//! Fields are declared in alphabetical order: that is the order the vault
//! wrote them in before this contract was typed, and outside clients may
//! compare bytes.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    Binding, BindingKind, ExpiredSignal, ForeignBody, Guarded, HostPattern, HostPolicy, Injection,
    RequestRules, Resolved, RulesSpec, SandboxId, ScopeSignal, SwapLocation, TokenError,
};

/// Service API paths.
pub mod paths {
    pub const RESOLVE: &str = "/v1/service/resolve";
    pub const REFRESH: &str = "/v1/service/refresh";
    pub const GUARDED: &str = "/v1/service/guarded";
    pub const AUTHENTICATE: &str = "/v1/service/authenticate";
    pub const BOUND_HOST: &str = "/v1/service/bound-host";
    pub const STATUS: &str = "/v1/service/status";
    pub const STEP_UP: &str = "/v1/service/step-up";
    /// `GET`: a stream of [`super::ChangeNotice`] lines, one per change.
    pub const CHANGES: &str = "/v1/service/changes";
    /// `POST` a [`super::RequestBatch`]: a remote proxy's finished requests,
    /// for the console's recent requests across the fleet.
    pub const REQUESTS: &str = "/v1/service/requests";
}

/// A finished request as a remote proxy reports it (the console's recent
/// requests): never a value, a token or a query string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Unix seconds.
    pub at: u64,
    pub sandbox: String,
    pub mode: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    /// The audit line's outcome word.
    pub outcome: String,
    /// Binding ids whose placeholders were swapped.
    #[serde(default)]
    pub swapped: Vec<String>,
}

/// `POST /v1/service/requests`: at most [`MAX_REQUEST_BATCH`] records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestBatch {
    /// Names the proxy that sent them (its host name and process id).
    pub proxy: String,
    pub records: Vec<RequestRecord>,
}

pub const MAX_REQUEST_BATCH: usize = 1000;

/// The answer to a [`RequestBatch`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RequestsAccepted {
    pub accepted: usize,
}

/// One line (JSON, then `\n`) of `GET /v1/service/changes`: the vault's
/// generation, sent when the stream opens, at every change a proxy's
/// caches must hear of (a disconnect, a revocation, a refresh, a deleted
/// sandbox; on PostgreSQL, from any replica), and every
/// [`CHANGE_KEEPALIVE_SECS`] when nothing changes. A proxy drops what it
/// cached whenever the number differs from the last it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeNotice {
    pub generation: u64,
}

/// How often the change stream repeats itself when nothing changes, so a
/// proxy can tell a quiet vault from a dead connection.
pub const CHANGE_KEEPALIVE_SECS: u64 = 15;

/// `POST /v1/service/step-up`; the answer is a [`crate::StepUp`].
#[derive(Debug, Serialize, Deserialize)]
pub struct StepUpRequest {
    pub sandbox: String,
    pub connection_id: String,
    pub needed: Vec<String>,
}

/// Why the vault could not give a token: the `code` of a service API error
/// body, and the `x-airlock-error` value the proxy sends for the same cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    UnknownPlaceholder,
    WrongSandbox,
    Revoked,
    ReconnectNeeded,
    NotConnected,
    Unavailable,
    BadCredential,
    /// A narrowed placeholder that does not verify or whose caveats refuse.
    NarrowedRefused,
}

impl ErrorCode {
    const ALL: [Self; 8] = [
        Self::UnknownPlaceholder,
        Self::WrongSandbox,
        Self::Revoked,
        Self::ReconnectNeeded,
        Self::NotConnected,
        Self::Unavailable,
        Self::BadCredential,
        Self::NarrowedRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownPlaceholder => "unknown_placeholder",
            Self::WrongSandbox => "wrong_sandbox",
            Self::Revoked => "revoked",
            Self::ReconnectNeeded => "reconnect_needed",
            Self::NotConnected => "not_connected",
            Self::Unavailable => "unavailable",
            Self::BadCredential => "bad_credential",
            Self::NarrowedRefused => "narrowed_refused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TokenError {
    /// The code this error travels under.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownPlaceholder => ErrorCode::UnknownPlaceholder,
            Self::WrongSandbox { .. } => ErrorCode::WrongSandbox,
            Self::Revoked { .. } => ErrorCode::Revoked,
            Self::ReconnectNeeded { .. } => ErrorCode::ReconnectNeeded,
            Self::NotConnected { .. } => ErrorCode::NotConnected,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::BadCredential => ErrorCode::BadCredential,
            Self::Narrowed { .. } => ErrorCode::NarrowedRefused,
        }
    }

    /// The binding the error is about, when it names one.
    pub fn binding(&self) -> Option<&str> {
        match self {
            Self::WrongSandbox { binding }
            | Self::Revoked { binding }
            | Self::ReconnectNeeded { binding }
            | Self::NotConnected { binding }
            | Self::Narrowed { binding, .. } => Some(binding),
            Self::UnknownPlaceholder | Self::Unavailable(_) | Self::BadCredential => None,
        }
    }
}

/// Where a connection stands. Stored and sent as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    /// Created, its first grant not stored yet.
    Pending,
    Connected,
    /// The provider refused the grant: a user must connect again.
    ReconnectNeeded,
    /// Disconnected, but revoking its tokens at the provider failed: never
    /// handed out again, revocation retried in the background, then deleted.
    RevokePending,
}

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Connected => "connected",
            Self::ReconnectNeeded => "reconnect_needed",
            Self::RevokePending => "revoke_pending",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Connected,
            Self::ReconnectNeeded,
            Self::RevokePending,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// A stored status this version does not know (written by a newer one) reads
/// as pending: such a connection is never handed out.
impl From<String> for ConnectionStatus {
    fn from(s: String) -> Self {
        Self::parse(&s).unwrap_or(Self::Pending)
    }
}

impl fmt::Display for ConnectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The version of the sandbox status document ([`SandboxStatus`]). Raised
/// only when a field changes meaning or goes away; new fields do not raise it.
pub const STATUS_VERSION: u32 = 1;

/// Where one of a sandbox's credentials stands, as the sandbox may be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialState {
    /// Requests with its placeholder get the real token.
    Connected,
    /// No account is connected that the sandbox can see: a human must connect one.
    NotConnected,
    /// The provider refused the grant: a human must connect again.
    ReconnectNeeded,
    /// Connected, but without a scope the sandbox needed (reported only
    /// once the vault knows it).
    InsufficientScope,
}

impl CredentialState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::NotConnected => "not_connected",
            Self::ReconnectNeeded => "reconnect_needed",
            Self::InsufficientScope => "insufficient_scope",
        }
    }

    /// Whether a human must act (connect, reconnect, grant more) before it works.
    pub fn needs_human(self) -> bool {
        !matches!(self, Self::Connected)
    }
}

impl fmt::Display for CredentialState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a credential is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// An OAuth connection's access token, kept fresh by the vault.
    Oauth,
    /// A fixed secret (`[[secret]]`, or the vault's static secrets).
    Static,
}

/// One credential of a sandbox. Holds names, hosts, states, scopes, times
/// and a link, and no field that could hold a token: it is built from
/// bindings and connection rows, never from their sealed values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialStatus {
    /// The sandbox's environment variable holding the placeholder.
    pub variable: String,
    pub kind: CredentialKind,
    /// The provider's name for OAuth credentials; `None` for static secrets.
    #[serde(default)]
    pub provider: Option<String>,
    /// The name of the connection a pinned binding uses; `None` when the
    /// binding takes the most specific connection the sandbox sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// Hosts the token may be sent to (patterns such as `*.example.com`).
    #[serde(default)]
    pub hosts: Vec<String>,
    pub state: CredentialState,
    /// Scopes granted to the connection (OAuth); empty for static secrets.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// When the current access token expires (Unix seconds), when known.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// A one-time link a human opens to connect (or reconnect) the account,
    /// for states that need one; `None` when connected or when no OAuth app
    /// is registered for the provider.
    #[serde(default)]
    pub connect_url: Option<String>,
}

/// The calling sandbox's view of its credentials: the document
/// `GET http://airlock.internal/v1/status` answers with, and the answer of
/// `POST /v1/service/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStatus {
    pub version: u32,
    pub sandbox: String,
    /// Sorted by variable name.
    #[serde(default)]
    pub credentials: Vec<CredentialStatus>,
    /// How long this sandbox's requests wait for a human when they do not
    /// say; absent: the proxy's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_wait_secs: Option<u64>,
}

impl SandboxStatus {
    /// A document with no credentials yet.
    pub fn empty(sandbox: &SandboxId) -> Self {
        Self {
            version: STATUS_VERSION,
            sandbox: sandbox.as_str().to_owned(),
            credentials: Vec::new(),
            consent_wait_secs: None,
        }
    }

    /// Adds `more`, keeping an entry already present for the same variable
    /// (the first source wins, as it does for placeholders), sorted by variable.
    pub fn merge(&mut self, more: Vec<CredentialStatus>) {
        for c in more {
            if !self
                .credentials
                .iter()
                .any(|have| have.variable == c.variable)
            {
                self.credentials.push(c);
            }
        }
        self.credentials.sort_by(|a, b| a.variable.cmp(&b.variable));
    }
}

/// `POST /v1/service/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusRequest {
    pub sandbox: String,
}

fn expose<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

fn expose_opt<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => s.serialize_some(secret.expose_secret()),
        None => s.serialize_none(),
    }
}

/// `POST /v1/service/resolve` and `/v1/service/refresh`.
#[derive(Serialize, Deserialize)]
pub struct ResolveRequest {
    /// Refresh only: the token the upstream refused.
    #[serde(
        default,
        serialize_with = "expose_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub failed_token: Option<SecretString>,
    pub placeholder: String,
    pub sandbox: String,
}

/// A binding as the service API sends it: everything but the token.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireBinding {
    /// Set for OAuth bindings, absent (null) for static secrets.
    #[serde(default)]
    pub connection_id: Option<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub expired_on: Vec<ExpiredSignal>,
    pub hosts: Vec<String>,
    pub id: String,
    #[serde(default)]
    pub inject: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "or_default")]
    pub on_foreign_body: ForeignBody,
    /// How the provider says a scope is missing; absent means none.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub scope_signals: Vec<ScopeSignal>,
    /// The binding's request rules ([`RulesSpec`]); absent means none. Kept
    /// as JSON: rules this proxy cannot read refuse every request rather
    /// than fall open.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub rules: serde_json::Value,
    #[serde(default)]
    pub sandbox: String,
    pub swap_in: BTreeSet<SwapLocation>,
}

impl WireBinding {
    fn rules(&self) -> RequestRules {
        if self.rules.is_null() {
            return RequestRules::default();
        }
        serde_json::from_value::<RulesSpec>(self.rules.clone())
            .ok()
            .and_then(|spec| RequestRules::compile(&spec).ok())
            .unwrap_or_else(RequestRules::deny_all)
    }
}

/// A value this proxy cannot read (a newer vault's) reads as the default.
fn or_default<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<T, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).unwrap_or_default())
}

/// The answer to resolve and refresh.
#[derive(Serialize, Deserialize)]
pub struct ResolvedAnswer {
    pub binding: WireBinding,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(serialize_with = "expose")]
    pub token: SecretString,
    /// An OAuth 1.0a connection's other real credentials; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth1: Option<WireOAuth1>,
    /// A vault AWS SigV4 secret: `token` is the real access key id, these
    /// are the rest; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_sigv4: Option<WireAwsSigV4>,
    /// A vault HMAC secret: `token` is the real signing secret, this says
    /// how requests are signed; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac: Option<WireHmac>,
}

/// What the proxy signs an AWS SigV4 binding's requests with, besides its
/// access key id, and the placeholders the sandbox signs with.
#[derive(Serialize, Deserialize)]
pub struct WireAwsSigV4 {
    pub secret_variable: String,
    #[serde(serialize_with = "expose")]
    pub placeholder_secret: SecretString,
    #[serde(serialize_with = "expose")]
    pub secret_access_key: SecretString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<WireSessionToken>,
}

#[derive(Serialize, Deserialize)]
pub struct WireSessionToken {
    pub variable: String,
    pub placeholder: String,
    #[serde(serialize_with = "expose")]
    pub token: SecretString,
}

/// How an HMAC binding's requests are signed (nothing secret): the
/// `signature_…` settings as written in a config `[[secret]]`.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct WireHmac {
    pub settings: crate::HmacSettings,
}

/// What the proxy signs an OAuth 1.0a binding's requests with, besides its
/// access token.
#[derive(Serialize, Deserialize)]
pub struct WireOAuth1 {
    #[serde(serialize_with = "expose")]
    pub consumer_key: SecretString,
    #[serde(serialize_with = "expose")]
    pub consumer_secret: SecretString,
    #[serde(serialize_with = "expose")]
    pub token_secret: SecretString,
}

impl From<&Resolved> for ResolvedAnswer {
    fn from(r: &Resolved) -> Self {
        let b = &r.binding;
        Self {
            binding: WireBinding {
                connection_id: match &b.kind {
                    BindingKind::OAuth { connection_id } => Some(connection_id.clone()),
                    // A signing binding's keys travel beside it (`aws_sigv4`, `hmac`).
                    BindingKind::Static | BindingKind::AwsSigV4 | BindingKind::Hmac => None,
                },
                expired_on: b.expired_on.clone(),
                hosts: b.hosts.iter().map(|h| h.to_string()).collect(),
                id: b.id.clone(),
                inject: b.inject.as_ref().map(|i| i.to_string()),
                name: b.name.clone(),
                on_foreign_body: b.on_foreign_body,
                rules: if b.rules.spec().is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::to_value(b.rules.spec()).unwrap_or_default()
                },
                sandbox: b.sandbox.as_str().to_owned(),
                scope_signals: b.scope_signals.as_ref().clone(),
                swap_in: b.swap_in.clone(),
            },
            expires_at: r.expires_at,
            token: r.token.to_secret_string(),
            oauth1: match r.signing.as_deref() {
                Some(crate::SigningKeys::OAuth1(k)) => Some(WireOAuth1 {
                    consumer_key: k.consumer_key.clone(),
                    consumer_secret: k.consumer_secret.clone(),
                    token_secret: k.token_secret.clone(),
                }),
                _ => None,
            },
            aws_sigv4: match r.signing.as_deref() {
                Some(crate::SigningKeys::AwsSigV4(k)) => Some(WireAwsSigV4 {
                    secret_variable: k.secret_variable.clone(),
                    placeholder_secret: k.placeholder_secret.clone(),
                    secret_access_key: k.secret_access_key.clone(),
                    session_token: k.session_token.as_ref().map(|t| WireSessionToken {
                        variable: t.variable.clone(),
                        placeholder: t.placeholder.clone(),
                        token: t.token.clone(),
                    }),
                }),
                _ => None,
            },
            hmac: match r.signing.as_deref() {
                Some(crate::SigningKeys::Hmac(k)) => Some(WireHmac {
                    settings: crate::HmacSettings::of(&k.spec),
                }),
                _ => None,
            },
        }
    }
}

impl ResolvedAnswer {
    /// The binding as `sandbox` sees it. Host patterns and an `inject` form
    /// this proxy does not understand are left out rather than refused.
    pub fn into_resolved(self, sandbox: &SandboxId) -> Resolved {
        let b = self.binding;
        let mut rules = Arc::new(b.rules());
        let mut signing = self.oauth1.map(|k| {
            Arc::new(crate::SigningKeys::OAuth1(crate::oauth1::OAuth1Keys {
                consumer_key: k.consumer_key,
                consumer_secret: k.consumer_secret,
                token_secret: k.token_secret,
            }))
        });
        let mut kind = match b.connection_id {
            Some(connection_id) => BindingKind::OAuth { connection_id },
            None => BindingKind::Static,
        };
        if let Some(k) = self.aws_sigv4 {
            kind = BindingKind::AwsSigV4;
            signing = Some(Arc::new(crate::SigningKeys::AwsSigV4(
                crate::AwsSigV4Keys {
                    secret_variable: k.secret_variable,
                    placeholder_secret: k.placeholder_secret,
                    secret_access_key: k.secret_access_key,
                    session_token: k.session_token.map(|t| crate::SessionToken {
                        variable: t.variable,
                        placeholder: t.placeholder,
                        token: t.token,
                    }),
                },
            )));
        } else if let Some(h) = self.hmac {
            kind = BindingKind::Hmac;
            // Settings this proxy cannot read (a newer vault's): no keys and
            // no request allowed, rather than a signing key sent as text.
            signing = h
                .settings
                .spec(&mut Vec::new())
                .map(|spec| Arc::new(crate::SigningKeys::Hmac(crate::HmacKeys { spec })));
            if signing.is_none() {
                rules = Arc::new(RequestRules::deny_all());
            }
        }
        Resolved {
            binding: Arc::new(Binding {
                id: b.id,
                name: b.name,
                sandbox: sandbox.clone(),
                hosts: b
                    .hosts
                    .iter()
                    .filter_map(|h| HostPattern::parse(h).ok())
                    .collect(),
                swap_in: b.swap_in,
                kind,
                expired_on: b.expired_on,
                inject: b.inject.as_deref().and_then(|s| Injection::parse(s).ok()),
                on_foreign_body: b.on_foreign_body,
                rules,
                narrowed: None,
                scope_signals: Arc::new(b.scope_signals),
            }),
            token: self.token.into(),
            expires_at: self.expires_at,
            signing,
        }
    }
}

/// `POST /v1/service/guarded`.
#[derive(Serialize, Deserialize)]
pub struct GuardedRequest {
    pub sandbox: String,
}

/// One token the response firewall must guard.
#[derive(Serialize, Deserialize)]
pub struct GuardedToken {
    #[serde(default)]
    pub expires_at: Option<i64>,
    pub placeholder: String,
    #[serde(serialize_with = "expose")]
    pub token: SecretString,
}

#[derive(Serialize, Deserialize)]
pub struct GuardedAnswer {
    #[serde(default)]
    pub guarded: Vec<GuardedToken>,
}

impl From<&Guarded> for GuardedToken {
    fn from(g: &Guarded) -> Self {
        Self {
            expires_at: g.expires_at,
            placeholder: g.placeholder.clone(),
            token: g.token.clone(),
        }
    }
}

impl From<GuardedToken> for Guarded {
    fn from(g: GuardedToken) -> Self {
        Self {
            placeholder: g.placeholder,
            token: g.token,
            expires_at: g.expires_at,
        }
    }
}

/// `POST /v1/service/authenticate`: a `Proxy-Authorization` credential.
#[derive(Serialize, Deserialize)]
pub struct AuthenticateRequest {
    pub sandbox: String,
    #[serde(serialize_with = "expose")]
    pub secret: SecretString,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AuthenticateAnswer {
    pub sandbox: String,
}

/// `POST /v1/service/bound-host`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BoundHostRequest {
    pub host: String,
    pub sandbox: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BoundHostAnswer {
    /// An older vault does not say: assume a swap may happen.
    #[serde(default = "yes")]
    pub body_swap: bool,
    #[serde(default)]
    pub bound: bool,
    /// What the sandbox's bindings ask of requests to the host.
    #[serde(flatten)]
    pub policy: HostPolicy,
}

fn yes() -> bool {
    true
}

/// A refusal of the service API. Errors that are not about a token (bad
/// JSON, a refused service token) carry only `error`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorAnswer {
    #[serde(default)]
    pub binding: Option<String>,
    /// Absent in errors that are not about a token; a code this proxy does
    /// not know reads as absent.
    #[serde(default, deserialize_with = "known_code")]
    pub code: Option<ErrorCode>,
    pub error: String,
}

fn known_code<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ErrorCode>, D::Error> {
    let code: Option<String> = Option::deserialize(d)?;
    Ok(code.as_deref().and_then(ErrorCode::parse))
}

impl From<&TokenError> for ErrorAnswer {
    fn from(e: &TokenError) -> Self {
        Self {
            binding: e.binding().map(str::to_owned),
            code: Some(e.code()),
            error: e.to_string(),
        }
    }
}

impl ErrorAnswer {
    /// The error the proxy acts on; anything without a known code means the
    /// vault could not answer.
    pub fn into_token_error(self) -> TokenError {
        let binding = || self.binding.clone().unwrap_or_else(|| "?".to_owned());
        match self.code {
            Some(ErrorCode::UnknownPlaceholder) => TokenError::UnknownPlaceholder,
            Some(ErrorCode::WrongSandbox) => TokenError::WrongSandbox { binding: binding() },
            Some(ErrorCode::Revoked) => TokenError::Revoked { binding: binding() },
            Some(ErrorCode::ReconnectNeeded) => TokenError::ReconnectNeeded { binding: binding() },
            Some(ErrorCode::NotConnected) => TokenError::NotConnected { binding: binding() },
            Some(ErrorCode::BadCredential) => TokenError::BadCredential,
            Some(ErrorCode::NarrowedRefused) => TokenError::Narrowed {
                binding: binding(),
                reason: self.error.clone(),
            },
            Some(ErrorCode::Unavailable) | None => TokenError::Unavailable(self.error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("vault_unavailable"), None);
        let status: ConnectionStatus = serde_json::from_str("\"reconnect_needed\"").unwrap();
        assert_eq!(status, ConnectionStatus::ReconnectNeeded);
        assert_eq!(
            ConnectionStatus::parse("revoke_pending"),
            Some(ConnectionStatus::RevokePending)
        );
    }

    #[test]
    fn token_errors_cross_the_wire_unchanged() {
        let errors = [
            TokenError::UnknownPlaceholder,
            TokenError::WrongSandbox {
                binding: "b1".into(),
            },
            TokenError::Revoked {
                binding: "b2".into(),
            },
            TokenError::ReconnectNeeded {
                binding: "b3".into(),
            },
            TokenError::NotConnected {
                binding: "b4".into(),
            },
            TokenError::BadCredential,
        ];
        for e in errors {
            let json = serde_json::to_string(&ErrorAnswer::from(&e)).unwrap();
            let back: ErrorAnswer = serde_json::from_str(&json).unwrap();
            let back = back.into_token_error();
            assert_eq!(back.code(), e.code(), "{json}");
            assert_eq!(back.to_string(), e.to_string(), "{json}");
        }
    }

    #[test]
    fn error_bodies_keep_their_shape_and_unknown_codes_mean_unavailable() {
        let e = TokenError::Revoked {
            binding: "conn:x".into(),
        };
        assert_eq!(
            serde_json::to_string(&ErrorAnswer::from(&e)).unwrap(),
            r#"{"binding":"conn:x","code":"revoked","error":"binding conn:x was revoked or disconnected"}"#
        );
        let unknown: ErrorAnswer =
            serde_json::from_str(r#"{"error":"later vault","code":"new_code"}"#).unwrap();
        assert!(
            matches!(unknown.into_token_error(), TokenError::Unavailable(m) if m == "later vault")
        );
    }

    #[test]
    fn resolved_answers_keep_the_field_names_and_order() {
        let resolved = Resolved {
            binding: Arc::new(Binding {
                id: "conn:c1".into(),
                name: "GITHUB_TOKEN".into(),
                sandbox: SandboxId::new("sb"),
                hosts: vec![HostPattern::parse("api.github.com").unwrap()],
                swap_in: SwapLocation::defaults(),
                kind: BindingKind::OAuth {
                    connection_id: "c1".into(),
                },
                expired_on: ExpiredSignal::defaults(),
                inject: Some(Injection::Bearer),
                on_foreign_body: ForeignBody::Pass,
                rules: Default::default(),
                narrowed: None,
                scope_signals: Default::default(),
            }),
            token: crate::SharedToken::from("tok"),
            expires_at: Some(5),
            signing: None,
        };
        let json = serde_json::to_string(&ResolvedAnswer::from(&resolved)).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"binding":{"connection_id":"c1","expired_on":[{"status":401,"body_contains":null}],"#,
                r#""hosts":["api.github.com"],"id":"conn:c1","inject":"bearer","name":"GITHUB_TOKEN","#,
                r#""on_foreign_body":"pass","sandbox":"sb","swap_in":["header","basic"]},"#,
                r#""expires_at":5,"token":"tok"}"#
            )
        );
        let back: ResolvedAnswer = serde_json::from_str(&json).unwrap();
        let back = back.into_resolved(&SandboxId::new("sb"));
        assert_eq!(back.binding.kind, resolved.binding.kind);
        assert_eq!(back.binding.inject, Some(Injection::Bearer));
        assert_eq!(back.token.expose_secret(), "tok");
        assert!(back.binding.allows_host("api.github.com"));
        assert!(back.signing.is_none());

        // An OAuth 1.0a connection's keys cross to a remote proxy; the
        // answer's Debug shows none of them.
        let mut oauth1 = resolved.clone();
        oauth1.signing = Some(Arc::new(crate::SigningKeys::OAuth1(
            crate::oauth1::OAuth1Keys {
                consumer_key: SecretString::from("ck-real".to_owned()),
                consumer_secret: SecretString::from("cs-real".to_owned()),
                token_secret: SecretString::from("ts-real".to_owned()),
            },
        )));
        let json = serde_json::to_string(&ResolvedAnswer::from(&oauth1)).unwrap();
        assert!(json.ends_with(
            r#""token":"tok","oauth1":{"consumer_key":"ck-real","consumer_secret":"cs-real","token_secret":"ts-real"}}"#
        ), "{json}");
        let back = serde_json::from_str::<ResolvedAnswer>(&json)
            .unwrap()
            .into_resolved(&SandboxId::new("sb"));
        let Some(crate::SigningKeys::OAuth1(k)) = back.signing.as_deref() else {
            panic!("OAuth 1.0a keys were lost");
        };
        assert_eq!(
            (
                k.consumer_key.expose_secret(),
                k.consumer_secret.expose_secret(),
                k.token_secret.expose_secret()
            ),
            ("ck-real", "cs-real", "ts-real")
        );
        let debug = format!("{:?}", back.signing);
        assert!(!debug.contains("real"), "{debug}");
    }

    #[test]
    fn vault_signing_secrets_cross_the_wire_with_their_keys() {
        let binding = |kind| {
            Arc::new(Binding {
                id: "secret:AWS_ACCESS_KEY_ID".into(),
                name: "AWS_ACCESS_KEY_ID".into(),
                sandbox: SandboxId::new("sb"),
                hosts: vec![HostPattern::parse("s3.test").unwrap()],
                swap_in: [SwapLocation::Header].into_iter().collect(),
                kind,
                expired_on: Vec::new(),
                inject: None,
                on_foreign_body: ForeignBody::Pass,
                rules: Default::default(),
                narrowed: None,
                scope_signals: Default::default(),
            })
        };
        let aws = Resolved {
            binding: binding(BindingKind::AwsSigV4),
            token: crate::SharedToken::from("AKIAREAL"),
            expires_at: None,
            signing: Some(Arc::new(crate::SigningKeys::AwsSigV4(
                crate::AwsSigV4Keys {
                    secret_variable: "AWS_SECRET_ACCESS_KEY".into(),
                    placeholder_secret: SecretString::from("ph-sk"),
                    secret_access_key: SecretString::from("sk-real"),
                    session_token: Some(crate::SessionToken {
                        variable: "AWS_SESSION_TOKEN".into(),
                        placeholder: "ph-st".into(),
                        token: SecretString::from("st-real"),
                    }),
                },
            ))),
        };
        let json = serde_json::to_string(&ResolvedAnswer::from(&aws)).unwrap();
        assert!(json.ends_with(concat!(
            r#""token":"AKIAREAL","aws_sigv4":{"secret_variable":"AWS_SECRET_ACCESS_KEY","placeholder_secret":"ph-sk","#,
            r#""secret_access_key":"sk-real","session_token":{"variable":"AWS_SESSION_TOKEN","placeholder":"ph-st","token":"st-real"}}}"#
        )), "{json}");
        let back = serde_json::from_str::<ResolvedAnswer>(&json)
            .unwrap()
            .into_resolved(&SandboxId::new("sb"));
        assert_eq!(back.binding.kind, BindingKind::AwsSigV4);
        let Some(crate::SigningKeys::AwsSigV4(k)) = back.signing.as_deref() else {
            panic!("AWS keys were lost");
        };
        let t = k.session_token.as_ref().unwrap();
        assert_eq!(
            (
                k.secret_variable.as_str(),
                k.placeholder_secret.expose_secret(),
                k.secret_access_key.expose_secret(),
                t.variable.as_str(),
                t.placeholder.as_str(),
                t.token.expose_secret()
            ),
            (
                "AWS_SECRET_ACCESS_KEY",
                "ph-sk",
                "sk-real",
                "AWS_SESSION_TOKEN",
                "ph-st",
                "st-real"
            )
        );
        let debug = format!("{:?} {:?}", back.signing, back);
        assert!(!debug.contains("real"), "{debug}");

        let spec = crate::HmacSettings {
            signature_header: Some("X-Sig".into()),
            signature_template: Some("{method}\n{path}\n{body_sha256}".into()),
            signature_prefix: Some("sha256=".into()),
            ..Default::default()
        }
        .spec(&mut Vec::new())
        .unwrap();
        let hmac = Resolved {
            binding: binding(BindingKind::Hmac),
            token: crate::SharedToken::from("hmac-real"),
            expires_at: None,
            signing: Some(Arc::new(crate::SigningKeys::Hmac(crate::HmacKeys {
                spec: spec.clone(),
            }))),
        };
        let json = serde_json::to_string(&ResolvedAnswer::from(&hmac)).unwrap();
        assert!(
            json.contains(r#""hmac":{"signature_header":"x-sig","#),
            "{json}"
        );
        let back = serde_json::from_str::<ResolvedAnswer>(&json)
            .unwrap()
            .into_resolved(&SandboxId::new("sb"));
        assert_eq!(back.binding.kind, BindingKind::Hmac);
        let Some(crate::SigningKeys::Hmac(k)) = back.signing.as_deref() else {
            panic!("HMAC spec was lost");
        };
        assert_eq!(k.spec, spec);
        assert_eq!(back.token.expose_secret(), "hmac-real");

        // Settings this proxy cannot read: no keys, every request refused.
        let json = json.replace(
            r#""signature_algorithm":"sha256""#,
            r#""signature_algorithm":"sha3""#,
        );
        let back = serde_json::from_str::<ResolvedAnswer>(&json)
            .unwrap()
            .into_resolved(&SandboxId::new("sb"));
        assert_eq!(back.binding.kind, BindingKind::Hmac);
        assert!(back.signing.is_none());
        assert_eq!(
            back.binding.rules.spec().default,
            Some(crate::Verdict::Deny)
        );
    }

    #[test]
    fn requests_skip_an_absent_failed_token_and_bound_host_defaults_to_swapping() {
        let r = ResolveRequest {
            failed_token: None,
            placeholder: "p".into(),
            sandbox: "s".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"placeholder":"p","sandbox":"s"}"#
        );
        let old: BoundHostAnswer = serde_json::from_str(r#"{"bound":true}"#).unwrap();
        assert!(old.bound && old.body_swap);
    }
}
