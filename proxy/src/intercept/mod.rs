//! An intercepted CONNECT: the sandbox's TLS is terminated with a leaf for
//! the CONNECT host, and HTTP/1.1 or HTTP/2 is served inside it by the
//! per-connection [`service`].

mod service;

pub(crate) use service::InterceptCtx;

use std::convert::Infallible;
use std::sync::Arc;

use airlock_vault_client::normalize_host;
use futures_util::FutureExt;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::Instrument;

use crate::audit::{AuditRecord, Mode, Outcome};
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::http_server::Negotiated;
use crate::rewind::Rewind;
use crate::shared::Shared;
use crate::tls::HANDSHAKE_RECORD;

/// One request's answer, as the connection's service gives it to hyper.
type RequestFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>,
>;

/// Terminates the sandbox's TLS with a leaf for the CONNECT host and serves
/// HTTP/1.1 or HTTP/2 inside it.
///
/// The handshake's future and the stream are boxed: a connection's task is
/// as large as its largest state, and moved-from locals keep their room, so
/// the handshake's state (3.5 KiB) would otherwise stay allocated beside the
/// served connection for its whole life.
pub(crate) async fn serve<IO>(shared: Arc<Shared>, io: IO, mut ctx: InterceptCtx)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(tls) = Box::pin(handshake(&shared, io, &mut ctx)).await else {
        return;
    };
    let conn = Arc::new(service::Connection::new(ctx));
    let for_service = shared.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = for_service.clone();
        let ctx = &conn.ctx;
        // One span per request; the path without its query (it can hold secrets).
        let span = tracing::info_span!(
            "request",
            sandbox = %ctx.sandbox,
            method = %req.method(),
            host = %ctx.host,
            path = %req.uri().path(),
            status = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        // Boxed: hyper keeps a slot the size of the service's future for the
        // connection's life, so a request's state would stay allocated on
        // every idle keep-alive connection. The forwarded request's future
        // is boxed as it is (a wrapping `async` block would keep its
        // arguments twice); the rare routes share one wrapper.
        let route = span.in_scope(|| service::route(&shared, req, &conn));
        let answer: RequestFuture = match route {
            service::Route::Forward(out, body, swapper, audit) => Box::pin(
                crate::pipeline::forward(shared, out, body, swapper, audit)
                    .map(|answer| Ok(answer.into_response()))
                    .instrument(span),
            ),
            route => Box::pin(
                service::answer_rare(shared, route)
                    .map(|answer| Ok(answer.into_response()))
                    .instrument(span),
            ),
        };
        answer
    });
    let negotiated = Negotiated::from_alpn(tls.get_ref().1.alpn_protocol());
    let (settings, metrics) = (&shared.settings, &shared.telemetry.metrics);
    if let Err(error) =
        crate::http_server::serve_tls(settings, metrics, tls, negotiated, service).await
    {
        tracing::debug!(%error, "intercepted connection ended with an error");
    }
}

/// The sandbox's TLS handshake with a leaf for the CONNECT host, or `None`
/// once the audit line says why there is none. Its audit record speaks only
/// for the handshake: requests write their own.
async fn handshake<IO>(
    shared: &Shared,
    io: IO,
    ctx: &mut InterceptCtx,
) -> Option<Box<tokio_rustls::server::TlsStream<Rewind<IO>>>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let settings = &shared.settings;
    let mut audit = shared.audit(
        ctx.sandbox.clone(),
        Mode::Intercept,
        "-",
        ctx.host.as_str(),
        ctx.port,
        "",
    );
    // The first byte tells TLS (a handshake record) from a client that
    // speaks plain HTTP into the tunnel; the latter gets an answer it can read.
    let mut io = io;
    let mut first = [0u8; 1];
    let first_read =
        tokio::time::timeout(settings.tls_handshake_timeout, io.read_exact(&mut first)).await;
    if !matches!(first_read, Ok(Ok(_))) {
        audit.outcome = if first_read.is_err() {
            Outcome::TlsHandshakeTimeout
        } else {
            Outcome::ClientClosed
        };
        audit.emit(false);
        return None;
    }
    if first[0] != HANDSHAKE_RECORD {
        let err = ProxyError::NotTls {
            host: ctx.host.clone(),
        };
        let _ = io.write_all(&err.to_http1_bytes()).await;
        let _ = io.shutdown().await;
        audit.status = err.status().as_u16();
        audit.outcome = Outcome::from(&err);
        audit.refused = Some("not TLS after CONNECT".into());
        audit.emit(true);
        return None;
    }
    let io = Rewind::new(first.to_vec(), io);
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let step = tokio::time::timeout(settings.tls_handshake_timeout, acceptor).await;
    let start = handshake_step(&mut audit, step)?;
    if let Some(sni) = start.client_hello().server_name() {
        if normalize_host(sni).as_deref() != Some(ctx.host.as_str()) && ctx.refusal.is_none() {
            ctx.refusal = Some(ProxyError::Misdirected(format!(
                "TLS SNI {sni:?} does not match the CONNECT host {}",
                ctx.host
            )));
        }
    }
    let leaf = match shared.leaves.get(&ctx.host).await {
        Ok(leaf) => leaf,
        Err(error) => {
            tracing::warn!(%error, "could not mint a leaf certificate");
            audit.outcome = Outcome::MintFailed;
            audit.emit(false);
            return None;
        }
    };
    let config = shared.tls_configs.for_leaf(&ctx.host, leaf);
    // A failure here usually means the client distrusts our CA or hung up.
    let step =
        tokio::time::timeout(settings.tls_handshake_timeout, start.into_stream(config)).await;
    handshake_step(&mut audit, step).map(Box::new)
}

/// The value of a timed TLS handshake step, or `None` once the audit line
/// says why it failed.
fn handshake_step<T>(
    audit: &mut AuditRecord,
    step: Result<std::io::Result<T>, tokio::time::error::Elapsed>,
) -> Option<T> {
    match step {
        Ok(Ok(value)) => Some(value),
        Ok(Err(error)) => {
            audit.outcome = Outcome::TlsHandshakeFailed;
            audit.refused = Some(error.to_string());
            audit.emit(false);
            None
        }
        Err(_) => {
            audit.outcome = Outcome::TlsHandshakeTimeout;
            audit.emit(false);
            None
        }
    }
}
