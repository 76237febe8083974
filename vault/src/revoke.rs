//! Disconnecting: revoke the connection's tokens at the provider (RFC 7009),
//! then delete them. When the provider cannot confirm, the connection is
//! marked revoke-pending (never handed out again) and revocation is retried
//! in the background with a capped back-off until it succeeds.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::error::{ProviderError, VaultError};
use crate::store::{now, ConnectionRow, ConnectionStatus};
use crate::Vault;

/// What a disconnect did.
#[derive(Debug, Clone, Serialize)]
pub struct Disconnected {
    pub id: String,
    pub provider: String,
    /// `deleted`, or `revoke_pending` when the provider could not confirm.
    pub status: DisconnectStatus,
    /// Tokens the provider confirmed revoked: `refresh_token`, `access_token`.
    pub revoked: Vec<&'static str>,
    /// Why revocation failed, one line per failure, said without secrets.
    pub revoke_errors: Vec<String>,
    /// Said to the operator even on success (tokens that may still be live).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The error the failure maps to (status code at the API).
    #[serde(skip)]
    pub failure: Option<Arc<VaultError>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectStatus {
    Deleted,
    RevokePending,
}

/// The outcome of one revocation pass over a connection's tokens.
struct Attempt {
    revoked: Vec<&'static str>,
    errors: Vec<VaultError>,
    /// The provider has no revocation endpoint (or cannot revoke a kind).
    not_revocable: bool,
}

/// When a revoke-pending connection is tried again.
#[derive(Debug, Default)]
pub(crate) struct RevokeRetry {
    /// Failed attempts in a row.
    pub failures: u32,
    /// Unix seconds before which it is not tried.
    pub not_before: i64,
}

impl Vault {
    /// Revokes the connection's tokens and deletes it. If the provider
    /// cannot confirm, the connection becomes `revoke_pending` and the
    /// result says why; with `force` it is deleted anyway (a connection
    /// already revoke-pending is deleted without contacting the provider).
    pub async fn disconnect(&self, id: &str, force: bool) -> Result<Disconnected, VaultError> {
        let row = self
            .store
            .connection(id)
            .await?
            .ok_or_else(|| VaultError::NotFound(format!("connection {id}")))?;
        let already_pending = row.status == ConnectionStatus::RevokePending;
        let attempt = if force && already_pending {
            Attempt {
                revoked: Vec::new(),
                errors: Vec::new(),
                not_revocable: false,
            }
        } else {
            self.revoke_tokens(&row).await
        };
        let revoke_errors: Vec<String> = attempt.errors.iter().map(|e| e.to_string()).collect();
        let confirmed = attempt.errors.is_empty() && !(force && already_pending);
        let mut result = Disconnected {
            id: id.to_owned(),
            provider: row.provider.clone(),
            status: DisconnectStatus::Deleted,
            revoked: attempt.revoked,
            revoke_errors,
            warning: None,
            failure: None,
        };
        if confirmed || force {
            self.store.delete_connection(id).await?;
            self.bump_generation();
            if !confirmed {
                let why = if result.revoke_errors.is_empty() {
                    "earlier revocation attempts failed".to_owned()
                } else {
                    result.revoke_errors.join("; ")
                };
                result.warning = Some(format!(
                    "deleted locally without confirmed revocation ({why}): the tokens may still be live at provider {}; revoke them there",
                    row.provider
                ));
                tracing::warn!(connection = %id, provider = %row.provider, "connection deleted by force; its tokens may still be live at the provider");
            } else if attempt.not_revocable {
                result.warning = Some(format!(
                    "provider {} offers no revocation for some of these tokens: they stay valid at the provider until they expire",
                    row.provider
                ));
            }
            tracing::info!(connection = %id, provider = %row.provider, revoked = ?result.revoked, "account disconnected");
            return Ok(result);
        }
        let reason = result.revoke_errors.join("; ");
        self.store.mark_revoke_pending(id, &reason).await?;
        self.bump_generation();
        self.revoke_backoff.remove(id);
        self.schedule_revoke_retry(id);
        tracing::warn!(connection = %id, provider = %row.provider, error = %reason, "revocation failed; connection is revoke_pending and will be retried");
        result.status = DisconnectStatus::RevokePending;
        result.failure = attempt.errors.into_iter().next().map(Arc::new);
        Ok(result)
    }

    async fn revoke_tokens(&self, row: &ConnectionRow) -> Attempt {
        let mut attempt = Attempt {
            revoked: Vec::new(),
            errors: Vec::new(),
            not_revocable: false,
        };
        let provider = match self.provider(&row.provider) {
            Ok(p) => p,
            Err(_) => {
                attempt.errors.push(VaultError::Config(format!(
                    "provider {} is no longer in the catalog: its tokens cannot be revoked",
                    row.provider
                )));
                return attempt;
            }
        };
        let app = match self.connection_creds(row).await {
            Ok(c) => c,
            Err(e) => {
                attempt.errors.push(e);
                return attempt;
            }
        };
        let creds = app.for_exchange(row.token_url.as_deref());
        // The refresh token first: revoking it ends the grant at most providers.
        for (column, sealed, is_refresh) in [
            ("connections.refresh_token", &row.refresh_token, true),
            ("connections.access_token", &row.access_token, false),
        ] {
            let Some(sealed) = sealed else { continue };
            let token = match self.keyring.open(column, &row.id, sealed) {
                Ok(t) => t,
                Err(e) => {
                    attempt.errors.push(e);
                    continue;
                }
            };
            match self
                .oauth
                .revoke(&provider, &creds, &token, is_refresh)
                .await
            {
                Ok(true) => {
                    attempt.revoked.push(if is_refresh {
                        "refresh_token"
                    } else {
                        "access_token"
                    });
                    // Not sent again on a retry.
                    if let Err(e) = self.store.clear_token(&row.id, is_refresh).await {
                        tracing::warn!(connection = %row.id, error = %e, "could not forget a revoked token");
                    }
                }
                Ok(false) => attempt.not_revocable = true,
                Err(e) => {
                    // Unreachable: the next token would only wait as long again.
                    let unreachable = matches!(
                        e,
                        VaultError::Provider(
                            ProviderError::Timeout { .. }
                                | ProviderError::ConnectionRefused { .. }
                                | ProviderError::Unreachable { .. }
                        )
                    );
                    attempt.errors.push(e);
                    if unreachable {
                        break;
                    }
                }
            }
        }
        attempt
    }

    fn schedule_revoke_retry(&self, id: &str) {
        let mut entry = self.revoke_backoff.entry(id.to_owned()).or_default();
        let retry = entry.value_mut();
        let base = self.settings.revoke_retry_base.as_secs().max(1);
        let max = self.settings.revoke_retry_max.as_secs().max(base);
        let wait = base.saturating_mul(1u64 << retry.failures.min(20)).min(max);
        retry.failures += 1;
        retry.not_before = now() + wait as i64;
    }

    /// One background pass: retries every revoke-pending connection whose
    /// back-off has passed; deletes those the provider now confirms.
    /// Returns how many were deleted.
    pub async fn retry_revocations(&self) -> usize {
        let rows = match self.store.revoke_pending().await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "could not list connections waiting for revocation");
                return 0;
            }
        };
        let mut deleted = 0;
        for row in rows {
            let due = self
                .revoke_backoff
                .get(&row.id)
                .is_none_or(|e| e.value().not_before <= now());
            if !due {
                continue;
            }
            let attempt = self.revoke_tokens(&row).await;
            if attempt.errors.is_empty() {
                match self.store.delete_revoked(&row.id).await {
                    Ok(true) => {
                        deleted += 1;
                        self.revoke_backoff.remove(&row.id);
                        self.bump_generation();
                        tracing::info!(connection = %row.id, provider = %row.provider, "revocation succeeded on retry; connection deleted");
                    }
                    Ok(false) => {
                        self.revoke_backoff.remove(&row.id);
                    }
                    Err(error) => {
                        tracing::warn!(connection = %row.id, %error, "could not delete a revoked connection")
                    }
                }
            } else {
                let reason = attempt
                    .errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                self.schedule_revoke_retry(&row.id);
                tracing::warn!(connection = %row.id, provider = %row.provider, error = %reason, "revocation retry failed");
                if let Err(error) = self.store.set_revoke_error(&row.id, &reason).await {
                    tracing::warn!(connection = %row.id, %error, "could not record the revocation error");
                }
            }
        }
        deleted
    }

    /// Runs [`Vault::retry_revocations`] every `every` until the process ends.
    pub fn spawn_revoker(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let vault = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(vault) = vault.upgrade() else { return };
                vault.retry_revocations().await;
            }
        })
    }
}
