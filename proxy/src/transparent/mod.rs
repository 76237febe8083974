//! Transparent mode: connections redirected to airlock (iptables `REDIRECT`
//! in the sandbox's network namespace, or a DNS answer naming airlock) from
//! clients that ignore proxy settings. There is no CONNECT: the destination
//! is the TLS SNI (or, on the plain-HTTP listener, `Host`), the sandbox is
//! the source address's, and `SO_ORIGINAL_DST` must agree with the name.
//! Past that, the connection takes the CONNECT path's steps: egress
//! decision, per-sandbox slot, then interception or a tunnel.

mod destination;
mod http;
mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use airlock_vault_client::SandboxId;
use tokio::net::{TcpListener, TcpStream};

use crate::error::ProxyError;
use crate::listen::{accept_loop, OverLimit};
use crate::shared::Shared;

pub(crate) use destination::original_destination;

/// Serves redirected TLS connections until the listener fails.
pub(crate) async fn serve_tls(shared: Arc<Shared>, listener: TcpListener) -> std::io::Result<()> {
    accept_loop(shared, listener, OverLimit::Close, tls::serve_connection).await
}

/// Serves redirected plain-HTTP connections until the listener fails.
pub(crate) async fn serve_http(shared: Arc<Shared>, listener: TcpListener) -> std::io::Result<()> {
    accept_loop(
        shared,
        listener,
        OverLimit::Answer503,
        http::serve_connection,
    )
    .await
}

/// The sandbox a redirected connection from `peer` belongs to.
fn sandbox_for(shared: &Shared, peer: IpAddr) -> Result<SandboxId, ProxyError> {
    let settings = &shared.settings;
    let peer = canonical_ip(peer);
    if let Some((_, sandbox)) = settings
        .transparent
        .sources
        .iter()
        .find(|(net, _)| net.contains(&peer))
    {
        return Ok(sandbox.clone());
    }
    if settings.require_auth {
        return Err(ProxyError::UnknownSource(peer));
    }
    Ok(SandboxId::default_sandbox())
}

/// `::ffff:10.0.0.1` (a dual-stack listener's view of an IPv4 peer) as `10.0.0.1`.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Where a redirected connection was going, and what airlock knows of it.
#[derive(Debug, Clone, Copy)]
struct Redirected {
    /// `SO_ORIGINAL_DST`, or `None` when the connection was not redirected
    /// (it came to airlock's own address: a DNS answer naming airlock).
    original: Option<SocketAddr>,
    /// The port the client meant: the original destination's, else the
    /// listener's default (443 for TLS, 80 for HTTP).
    port: u16,
}

impl Redirected {
    fn of(stream: &TcpStream, default_port: u16) -> Self {
        let original = original_destination(stream);
        Self {
            original,
            port: original.map_or(default_port, |a| a.port()),
        }
    }
}
