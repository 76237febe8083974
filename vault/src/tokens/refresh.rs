//! Refresh: ahead of expiry and on demand, one per connection across
//! processes through a lease on its row; back-off and the background refresher.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{
    bump, Backoff, Failure, Fresh, Reading, Reason, RefreshCounts, Step, LEASE_SECS, POLL,
    WAIT_FOR_OTHERS,
};
use crate::error::VaultError;
use crate::oauth::{self, Grant, RawAnswer};
use crate::store::{now, ConnectionRow, ConnectionStatus, GrantKind, LeaseEnd, TokenUpdate};
use crate::Vault;

impl Vault {
    /// How long before expiry a token is refreshed: min(window, fraction × lifetime).
    pub(super) fn refresh_margin(&self, row: &ConnectionRow) -> i64 {
        let window = self.settings.refresh_window.as_secs() as i64;
        match (row.expires_at, row.obtained_at) {
            (Some(exp), Some(got)) if exp > got => {
                window.min(((exp - got) as f64 * self.settings.refresh_fraction) as i64)
            }
            _ => window,
        }
    }

    /// Due now, or within `ahead` seconds.
    pub(super) fn due_within(&self, row: &ConnectionRow, ahead: i64) -> bool {
        row.expires_at
            .is_some_and(|exp| exp - now() <= self.refresh_margin(row) + ahead)
    }

    pub(super) fn open_access(&self, row: &ConnectionRow) -> Option<SecretString> {
        row.access_token.as_ref().and_then(|s| {
            self.keyring
                .open("connections.access_token", &row.id, s)
                .ok()
        })
    }

    /// What the refresh path did so far.
    pub fn refresh_stats(&self) -> RefreshCounts {
        self.stats.snapshot()
    }

    /// The connection's current token, refreshing first when it is due.
    pub(super) async fn current_token(
        &self,
        row: ConnectionRow,
    ) -> Result<(SecretString, Option<i64>), Failure> {
        if row.status == ConnectionStatus::ReconnectNeeded {
            return Err(Failure::Reconnect);
        }
        if !self.due_within(&row, 0) {
            if let Some(token) = self.open_access(&row) {
                return Ok((token, row.expires_at));
            }
        }
        self.refresh_connection(&row.id, Reason::Due { ahead: 0 })
            .await
            .map(|f| (f.token, f.expires_at))
    }

    /// Refreshes `id` unless that is not needed or not allowed now. No
    /// database transaction is open across the provider call: a lease on the
    /// row says who refreshes, a compare-and-set writes the result.
    pub(super) async fn refresh_connection(
        &self,
        id: &str,
        reason: Reason<'_>,
    ) -> Result<Fresh, Failure> {
        let give_up = tokio::time::Instant::now() + WAIT_FOR_OTHERS;
        let wake = self.refresh_wake.entry(id.to_owned()).or_default().clone();
        loop {
            // Registered before the read, so a finish in between still wakes us.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let row = match self.store.connection(id).await {
                Ok(Some(row)) => row,
                Ok(None) => return Err(Failure::Unavailable("the connection was removed".into())),
                Err(e) => return Err(Failure::Unavailable(e.to_string())),
            };
            let step = match self.refresh_step(&row, reason).await {
                Ok(step) => step,
                Err(e) => Step::Done(Err(Failure::Unavailable(e.to_string()))),
            };
            match step {
                Step::Done(result) => return result,
                _ if tokio::time::Instant::now() >= give_up => {
                    return match self.usable(&row) {
                        Some(token) => Ok(Fresh {
                            token,
                            expires_at: row.expires_at,
                            granted: false,
                        }),
                        None => Err(Failure::Unavailable(
                            "another refresh of this connection is still running".into(),
                        )),
                    };
                }
                Step::Wait => {
                    let _ = tokio::time::timeout(POLL, notified).await;
                }
                Step::Again => {}
            }
        }
    }

    /// The stored token, if it has not expired.
    pub(super) fn usable(&self, row: &ConnectionRow) -> Option<SecretString> {
        self.open_access(row)
            .filter(|_| row.expires_at.is_none_or(|exp| exp > now()))
    }

    /// One look at the row: answer, wait for someone else, or refresh.
    pub(super) async fn refresh_step(
        &self,
        row: &ConnectionRow,
        reason: Reason<'_>,
    ) -> Result<Step, VaultError> {
        let at = now();
        if row.status == ConnectionStatus::ReconnectNeeded {
            return Ok(Step::Done(Err(Failure::Reconnect)));
        }
        let usable = self.usable(row);
        let serve = |token: SecretString| {
            Step::Done(Ok(Fresh {
                token,
                expires_at: row.expires_at,
                granted: false,
            }))
        };
        // An answer kept by an unfinished refresh is read before anything else.
        if row.pending_grant.is_none() {
            match (reason, &usable) {
                (Reason::Recover, _) => {
                    return Ok(match self.open_access(row) {
                        Some(token) => serve(token),
                        None => Step::Done(Err(Failure::Unavailable("no token".into()))),
                    })
                }
                (Reason::Failed(failed), Some(token))
                    if failed.expose_secret() != token.expose_secret() =>
                {
                    // Someone refreshed since that request was sent.
                    return Ok(serve(token.clone()));
                }
                (Reason::Failed(_), Some(token))
                    if row.refreshed_at.is_some_and(|r| {
                        at - r < self.settings.refresh_cooldown.as_secs() as i64
                    }) =>
                {
                    // Refreshed moments ago: another 401 is the upstream's
                    // business, not a reason to churn the grant.
                    bump(&self.stats.refused_by_budget);
                    tracing::debug!(connection = %row.id, "refresh refused: within the cool-down after the last refresh");
                    return Ok(serve(token.clone()));
                }
                (Reason::Due { ahead }, Some(token)) if !self.due_within(row, ahead) => {
                    return Ok(serve(token.clone()));
                }
                // Re-read under the row: another vault of the fleet may have
                // refreshed it since the pass listed it.
                (Reason::KeepAlive { before }, Some(token))
                    if row.obtained_at.is_some_and(|o| o >= before) =>
                {
                    return Ok(serve(token.clone()));
                }
                _ => {}
            }
            if row.grant_kind != GrantKind::ClientCredentials && row.refresh_token.is_none() {
                return Ok(Step::Done(self.without_refresh_token(row, reason).await));
            }
            let waiting = self
                .backoff
                .get(&row.id)
                .map(|b| b.until)
                .filter(|until| *until > std::time::Instant::now());
            if let Some(until) = waiting {
                // Inside the window: serve what there is, never extend it.
                bump(&self.stats.backed_off);
                return Ok(match usable {
                    Some(token) => serve(token),
                    None => Step::Done(Err(Failure::Unavailable(format!(
                        "waiting before the next refresh attempt ({} s)",
                        until
                            .saturating_duration_since(std::time::Instant::now())
                            .as_secs()
                            + 1
                    )))),
                });
            }
        }
        if row.leased(at) {
            // Someone is refreshing. A valid token is served meanwhile, except
            // to a caller whose token was just refused: it waits for the new one.
            return Ok(match (&usable, reason) {
                (Some(token), Reason::Due { .. } | Reason::KeepAlive { .. } | Reason::Recover) => {
                    serve(token.clone())
                }
                (None, Reason::Recover) => {
                    Step::Done(Err(Failure::Unavailable("being refreshed".into())))
                }
                _ => Step::Wait,
            });
        }
        let owner = format!("{}:{}", self.instance, crate::store::new_id("lease"));
        if !self
            .store
            .take_lease(&row.id, &owner, at + LEASE_SECS, row.token_version)
            .await?
        {
            return Ok(Step::Again);
        }
        // From here the refresh runs in its own task: a caller that goes away
        // (a client hanging up) must not leave the lease held or lose an
        // answer the provider already sent.
        let Some(vault) = self.me.upgrade() else {
            return Ok(self.refresh_leased(row, &owner, usable).await);
        };
        let row = row.clone();
        let task = tokio::spawn(async move {
            let renewer = tokio::spawn(renew_lease(
                vault.store.clone(),
                row.id.clone(),
                owner.clone(),
            ));
            let step = vault.refresh_leased(&row, &owner, usable).await;
            renewer.abort();
            if let Some(wake) = vault.refresh_wake.get(&row.id) {
                wake.notify_waiters();
            }
            step
        });
        Ok(task.await.unwrap_or_else(|_| {
            Step::Done(Err(Failure::Unavailable("the refresh task failed".into())))
        }))
    }

    /// With the lease held: get the provider's answer (or the one an
    /// unfinished refresh kept), keep it sealed, read it, write the result.
    pub(super) async fn refresh_leased(
        &self,
        row: &ConnectionRow,
        owner: &str,
        usable: Option<SecretString>,
    ) -> Step {
        let id = row.id.as_str();
        let answer = match &row.pending_grant {
            Some(kept) => {
                let opened = self
                    .keyring
                    .open("connections.pending_grant", id, kept)
                    .ok()
                    .and_then(|s| RawAnswer::from_secret(&s));
                match opened {
                    Some(answer) => {
                        tracing::info!(connection = %id, provider = %row.provider, "reading a token answer kept by an unfinished refresh");
                        Ok(answer)
                    }
                    None => {
                        tracing::warn!(connection = %id, "a kept token answer could not be opened; dropped");
                        let _ = self
                            .store
                            .finish_lease(id, owner, row.token_version, &LeaseEnd::Release)
                            .await;
                        return Step::Again;
                    }
                }
            }
            None => {
                let answer = self.request_grant(row).await;
                if let Ok(answer) = &answer {
                    // Kept before it is read: a rotated refresh token survives
                    // a reading error or a crash from here on.
                    let sealed =
                        self.keyring
                            .seal("connections.pending_grant", id, &answer.to_secret());
                    match self.store.keep_answer(id, owner, &sealed).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(connection = %id, "refresh lease lost before the answer could be kept")
                        }
                        Err(error) => {
                            tracing::warn!(connection = %id, %error, "could not keep the token answer")
                        }
                    }
                }
                answer
            }
        };
        let serve_or = |why: String| match &usable {
            Some(token) => Ok(Fresh {
                token: token.clone(),
                expires_at: row.expires_at,
                granted: false,
            }),
            None => Err(Failure::Unavailable(why)),
        };
        // Read it; what cannot be read still gives up a rotated refresh token.
        let reading = match answer {
            Ok(a) => match oauth::interpret(&a) {
                Ok(granted) => Reading::Granted {
                    granted,
                    received_at: a.received_at,
                },
                Err(error) => Reading::Failed {
                    error,
                    salvaged: oauth::salvage_refresh_token(&a.body)
                        .map(|r| self.keyring.seal("connections.refresh_token", id, &r)),
                },
            },
            Err(error) => Reading::Failed {
                error,
                salvaged: None,
            },
        };
        let (end, result) = match reading {
            Reading::Granted {
                granted,
                received_at,
            } => {
                let update = TokenUpdate {
                    access_token: self.keyring.seal(
                        "connections.access_token",
                        id,
                        &granted.access_token,
                    ),
                    refresh_token: granted
                        .refresh_token
                        .as_ref()
                        .map(|r| self.keyring.seal("connections.refresh_token", id, r)),
                    expires_at: granted.expires_in.map(|d| received_at + d.as_secs() as i64),
                };
                let fresh = Fresh {
                    token: granted.access_token,
                    expires_at: update.expires_at,
                    granted: true,
                };
                (LeaseEnd::Tokens(update), Ok(fresh))
            }
            Reading::Failed {
                error: VaultError::Reconnect(reason),
                ..
            } => (
                LeaseEnd::Status {
                    status: ConnectionStatus::ReconnectNeeded,
                    reason: Some(reason),
                },
                Err(Failure::Reconnect),
            ),
            Reading::Failed { error, salvaged } => {
                let error = error.to_string();
                self.back_off(row, &error);
                let end = salvaged.map_or(LeaseEnd::Release, LeaseEnd::RefreshToken);
                (end, serve_or(error))
            }
        };
        match self
            .store
            .finish_lease(id, owner, row.token_version, &end)
            .await
        {
            Ok(true) => {
                match &end {
                    LeaseEnd::Tokens(_) => {
                        bump(&self.stats.granted);
                        self.backoff.remove(id);
                        // Proxies holding the old token take the new one now.
                        self.bump_generation();
                        tracing::info!(connection = %id, provider = %row.provider, "token refreshed");
                    }
                    LeaseEnd::Status { reason, .. } => {
                        self.bump_generation();
                        tracing::warn!(connection = %id, provider = %row.provider, reason = reason.as_deref().unwrap_or(""), "refresh refused: reconnect needed");
                    }
                    LeaseEnd::RefreshToken(_) => {
                        bump(&self.stats.salvaged);
                        tracing::warn!(connection = %id, provider = %row.provider, "kept the rotated refresh token of an answer that could not be read");
                    }
                    LeaseEnd::Release => {}
                }
                Step::Done(result)
            }
            Ok(false) => {
                // A reconnect or disconnect changed the row meanwhile: it wins.
                let _ = self
                    .store
                    .finish_lease(id, owner, row.token_version, &LeaseEnd::Release)
                    .await;
                tracing::info!(connection = %id, "the connection changed during its refresh; the refresh result was dropped");
                Step::Again
            }
            Err(e) => {
                let _ = self
                    .store
                    .finish_lease(id, owner, row.token_version, &LeaseEnd::Release)
                    .await;
                Step::Done(Err(Failure::Unavailable(e.to_string())))
            }
        }
    }
    /// Sends the connection's grant (refresh token, or client credentials
    /// again) and returns the answer unread.
    pub(super) async fn request_grant(&self, row: &ConnectionRow) -> Result<RawAnswer, VaultError> {
        let provider = self.provider(&row.provider)?;
        let app = self.connection_creds(row).await?;
        let creds = app.for_exchange(row.token_url.as_deref());
        if row.grant_kind == GrantKind::ClientCredentials {
            let scopes: Vec<String> = row.scopes.split_whitespace().map(str::to_owned).collect();
            return self
                .oauth
                .token_request(&provider, &creds, &Grant::ClientCredentials(&scopes))
                .await;
        }
        let refresh = row
            .refresh_token
            .as_ref()
            .map(|s| self.keyring.open("connections.refresh_token", &row.id, s))
            .transpose()?
            .ok_or_else(|| VaultError::Reconnect("no refresh token was issued".into()))?;
        self.oauth
            .token_request(&provider, &creds, &Grant::Refresh(&refresh))
            .await
    }

    /// Starts or lengthens the connection's back-off: the base doubled per
    /// failure in a row, capped, with jitter so replicas spread out.
    pub(super) fn back_off(&self, row: &ConnectionRow, error: &str) {
        use rand::Rng;
        bump(&self.stats.failed);
        let failures = self.backoff.get(&row.id).map_or(0, |b| b.failures) + 1;
        let base = self.settings.refresh_backoff.as_secs_f64();
        let cap = self.settings.refresh_backoff_max.as_secs_f64().max(base);
        let delay = (base * 2f64.powi(failures.min(30) as i32 - 1)).min(cap)
            * rand::rngs::OsRng.gen_range(0.5..=1.0);
        let delay = Duration::from_secs_f64(delay);
        self.backoff.insert(
            row.id.clone(),
            Backoff {
                until: std::time::Instant::now() + delay,
                failures,
            },
        );
        tracing::warn!(connection = %row.id, provider = %row.provider, %error, failures, retry_in_ms = delay.as_millis() as u64, "refresh failed; will retry");
    }

    /// A user connection without a refresh token cannot be refreshed. One
    /// 401 does not condemn it: the provider's `probe_url` decides, or the
    /// token is handed back unchanged (the proxy passes the 401 on). Only a
    /// token past its known expiry needs a reconnect.
    pub(super) async fn without_refresh_token(
        &self,
        row: &ConnectionRow,
        reason: Reason<'_>,
    ) -> Result<Fresh, Failure> {
        let keep = |token: SecretString| {
            Ok(Fresh {
                token,
                expires_at: row.expires_at,
                granted: false,
            })
        };
        let Some(token) = self.open_access(row) else {
            return Err(Failure::Unavailable("the connection holds no token".into()));
        };
        let expired = row.expires_at.is_some_and(|exp| exp <= now());
        if !matches!(reason, Reason::Failed(_)) {
            if !expired {
                return keep(token);
            }
            return self
                .mark_reconnect(
                    row,
                    "the token expired and the provider issued no refresh token",
                )
                .await;
        }
        let probe_url = self.provider(&row.provider).ok().and_then(|p| {
            let url = p.probe_url.clone()?;
            Some((p, url))
        });
        let Some((provider, url)) = probe_url else {
            return keep(token);
        };
        // One probe per cool-down: a sandbox cannot make the vault hammer the API.
        let at = now();
        let cooldown = self.settings.refresh_cooldown.as_secs() as i64;
        if self.probed.get(&row.id).is_some_and(|t| at - *t < cooldown) {
            return keep(token);
        }
        self.probed.insert(row.id.clone(), at);
        bump(&self.stats.probes);
        match self.oauth.probe(&provider, &url, &token).await {
            Ok(401) => {
                self.mark_reconnect(row, "the provider refused the token (probe_url answered 401) and issued no refresh token")
                    .await
            }
            Ok(status) => {
                tracing::info!(connection = %row.id, provider = %row.provider, status, "probe: token kept");
                keep(token)
            }
            Err(error) => {
                tracing::info!(connection = %row.id, provider = %row.provider, %error, "probe failed: token kept");
                keep(token)
            }
        }
    }

    pub(super) async fn mark_reconnect(
        &self,
        row: &ConnectionRow,
        why: &str,
    ) -> Result<Fresh, Failure> {
        match self
            .store
            .set_status_if_unchanged(
                &row.id,
                row.token_version,
                ConnectionStatus::ReconnectNeeded,
                Some(why),
            )
            .await
        {
            Ok(true) => {
                self.bump_generation();
                tracing::warn!(connection = %row.id, provider = %row.provider, reason = why, "reconnect needed");
                Err(Failure::Reconnect)
            }
            // Changed meanwhile (a reconnect): not ours to condemn.
            Ok(false) => Err(Failure::Unavailable(
                "the connection changed; try again".into(),
            )),
            Err(e) => Err(Failure::Unavailable(e.to_string())),
        }
    }

    /// At start: drops refresh leases of processes that died, and reads
    /// token answers they kept but never wrote.
    pub(crate) async fn recover_unfinished_refreshes(&self) -> Result<(), VaultError> {
        // SQLite belongs to this one process; PostgreSQL replicas keep theirs.
        let released = self
            .store
            .release_stale_leases(self.store.backend() == crate::store::Backend::Sqlite)
            .await?;
        if released > 0 {
            tracing::info!(released, "dropped refresh leases left by a stopped vault");
        }
        for id in self.store.pending_answers().await? {
            let _ = self.refresh_connection(&id, Reason::Recover).await;
        }
        Ok(())
    }

    /// Refreshes every connection that will be due before the next pass
    /// (`lookahead` from now); the number of new grants.
    pub async fn refresh_due(&self, lookahead: Duration) -> usize {
        let ahead = lookahead.as_secs() as i64;
        let deadline = now() + self.settings.refresh_window.as_secs() as i64 + ahead;
        let ids = match self.store.expiring(deadline).await {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!(%error, "background refresh could not list connections");
                return 0;
            }
        };
        let mut refreshed = 0;
        for id in &ids {
            if let Ok(fresh) = self.refresh_connection(id, Reason::Due { ahead }).await {
                refreshed += usize::from(fresh.granted);
            }
        }
        refreshed += self.keep_alive_idle(&ids).await;
        refreshed
    }

    /// Refreshes connected grants whose tokens are older than their
    /// provider's `refresh_keepalive` (else the vault's `keepalive_refresh`),
    /// however far from expiry, leaving out `due` (refreshed this pass
    /// already); the number of new grants.
    async fn keep_alive_idle(&self, due: &[String]) -> usize {
        // Only rows older than the shortest period anyone asks for are read.
        let Some(shortest) = self.keepalive_periods().into_iter().min() else {
            return 0;
        };
        let now = now();
        let idle = match self.store.obtained_before(now - shortest).await {
            Ok(idle) => idle,
            Err(error) => {
                tracing::warn!(%error, "background refresh could not list idle connections");
                return 0;
            }
        };
        let due: std::collections::HashSet<&String> = due.iter().collect();
        let mut refreshed = 0;
        for grant in idle.iter().filter(|g| !due.contains(&g.id)) {
            let Some(period) = self.keepalive_period(&grant.provider) else {
                continue;
            };
            let before = now - period;
            if grant.obtained_at.is_some_and(|o| o >= before) {
                continue;
            }
            let fresh = self
                .refresh_connection(&grant.id, Reason::KeepAlive { before })
                .await;
            if let Ok(fresh) = fresh {
                if fresh.granted {
                    tracing::info!(connection = %grant.id, provider = %grant.provider, "refreshed an idle grant to keep its refresh token alive");
                }
                refreshed += usize::from(fresh.granted);
            }
        }
        refreshed
    }

    /// The keep-alive period of `provider`'s grants in whole seconds (at
    /// least one), `None` when off: its own `refresh_keepalive`, else the
    /// vault's setting.
    fn keepalive_period(&self, provider: &str) -> Option<i64> {
        let own = self
            .provider(provider)
            .ok()
            .and_then(|p| p.refresh_keepalive);
        seconds_unless_off(own.unwrap_or(self.settings.keepalive_refresh))
    }

    /// Every keep-alive period in force: the vault's and each provider's own.
    fn keepalive_periods(&self) -> Vec<i64> {
        let catalog = self.catalog.read().expect("catalog lock");
        let mut periods: Vec<i64> = catalog
            .all()
            .filter_map(|p| p.refresh_keepalive)
            .filter_map(seconds_unless_off)
            .collect();
        periods.extend(seconds_unless_off(self.settings.keepalive_refresh));
        periods
    }

    /// Runs [`Vault::refresh_due`] every `every` until the process ends.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let vault = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(vault) = vault.upgrade() else { return };
                vault.refresh_due(every).await;
            }
        })
    }
}

/// Keeps `owner`'s lease on connection `id` alive while its refresh runs;
/// stops when the lease is gone (ended, or taken after it ran out).
async fn renew_lease(store: crate::store::Store, id: String, owner: String) {
    loop {
        tokio::time::sleep(super::LEASE_RENEW).await;
        match store.renew_lease(&id, &owner, now() + LEASE_SECS).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                tracing::warn!(connection = %id, %error, "could not renew a refresh lease");
            }
        }
    }
}

/// A keep-alive period in whole seconds, at least one; `None` for zero (off).
fn seconds_unless_off(period: Duration) -> Option<i64> {
    (!period.is_zero()).then(|| i64::try_from(period.as_secs().max(1)).unwrap_or(i64::MAX))
}
