#![forbid(unsafe_code)]
//! airlock's intercepting forward proxy.
//!
//! A sandbox points `HTTPS_PROXY` here. For hosts with a binding the proxy
//! terminates TLS with a leaf from [`airlock_certs`], swaps placeholders for
//! real tokens from a [`airlock_vault_client::TokenSource`], and forwards over
//! verified TLS; other hosts are tunnelled byte for byte.
//!
//! A connection flows one way, each module calling only those below it:
//! [`Proxy`] → `listen` (accept, caps, identity) → `connect` (target, egress
//! decision) → `tunnel` or `intercept` (TLS, per-connection service), and
//! `plain` for `http://` → `pipeline` (swap, send, refresh-and-replay,
//! [`screen`], close) → the leaves (`swap`, `upstream`, `firewall`, …).

pub mod audit;
pub mod body;
pub mod body_swap;
pub mod compression;
mod connect;
pub mod egress;
pub mod error;
pub mod firewall;
pub mod headers;
mod held_stream;
mod http_server;
mod intercept;
mod internal;
pub mod ledger;
pub mod limits;
mod listen;
pub mod metrics;
pub mod parse;
mod pipeline;
mod plain;
mod rewind;
pub mod rules;
pub mod screen;
pub mod settings;
mod shared;
pub mod signing;
pub mod swap;
pub mod telemetry;
#[cfg(test)]
mod testing;
mod tls;
mod transparent;
mod tunnel;
pub mod upstream;
pub mod wire_choice;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;

use airlock_certs::LeafCache;
use airlock_vault_client::TokenSource;
use tokio::net::TcpListener;

pub use error::{ProxyError, Side};

/// The name airlock answers itself (the sandbox's status API): never
/// resolved, never dialled, whatever DNS or a `[resolve]` entry says.
pub const INTERNAL_HOST: &str = "airlock.internal";
pub use settings::{InterceptMode, ProxySettings};
pub use telemetry::Telemetry;

/// A running proxy's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<shared::Shared>,
}

impl Proxy {
    /// `local_addr` is the bound listener's address: the proxy never dials
    /// itself. Finished requests are reported to `telemetry`. Its sockets
    /// come out of `descriptors` ([`limits::Descriptors::for_process`]).
    pub fn new(
        settings: ProxySettings,
        tokens: Arc<dyn TokenSource>,
        leaves: Arc<LeafCache>,
        local_addr: SocketAddr,
        telemetry: Telemetry,
        descriptors: Arc<limits::Descriptors>,
    ) -> Self {
        Self {
            shared: Arc::new(shared::Shared::new(
                settings,
                tokens,
                leaves,
                local_addr,
                telemetry,
                descriptors,
            )),
        }
    }

    /// The per-core runtimes connections are served on (0: the caller's).
    pub fn workers(&self) -> usize {
        self.shared.workers.as_ref().map_or(0, |w| w.len())
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        listen::serve(self.shared, listener).await
    }

    /// Accepts TLS connections redirected to airlock (transparent mode:
    /// the destination comes from SNI) until the listener fails.
    pub async fn serve_transparent_tls(self, listener: TcpListener) -> std::io::Result<()> {
        transparent::serve_tls(self.shared, listener).await
    }

    /// Accepts plain-HTTP connections redirected to airlock (transparent
    /// mode: the destination comes from `Host`) until the listener fails.
    pub async fn serve_transparent_http(self, listener: TcpListener) -> std::io::Result<()> {
        transparent::serve_http(self.shared, listener).await
    }
}
