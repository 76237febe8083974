//! Handing out current tokens: the vault as a [`TokenSource`], refresh ahead
//! of expiry and on demand (one refresh per connection across processes and
//! replicas, through a lease on its row; no transaction across the provider
//! call), the refresh budget, back-off, and the background refresher.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use secrecy::SecretString;

use crate::crypto::Sealed;
use crate::error::VaultError;
use crate::oauth::{self};

mod refresh;
mod resolve;
#[cfg(test)]
mod tests;

/// Why a connection gave no token.
enum Failure {
    Reconnect,
    Unavailable(String),
}

/// A refresh lease runs out this long after its holder last renewed it:
/// a replica that dies mid-refresh holds the connection up no longer.
const LEASE_SECS: i64 = 10;
/// The holder renews its lease this often while the provider call runs.
const LEASE_RENEW: Duration = Duration::from_secs(3);
/// How long a caller with no valid token to serve waits for another
/// caller's (or replica's) refresh of the same connection.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(35);
/// Re-read period while waiting (replicas cannot wake each other).
const POLL: Duration = Duration::from_millis(200);

/// Consecutive transient failures of one connection's refresh.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    until: std::time::Instant,
    failures: u32,
}

/// What the refresh path did, for metrics. Counts since the process started.
#[derive(Debug, Default)]
pub struct RefreshStats {
    /// Grants that produced new tokens (refresh or client credentials again).
    pub granted: AtomicU64,
    /// Refresh requests answered with the current token because it was
    /// refreshed less than `refresh_cooldown` ago.
    pub refused_by_budget: AtomicU64,
    /// Grants that failed transiently (and started or continued a back-off).
    pub failed: AtomicU64,
    /// Refresh requests answered from an unexpired back-off window.
    pub backed_off: AtomicU64,
    /// `probe_url` checks made for connections without a refresh token.
    pub probes: AtomicU64,
    /// Rotated refresh tokens kept from answers that could not be read.
    pub salvaged: AtomicU64,
}

/// A copy of [`RefreshStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RefreshCounts {
    pub granted: u64,
    pub refused_by_budget: u64,
    pub failed: u64,
    pub backed_off: u64,
    pub probes: u64,
    pub salvaged: u64,
}

impl RefreshStats {
    pub fn snapshot(&self) -> RefreshCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RefreshCounts {
            granted: get(&self.granted),
            refused_by_budget: get(&self.refused_by_budget),
            failed: get(&self.failed),
            backed_off: get(&self.backed_off),
            probes: get(&self.probes),
            salvaged: get(&self.salvaged),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Why a refresh is asked for.
#[derive(Clone, Copy)]
enum Reason<'a> {
    /// The token is due, or will be within `ahead` seconds (background).
    Due { ahead: i64 },
    /// The background pass keeps an idle grant alive: tokens obtained
    /// before this time are refreshed, even far from expiry.
    KeepAlive { before: i64 },
    /// The proxy saw this token refused upstream.
    Failed(&'a SecretString),
    /// Only read an answer an unfinished refresh kept.
    Recover,
}

/// A token to hand out, and whether a grant just produced it.
struct Fresh {
    token: SecretString,
    expires_at: Option<i64>,
    granted: bool,
}

/// A token endpoint's answer, read.
enum Reading {
    Granted {
        granted: oauth::Granted,
        received_at: i64,
    },
    /// Unreadable or a refusal; a rotated refresh token found in it is kept.
    Failed {
        error: VaultError,
        salvaged: Option<Sealed>,
    },
}

enum Step {
    Done(Result<Fresh, Failure>),
    /// Someone else holds the lease: wait, then read again.
    Wait,
    /// The row changed under us: read again now.
    Again,
}
