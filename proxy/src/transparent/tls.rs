//! A redirected TLS connection: the ClientHello names the destination
//! (SNI; with none, the original destination's address), which is judged
//! like a CONNECT target. A refusal is answered inside TLS, with a leaf for
//! the name, so the client reads it as an HTTP error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_vault_client::{normalize_host, SandboxId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument;

use super::{destination, sandbox_for, Redirected};
use crate::audit::{Mode, Outcome};
use crate::error::ProxyError;
use crate::held_stream::HeldStream;
use crate::intercept::InterceptCtx;
use crate::limits::{Admitted, Slot};
use crate::rewind::Rewind;
use crate::shared::Shared;
use crate::tls::HANDSHAKE_RECORD;

/// A ClientHello larger than this is refused (real ones are a few KiB).
const MAX_HELLO_BYTES: usize = 64 * 1024;

pub(super) async fn serve_connection(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
) {
    let _ = stream.set_nodelay(true);
    let redirected = Redirected::of(&stream, crate::internal::TLS_PORT);
    let local = stream.local_addr().ok();
    let sandbox = sandbox_for(&shared, peer.ip());
    let audit_sandbox = sandbox.clone().unwrap_or_else(|_| SandboxId::new("-"));
    // Boxed: its 4 KiB read chunk would otherwise keep its room in the
    // connection's task for the connection's whole life.
    let hello = Box::pin(read_client_hello(
        &mut stream,
        shared.settings.tls_handshake_timeout,
    ))
    .await;
    let (prefix, sni) = match hello {
        Ok(read) => read,
        Err(failure) => {
            let host = redirected
                .original
                .map_or("-".to_owned(), |a| a.ip().to_string());
            let mut audit = shared.audit(
                audit_sandbox,
                Mode::Transparent,
                "-",
                host.as_str(),
                redirected.port,
                "",
            );
            audit.outcome = failure.outcome();
            if let HelloFailure::NotTls = failure {
                let err = ProxyError::BadRequest(
                    "expected a TLS ClientHello on airlock's transparent TLS listener (plain HTTP belongs on its HTTP listener)"
                        .into(),
                );
                let _ = stream.write_all(&err.to_http1_bytes()).await;
                let _ = stream.shutdown().await;
                audit.status = err.status().as_u16();
                audit.refused = Some("not TLS on the transparent listener".into());
            }
            audit.emit(false);
            return;
        }
    };
    // No SNI (a client that dialled an IP literal): the address it dialled.
    let host = match sni.as_deref().and_then(normalize_host) {
        Some(host) => host,
        None => match redirected.original {
            Some(original) => original.ip().to_string(),
            None => {
                let mut audit = shared.audit(
                    audit_sandbox,
                    Mode::Transparent,
                    "-",
                    "-",
                    redirected.port,
                    "",
                );
                audit.outcome = Outcome::TlsHandshakeFailed;
                audit.refused =
                    Some("no SNI and no original destination: nowhere to send it".into());
                audit.emit(false);
                return;
            }
        },
    };
    let port = redirected.port;
    let span = tracing::debug_span!("transparent", %host, port, sandbox = %audit_sandbox);
    async move {
        let judged = judge(&shared, sandbox, &host, port, redirected.original, local).await;
        let ctx = |sandbox, refusal| InterceptCtx {
            sandbox,
            host: host.clone(),
            port,
            refusal,
        };
        match judged {
            Judged::Refuse(err) => {
                let io = Rewind::new(prefix, HeldStream::new(stream, admitted));
                crate::intercept::serve(shared.clone(), io, ctx(audit_sandbox, Some(err))).await;
            }
            Judged::Intercept { sandbox, slot } => {
                // Carried by the socket: a WebSocket inside the
                // interception outlives this function.
                let io = Rewind::new(prefix, HeldStream::new(stream, (admitted, slot)));
                crate::intercept::serve(shared.clone(), io, ctx(sandbox, None)).await;
            }
            Judged::Tunnel {
                sandbox,
                slot,
                addrs,
            } => {
                // The relay runs here, to the end of the connection.
                let _held = (admitted, slot);
                let mut audit = shared.audit(sandbox, Mode::Tunnel, "-", host.as_str(), port, "");
                match shared.dialer.dial_checked(&host, &addrs).await {
                    Ok(upstream) => crate::tunnel::relay(stream, upstream, &prefix, audit).await,
                    Err(err) => {
                        // Nothing was terminated: the client gets no HTTP answer.
                        let err = ProxyError::from(&err);
                        audit.status = err.status().as_u16();
                        audit.outcome = Outcome::from(&err);
                        audit.refused = Some(err.to_string());
                        audit.emit(false);
                    }
                }
            }
        }
    }
    .instrument(span)
    .await;
}

enum Judged {
    Refuse(ProxyError),
    Intercept {
        sandbox: SandboxId,
        slot: Slot,
    },
    Tunnel {
        sandbox: SandboxId,
        slot: Slot,
        addrs: Vec<SocketAddr>,
    },
}

/// The CONNECT path's steps for a name that came from SNI, plus the
/// original destination's agreement with it.
async fn judge(
    shared: &Shared,
    sandbox: Result<SandboxId, ProxyError>,
    host: &str,
    port: u16,
    original: Option<SocketAddr>,
    local: Option<SocketAddr>,
) -> Judged {
    let sandbox = match sandbox {
        Ok(sandbox) => sandbox,
        Err(err) => return Judged::Refuse(err),
    };
    let addrs = if crate::internal::is_internal(host) {
        if port != crate::internal::TLS_PORT {
            return Judged::Refuse(crate::internal::wrong_port(port, crate::internal::TLS_PORT));
        }
        Vec::new()
    } else {
        if let Err(err) = shared.check_port(port) {
            return Judged::Refuse(err);
        }
        let addrs = match shared.dialer.resolve(host, port).await {
            Ok(addrs) => addrs,
            Err(err) => return Judged::Refuse(ProxyError::from(&err)),
        };
        let settings = &shared.settings.transparent;
        if let Err(err) = destination::check(settings, host, original, local, &addrs) {
            return Judged::Refuse(err);
        }
        addrs
    };
    let limit = shared.settings.max_connections_per_sandbox;
    let Some(slot) = shared.connections.acquire(&sandbox, limit) else {
        return Judged::Refuse(ProxyError::TooManyConnections {
            sandbox: sandbox.to_string(),
            limit,
        });
    };
    if crate::internal::is_internal(host)
        || crate::connect::intercepts(shared, &sandbox, host).await
    {
        Judged::Intercept { sandbox, slot }
    } else {
        Judged::Tunnel {
            sandbox,
            slot,
            addrs,
        }
    }
}

enum HelloFailure {
    Timeout,
    Closed,
    NotTls,
    Invalid,
}

impl HelloFailure {
    fn outcome(&self) -> Outcome {
        match self {
            Self::Timeout => Outcome::TlsHandshakeTimeout,
            Self::Closed => Outcome::ClientClosed,
            Self::NotTls => Outcome::Refused("bad_request"),
            Self::Invalid => Outcome::TlsHandshakeFailed,
        }
    }
}

/// Reads until a whole ClientHello is in: the bytes read (to replay to the
/// TLS acceptor or the upstream) and the SNI it names.
async fn read_client_hello(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<(Vec<u8>, Option<String>), HelloFailure> {
    tokio::time::timeout(timeout, async {
        let mut acceptor = rustls::server::Acceptor::default();
        let mut read = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|_| HelloFailure::Closed)?;
            if n == 0 {
                return Err(HelloFailure::Closed);
            }
            if read.is_empty() && chunk[0] != HANDSHAKE_RECORD {
                return Err(HelloFailure::NotTls);
            }
            read.extend_from_slice(&chunk[..n]);
            let mut fresh = &chunk[..n];
            while !fresh.is_empty() {
                acceptor
                    .read_tls(&mut fresh)
                    .map_err(|_| HelloFailure::Invalid)?;
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    let sni = accepted.client_hello().server_name().map(str::to_owned);
                    return Ok((read, sni));
                }
                Ok(None) if read.len() < MAX_HELLO_BYTES => {}
                Ok(None) | Err(_) => return Err(HelloFailure::Invalid),
            }
        }
    })
    .await
    .unwrap_or(Err(HelloFailure::Timeout))
}
