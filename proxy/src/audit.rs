//! The per-request record and the closing step's writer: one structured line
//! per request (or tunnel), emitted once at its end, with the metric and the
//! recent-requests entry made from the same values. Lines carry binding ids
//! and outcomes, never values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_vault_client::SandboxId;

use crate::error::ProxyError;
use crate::metrics::{ReasonLabel, RequestLabels};
use crate::telemetry::{RecentRequest, RequestPath, Swapped, Telemetry};

/// Where audit lines go; select it with a tracing filter or a JSON formatter.
pub const TARGET: &str = "airlock::audit";

/// What a record is about: the kind of request, or where it was refused
/// before that was known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Intercept,
    Tunnel,
    /// Plain `http://`.
    Http,
    Websocket,
    /// A CONNECT refused before it became a tunnel or an interception.
    Connect,
    /// A redirected connection (transparent listener) refused before it
    /// became a tunnel or an interception.
    Transparent,
    /// Refused at proxy authentication.
    Auth,
    /// Refused at `max_connections`.
    Limit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Intercept => "intercept",
            Self::Tunnel => "tunnel",
            Self::Http => "http",
            Self::Websocket => "websocket",
            Self::Connect => "connect",
            Self::Transparent => "transparent",
            Self::Auth => "auth",
            Self::Limit => "limit",
        }
    }
}

/// How a request ended. [`Outcome::as_str`] is the word on the audit line,
/// in the console feed and in the metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The client or upstream went away before the response body ended.
    Aborted,
    /// Refused or failed: the `x-airlock-error` code of a [`ProxyError`].
    Refused(&'static str),
    /// An expired-token answer, a refresh, and the request sent again.
    RefreshedReplayed,
    /// The upstream closed the connection before answering; the request
    /// was sent again and answered.
    Resent,
    /// Refreshed, but the body was not kept: the sandbox gets the 401.
    RefreshedNotReplayed,
    /// An expired-token answer whose token the vault did not change.
    ExpiredTokenNotRefreshed,
    /// The provider said the token lacks a scope; the answer carries the step-up.
    InsufficientScope,
    WebsocketRefusedUpstream,
    WebsocketUpgradeFailed,
    TlsHandshakeFailed,
    TlsHandshakeTimeout,
    /// The client hung up before its TLS handshake began.
    ClientClosed,
    MintFailed,
    /// Answered by airlock itself (`airlock.internal`), whatever the status.
    InternalApi,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Aborted => "aborted",
            Self::Refused(code) => code,
            Self::RefreshedReplayed => "refreshed_replayed",
            Self::Resent => "resent",
            Self::RefreshedNotReplayed => "refreshed_not_replayed",
            Self::ExpiredTokenNotRefreshed => "expired_token_not_refreshed",
            Self::InsufficientScope => "insufficient_scope",
            Self::WebsocketRefusedUpstream => "websocket_refused_upstream",
            Self::WebsocketUpgradeFailed => "websocket_upgrade_failed",
            Self::TlsHandshakeFailed => "tls_handshake_failed",
            Self::TlsHandshakeTimeout => "tls_handshake_timeout",
            Self::ClientClosed => "client_closed",
            Self::MintFailed => "mint_failed",
            Self::InternalApi => "internal_api",
        }
    }

    /// An expired-token answer led to a refresh attempt.
    pub fn is_refresh(self) -> bool {
        matches!(
            self,
            Self::RefreshedReplayed | Self::RefreshedNotReplayed | Self::ExpiredTokenNotRefreshed
        )
    }
}

impl From<&ProxyError> for Outcome {
    fn from(err: &ProxyError) -> Self {
        Self::Refused(err.code())
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What one request did, filled in by the stages it passes and written once.
#[derive(Debug)]
pub struct AuditRecord {
    pub sandbox: SandboxId,
    pub mode: Mode,
    /// `None` when there was no request line yet (a refused connection).
    pub method: Option<http::Method>,
    pub host: Arc<str>,
    pub port: u16,
    /// Path only: the query can hold secrets of its own.
    pub path: RequestPath,
    pub status: u16,
    pub outcome: Outcome,
    pub swapped: Swapped,
    /// Placeholders passed through a body as text (bound elsewhere), and
    /// what a dry-run binding's rules would have refused: the swapper's.
    pub marks: Option<Arc<crate::swap::Marks>>,
    pub refused: Option<String>,
    pub upstream_time: Option<Duration>,
    /// The HTTP version the upstream answered on.
    pub upstream_version: Option<http::Version>,
    pub started: Instant,
    /// Request body bytes sent upstream, when known at the end (a tunnel).
    pub request_bytes: u64,
    /// Counted by a forwarded request's body as it streams (which can
    /// outlive the pipeline); made only for requests with a body.
    pub request_counter: Option<Arc<AtomicU64>>,
    /// Counted by the answer's body, which owns this record until it ends.
    pub response_bytes: u64,
    telemetry: Telemetry,
    /// The span the request was made in: it gets the status and outcome too.
    span: tracing::Span,
}

impl AuditRecord {
    pub fn new(
        telemetry: &Telemetry,
        sandbox: SandboxId,
        mode: Mode,
        method: &str,
        host: impl Into<Arc<str>>,
        port: u16,
        path: impl Into<RequestPath>,
    ) -> Self {
        Self {
            sandbox,
            mode,
            // A standard method, or a short extension one, is not allocated.
            method: http::Method::from_bytes(method.as_bytes()).ok(),
            host: host.into(),
            port,
            path: path.into(),
            status: 0,
            outcome: Outcome::Ok,
            swapped: Swapped::default(),
            marks: None,
            refused: None,
            upstream_time: None,
            upstream_version: None,
            started: Instant::now(),
            request_bytes: 0,
            request_counter: None,
            response_bytes: 0,
            telemetry: telemetry.clone(),
            span: tracing::Span::current(),
        }
    }

    /// The outcome as written: a request that ended early without another
    /// outcome was aborted.
    pub fn final_outcome(&self, completed: bool) -> Outcome {
        if completed || self.outcome != Outcome::Ok {
            self.outcome
        } else {
            Outcome::Aborted
        }
    }

    /// Request body bytes sent upstream.
    pub fn request_bytes(&self) -> u64 {
        self.request_counter
            .as_ref()
            .map_or(self.request_bytes, |c| c.load(Ordering::Relaxed))
    }

    /// Writes the line, counts the metrics, feeds the console and completes
    /// the request's span: once per request, from this record. `completed`
    /// is false when the client or upstream went away before the response
    /// body ended.
    pub fn emit(&mut self, completed: bool) {
        let outcome = self.final_outcome(completed);
        self.count(outcome);
        self.span.record("status", self.status);
        self.span.record("outcome", outcome.as_str());
        tracing::info!(
            target: TARGET,
            sandbox = %self.sandbox,
            mode = self.mode.as_str(),
            method = crate::telemetry::method_str(self.method.as_ref()),
            host = %self.host,
            port = self.port,
            path = %self.path,
            status = self.status,
            outcome = outcome.as_str(),
            swapped = %Joined(self.swapped.ids(), ","),
            inert = %JoinedMarks(self.marks.as_ref().map(|m| &m.inert), ","),
            rules_dry_run = %JoinedMarks(self.marks.as_ref().map(|m| &m.dry_run), "; "),
            refused = self.refused.as_deref().unwrap_or(""),
            upstream_ms = self.upstream_time.map(|d| d.as_secs_f64() * 1e3),
            duration_ms = self.started.elapsed().as_secs_f64() * 1e3,
            request_bytes = self.request_bytes(),
            response_bytes = self.response_bytes,
            "request"
        );
        self.remember(outcome);
    }

    /// The metrics side of the same line: same outcome words.
    fn count(&self, outcome: Outcome) {
        let m = &self.telemetry.metrics;
        let word = outcome.as_str();
        m.count_request(RequestLabels {
            mode: self.mode.as_str(),
            outcome: word,
        });
        m.swaps.inc_by(self.swapped.len() as u64);
        if self.refused.is_some() {
            m.refusals
                .get_or_create(&ReasonLabel { reason: word })
                .inc();
        }
        if outcome.is_refresh() {
            m.refreshes
                .get_or_create(&ReasonLabel { reason: word })
                .inc();
        }
        if let Some(t) = self.upstream_time {
            m.upstream_latency.observe(t.as_secs_f64());
        }
        match self.upstream_version {
            Some(http::Version::HTTP_2) => m.upstream_answers_h2.inc(),
            Some(_) => m.upstream_answers_http1.inc(),
            None => 0,
        };
    }

    /// Last: the entry takes the record's strings instead of copies.
    fn remember(&mut self, outcome: Outcome) {
        let entry = RecentRequest {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            sandbox: self.sandbox.clone(),
            mode: self.mode.as_str(),
            method: self.method.take(),
            host: self.host.clone(),
            path: std::mem::take(&mut self.path),
            status: self.status,
            outcome: outcome.as_str(),
            swapped: std::mem::take(&mut self.swapped),
            response_bytes: self.response_bytes,
        };
        if self.telemetry.outbox.is_open() {
            self.telemetry
                .outbox
                .offer(entry.clone(), &self.telemetry.metrics);
        }
        self.telemetry.recent.push(entry);
    }
}

/// A list written joined, without building the joined string first.
struct Joined<I>(I, &'static str);

impl<'a, I: Iterator<Item = &'a str> + Clone> std::fmt::Display for Joined<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, item) in self.0.clone().enumerate() {
            if i > 0 {
                f.write_str(self.1)?;
            }
            f.write_str(item)?;
        }
        Ok(())
    }
}

/// [`Joined`] of marks a body's fork may still be adding to.
struct JoinedMarks<'a>(Option<&'a std::sync::Mutex<Vec<String>>>, &'static str);

impl std::fmt::Display for JoinedMarks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.map(|m| m.lock()) {
            Some(Ok(marks)) => Joined(marks.iter().map(String::as_str), self.1).fmt(f),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(telemetry: &Telemetry) -> AuditRecord {
        AuditRecord::new(
            telemetry,
            SandboxId::new("sbx"),
            Mode::Intercept,
            "GET",
            "api.test",
            443,
            "/x",
        )
    }

    #[test]
    fn outcome_words_stay_what_the_audit_log_always_said() {
        let words = [
            (Outcome::Ok, "ok"),
            (Outcome::Aborted, "aborted"),
            (Outcome::RefreshedReplayed, "refreshed_replayed"),
            (Outcome::Resent, "resent"),
            (Outcome::RefreshedNotReplayed, "refreshed_not_replayed"),
            (
                Outcome::ExpiredTokenNotRefreshed,
                "expired_token_not_refreshed",
            ),
            (
                Outcome::WebsocketRefusedUpstream,
                "websocket_refused_upstream",
            ),
            (Outcome::WebsocketUpgradeFailed, "websocket_upgrade_failed"),
            (Outcome::TlsHandshakeFailed, "tls_handshake_failed"),
            (Outcome::TlsHandshakeTimeout, "tls_handshake_timeout"),
            (Outcome::ClientClosed, "client_closed"),
            (Outcome::MintFailed, "mint_failed"),
            (
                Outcome::from(&ProxyError::UnknownPlaceholder),
                "unknown_placeholder",
            ),
        ];
        for (outcome, word) in words {
            assert_eq!(outcome.as_str(), word);
            assert_eq!(serde_json::to_value(outcome).unwrap(), word);
        }
    }

    #[test]
    fn lists_are_written_joined() {
        let items = ["a", "b", "c"];
        assert_eq!(Joined(items.iter().copied(), ",").to_string(), "a,b,c");
        assert_eq!(Joined(std::iter::empty(), ",").to_string(), "");
        let marks = std::sync::Mutex::new(vec!["x: r1".to_owned(), "y: r2".to_owned()]);
        assert_eq!(JoinedMarks(Some(&marks), "; ").to_string(), "x: r1; y: r2");
        assert_eq!(JoinedMarks(None, "; ").to_string(), "");
    }

    #[test]
    fn mode_words_stay_too() {
        let words = [
            (Mode::Intercept, "intercept"),
            (Mode::Tunnel, "tunnel"),
            (Mode::Http, "http"),
            (Mode::Websocket, "websocket"),
            (Mode::Connect, "connect"),
            (Mode::Auth, "auth"),
            (Mode::Limit, "limit"),
        ];
        for (mode, word) in words {
            assert_eq!(mode.as_str(), word);
        }
    }

    #[test]
    fn an_unfinished_ok_request_is_aborted_and_other_outcomes_stay() {
        let telemetry = Telemetry::default();
        let mut audit = record(&telemetry);
        assert_eq!(audit.final_outcome(true), Outcome::Ok);
        assert_eq!(audit.final_outcome(false), Outcome::Aborted);
        audit.outcome = Outcome::RefreshedReplayed;
        assert_eq!(audit.final_outcome(false), Outcome::RefreshedReplayed);
    }

    #[test]
    fn one_emit_writes_the_feed_and_the_metrics_once() {
        let telemetry = Telemetry::default();
        let mut audit = record(&telemetry);
        audit.status = 200;
        audit.outcome = Outcome::RefreshedReplayed;
        let github = Arc::new(crate::testing::static_binding("GITHUB", "api.github.test"));
        audit.swapped.add(&github);
        audit.swapped.add(&github);
        audit.emit(true);
        let recent = telemetry.recent.newest_first();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].outcome, "refreshed_replayed");
        // Each binding once; the console's entry shows ids, not the bindings.
        let entry = serde_json::to_value(&recent[0]).unwrap();
        assert_eq!(entry["swapped"], serde_json::json!(["secret:GITHUB"]));
        let text = telemetry.metrics.render();
        assert!(
            text.contains(
                "airlock_requests_total{mode=\"intercept\",outcome=\"refreshed_replayed\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("airlock_token_refreshes_total{reason=\"refreshed_replayed\"} 1"),
            "{text}"
        );
        assert!(text.contains("airlock_placeholder_swaps_total 1"), "{text}");
        // Another proxy's telemetry saw nothing.
        assert!(Telemetry::default().recent.newest_first().is_empty());
    }
}
