//! A redirected plain-HTTP connection: each request's `Host` names the
//! destination, which must agree with the original destination; then it
//! is an absolute-form `http://` request like any other (no placeholder is
//! ever swapped into plain HTTP).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use airlock_vault_client::{normalize_host, SandboxId};
use http::{header, Request, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::{destination, sandbox_for, Redirected};
use crate::audit::Mode;
use crate::error::ProxyError;
use crate::limits::{Admitted, Slot};
use crate::parse::host_for_uri;
use crate::pipeline::close::refuse;
use crate::screen::ToSandbox;
use crate::shared::Shared;

pub(super) async fn serve_connection(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    _global_slot: Admitted,
) {
    let _ = stream.set_nodelay(true);
    let conn = Arc::new(Connection {
        redirected: Redirected::of(&stream, crate::internal::PLAIN_PORT),
        local: stream.local_addr().ok(),
        sandbox: sandbox_for(&shared, peer.ip()).and_then(|sandbox| {
            // The connection counts against its sandbox's limit while open.
            let limit = shared.settings.max_connections_per_sandbox;
            match shared.connections.acquire(&sandbox, limit) {
                Some(slot) => Ok((sandbox, slot)),
                None => Err(ProxyError::TooManyConnections {
                    sandbox: sandbox.to_string(),
                    limit,
                }),
            }
        }),
    });
    let for_service = shared.clone();
    let service = service_fn(move |req| {
        let shared = for_service.clone();
        let conn = conn.clone();
        // Boxed, as in `intercept::serve`: no request's state stays with an
        // idle keep-alive connection.
        Box::pin(
            async move { Ok::<_, Infallible>(handle(&shared, req, &conn).await.into_response()) },
        )
    });
    if let Err(error) = crate::http_server::http1(&shared.settings)
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        crate::http_server::count_connection_error(&shared.telemetry.metrics, &error);
        tracing::debug!(%error, "redirected connection ended with an error");
    }
}

struct Connection {
    redirected: Redirected,
    local: Option<SocketAddr>,
    sandbox: Result<(SandboxId, Slot), ProxyError>,
}

async fn handle(shared: &Shared, mut req: Request<Incoming>, conn: &Connection) -> ToSandbox {
    let port = conn.redirected.port;
    let host = request_host(&req);
    let (sandbox, refusal) = match &conn.sandbox {
        Ok((sandbox, _)) => (sandbox.clone(), None),
        Err(err) => (SandboxId::new("-"), Some(err.clone())),
    };
    let mut audit = shared.audit(
        sandbox.clone(),
        Mode::Transparent,
        req.method().as_str(),
        host.as_deref().unwrap_or("-"),
        port,
        crate::telemetry::RequestPath::of(req.uri()),
    );
    if let Some(err) = refusal {
        return refuse(&mut audit, err);
    }
    if let Some(err) = crate::headers::head_too_large(&req, shared.settings.max_header_bytes) {
        return refuse(&mut audit, err);
    }
    let Some(host) = host else {
        return refuse(
            &mut audit,
            ProxyError::BadRequest("a redirected HTTP request must name its host in Host".into()),
        );
    };
    if !crate::internal::is_internal(&host) {
        if let Err(err) = shared.check_port(port) {
            return refuse(&mut audit, err);
        }
        let addrs = match shared.dialer.resolve(&host, port).await {
            Ok(addrs) => addrs,
            Err(err) => return refuse(&mut audit, ProxyError::from(&err)),
        };
        let settings = &shared.settings.transparent;
        let original = conn.redirected.original;
        if let Err(err) = destination::check(settings, &host, original, conn.local, &addrs) {
            return refuse(&mut audit, err);
        }
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let absolute = format!("http://{}:{port}{path}", host_for_uri(&host));
    match absolute.parse::<Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => {
            return refuse(
                &mut audit,
                ProxyError::BadRequest("request target is not a valid URL".into()),
            )
        }
    }
    crate::plain::handle(shared, req, sandbox).await
}

/// The request's host: an absolute-form target's, else `Host`'s, without a port.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    if let Some(host) = req.uri().host() {
        return normalize_host(host);
    }
    let value = req.headers().get(header::HOST)?.to_str().ok()?;
    let authority = value.parse::<http::uri::Authority>().ok()?;
    normalize_host(authority.host())
}
