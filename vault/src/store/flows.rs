//! Connect flows: one row per OAuth state, with the outcome once decided.
//! Every change of outcome is a compare-and-set on the current one, so a
//! cancel and a callback racing for the same flow cannot both win.

use super::{now, ScopeKind, Store};
use crate::error::VaultError;

/// How long a finished (or expired) flow's outcome stays readable.
pub const FLOW_KEEP_SECS: i64 = 24 * 3600;

/// A flow's state as stored. `Completing` is the callback's claim while it
/// exchanges the code (clients see `pending`); the rest are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowState {
    Pending,
    Completing,
    Connected,
    Denied,
    Failed,
    Expired,
    Cancelled,
}

super::text_enum!(FlowState, "connect flow state", {
    Pending => "pending",
    Completing => "completing",
    Connected => "connected",
    Denied => "denied",
    Failed => "failed",
    Expired => "expired",
    Cancelled => "cancelled",
});

impl FlowState {
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Completing)
    }
}

/// How a flow ended, with what each ending records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowEnd {
    Connected {
        connection_id: String,
    },
    /// The provider's `error` and `error_description` on the callback.
    Denied {
        error: String,
        description: Option<String>,
    },
    /// Why the code was not turned into a connection (never a secret).
    Failed {
        reason: String,
    },
    Expired,
    Cancelled,
}

impl FlowEnd {
    pub fn state(&self) -> FlowState {
        match self {
            Self::Connected { .. } => FlowState::Connected,
            Self::Denied { .. } => FlowState::Denied,
            Self::Failed { .. } => FlowState::Failed,
            Self::Expired => FlowState::Expired,
            Self::Cancelled => FlowState::Cancelled,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FlowRow {
    pub id: String,
    pub state_hash: String,
    pub tenant: String,
    pub scope_kind: ScopeKind,
    pub scope_name: String,
    pub provider: String,
    pub sandbox_id: Option<String>,
    pub outcome: FlowState,
    pub connection_id: Option<String>,
    pub provider_error: Option<String>,
    pub provider_error_description: Option<String>,
    pub reason: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub finished_at: Option<i64>,
}

impl Store {
    // ---- connect flows -----------------------------------------------------

    /// A new pending flow. Flows that ended (or expired) more than
    /// [`FLOW_KEEP_SECS`] ago go at the same time, so the table stays bounded.
    pub async fn insert_flow(&self, f: &FlowRow) -> Result<(), VaultError> {
        sqlx::query(
            "INSERT INTO connect_flows (id, state_hash, tenant, scope_kind, scope_name, provider, sandbox_id, \
             outcome, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&f.id)
        .bind(&f.state_hash)
        .bind(&f.tenant)
        .bind(f.scope_kind.as_str())
        .bind(&f.scope_name)
        .bind(&f.provider)
        .bind(&f.sandbox_id)
        .bind(FlowState::Pending.as_str())
        .bind(f.created_at)
        .bind(f.expires_at)
        .execute(&self.pool)
        .await?;
        self.delete_old_flows(now() - FLOW_KEEP_SECS).await
    }

    /// Deletes flows that finished, or expired, before `before`.
    pub async fn delete_old_flows(&self, before: i64) -> Result<(), VaultError> {
        sqlx::query("DELETE FROM connect_flows WHERE COALESCE(finished_at, expires_at) < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn flow(&self, id: &str) -> Result<Option<FlowRow>, VaultError> {
        Ok(
            sqlx::query_as::<_, FlowRow>("SELECT * FROM connect_flows WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn flow_by_state(&self, state_hash: &str) -> Result<Option<FlowRow>, VaultError> {
        Ok(
            sqlx::query_as::<_, FlowRow>("SELECT * FROM connect_flows WHERE state_hash = $1")
                .bind(state_hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The callback's claim on a pending, unexpired flow: true for the one
    /// caller that moved it to `completing`.
    pub async fn claim_flow(&self, state_hash: &str) -> Result<bool, VaultError> {
        let done = sqlx::query(
            "UPDATE connect_flows SET outcome = $1 WHERE state_hash = $2 AND outcome = $3 AND expires_at >= $4",
        )
        .bind(FlowState::Completing.as_str())
        .bind(state_hash)
        .bind(FlowState::Pending.as_str())
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records `end` if the flow is still in state `from`; false otherwise
    /// (another caller decided first).
    pub async fn end_flow(
        &self,
        id: &str,
        from: FlowState,
        end: &FlowEnd,
    ) -> Result<bool, VaultError> {
        let (connection, error, description, reason) = match end {
            FlowEnd::Connected { connection_id } => {
                (Some(connection_id.as_str()), None, None, None)
            }
            FlowEnd::Denied { error, description } => {
                (None, Some(error.as_str()), description.as_deref(), None)
            }
            FlowEnd::Failed { reason } => (None, None, None, Some(reason.as_str())),
            FlowEnd::Expired | FlowEnd::Cancelled => (None, None, None, None),
        };
        let done = sqlx::query(
            "UPDATE connect_flows SET outcome = $1, connection_id = $2, provider_error = $3, \
             provider_error_description = $4, reason = $5, finished_at = $6 WHERE id = $7 AND outcome = $8",
        )
        .bind(end.state().as_str())
        .bind(connection)
        .bind(error)
        .bind(description)
        .bind(reason)
        .bind(now())
        .bind(id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks the flow `expired` when its state's time ran out with no
    /// callback, or when a claimed flow was left `completing` for `grace`
    /// seconds past that (its process died mid-exchange).
    pub async fn expire_flow(&self, id: &str, grace: i64) -> Result<bool, VaultError> {
        let now = now();
        let done = sqlx::query(
            "UPDATE connect_flows SET outcome = $1, finished_at = $2 WHERE id = $3 AND \
             ((outcome = $4 AND expires_at < $5) OR (outcome = $6 AND expires_at < $7))",
        )
        .bind(FlowState::Expired.as_str())
        .bind(now)
        .bind(id)
        .bind(FlowState::Pending.as_str())
        .bind(now)
        .bind(FlowState::Completing.as_str())
        .bind(now - grace)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
impl Store {
    /// For tests that move times into the past.
    pub(crate) fn pool_for_tests(&self) -> &sqlx::AnyPool {
        &self.pool
    }
}
