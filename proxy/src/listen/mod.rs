//! The plain listener: accepts sandbox connections under the global and
//! per-sandbox caps, serves HTTP/1.1 on them, and sends each request where
//! it belongs: CONNECT, an absolute `http://` URL, or a readable refusal.

mod identity;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_vault_client::SandboxId;
use http::uri::Scheme;
use http::{header, Method, Request};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::audit::Mode;
use crate::error::ProxyError;
use crate::held_stream::HeldStream;
use crate::limits::{Admitted, Slot, BUSY_ANSWERS};
use crate::pipeline::close::refuse;
use crate::screen::ToSandbox;
use crate::shared::Shared;

/// How long a connection over `max_connections` may take to send the head
/// of the request that gets its 503.
const BUSY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Plain-HTTP requests hold a per-sandbox slot for as long as their
/// connection is open (tunnels take their own).
type HeldSlots = Mutex<Vec<(SandboxId, Slot)>>;

/// Accepts connections until the listener fails.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) -> std::io::Result<()> {
    accept_loop(
        shared,
        listener,
        OverLimit::Answer503,
        |shared, stream, peer, slot| serve_client(shared, stream, peer.ip(), slot),
    )
    .await
}

/// What a connection over `max_connections` gets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OverLimit {
    /// Its first request gets a `503` (a proxy client reads it).
    Answer503,
    /// Closed at once (a redirected TLS client could not read a `503`).
    Close,
}

/// Accepts connections until the listener fails: each one within the
/// global `max_connections` goes to `serve_one` with its slot.
pub(crate) async fn accept_loop<F, Fut>(
    shared: Arc<Shared>,
    listener: TcpListener,
    over_limit: OverLimit,
    serve_one: F,
) -> std::io::Result<()>
where
    F: Fn(Arc<Shared>, TcpStream, SocketAddr, Admitted) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and similar: back off, keep serving.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let span = tracing::debug_span!("conn", %peer);
        let limit = shared.settings.max_connections;
        match shared.all_connections.admit(limit, &shared.descriptors) {
            Some(admitted) => {
                let serve = |stream, admitted| {
                    serve_one(shared.clone(), stream, peer, admitted).instrument(span)
                };
                match &shared.workers {
                    Some(workers) => workers.spawn(stream, admitted, serve),
                    None => drop(tokio::spawn(serve(stream, admitted))),
                }
            }
            None if over_limit == OverLimit::Close => drop(stream),
            None => match shared.busy_connections.acquire(BUSY_ANSWERS) {
                // Told why, within bounds; past them, closed at once.
                Some(slot) => {
                    tokio::spawn(
                        serve_busy(shared.clone(), stream, peer.ip(), slot).instrument(span),
                    );
                }
                None => drop(stream),
            },
        }
    }
}

/// One connection too many: its first request gets `503` with
/// `Retry-After`, then the connection is closed.
async fn serve_busy(shared: Arc<Shared>, stream: TcpStream, peer: IpAddr, _slot: Slot) {
    let limit = shared.settings.max_connections;
    let for_service = shared.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = for_service.clone();
        async move {
            let mut audit = shared.audit(
                SandboxId::new("-"),
                Mode::Limit,
                req.method().as_str(),
                req.uri().host().unwrap_or("-"),
                req.uri().port_u16().unwrap_or(0),
                "",
            );
            let err = ProxyError::ProxyBusy {
                limit,
                retry_after: 1,
            };
            Ok::<_, Infallible>(refuse(&mut audit, err).into_response())
        }
    });
    let _ = crate::http_server::http1_busy(&shared.settings, BUSY_HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    tracing::debug!(%peer, "connection refused: proxy at max_connections");
}

async fn serve_client(shared: Arc<Shared>, stream: TcpStream, peer: IpAddr, admitted: Admitted) {
    let _ = stream.set_nodelay(true);
    // After a CONNECT the server hands the socket to the tunnel or the
    // interception and returns: the connection's place and descriptor go
    // with the socket, not with this function.
    let stream = HeldStream::new(stream, admitted);
    let held: Arc<HeldSlots> = Arc::default();
    let for_service = shared.clone();
    let service = service_fn(move |req| {
        let shared = for_service.clone();
        let held = held.clone();
        // Boxed, as in `intercept::serve`: no request's state stays with an
        // idle keep-alive connection.
        Box::pin(async move {
            Ok::<_, Infallible>(dispatch(&shared, req, peer, &held).await.into_response())
        })
    });
    if let Err(error) = crate::http_server::http1(&shared.settings)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await
    {
        crate::http_server::count_connection_error(&shared.telemetry.metrics, &error);
        tracing::debug!(%error, "client connection ended with an error");
    }
}

/// A request on the plain listener: CONNECT, an absolute `http://` URL,
/// or a mistake.
async fn dispatch(
    shared: &Arc<Shared>,
    mut req: Request<Incoming>,
    peer: IpAddr,
    held: &HeldSlots,
) -> ToSandbox {
    // Refused before anyone is known: the audit line names no sandbox.
    let refuse_unknown = |mode: Mode, err: ProxyError| {
        let mut audit = shared.audit(
            SandboxId::new("-"),
            mode,
            req.method().as_str(),
            req.uri().host().unwrap_or("-"),
            req.uri().port_u16().unwrap_or(0),
            "",
        );
        refuse(&mut audit, err)
    };
    if let Some(err) = crate::headers::head_too_large(&req, shared.settings.max_header_bytes) {
        return refuse_unknown(Mode::Http, err);
    }
    let sandbox = match identity::authenticate(shared, req.headers(), peer).await {
        Ok(sandbox) => sandbox,
        Err(err) => return refuse_unknown(Mode::Auth, err),
    };
    req.headers_mut().remove(header::PROXY_AUTHORIZATION);
    if req.method() == Method::CONNECT {
        return crate::connect::handle(shared, req, sandbox).await;
    }
    match req.uri().scheme() {
        Some(scheme) if *scheme == Scheme::HTTP => {
            if let Err(err) = hold_plain_slot(shared, held, &sandbox) {
                let mut audit = shared.audit(
                    sandbox,
                    Mode::Http,
                    req.method().as_str(),
                    req.uri().host().unwrap_or("-"),
                    req.uri().port_u16().unwrap_or(80),
                    req.uri().path(),
                );
                return refuse(&mut audit, err);
            }
            crate::plain::handle(shared, req, sandbox).await
        }
        Some(_) => ToSandbox::local(
            ProxyError::BadRequest(
                "send https:// requests through CONNECT (set HTTPS_PROXY), not as absolute URLs"
                    .into(),
            )
            .to_response(),
        ),
        None => ToSandbox::local(
            ProxyError::BadRequest(
                "airlock is a forward proxy: point HTTPS_PROXY/HTTP_PROXY at it instead of requesting it directly"
                    .into(),
            )
            .to_response(),
        ),
    }
}

/// Counts this plain-listener connection against `sandbox`'s limit,
/// once per connection and sandbox.
fn hold_plain_slot(
    shared: &Shared,
    held: &HeldSlots,
    sandbox: &SandboxId,
) -> Result<(), ProxyError> {
    let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
    if held.iter().any(|(s, _)| s == sandbox) {
        return Ok(());
    }
    let limit = shared.settings.max_connections_per_sandbox;
    let slot = shared.connections.acquire(sandbox, limit).ok_or_else(|| {
        ProxyError::TooManyConnections {
            sandbox: sandbox.to_string(),
            limit,
        }
    })?;
    held.push((sandbox.clone(), slot));
    Ok(())
}
