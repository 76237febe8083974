//! A CONNECT that is not intercepted: the upstream is dialled before the
//! `200` (so a refusal or failure is the CONNECT answer, not a dropped
//! connection), then bytes are copied both ways untouched.

use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::audit::{AuditRecord, Mode};
use crate::body::empty;
use crate::egress::UpstreamStream;
use crate::limits::Slot;
use crate::pipeline::close::refuse;
use crate::screen::ToSandbox;
use crate::shared::Shared;

/// Dials one of `addrs` (already judged by the egress policy) and, once the
/// sandbox has its `200`, relays until either side closes. The audit line
/// is written when the tunnel ends.
pub(crate) async fn open(
    shared: &Shared,
    req: Request<Incoming>,
    host: &str,
    addrs: Vec<SocketAddr>,
    slot: Slot,
    mut audit: AuditRecord,
) -> ToSandbox {
    let upstream = match shared.dialer.dial_checked(host, &addrs).await {
        Ok(stream) => stream,
        Err(err) => return refuse(&mut audit, err.into()),
    };
    tokio::spawn(async move {
        let _slot = slot;
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        relay(TokioIo::new(upgraded), upstream, &[], audit).await;
    });
    // airlock's own answer; what flows after it is the tunnel's.
    ToSandbox::local(Response::new(empty()))
}

/// Copies bytes both ways until either side closes, after sending
/// `prefix` (what was already read from the client) upstream; the audit
/// line is written when the tunnel ends.
pub(crate) async fn relay<C>(
    mut client: C,
    mut upstream: UpstreamStream,
    prefix: &[u8],
    mut audit: AuditRecord,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    audit.mode = Mode::Tunnel;
    audit.status = 200;
    let sent = if prefix.is_empty() {
        Ok(())
    } else {
        upstream.write_all(prefix).await
    };
    let result = match sent {
        Ok(()) => tokio::io::copy_bidirectional(&mut client, &mut upstream).await,
        Err(error) => Err(error),
    };
    if let Ok((up, down)) = result {
        audit.request_bytes = up + prefix.len() as u64;
        audit.response_bytes = down;
    }
    audit.emit(result.is_ok());
}
