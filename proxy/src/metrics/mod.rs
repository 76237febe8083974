//! Prometheus metrics and the admin endpoint (`/metrics`, `/healthz`,
//! `/readyz`). Every request's audit line also counts here, so the audit
//! outcome and the metric label are the same word. One [`Metrics`] is made
//! by whoever assembles the process and handed to the proxy and the endpoint.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

use crate::body::{full, ProxyBody};
use crate::limits::{Descriptors, GlobalSlots};

mod striped;

pub use striped::{stripe, StripedHistogram, STRIPES};

/// A counter that every request adds to: one slot per thread
/// ([`striped`]), so two cores counting do not fight over a cache line.
pub type HotCounter = Counter<u64, striped::StripedU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub mode: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// A proxy worker (`[proxy] workers`), by its number.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    pub worker: usize,
}

/// The upstream wire: `http1` or `h2` for what answered, `http1` or `alpn`
/// for what `upstream_protocol = "auto"` measured faster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WireLabel {
    pub wire: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, HotCounter>,
    /// `requests{mode="intercept",outcome="ok"}`, most requests' count,
    /// kept once made: counting it takes no lock (see [`Self::count_request`]).
    requests_intercept_ok: std::sync::OnceLock<HotCounter>,
    pub swaps: HotCounter,
    pub refusals: Family<ReasonLabel, Counter>,
    pub inert_placeholders: Counter,
    pub refreshes: Family<ReasonLabel, Counter>,
    pub connection_errors: Family<ReasonLabel, Counter>,
    /// Observed once per request, without a lock.
    pub upstream_latency: StripedHistogram,
    /// Answers by the HTTP version the upstream spoke: the family's two
    /// counters, made once so a request takes no lock to count.
    pub upstream_answers_http1: HotCounter,
    pub upstream_answers_h2: HotCounter,
    /// Upstreams `auto` has measured, by the wire that answers them faster.
    pub upstream_faster_wire: Family<WireLabel, Gauge>,
    /// Client connections, descriptors in use and the budget, read from
    /// the proxy's admissions and [`Descriptors`] at scrape time.
    open_connections: Gauge,
    open_descriptors: Gauge,
    descriptor_budget: Gauge,
    connections: std::sync::OnceLock<(GlobalSlots, Arc<Descriptors>)>,
    /// Client connections each worker serves, read at scrape time.
    worker_connections: Family<WorkerLabel, Gauge>,
    workers: std::sync::OnceLock<Vec<Arc<AtomicUsize>>>,
    pub certificates_minted: Gauge,
    pub token_cache_hits: Gauge,
    pub token_cache_misses: Gauge,
    pub vault_refreshes: Family<ReasonLabel, Gauge>,
    /// Requests waiting for a human now.
    pub held_requests: Gauge,
    /// Consent webhook deliveries, by result (delivered, failed).
    pub consent_webhooks: Family<ReasonLabel, Counter>,
    /// Finished requests reported to the vault, by result ([`ReportResult`]).
    pub request_reports: Family<ReasonLabel, Counter>,
}

/// What became of finished requests a remote proxy reports to its vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportResult {
    Reported,
    /// The outbox was full (the vault slower than the traffic).
    DroppedQueueFull,
    /// The vault could not be reached or refused the batch.
    DroppedVaultUnavailable,
}

impl ReportResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::DroppedQueueFull => "dropped_queue_full",
            Self::DroppedVaultUnavailable => "dropped_vault_unavailable",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("airlock");
        let requests = Family::<RequestLabels, HotCounter>::default();
        registry.register(
            "requests",
            "Requests and tunnels by mode and outcome",
            requests.clone(),
        );
        let swaps = HotCounter::default();
        registry.register(
            "placeholder_swaps",
            "Requests in which placeholders were swapped for tokens (per binding)",
            swaps.clone(),
        );
        let inert_placeholders = Counter::default();
        registry.register(
            "inert_placeholders",
            "Placeholders passed through a body as text: bound to another host or not this sandbox's",
            inert_placeholders.clone(),
        );
        let refusals = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "refusals",
            "Requests refused or failed, by reason",
            refusals.clone(),
        );
        let refreshes = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "token_refreshes",
            "Refreshes after an expired-token answer, by result",
            refreshes.clone(),
        );
        let connection_errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connection_errors",
            "Client connections ended by a limit or a protocol error, by reason",
            connection_errors.clone(),
        );
        let upstream_latency = StripedHistogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "upstream_latency_seconds",
            "Time to the upstream's response head",
            upstream_latency.clone(),
        );
        let upstream_answers = Family::<WireLabel, HotCounter>::default();
        registry.register(
            "upstream_answers",
            "Upstream answers by the HTTP version they came on (http1, h2)",
            upstream_answers.clone(),
        );
        let upstream_answers_http1 = upstream_answers
            .get_or_create(&WireLabel { wire: "http1" })
            .clone();
        let upstream_answers_h2 = upstream_answers
            .get_or_create(&WireLabel { wire: "h2" })
            .clone();
        let upstream_faster_wire = Family::<WireLabel, Gauge>::default();
        registry.register(
            "upstream_faster_wire",
            "Upstreams measured by upstream_protocol = auto, by the wire they answer faster on (http1, alpn)",
            upstream_faster_wire.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open now",
            open_connections.clone(),
        );
        let open_descriptors = Gauge::default();
        registry.register(
            "open_descriptors",
            "Sockets the proxy holds for connections now, client and upstream sides",
            open_descriptors.clone(),
        );
        let descriptor_budget = Gauge::default();
        registry.register(
            "descriptor_budget",
            "Sockets the open-files limit allows the proxy's connections (0: no limit known)",
            descriptor_budget.clone(),
        );
        let worker_connections = Family::<WorkerLabel, Gauge>::default();
        registry.register(
            "worker_connections",
            "Client connections each proxy worker serves now (a new one goes to the worker serving the fewest)",
            worker_connections.clone(),
        );
        let certificates_minted = Gauge::default();
        registry.register(
            "certificates_minted",
            "Leaf certificates minted since start",
            certificates_minted.clone(),
        );
        let token_cache_hits = Gauge::default();
        registry.register(
            "token_cache_hits",
            "Token lookups answered by the cache",
            token_cache_hits.clone(),
        );
        let vault_refreshes = Family::<ReasonLabel, Gauge>::default();
        registry.register(
            "vault_refreshes",
            "The in-process vault's refresh outcomes (granted, refused_by_budget, failed, backed_off, probes, salvaged)",
            vault_refreshes.clone(),
        );
        let token_cache_misses = Gauge::default();
        registry.register(
            "token_cache_misses",
            "Token lookups that went to the token source",
            token_cache_misses.clone(),
        );
        let held_requests = Gauge::default();
        registry.register(
            "held_requests",
            "Requests held for consent or a scope step-up now",
            held_requests.clone(),
        );
        let consent_webhooks = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "consent_webhooks",
            "Consent webhook deliveries, by result",
            consent_webhooks.clone(),
        );
        let request_reports = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "request_reports",
            "Finished requests a remote proxy reported to its vault for the console, by result",
            request_reports.clone(),
        );
        Self {
            held_requests,
            consent_webhooks,
            request_reports,
            registry,
            requests,
            requests_intercept_ok: std::sync::OnceLock::new(),
            swaps,
            refusals,
            inert_placeholders,
            refreshes,
            connection_errors,
            upstream_latency,
            upstream_answers_http1,
            upstream_answers_h2,
            upstream_faster_wire,
            open_connections,
            open_descriptors,
            descriptor_budget,
            connections: std::sync::OnceLock::new(),
            worker_connections,
            workers: std::sync::OnceLock::new(),
            certificates_minted,
            token_cache_hits,
            token_cache_misses,
            vault_refreshes,
        }
    }

    /// Reports the proxy's admitted `clients` and its `descriptors` from
    /// now on (set once).
    pub fn watch_connections(&self, clients: GlobalSlots, descriptors: Arc<Descriptors>) {
        let _ = self.connections.set((clients, descriptors));
    }

    /// Reports the connections each worker serves from now on (set once).
    pub fn watch_workers(&self, live: Vec<Arc<AtomicUsize>>) {
        let _ = self.workers.set(live);
    }

    fn sample_connections(&self) {
        for (worker, live) in self.workers.get().into_iter().flatten().enumerate() {
            let open = i64::try_from(live.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
            self.worker_connections
                .get_or_create(&WorkerLabel { worker })
                .set(open);
        }
        if let Some((clients, d)) = self.connections.get() {
            self.open_connections
                .set(i64::try_from(clients.open()).unwrap_or(i64::MAX));
            self.open_descriptors
                .set(i64::try_from(d.in_use()).unwrap_or(i64::MAX));
            self.descriptor_budget
                .set(i64::try_from(d.limit()).unwrap_or(0));
        }
    }

    /// One request or tunnel in `requests`. The family takes a lock and
    /// hashes the labels on every lookup; the most common pair is looked up
    /// once (and shown only from its first count, like the others).
    pub fn count_request(&self, labels: RequestLabels) {
        if labels.mode == "intercept" && labels.outcome == "ok" {
            let counter = self
                .requests_intercept_ok
                .get_or_init(|| self.requests.get_or_create(&labels).clone());
            counter.inc();
            return;
        }
        self.requests.get_or_create(&labels).inc();
    }

    pub fn count_report(&self, result: ReportResult, n: u64) {
        self.request_reports
            .get_or_create(&ReasonLabel {
                reason: result.as_str(),
            })
            .inc_by(n);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Values read from elsewhere at scrape time.
pub type Sampler = Box<dyn Fn() -> Vec<(&'static str, i64)> + Send + Sync>;

fn apply_samples(metrics: &Metrics, sampler: &Sampler) {
    for (name, value) in sampler() {
        if let Some(outcome) = name.strip_prefix("vault_refresh:") {
            metrics
                .vault_refreshes
                .get_or_create(&ReasonLabel { reason: outcome })
                .set(value);
            continue;
        }
        let gauge = match name {
            "certificates_minted" => &metrics.certificates_minted,
            "token_cache_hits" => &metrics.token_cache_hits,
            "token_cache_misses" => &metrics.token_cache_misses,
            _ => continue,
        };
        gauge.set(value);
    }
}

/// Scrapers and probes connected at once; more are closed unanswered. Their
/// descriptors are part of the fixed reserve outside the proxy's budget
/// (`limits::RESERVED_DESCRIPTORS`), so this port cannot starve the proxy.
pub const ADMIN_CONNECTIONS: usize = 16;
/// A request head must come within this (idle keep-alive time included).
const ADMIN_IDLE: Duration = Duration::from_secs(30);

/// Serves `/metrics`, `/healthz` and `/readyz`: at most [`ADMIN_CONNECTIONS`]
/// at once, each closed when idle, so clients of this port can neither use
/// up the process's descriptors nor, by an accept error, stop the process.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    sampler: Sampler,
) -> std::io::Result<()> {
    serve_admin_within(listener, metrics, sampler, ADMIN_IDLE).await
}

async fn serve_admin_within(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    sampler: Sampler,
    idle: Duration,
) -> std::io::Result<()> {
    let sampler = Arc::new(sampler);
    let open = GlobalSlots::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors and the like: back off, keep serving.
                tracing::warn!(%error, "admin endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admitted) = open.acquire(ADMIN_CONNECTIONS) else {
            continue;
        };
        let sampler = sampler.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let sampler = sampler.clone();
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(admin_response(&req, &metrics, &sampler)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(idle)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(admitted);
        });
    }
}

fn admin_response(
    req: &Request<Incoming>,
    metrics: &Metrics,
    sampler: &Sampler,
) -> Response<ProxyBody> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => {
            apply_samples(metrics, sampler);
            metrics.sample_connections();
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics.render(),
            )
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /readyz\n".to_owned(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(full(Bytes::from(body)))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The admin endpoint on a loopback port.
    async fn admin(idle: Duration) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sampler: Sampler = Box::new(Vec::new);
        tokio::spawn(serve_admin_within(
            listener,
            Arc::new(Metrics::new()),
            sampler,
            idle,
        ));
        addr
    }

    /// `/healthz` on a new connection kept open; its answer's first line.
    async fn probe(addr: std::net::SocketAddr) -> (tokio::net::TcpStream, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\n\r\n")
            .await;
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("answered or closed in time")
            .unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        (stream, head)
    }

    /// Every place taken by a connection that was answered and kept open.
    async fn fill(addr: std::net::SocketAddr) -> Vec<tokio::net::TcpStream> {
        let mut held = Vec::new();
        for _ in 0..ADMIN_CONNECTIONS {
            let (stream, head) = probe(addr).await;
            assert_eq!(head, "HTTP/1.1 200 OK");
            held.push(stream);
        }
        held
    }

    #[tokio::test]
    async fn admin_connections_past_the_cap_are_closed_unanswered() {
        let addr = admin(Duration::from_secs(30)).await;
        let mut held = fill(addr).await;
        let (_, head) = probe(addr).await;
        assert_eq!(head, "");
        drop(held.pop());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (stream, head) = probe(addr).await;
            if head == "HTTP/1.1 200 OK" {
                held.push(stream);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the place came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn an_idle_admin_connection_is_closed_and_gives_its_place_back() {
        let addr = admin(Duration::from_millis(300)).await;
        let mut held = fill(addr).await;
        for stream in &mut held {
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
                .await
                .expect("closed when idle")
                .unwrap();
        }
        // Closed by the endpoint, so the places are free though the
        // client still holds its sockets.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(probe(addr).await.1, "HTTP/1.1 200 OK");
    }

    #[test]
    fn connections_and_the_descriptor_budget_are_read_at_scrape_time() {
        let m = Metrics::new();
        m.sample_connections();
        assert!(m.render().contains("airlock_descriptor_budget 0"));
        let d = Arc::new(Descriptors::for_open_files(Some(1024)));
        let clients = GlobalSlots::default();
        m.watch_connections(clients.clone(), d.clone());
        let held = (clients.admit(10, &d).unwrap(), d.upstream().unwrap());
        m.sample_connections();
        let text = m.render();
        assert!(text.contains("airlock_open_connections 1"), "{text}");
        assert!(text.contains("airlock_open_descriptors 2"), "{text}");
        assert!(text.contains("airlock_descriptor_budget 704"), "{text}");
        drop(held);
        m.sample_connections();
        assert!(m.render().contains("airlock_open_descriptors 0"));
        assert!(m.render().contains("airlock_open_connections 0"));
    }

    #[test]
    fn each_worker_s_connections_are_read_at_scrape_time() {
        let m = Metrics::new();
        m.sample_connections();
        assert!(!m.render().contains("airlock_worker_connections{"));
        let live: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::default()).collect();
        m.watch_workers(live.clone());
        live[1].store(3, Ordering::Relaxed);
        m.sample_connections();
        let text = m.render();
        assert!(
            text.contains("airlock_worker_connections{worker=\"0\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("airlock_worker_connections{worker=\"1\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn the_common_request_count_is_shown_only_once_counted_and_counts_with_the_rest() {
        let m = Metrics::new();
        let line = |mode, outcome| {
            format!("airlock_requests_total{{mode=\"{mode}\",outcome=\"{outcome}\"}}")
        };
        assert!(!m.render().contains("airlock_requests_total{"));
        for _ in 0..2 {
            m.count_request(RequestLabels {
                mode: "intercept",
                outcome: "ok",
            });
        }
        m.count_request(RequestLabels {
            mode: "intercept",
            outcome: "host_not_allowed",
        });
        m.count_request(RequestLabels {
            mode: "tunnel",
            outcome: "ok",
        });
        let text = m.render();
        assert!(
            text.contains(&format!("{} 2", line("intercept", "ok"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1", line("intercept", "host_not_allowed"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1", line("tunnel", "ok"))),
            "{text}"
        );
    }
}
