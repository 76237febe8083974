//! Connect flows for platforms: every connect the vault starts (admin API,
//! console, a sandbox's connect link) has an id and, once decided, an
//! outcome — `connected`, `denied` (the provider's reason), `failed`,
//! `expired` or `cancelled` — that a platform can long-poll for.
//!
//! The outcome is written by whoever decides it first, with a
//! compare-and-set on the stored state: the callback claims the flow
//! (`completing`) before it exchanges the code, so a cancel that comes later
//! is refused and a callback that comes after a cancel exchanges nothing.
//! Waiters sleep on an in-process [`Notify`] per flow, woken when this
//! process records an outcome, and re-read the row every [`POLL`] in case
//! another replica of a fleet handled the callback.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::connections::ConnectionView;
use crate::error::VaultError;
use crate::store::{new_id, now, FlowEnd, FlowRow, FlowState, ScopeKind, StateRow};
use crate::{sha256_hex, ConnectRequest, Scope, Vault, DEFAULT_ENVIRONMENT};

/// The longest a single `wait` may last; clients wanting longer ask again.
pub const MAX_WAIT: Duration = Duration::from_secs(120);

/// How often a waiter re-reads its flow, for outcomes another replica
/// recorded (or the state's expiry).
const POLL: Duration = Duration::from_secs(1);

/// A flow left `completing` this long past its state's expiry was claimed by
/// a process that died mid-exchange: it counts as expired.
const COMPLETING_GRACE_SECS: i64 = 120;

/// What a platform sees of a flow. `pending` until decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowOutcome {
    Pending,
    Connected,
    Denied,
    Failed,
    Expired,
    Cancelled,
}

impl FlowOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Connected => "connected",
            Self::Denied => "denied",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for FlowOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<FlowState> for FlowOutcome {
    fn from(s: FlowState) -> Self {
        match s {
            // The callback is exchanging the code: not decided yet.
            FlowState::Pending | FlowState::Completing => Self::Pending,
            FlowState::Connected => Self::Connected,
            FlowState::Denied => Self::Denied,
            FlowState::Failed => Self::Failed,
            FlowState::Expired => Self::Expired,
            FlowState::Cancelled => Self::Cancelled,
        }
    }
}

/// A flow as the admin API shows it. Holds no token, state or verifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowView {
    pub id: String,
    pub provider: String,
    pub tenant: String,
    /// The owner the connection is made for: `tenant`, `workspace:W`, `user:U`.
    pub scope: String,
    /// The sandbox the flow was started for, if any.
    pub sandbox: Option<String>,
    pub outcome: FlowOutcome,
    /// `connected`: the connection made.
    pub connection_id: Option<String>,
    /// `denied`: the provider's `error` (e.g. `access_denied`)…
    pub provider_error: Option<String>,
    /// …and its `error_description`, when it gave one.
    pub provider_error_description: Option<String>,
    /// `failed`: why the code did not become a connection.
    pub reason: Option<String>,
    pub created_at: i64,
    /// When the flow's OAuth state expires (then `expired`, if still pending).
    pub expires_at: i64,
    pub finished_at: Option<i64>,
}

impl From<&FlowRow> for FlowView {
    fn from(r: &FlowRow) -> Self {
        let scope = match r.scope_kind {
            ScopeKind::Tenant => "tenant".to_owned(),
            kind => format!("{kind}:{}", r.scope_name),
        };
        Self {
            id: r.id.clone(),
            provider: r.provider.clone(),
            tenant: r.tenant.clone(),
            scope,
            sandbox: r.sandbox_id.clone(),
            outcome: r.outcome.into(),
            connection_id: r.connection_id.clone(),
            provider_error: r.provider_error.clone(),
            provider_error_description: r.provider_error_description.clone(),
            reason: r.reason.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            finished_at: r.finished_at,
        }
    }
}

/// Where a flow comes from, kept with it.
#[derive(Debug, Clone, Default)]
pub(crate) struct FlowOrigin {
    /// The hash of the connect link it was started from.
    pub link: Option<String>,
    /// The sandbox it was started for.
    pub sandbox: Option<String>,
    /// Where the browser goes after a successful callback (unchecked yet).
    pub return_to: Option<String>,
}

/// Whose connection a flow makes.
#[derive(Debug, Clone)]
pub enum FlowTarget {
    Owner {
        tenant: String,
        scope: Scope,
    },
    /// The scope this sandbox resolves first: its user, else its workspace,
    /// else its tenant (as a connect link does).
    Sandbox(String),
}

/// One [`Notify`] per flow somebody waits on. An entry lives as long as a
/// [`Waiting`] holds it: the last waiter to leave (or be dropped with its
/// disconnected client) removes it.
#[derive(Debug, Default)]
pub(crate) struct FlowWaiters {
    wake: DashMap<String, Arc<Notify>>,
}

impl FlowWaiters {
    fn subscribe(&self, id: &str) -> Waiting<'_> {
        let notify = self.wake.entry(id.to_owned()).or_default().clone();
        Waiting {
            waiters: self,
            id: id.to_owned(),
            notify,
        }
    }

    fn wake(&self, id: &str) {
        if let Some(n) = self.wake.get(id) {
            n.notify_waiters();
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.wake.len()
    }
}

struct Waiting<'a> {
    waiters: &'a FlowWaiters,
    id: String,
    notify: Arc<Notify>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        // Under the map's shard lock no one can take a new clone: two
        // references are the map's and ours, so nobody else waits.
        self.waiters
            .wake
            .remove_if(&self.id, |_, n| Arc::strong_count(n) <= 2);
    }
}

impl Vault {
    /// Records a new pending flow for the OAuth state `state_hash` (called
    /// by `start_connect_from`); returns its id.
    pub(crate) async fn record_flow(
        &self,
        state_hash: &str,
        state: &StateRow,
        sandbox: Option<String>,
    ) -> Result<String, VaultError> {
        let id = new_id("flow");
        self.store
            .insert_flow(&FlowRow {
                id: id.clone(),
                state_hash: state_hash.to_owned(),
                tenant: state.tenant.clone(),
                scope_kind: state.scope_kind,
                scope_name: state.scope_name.clone(),
                provider: state.provider.clone(),
                sandbox_id: sandbox,
                outcome: FlowState::Pending,
                connection_id: None,
                provider_error: None,
                provider_error_description: None,
                reason: None,
                created_at: now(),
                expires_at: state.expires_at,
                finished_at: None,
            })
            .await?;
        Ok(id)
    }

    /// Starts a connect for an owner or a sandbox. `environment` and `name`
    /// default to the owner's default environment and unnamed connection;
    /// for a sandbox, to its environment (another is refused).
    pub async fn start_connect_flow(
        &self,
        target: FlowTarget,
        provider: &str,
        scopes: Option<Vec<String>>,
        environment: Option<&str>,
        name: Option<&str>,
        return_to: Option<&str>,
    ) -> Result<crate::ConnectStarted, VaultError> {
        match target {
            FlowTarget::Owner { tenant, scope } => {
                self.start_connect_returning(
                    &ConnectRequest {
                        tenant,
                        scope,
                        provider: provider.to_owned(),
                        scopes,
                        environment: environment.unwrap_or(DEFAULT_ENVIRONMENT).to_owned(),
                        name: name.map(str::to_owned),
                    },
                    return_to,
                )
                .await
            }
            FlowTarget::Sandbox(id) => {
                let sandbox = self
                    .store
                    .sandbox(&id)
                    .await?
                    .ok_or_else(|| VaultError::NotFound(format!("sandbox {id:?}")))?;
                if let Some(asked) = environment.filter(|e| *e != sandbox.environment) {
                    return Err(VaultError::Invalid(format!(
                        "sandbox {id} resolves environment {}, not {asked}: leave environment out, \
                         or connect for the owner instead",
                        sandbox.environment
                    )));
                }
                self.start_connect_from(
                    &ConnectRequest {
                        tenant: sandbox.tenant.clone(),
                        scope: self.pin_scope(&sandbox, provider, name).await?,
                        provider: provider.to_owned(),
                        scopes,
                        environment: sandbox.environment.clone(),
                        name: name.map(str::to_owned),
                    },
                    FlowOrigin {
                        link: None,
                        sandbox: Some(sandbox.id),
                        return_to: return_to.map(str::to_owned),
                    },
                )
                .await
            }
        }
    }

    /// The flow `id` as it stands now; a pending flow whose state expired is
    /// recorded as `expired` first.
    pub async fn connect_flow(&self, id: &str) -> Result<FlowView, VaultError> {
        let not_found = || VaultError::NotFound(format!("connect flow {id:?}"));
        let row = self.store.flow(id).await?.ok_or_else(not_found)?;
        if row.outcome.is_final() || row.expires_at >= now() {
            return Ok(FlowView::from(&row));
        }
        if self.store.expire_flow(id, COMPLETING_GRACE_SECS).await? {
            self.flows.wake(id);
        }
        let row = self.store.flow(id).await?.ok_or_else(not_found)?;
        Ok(FlowView::from(&row))
    }

    /// The flow `id` once it has an outcome, or as it stands after `wait`
    /// (at most [`MAX_WAIT`]). Holds no database lock while waiting.
    pub async fn wait_connect_flow(
        &self,
        id: &str,
        wait: Duration,
    ) -> Result<FlowView, VaultError> {
        let wait = wait.min(MAX_WAIT);
        if wait.is_zero() {
            return self.connect_flow(id).await;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let waiting = self.flows.subscribe(id);
        // Bounded: one round per poll until the deadline, plus slack.
        let rounds = (MAX_WAIT.as_secs() / POLL.as_secs().max(1)) * 2 + 8;
        for _ in 0..rounds {
            let notified = waiting.notify.notified();
            tokio::pin!(notified);
            // Registered before the read: an outcome recorded in between still wakes us.
            notified.as_mut().enable();
            let view = self.connect_flow(id).await?;
            let now = tokio::time::Instant::now();
            if view.outcome != FlowOutcome::Pending || now >= deadline {
                return Ok(view);
            }
            let nap = (deadline - now).min(POLL);
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(nap) => {}
            }
        }
        self.connect_flow(id).await
    }

    /// Cancels a pending flow: its callback, if it ever comes, connects
    /// nothing. A flow that already has an outcome is a conflict naming it.
    pub async fn cancel_connect_flow(&self, id: &str) -> Result<FlowView, VaultError> {
        let view = self.connect_flow(id).await?;
        if view.outcome != FlowOutcome::Pending {
            return Err(already_ended(id, view.outcome));
        }
        if self
            .store
            .end_flow(id, FlowState::Pending, &FlowEnd::Cancelled)
            .await?
        {
            self.flows.wake(id);
            tracing::info!(flow = %id, provider = %view.provider, "connect flow cancelled");
            return self.connect_flow(id).await;
        }
        // Lost the race: to the callback's claim, or another decision.
        let view = self.connect_flow(id).await?;
        Err(match view.outcome {
            FlowOutcome::Pending => VaultError::Conflict(format!(
                "connect flow {id} is being completed (the consent came back); wait for its outcome"
            )),
            outcome => already_ended(id, outcome),
        })
    }

    /// The OAuth callback: completes the flow of `state` and records its
    /// outcome. A cancelled flow's callback exchanges nothing.
    pub async fn complete_connect_flow(
        &self,
        state: &str,
        code: Option<&str>,
        error: Option<&str>,
        error_description: Option<&str>,
    ) -> Result<ConnectionView, VaultError> {
        let finish = || self.finish_connect(state, code, error, error_description);
        if state.is_empty() {
            return finish().await;
        }
        let state_hash = sha256_hex(state);
        // States from before flows existed, or forged ones: finish_connect says why.
        let Some(flow) = self.store.flow_by_state(&state_hash).await? else {
            return finish().await;
        };
        if self.store.claim_flow(&state_hash).await? {
            let result = finish().await;
            let end = match &result {
                Ok(conn) => FlowEnd::Connected {
                    connection_id: conn.id.clone(),
                },
                Err(VaultError::ConsentDenied { answer, .. }) => FlowEnd::Denied {
                    error: answer.error.clone(),
                    description: answer.description.clone(),
                },
                // Messages of VaultError never carry a secret.
                Err(e) => FlowEnd::Failed {
                    reason: e.to_string(),
                },
            };
            // The callback's own answer stands even if the record fails;
            // waiters then see `expired` once the grace runs out.
            if let Err(e) = self
                .store
                .end_flow(&flow.id, FlowState::Completing, &end)
                .await
            {
                tracing::warn!(flow = %flow.id, error = %e, "connect flow outcome not recorded");
            }
            self.flows.wake(&flow.id);
            return result;
        }
        match self.connect_flow(&flow.id).await?.outcome {
            FlowOutcome::Cancelled => {
                // Used up, so no later replay of it can connect either.
                self.store.take_state(&state_hash).await?;
                Err(VaultError::Gone(
                    "this connect was cancelled: no account was connected. Start a new one".into(),
                ))
            }
            // Expired (just recorded), or used: finish_connect says which.
            _ => finish().await,
        }
    }
}

/// What the page of a callback needs to know about its flow before the
/// flow is completed (and its state used up).
#[derive(Debug, Clone, Default)]
pub struct CallbackContext {
    pub tenant: Option<String>,
    pub flow_id: Option<String>,
    /// Checked against the tenant's `return_url` when the flow started.
    pub return_to: Option<String>,
}

/// `POST /v1/connect/complete`: what a platform's own callback handler
/// passes on from the provider's redirect.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
    /// When given, the flow must be this tenant's (a platform serving
    /// several tenants from one handler cannot finish another's by mistake).
    #[serde(default)]
    pub tenant: Option<String>,
}

/// What `POST /v1/connect/complete` answers: the flow and its connection
/// (never a token).
#[derive(Debug, Clone, Serialize)]
pub struct Completed {
    pub flow_id: Option<String>,
    pub connection: ConnectionView,
}

impl Vault {
    /// The flow of `state` as its callback page needs it; empty for states
    /// it does not know (the completion then says why).
    pub async fn callback_context(&self, state: &str) -> CallbackContext {
        if state.is_empty() {
            return CallbackContext::default();
        }
        let hash = sha256_hex(state);
        let flow = self.store.flow_by_state(&hash).await.ok().flatten();
        let row = self.store.unused_state(&hash).await.ok().flatten();
        CallbackContext {
            tenant: flow
                .as_ref()
                .map(|f| f.tenant.clone())
                .or_else(|| row.as_ref().map(|r| r.tenant.clone())),
            flow_id: flow.map(|f| f.id),
            return_to: row.and_then(|r| r.return_to),
        }
    }

    /// Finishes a flow from the platform's own callback handler, exactly as
    /// `/oauth/callback` would. Missing or contradictory fields, and a state
    /// of another tenant, are refused before the state is touched, so the
    /// rightful callback can still finish the flow.
    pub async fn complete_connect(&self, req: &CompleteRequest) -> Result<Completed, VaultError> {
        let state = req
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                VaultError::Invalid("state is required (the state the provider sent back)".into())
            })?;
        let code = req.code.as_deref().filter(|c| !c.is_empty());
        let error = req.error.as_deref().filter(|e| !e.is_empty());
        match (code, error) {
            (None, None) => {
                return Err(VaultError::Invalid(
                    "give code, or error (and error_description) as the provider sent them".into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(VaultError::Invalid(
                    "give either code or error, not both".into(),
                ))
            }
            _ => {}
        }
        if req.error_description.is_some() && error.is_none() {
            return Err(VaultError::Invalid(
                "error_description comes with error".into(),
            ));
        }
        let hash = sha256_hex(state);
        if let Some(tenant) = &req.tenant {
            crate::scope::check_name("tenant", tenant)?;
            let owner = match self.store.unused_state(&hash).await? {
                Some(row) => Some(row.tenant),
                None => self.store.flow_by_state(&hash).await?.map(|f| f.tenant),
            };
            if owner.as_deref().is_some_and(|o| o != tenant) {
                return Err(VaultError::Invalid(format!(
                    "this state is not of a connect flow of tenant {tenant}: nothing was completed"
                )));
            }
        }
        let flow_id = self.store.flow_by_state(&hash).await?.map(|f| f.id);
        let connection = self
            .complete_connect_flow(state, code, error, req.error_description.as_deref())
            .await?;
        Ok(Completed {
            flow_id,
            connection,
        })
    }
}

fn already_ended(id: &str, outcome: FlowOutcome) -> VaultError {
    VaultError::Conflict(format!("connect flow {id} already ended: {outcome}"))
}

#[cfg(test)]
mod tests;
