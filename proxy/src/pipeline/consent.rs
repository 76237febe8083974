//! Consent on demand: a request that meets an account no one connected (or
//! one that must be reconnected) can wait for the human instead of failing.
//!
//! Opt-in per request with `Prefer: wait=SECONDS` (RFC 7240), or for every
//! request with `[proxy] consent_wait_secs`; capped by
//! `max_consent_wait_secs`. Only a request whose body airlock kept whole
//! (the replay buffer) is held, and at most `max_held_requests` at once.
//! While held, the request is parked before anything is sent; the connect
//! link is in the sandbox's status and on the log, and the request goes
//! through as soon as the binding resolves. Without opt-in, or on timeout,
//! the sandbox gets the error with the link (`x-airlock-connect-url`).

use std::time::{Duration, Instant};

use airlock_vault_client::{ExposeSecret, Resolved, SandboxId, TokenError, TokenSource};
use http::HeaderMap;

use crate::error::ProxyError;
use crate::pipeline::scope::Insufficient;
use crate::shared::Shared;

/// How often a held request asks again.
const POLL: Duration = Duration::from_millis(500);

/// How long this request may wait for a human: `Prefer: wait=N`, else the
/// proxy's default; never more than the cap.
pub(crate) fn wait_of(headers: &HeaderMap, shared: &Shared) -> Duration {
    let asked = headers
        .get_all(http::header::HeaderName::from_static("prefer"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|pref| {
            let (name, value) = pref.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("wait")
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
        .map(Duration::from_secs);
    asked
        .unwrap_or(shared.settings.consent_wait)
        .min(shared.settings.max_consent_wait)
}

/// The binding a human must act on, when that is why the request failed.
pub(crate) fn needs_human(err: &ProxyError) -> Option<&str> {
    match err {
        ProxyError::Token(
            TokenError::NotConnected { binding } | TokenError::ReconnectNeeded { binding },
        ) => Some(binding),
        _ => None,
    }
}

/// The sandbox's connect link for `binding` (`provider:NAME`), from its status.
pub(crate) async fn connect_url(
    shared: &Shared,
    sandbox: &SandboxId,
    binding: &str,
) -> Option<String> {
    let provider = binding.strip_prefix("provider:")?;
    let status = shared.tokens.status(sandbox).await.ok()?;
    status
        .credentials
        .into_iter()
        .find(|c| c.provider.as_deref() == Some(provider))
        .and_then(|c| c.connect_url)
}

/// A request being held: its place among `max_held_requests`, released when
/// the request goes on, fails, or its client goes away (the future is dropped).
pub(crate) struct Hold {
    _permit: tokio::sync::OwnedSemaphorePermit,
    pub since: Instant,
    pub deadline: Instant,
}

impl Hold {
    /// Takes a place, or says why the request cannot wait.
    pub(crate) fn begin(
        shared: &Shared,
        sandbox: &SandboxId,
        binding: &str,
        link: Option<&str>,
        wait: Duration,
    ) -> Result<Self, ProxyError> {
        let permit =
            shared
                .held
                .clone()
                .try_acquire_owned()
                .map_err(|_| ProxyError::TooManyHeld {
                    limit: shared.settings.max_held_requests,
                })?;
        tracing::warn!(
            %sandbox,
            binding,
            connect_url = link.unwrap_or(""),
            wait_secs = wait.as_secs(),
            "request held until a human connects the account"
        );
        let since = Instant::now();
        Ok(Self {
            _permit: permit,
            since,
            deadline: since + wait,
        })
    }

    /// Waits a little before the next try; false once the time is up.
    pub(crate) async fn tick(&self) -> bool {
        let now = Instant::now();
        if now >= self.deadline {
            return false;
        }
        tokio::time::sleep(POLL.min(self.deadline - now)).await;
        true
    }
}

/// Waits, while `hold` lasts, for `lacking`'s placeholder to resolve to
/// another token than the one that lacked the scope (a step-up completed).
pub(crate) async fn new_token(
    tokens: &dyn TokenSource,
    sandbox: &SandboxId,
    lacking: &Insufficient,
    hold: &Hold,
) -> Option<Resolved> {
    while hold.tick().await {
        if let Ok(fresh) = tokens.resolve(sandbox, &lacking.placeholder).await {
            if fresh.token.expose_secret() != lacking.token.expose_secret() {
                return Some(fresh);
            }
        }
    }
    None
}
