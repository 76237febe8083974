//! What every stage of a running proxy reads: settings, the token source (in
//! its ledger), the dialler, the upstream client, limits and telemetry. Built
//! once by [`crate::Proxy::new`]; the stages get it by reference and never
//! reach back into the stage that called them.

use std::net::SocketAddr;
use std::sync::Arc;

use airlock_certs::LeafCache;
use airlock_vault_client::{SandboxId, TokenSource};

use crate::audit::{AuditRecord, Mode};
use crate::egress::Dialer;
use crate::error::ProxyError;
use crate::ledger::TokenLedger;
use crate::limits::{AuthFailures, Budget, ConnectionSlots, Descriptors, GlobalSlots};
use crate::settings::ProxySettings;
use crate::swap::{Scanner, Swapper};
use crate::telemetry::Telemetry;
use crate::upstream::{client_tls_config, root_store, Upstream};

pub(crate) struct Shared {
    pub settings: ProxySettings,
    /// The token source wrapped in the ledger, as swappers see it.
    pub tokens: Arc<dyn TokenSource>,
    pub ledger: Arc<TokenLedger>,
    pub leaves: Arc<LeafCache>,
    pub dialer: Arc<Dialer>,
    /// One pooled client per worker (the first off the workers), so a
    /// worker's requests use upstream connections driven on its own thread.
    upstreams: Box<[Upstream]>,
    /// The per-core runtimes client connections are served on (`workers`).
    pub workers: Option<crate::workers::Workers>,
    pub scanner: Arc<Scanner>,
    /// The interception template cloned once per host's leaf; the clones
    /// share the session cache and ticketer.
    pub tls_configs: crate::tls::LeafConfigs,
    pub auth_failures: AuthFailures,
    pub connections: ConnectionSlots,
    /// Every client connection, whatever its sandbox.
    pub all_connections: GlobalSlots,
    /// Connections over `max_connections` still being told so.
    pub busy_connections: GlobalSlots,
    /// Sockets, client and upstream, under the open-files limit.
    pub descriptors: Arc<Descriptors>,
    pub decompression: Budget,
    pub telemetry: Telemetry,
    /// Places for requests held for consent (`max_held_requests`).
    pub held: Arc<tokio::sync::Semaphore>,
    /// Which upstream wire each busy upstream answers faster on (`auto`).
    pub wire_choice: crate::wire_choice::WireChoice,
}

impl Shared {
    /// `local_addr` is the bound listener's address: the proxy never dials
    /// itself. `descriptors` is the process's budget (past the fd limit,
    /// accepts and dials fail for everyone; the budget answers 503 first),
    /// shared with the vault's API in `airlock up`.
    pub fn new(
        mut settings: ProxySettings,
        tokens: Arc<dyn TokenSource>,
        leaves: Arc<LeafCache>,
        local_addr: SocketAddr,
        telemetry: Telemetry,
        descriptors: Arc<Descriptors>,
    ) -> Self {
        let all_connections = GlobalSlots::default();
        telemetry
            .metrics
            .watch_connections(all_connections.clone(), descriptors.clone());
        if settings.max_connections > descriptors.clients_up_to() {
            tracing::warn!(
                configured = settings.max_connections,
                effective = descriptors.clients_up_to(),
                "max_connections lowered to fit the open-files limit (raise it with ulimit -n or LimitNOFILE)"
            );
            settings.max_connections = descriptors.clients_up_to();
        }
        let dialer = Arc::new(
            Dialer::new(
                settings.resolve.clone(),
                settings.allow_private_destinations,
                settings.connect_timeout,
            )
            .with_own_addr(local_addr)
            .with_own_addrs(settings.own_addrs.iter().copied())
            .with_lists(settings.egress.clone())
            .with_descriptors(descriptors.clone()),
        );
        let (roots, system_roots) = root_store(&settings.upstream_ca);
        tracing::debug!(
            system_roots,
            extra_roots = settings.upstream_ca.len(),
            "upstream trust loaded"
        );
        let workers = match settings.workers {
            0 => None,
            n => match crate::workers::Workers::start(n) {
                Ok(workers) => {
                    telemetry.metrics.watch_workers(workers.live_counts());
                    Some(workers)
                }
                Err(error) => {
                    tracing::warn!(%error, "could not start the proxy's workers: serving on the shared runtime");
                    None
                }
            },
        };
        let tls = client_tls_config(roots);
        let upstreams = (0..workers.as_ref().map_or(1, |w| w.len()))
            .map(|_| {
                Upstream::new(
                    dialer.clone(),
                    tls.clone(),
                    settings.response_timeout,
                    settings.upstream_idle_timeout,
                )
            })
            .collect();
        let scanner = Arc::new(Scanner::new(tokens.placeholder_prefix()));
        let ledger = Arc::new(TokenLedger::new(tokens));
        let settings_held = settings.max_held_requests;
        let wire_choice =
            crate::wire_choice::WireChoice::new(telemetry.metrics.upstream_faster_wire.clone());
        Self {
            auth_failures: AuthFailures::new(settings.auth_failures_per_minute),
            decompression: Budget::new(settings.decompression_budget),
            settings,
            tokens: ledger.clone(),
            ledger,
            leaves,
            dialer,
            upstreams,
            workers,
            scanner,
            tls_configs: crate::tls::LeafConfigs::new(crate::tls::interception_template()),
            connections: ConnectionSlots::default(),
            all_connections,
            busy_connections: GlobalSlots::default(),
            descriptors,
            telemetry,
            held: Arc::new(tokio::sync::Semaphore::new(settings_held)),
            wire_choice,
        }
    }

    /// The pooled upstream client of this thread's worker.
    pub fn upstream(&self) -> &Upstream {
        let i = crate::workers::current().unwrap_or(0);
        &self.upstreams[i % self.upstreams.len()]
    }

    /// A new request's record, reporting to this proxy's telemetry.
    pub fn audit(
        &self,
        sandbox: SandboxId,
        mode: Mode,
        method: &str,
        host: impl Into<Arc<str>>,
        port: u16,
        path: impl Into<crate::telemetry::RequestPath>,
    ) -> AuditRecord {
        AuditRecord::new(&self.telemetry, sandbox, mode, method, host, port, path)
    }

    /// The swapper for one request of `sandbox` to `host`.
    pub fn swapper(&self, sandbox: SandboxId, host: impl Into<Arc<str>>) -> Swapper {
        Swapper::new(self.tokens.clone(), self.scanner.clone(), sandbox, host)
            .counting_inert(self.telemetry.metrics.inert_placeholders.clone())
    }

    /// `allowed_ports` applies to CONNECT and plain `http://` alike.
    pub fn check_port(&self, port: u16) -> Result<(), ProxyError> {
        let allowed = &self.settings.allowed_ports;
        if allowed.contains(&port) {
            return Ok(());
        }
        Err(ProxyError::PortNotAllowed {
            port,
            allowed: allowed
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}
