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

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use airlock_vault_client::{ExposeSecret, Resolved, SandboxId, TokenError, TokenSource};
use http::{HeaderMap, Request, Response};

use crate::audit::AuditRecord;
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::pipeline::body_plan::BodyPlan;
use crate::pipeline::resend;
use crate::pipeline::scope::{screen_scopes, Insufficient, CONNECT_URL};
use crate::pipeline::send::{Attempt, UpstreamAttempt};
use crate::settings::ConsentWebhook;
use crate::shared::Shared;
use crate::swap::Swapper;
use crate::telemetry::HeldRequest;

/// How often a held request asks again.
const POLL: Duration = Duration::from_millis(500);

/// What the request itself asked: `Prefer: wait=N` (RFC 7240).
pub(crate) fn asked_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
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
        .map(Duration::from_secs)
}

/// How long the request may wait for a human: what it asked, else its
/// sandbox's setting, else the proxy's default; never more than the cap.
pub(crate) fn effective_wait(
    asked: Option<Duration>,
    sandbox: Option<u64>,
    shared: &Shared,
) -> Duration {
    asked
        .or(sandbox.map(Duration::from_secs))
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

/// From the sandbox's status: the connect link for `binding`
/// (`provider:NAME`, or `provider:NAME/CONNECTION` when pinned), and the
/// sandbox's own default wait.
pub(crate) async fn connect_url(
    shared: &Shared,
    sandbox: &SandboxId,
    binding: &str,
) -> (Option<String>, Option<u64>) {
    let Ok(status) = shared.tokens.status(sandbox).await else {
        return (None, None);
    };
    let link = binding.strip_prefix("provider:").and_then(|target| {
        let (provider, pinned) = match target.split_once('/') {
            Some((provider, name)) => (provider, Some(name)),
            None => (target, None),
        };
        status
            .credentials
            .iter()
            .find(|c| c.provider.as_deref() == Some(provider) && c.connection.as_deref() == pinned)
            .and_then(|c| c.connect_url.clone())
    });
    (link, status.consent_wait_secs)
}

/// A request being held: its place among `max_held_requests` and its entry
/// in the console's list, both given back when the request goes on, fails,
/// or its client goes away (the future is dropped).
pub(crate) struct Hold {
    _permit: tokio::sync::OwnedSemaphorePermit,
    id: u64,
    telemetry: crate::telemetry::Telemetry,
    pub since: Instant,
    pub deadline: Instant,
}

/// Why a request waits, as the console and the webhook say it.
pub(crate) const NOT_CONNECTED: &str = "not_connected";
pub(crate) const RECONNECT_NEEDED: &str = "reconnect_needed";
pub(crate) const INSUFFICIENT_SCOPE: &str = "insufficient_scope";

/// The reason word for a failure `needs_human` accepted.
pub(crate) fn reason_of(err: &ProxyError) -> &'static str {
    match err {
        ProxyError::Token(TokenError::ReconnectNeeded { .. }) => RECONNECT_NEEDED,
        _ => NOT_CONNECTED,
    }
}

impl Hold {
    /// Takes a place, lists the request, tells the operator's webhook; or
    /// says why the request cannot wait.
    pub(crate) fn begin(
        shared: &Shared,
        audit: &AuditRecord,
        binding: &str,
        reason: &'static str,
        link: Option<&str>,
        wait: Duration,
    ) -> Result<Self, ProxyError> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let permit =
            shared
                .held
                .clone()
                .try_acquire_owned()
                .map_err(|_| ProxyError::TooManyHeld {
                    limit: shared.settings.max_held_requests,
                })?;
        let sandbox = &audit.sandbox;
        tracing::warn!(
            %sandbox,
            binding,
            reason,
            connect_url = link.unwrap_or(""),
            wait_secs = wait.as_secs(),
            "request held until a human acts"
        );
        let now = unix_now();
        let entry = HeldRequest {
            since: now,
            until: now + wait.as_secs(),
            sandbox: sandbox.to_string(),
            binding: binding.to_owned(),
            reason,
            method: crate::telemetry::method_str(audit.method.as_ref()).to_owned(),
            host: audit.host.to_string(),
            path: audit.path.to_string(),
            connect_url: link.map(str::to_owned),
        };
        if let Some(hook) = &shared.settings.consent_webhook {
            announce(shared, hook.clone(), &entry);
        }
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let telemetry = shared.telemetry.clone();
        telemetry.held.insert(id, entry);
        telemetry.metrics.held_requests.inc();
        let since = Instant::now();
        Ok(Self {
            _permit: permit,
            id,
            telemetry,
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

impl Drop for Hold {
    fn drop(&mut self) {
        self.telemetry.held.remove(self.id);
        self.telemetry.metrics.held_requests.dec();
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long the operator's webhook may take before it counts as failed.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST`s the held request to the operator's webhook, in the background:
/// the request waits for the human either way, and a receiver that is down
/// is logged and counted, never retried into a pile.
///
/// `x-airlock-signature: sha256=HEX(HMAC-SHA256(secret, TIMESTAMP "." BODY))`
/// with `x-airlock-timestamp: TIMESTAMP` (unix seconds), so a receiver can
/// check the sender and refuse replays.
fn announce(shared: &Shared, hook: ConsentWebhook, entry: &HeldRequest) {
    let body = serde_json::json!({ "event": "consent_needed", "request": entry }).to_string();
    let timestamp = unix_now().to_string();
    let signature = webhook_signature(&hook, &timestamp, &body);
    let upstream = shared.upstream().clone();
    let metrics = shared.telemetry.metrics.clone();
    tokio::spawn(async move {
        let request = http::Request::post(hook.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-airlock-timestamp", timestamp)
            .header("x-airlock-signature", format!("sha256={signature}"))
            .body(crate::body::full(bytes::Bytes::from(body)));
        let outcome = match request {
            Ok(request) => {
                match tokio::time::timeout(
                    WEBHOOK_TIMEOUT,
                    upstream.send(request, crate::settings::UpstreamWire::Alpn),
                )
                .await
                {
                    Ok(Ok(answer)) if answer.status().is_success() => Ok(()),
                    Ok(Ok(answer)) => Err(format!("answered {}", answer.status())),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer in {} s", WEBHOOK_TIMEOUT.as_secs())),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let result = match outcome {
            Ok(()) => "delivered",
            Err(error) => {
                tracing::warn!(url = %hook.url, %error, "consent webhook failed");
                "failed"
            }
        };
        metrics
            .consent_webhooks
            .get_or_create(&crate::metrics::ReasonLabel { reason: result })
            .inc();
    });
}

pub(crate) fn webhook_signature(hook: &ConsentWebhook, timestamp: &str, body: &str) -> String {
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        hook.secret.expose_secret().as_bytes(),
    );
    let mut message = timestamp.as_bytes().to_vec();
    message.push(b'.');
    message.extend_from_slice(body.as_bytes());
    ring::hmac::sign(&key, &message)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

/// Stage 2 with consent, after the first build failed with `err`: when it
/// met an account a human must connect and the request may wait, holds it
/// (nothing sent) and builds it again on every tick until the account
/// resolves or the wait ends. Else the error, with the connect link.
pub(crate) async fn hold_until_built(
    shared: &Shared,
    attempt: &UpstreamAttempt<'_>,
    swapper: &mut Swapper,
    plan: &mut BodyPlan,
    audit: &AuditRecord,
    asked: Option<Duration>,
    mut err: ProxyError,
) -> Result<(Request<ProxyBody>, Option<Hold>), ProxyError> {
    let mut hold: Option<Hold> = None;
    loop {
        let Some(binding) = needs_human(&err).map(str::to_owned) else {
            return Err(err);
        };
        let (link, sandbox_wait) = connect_url(shared, &audit.sandbox, &binding).await;
        let wait = effective_wait(asked, sandbox_wait, shared);
        let with_link = |err: ProxyError| match (err, &link) {
            (ProxyError::Token(error), Some(url)) => ProxyError::ConsentNeeded {
                error,
                connect_url: url.clone(),
            },
            (err, _) => err,
        };
        // Only a request whose body is kept can wait: nothing was sent yet.
        if wait.is_zero() || link.is_none() || !plan.replayable() {
            return Err(with_link(err));
        }
        if hold.is_none() {
            let reason = reason_of(&err);
            hold = Some(Hold::begin(
                shared,
                audit,
                &binding,
                reason,
                link.as_deref(),
                wait,
            )?);
        }
        if !hold.as_ref().expect("just set").tick().await {
            return Err(with_link(err));
        }
        err = match attempt.build(swapper, plan).await {
            Ok(request) => return Ok((request, hold)),
            Err(err) => err,
        };
    }
}

/// After an insufficient-scope answer: a request that may wait is held
/// until the user has consented to the step-up, then built and sent again
/// with the new token (and judged again). Otherwise the answer, with its
/// step-up headers, goes on.
pub(crate) struct StepUpWait<'a> {
    pub shared: &'a Shared,
    pub attempt: &'a UpstreamAttempt<'a>,
    pub asked: Option<Duration>,
    pub audit: &'a AuditRecord,
}

impl StepUpWait<'_> {
    /// The answer to give, and whether it still lacks the scope.
    pub(crate) async fn wait_and_resend(
        &self,
        swapper: &mut Swapper,
        plan: &mut BodyPlan,
        hold: &mut Option<Hold>,
        mut lacking: Insufficient,
        mut response: Response<ProxyBody>,
    ) -> Result<(Response<ProxyBody>, bool), ProxyError> {
        let tokens = self.shared.tokens.as_ref();
        let sandbox = &self.audit.sandbox;
        let sandbox_wait = match self.asked {
            Some(_) => None,
            None => tokens
                .status(sandbox)
                .await
                .ok()
                .and_then(|s| s.consent_wait_secs),
        };
        let wait = effective_wait(self.asked, sandbox_wait, self.shared);
        if wait.is_zero() || !plan.replayable() {
            return Ok((response, true));
        }
        loop {
            if hold.is_none() {
                let link = response
                    .headers()
                    .get(CONNECT_URL)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match Hold::begin(
                    self.shared,
                    self.audit,
                    &lacking.binding,
                    INSUFFICIENT_SCOPE,
                    link.as_deref(),
                    wait,
                ) {
                    Ok(h) => *hold = Some(h),
                    // No place to wait: the answer, with its step-up link, goes on.
                    Err(_) => return Ok((response, true)),
                }
            }
            let waiting = hold.as_ref().expect("just set");
            let Some(fresh) = new_token(tokens, sandbox, &lacking, waiting).await else {
                return Ok((response, true));
            };
            swapper.replace_token(&lacking.placeholder, fresh);
            let request = self.attempt.build(swapper, plan).await?;
            let answer = resend::send(self.attempt, swapper, plan, request)
                .await?
                .response;
            let (again, answer) = screen_scopes(tokens, sandbox, swapper, answer).await;
            response = answer;
            match again {
                Some(next) => lacking = next,
                None => return Ok((response, false)),
            }
        }
    }
}
