//! The audit log: one structured line per request (or tunnel), emitted once at
//! its end. Lines carry binding ids and outcomes, never values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_vault_client::SandboxId;

/// Where audit lines go; select it with a tracing filter or a JSON formatter.
pub const TARGET: &str = "airlock::audit";

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
