//! The audit log: one structured line per request (or tunnel), emitted once at
//! its end. Lines carry binding ids and outcomes, never values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_vault_client::SandboxId;

/// Where audit lines go; select it with a tracing filter or a JSON formatter.
pub const TARGET: &str = "airlock::audit";

/// How many recent requests the console can show.
const RECENT_CAPACITY: usize = 200;

/// A finished request as the console shows it: never a value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecentRequest {
    pub at: u64,
    pub sandbox: String,
    pub mode: &'static str,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub outcome: &'static str,
    pub swapped: Vec<String>,
}

static RECENT: std::sync::Mutex<std::collections::VecDeque<RecentRequest>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

/// The most recent requests, newest first.
pub fn recent() -> Vec<RecentRequest> {
    RECENT
        .lock()
        .map(|r| r.iter().rev().cloned().collect())
        .unwrap_or_default()
}

#[derive(Debug)]
pub struct AuditRecord {
    pub sandbox: SandboxId,
    /// `intercept`, `tunnel` or `http`.
    pub mode: &'static str,
    pub method: String,
    pub host: String,
    pub port: u16,
    /// Path only: the query can hold secrets of its own.
    pub path: String,
    pub status: u16,
    pub outcome: &'static str,
    pub swapped: Vec<String>,
    pub refused: Option<String>,
    pub upstream_time: Option<Duration>,
    pub started: Instant,
    pub request_bytes: Arc<AtomicU64>,
    pub response_bytes: Arc<AtomicU64>,
}

impl AuditRecord {
    fn remember(&self, outcome: &'static str) {
        let entry = RecentRequest {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            sandbox: self.sandbox.to_string(),
            mode: self.mode,
            method: self.method.clone(),
            host: self.host.clone(),
            path: self.path.clone(),
            status: self.status,
            outcome,
            swapped: self.swapped.clone(),
        };
        if let Ok(mut recent) = RECENT.lock() {
            if recent.len() == RECENT_CAPACITY {
                recent.pop_front();
            }
            recent.push_back(entry);
        }
    }

    /// The metrics side of the same line: same outcome words.
    fn count(&self, outcome: &'static str) {
        let m = crate::metrics::metrics();
        m.requests
            .get_or_create(&crate::metrics::RequestLabels {
                mode: self.mode,
                outcome,
            })
            .inc();
        m.swaps.inc_by(self.swapped.len() as u64);
        if self.refused.is_some() {
            m.refusals
                .get_or_create(&crate::metrics::ReasonLabel { reason: outcome })
                .inc();
        }
        if outcome.starts_with("refreshed") || outcome == "expired_token_not_refreshed" {
            m.refreshes
                .get_or_create(&crate::metrics::ReasonLabel { reason: outcome })
                .inc();
        }
        if let Some(t) = self.upstream_time {
            m.upstream_latency.observe(t.as_secs_f64());
        }
    }

    pub fn new(
        sandbox: SandboxId,
        mode: &'static str,
        method: &str,
        host: &str,
        port: u16,
        path: &str,
    ) -> Self {
        Self {
            sandbox,
            mode,
            method: method.to_owned(),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            status: 0,
            outcome: "ok",
            swapped: Vec::new(),
            refused: None,
            upstream_time: None,
            started: Instant::now(),
            request_bytes: Arc::default(),
            response_bytes: Arc::default(),
        }
    }

    /// Writes the line. `completed` is false when the client or upstream went
    /// away before the response body ended.
    pub fn emit(&self, completed: bool) {
        let outcome = if completed || self.outcome != "ok" {
            self.outcome
        } else {
            "aborted"
        };
        self.count(outcome);
        self.remember(outcome);
        tracing::info!(
            target: TARGET,
            sandbox = %self.sandbox,
            mode = self.mode,
            method = %self.method,
            host = %self.host,
            port = self.port,
            path = %self.path,
            status = self.status,
            outcome,
            swapped = %self.swapped.join(","),
            refused = self.refused.as_deref().unwrap_or(""),
            upstream_ms = self.upstream_time.map(|d| d.as_secs_f64() * 1e3),
            duration_ms = self.started.elapsed().as_secs_f64() * 1e3,
            request_bytes = self.request_bytes.load(Ordering::Relaxed),
            response_bytes = self.response_bytes.load(Ordering::Relaxed),
            "request"
        );
    }
}
