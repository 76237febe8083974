#![forbid(unsafe_code)]
//! How airlock's proxy gets tokens.
//!
//! The proxy knows only [`TokenSource`]: give it a sandbox and a placeholder,
//! get back the placeholder's [`Binding`] and the real token. Static secrets
//! from the config file ([`StaticSecrets`]) and the vault both implement it.

mod cache;
pub mod contract;
mod hosts;
mod narrow;
pub mod oauth1;
mod placeholder;
mod remote;
mod rules;
mod scope_signals;
pub mod secret_kind;
mod signing;
mod static_secrets;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

pub use cache::{CachedTokenSource, Layered, Swappable};
pub use contract::{
    ConnectionStatus, CredentialKind, CredentialState, CredentialStatus, ErrorCode, SandboxStatus,
    STATUS_VERSION,
};
pub use hosts::{normalize_host, HostPattern, HostPatternError};
pub use narrow::{narrow, narrow_id, Caveat, NarrowError, Narrowed, MAX_CAVEAT_BYTES};
pub use placeholder::{
    generate_placeholder, is_valid_placeholder, DEFAULT_PREFIX,
    MIN_RANDOM_LEN as PLACEHOLDER_MIN_RANDOM_LEN,
};
pub use remote::RemoteVault;
pub use rules::{
    Denial, GraphqlFacts, GraphqlOperation, OperationType, RequestFacts, RequestRules, RuleError,
    RulesMode, RulesSpec, Verdict,
};
pub use scope_signals::{scopes_in, ScopeSignal, MAX_SIGNAL_BODY};
pub use secrecy::{ExposeSecret, SecretString};
pub use secret_kind::{HmacSettings, SecretKind};
pub use signing::{
    parse_template, AwsSigV4Keys, HmacAlgorithm, HmacKeys, HmacSpec, SessionToken,
    SignatureEncoding, SigningKeys, TemplateError, TemplatePart,
};
pub use static_secrets::{StaticSecret, StaticSecrets};

/// Which sandbox a request comes from. Sidecar mode has one fixed sandbox.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SandboxId(Arc<str>);

impl SandboxId {
    pub const DEFAULT: &'static str = "default";

    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    pub fn default_sandbox() -> Self {
        Self::new(Self::DEFAULT)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Written as its string, so a record can hold the id without copying it.
impl serde::Serialize for SandboxId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Where in a request a placeholder may be replaced by its token.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SwapLocation {
    /// Any request header value, as written.
    Header,
    /// The `user:pass` inside `Authorization: Basic …`, after base64 decoding.
    Basic,
    /// The URL query string. Opt-in: URLs end up in upstream access logs.
    Query,
    /// The request body.
    Body,
}

impl SwapLocation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Basic => "basic",
            Self::Query => "query",
            Self::Body => "body",
        }
    }

    pub fn defaults() -> BTreeSet<SwapLocation> {
        [Self::Header, Self::Basic].into_iter().collect()
    }
}

/// What a binding's token is: a fixed secret or an OAuth connection's access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingKind {
    Static,
    OAuth {
        connection_id: String,
    },
    /// AWS SigV4 credentials: the sandbox signs with placeholders, airlock
    /// checks that signature and signs again with the real keys
    /// (`Resolved::signing`); the placeholder is never swapped as text.
    AwsSigV4,
    /// A secret the sandbox signs requests with (generic HMAC): airlock
    /// checks the signature made with the placeholder and signs again with
    /// the real secret; the placeholder is never swapped as text.
    Hmac,
}

impl BindingKind {
    /// Whether requests are signed with this binding rather than carrying it.
    pub fn is_signing(&self) -> bool {
        matches!(self, Self::AwsSigV4 | Self::Hmac)
    }
}

/// An upstream answer that means "this token expired": a status, and for
/// providers that answer 403 to many things, a text the body must contain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiredSignal {
    pub status: u16,
    #[serde(default)]
    pub body_contains: Option<String>,
}

impl ExpiredSignal {
    /// The default rule: 401.
    pub fn defaults() -> Vec<ExpiredSignal> {
        vec![ExpiredSignal {
            status: 401,
            body_contains: None,
        }]
    }
}

/// Where a provider's token goes in a request: the "injection slot". Only an
/// answer to a request whose token sat there can mean that token expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injection {
    /// `Authorization: Bearer TOKEN`
    Bearer,
    /// `Authorization: token TOKEN` (GitHub's older form)
    Token,
    /// `Authorization: Basic base64(USER:TOKEN)`
    Basic { user: String },
    /// `NAME: TOKEN`
    Header { name: String },
}

/// An `inject` value that is none of the known forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inject {0:?} must be bearer, token, basic:USER or header:NAME")]
pub struct InjectionParseError(pub String);

impl Injection {
    pub fn parse(s: &str) -> Result<Self, InjectionParseError> {
        match s {
            "bearer" => Ok(Self::Bearer),
            "token" => Ok(Self::Token),
            _ => {
                if let Some(user) = s.strip_prefix("basic:").filter(|u| !u.is_empty()) {
                    Ok(Self::Basic {
                        user: user.to_owned(),
                    })
                } else if let Some(name) =
                    s.strip_prefix("header:").filter(|n| http_header_name_ok(n))
                {
                    Ok(Self::Header {
                        name: name.to_ascii_lowercase(),
                    })
                } else {
                    Err(InjectionParseError(s.to_owned()))
                }
            }
        }
    }

    /// The lower-case header name the token travels in.
    pub fn header_name(&self) -> &str {
        match self {
            Self::Bearer | Self::Token | Self::Basic { .. } => "authorization",
            Self::Header { name } => name,
        }
    }
}

impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bearer => f.write_str("bearer"),
            Self::Token => f.write_str("token"),
            Self::Basic { user } => write!(f, "basic:{user}"),
            Self::Header { name } => write!(f, "header:{name}"),
        }
    }
}

fn http_header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What to do with a placeholder found in a request *body* bound for a host
/// outside its binding (an LLM transcript quoting `$GITHUB_TOKEN`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ForeignBody {
    /// Forward it unchanged: off its binding a placeholder is worthless text.
    #[default]
    Pass,
    /// Refuse the request.
    Refuse,
}

/// A token the sandbox could obtain, and the placeholder it must see instead.
/// The response firewall guards every one of them.
#[derive(Clone)]
pub struct Guarded {
    pub placeholder: String,
    pub token: SecretString,
    /// Unix seconds; `None` for tokens that do not expire.
    pub expires_at: Option<i64>,
}

impl fmt::Debug for Guarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("placeholder", &self.placeholder)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// What a placeholder stands for: which hosts may receive its token and where
/// in a request it may be swapped. Holds no secret, so it can be logged.
#[derive(Debug, Clone)]
pub struct Binding {
    /// Stable id for audit lines, e.g. `secret:GITHUB_TOKEN`.
    pub id: String,
    /// The sandbox's variable name for this credential.
    pub name: String,
    pub sandbox: SandboxId,
    pub hosts: Vec<HostPattern>,
    pub swap_in: BTreeSet<SwapLocation>,
    pub kind: BindingKind,
    /// Answers that trigger a refresh and one replay (OAuth bindings only).
    pub expired_on: Vec<ExpiredSignal>,
    /// Where the provider expects the token; `None` for static secrets.
    pub inject: Option<Injection>,
    /// A placeholder of this binding in a body to another host.
    pub on_foreign_body: ForeignBody,
    /// Which requests to its hosts may carry its token.
    pub rules: Arc<RequestRules>,
    /// Set when the placeholder was a narrowed one: its caveats, checked
    /// like rules but always enforced.
    pub narrowed: Option<Arc<NarrowedBy>>,
    /// How the provider answers a token that lacks a scope (OAuth only).
    pub scope_signals: Arc<Vec<ScopeSignal>>,
}

/// What a narrowed placeholder's caveats say about the request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarrowedBy {
    /// The placeholder as the sandbox sent it.
    pub placeholder: String,
    /// Each `allow=` caveat: the request must match every one.
    pub allows: Vec<(String, RequestRules)>,
    pub body_max: Option<u64>,
}

impl Binding {
    /// Whether `host` (already normalised) may receive this binding's token.
    pub fn allows_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|p| p.matches(host))
    }

    pub fn allows(&self, location: SwapLocation) -> bool {
        self.swap_in.contains(&location)
    }

    pub fn hosts_display(&self) -> String {
        self.hosts
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A binding whose placeholder every request to a host must carry
/// (`require = true`): a request without it brings a credential of its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Requirement {
    pub binding: String,
    /// Log and audit a missing placeholder instead of refusing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a step-up asks of the user: the scopes the token lacks (empty when
/// the provider did not say which) and the link that asks for them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct StepUp {
    pub missing: Vec<String>,
    #[serde(default)]
    pub connect_url: Option<String>,
}

/// What `sandbox`'s bindings ask of every request to one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct HostPolicy {
    /// Bindings whose placeholder every request must carry (`require = true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<Requirement>,
    /// The binding whose token goes into a request that carries no
    /// credential at all (`inject_when_absent`); at most one per host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject_absent: Option<AbsentInjection>,
    /// Placeholders of signing bindings (generic HMAC) for this host: a
    /// request carrying such a binding's signature header is checked and
    /// signed again. Their placeholders never appear in the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<String>,
}

/// A binding that injects its token when a request carries none: its
/// placeholder is put where the provider expects the token (`inject`), then
/// swapped like one the sandbox wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct AbsentInjection {
    pub binding: String,
    pub placeholder: String,
    /// `bearer`, `token`, `basic:USER` or `header:NAME`.
    pub inject: String,
}

impl AbsentInjection {
    /// The one binding that injects on `host`, if exactly one would: when
    /// several would, the request is not guessed and none does.
    pub fn sole(mut candidates: Vec<AbsentInjection>, sandbox: &str, host: &str) -> Option<Self> {
        match candidates.len() {
            0 => None,
            1 => candidates.pop(),
            _ => {
                let ids: Vec<&str> = candidates.iter().map(|c| c.binding.as_str()).collect();
                tracing::warn!(
                    sandbox,
                    host,
                    bindings = %ids.join(", "),
                    "several bindings inject when absent on this host: none does"
                );
                None
            }
        }
    }
}

/// A real token, shared: a clone copies a pointer, not the secret, so a
/// request's lookup makes no new copy of the token in memory. Zeroized
/// when its last holder drops it (secrecy's `SecretBox`).
#[derive(Clone)]
pub struct SharedToken(Arc<SecretString>);

impl SharedToken {
    /// A copy of the secret of its own, for a place that keeps one.
    pub fn to_secret_string(&self) -> SecretString {
        SecretString::from(self.0.expose_secret())
    }
}

impl ExposeSecret<str> for SharedToken {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<SecretString> for SharedToken {
    fn from(secret: SecretString) -> Self {
        Self(Arc::new(secret))
    }
}

impl From<&str> for SharedToken {
    fn from(secret: &str) -> Self {
        Self::from(SecretString::from(secret))
    }
}

impl From<String> for SharedToken {
    fn from(secret: String) -> Self {
        Self::from(SecretString::from(secret))
    }
}

impl fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A placeholder's binding and its current real token.
#[derive(Clone)]
pub struct Resolved {
    pub binding: Arc<Binding>,
    pub token: SharedToken,
    /// When the token expires (Unix seconds); `None` for tokens that do not.
    pub expires_at: Option<i64>,
    /// The keys of a signing binding ([`BindingKind::AwsSigV4`]); `None` otherwise.
    pub signing: Option<Arc<SigningKeys>>,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved")
            .field("binding", &self.binding.id)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// Why a placeholder could not be turned into a token. Messages name the
/// binding, never a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("unknown placeholder")]
    UnknownPlaceholder,
    #[error("placeholder of binding {binding} belongs to another sandbox")]
    WrongSandbox { binding: String },
    #[error("binding {binding} was revoked or disconnected")]
    Revoked { binding: String },
    #[error("the account behind binding {binding} must be reconnected")]
    ReconnectNeeded { binding: String },
    #[error(
        "binding {binding} has no connected account visible to this sandbox; connect one first"
    )]
    NotConnected { binding: String },
    #[error("token service unavailable: {0}")]
    Unavailable(String),
    #[error("proxy credential rejected")]
    BadCredential,
    /// A narrowed placeholder of binding `binding` refused: its chain does
    /// not verify, or a caveat (expiry, uses, methods, paths, body size) says no.
    #[error("narrowed placeholder of binding {binding}: {reason}")]
    Narrowed { binding: String, reason: String },
}

/// The proxy's view of where tokens come from.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// The prefix every placeholder starts with (default `miosa-tok-`).
    fn placeholder_prefix(&self) -> &str;

    /// The binding and current token for `placeholder`, as seen by `sandbox`.
    async fn resolve(&self, sandbox: &SandboxId, placeholder: &str)
        -> Result<Resolved, TokenError>;

    /// What [`TokenSource::resolve`] would answer, when it is at hand
    /// without waiting (a fresh cache entry); `None`: ask `resolve`. The
    /// proxy asks this first on every swap, so a cache hit costs no boxed
    /// future. Wrappers that do not pass it on just lose the shortcut.
    fn resolve_now(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
    ) -> Option<Result<Resolved, TokenError>> {
        let _ = (sandbox, placeholder);
        None
    }

    /// [`TokenSource::host_policy`] when it is at hand without waiting.
    fn host_policy_now(&self, sandbox: &SandboxId, host: &str) -> Option<HostPolicy> {
        let _ = (sandbox, host);
        None
    }

    /// Whether `sandbox` has any binding for `host`: such hosts are intercepted.
    async fn is_bound_host(&self, sandbox: &SandboxId, host: &str) -> bool;

    /// Whether some binding of `sandbox` that allows `host` may swap in
    /// request bodies. When none may, a large body is streamed untouched and
    /// keeps its framing. Sources that cannot tell answer `true` (the body is
    /// then re-framed, since a swap may change its length).
    /// No default: a wrapper that forgot to pass it on would re-frame every
    /// large body (the merge that added the ledger did exactly that).
    async fn may_swap_body(&self, sandbox: &SandboxId, host: &str) -> bool;

    /// What the bindings of `sandbox` ask of every request to `host`: the
    /// placeholders it must carry, and the token to inject when it carries
    /// none. No default, like `may_swap_body`: a wrapper that forgot it
    /// would silently drop every `require`.
    async fn host_policy(&self, sandbox: &SandboxId, host: &str) -> HostPolicy;

    /// The sandbox named by a `Proxy-Authorization` credential.
    async fn authenticate(&self, sandbox_id: &str, secret: &str) -> Result<SandboxId, TokenError>;

    /// A fresh token after the upstream refused `failed`. Concurrent callers
    /// with the same failed token share one refresh; a caller whose token was
    /// already replaced gets the new one. Static secrets return the same token.
    async fn refresh(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
        failed: &SecretString,
    ) -> Result<Resolved, TokenError> {
        let _ = failed;
        self.resolve(sandbox, placeholder).await
    }

    /// Every token `sandbox` could obtain through its bindings right now
    /// (current tokens, and previous ones the source still knows of), so the
    /// response firewall can guard them even on requests that carry none.
    async fn guarded(&self, sandbox: &SandboxId) -> Result<Vec<Guarded>, TokenError> {
        let _ = sandbox;
        Ok(Vec::new())
    }

    /// What `sandbox` may know of its own credentials: each one's state,
    /// scopes, expiry and, where a human must act, a connect link. Never a
    /// token, and nothing of another sandbox. Not cached for long: a state
    /// change must show at once. No default, like `may_swap_body`: a
    /// wrapper that forgot to pass it on would hide every credential.
    async fn status(&self, sandbox: &SandboxId) -> Result<SandboxStatus, TokenError>;

    /// The upstream said the token of `connection_id` lacks `needed`
    /// scopes: the vault notes it (the status shows `insufficient_scope`)
    /// and returns the scopes missing and a link that asks the user for the
    /// granted ones plus those. No default: a wrapper that forgot it would
    /// hide every step-up.
    async fn step_up(
        &self,
        sandbox: &SandboxId,
        connection_id: &str,
        needed: &[String],
    ) -> Result<StepUp, TokenError>;

    /// Bumped whenever bindings may have been revoked (disconnect, sandbox
    /// deleted), so caches in front of this source drop what they hold.
    fn generation(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod shared_token_tests {
    use super::*;

    #[test]
    fn a_clone_shares_the_secret_and_nothing_prints_it() {
        let token = SharedToken::from("real-secret-value");
        let clone = token.clone();
        assert!(std::ptr::eq(
            token.expose_secret().as_ptr(),
            clone.expose_secret().as_ptr()
        ));
        assert_eq!(format!("{token:?}"), "[redacted]");
        let own = token.to_secret_string();
        assert_eq!(own.expose_secret(), "real-secret-value");
        assert!(!std::ptr::eq(
            own.expose_secret().as_ptr(),
            token.expose_secret().as_ptr()
        ));
    }
}
