//! The per-connection service inside intercepted TLS: each request's
//! authority is checked against the CONNECT target, then it enters the
//! request pipeline (or the WebSocket relay).

use std::sync::Arc;

use airlock_vault_client::{normalize_host, SandboxId};
use bytes::Bytes;
use http::header;
use http::uri::{Authority, PathAndQuery};
use http::Request;
use hyper::body::Incoming;

use crate::audit::{AuditRecord, Mode};
use crate::error::ProxyError;
use crate::parse::host_for_uri;
use crate::pipeline::close::refuse;
use crate::pipeline::websocket::{is_upgrade, websocket};
use crate::pipeline::{forward, Outgoing};
use crate::screen::ToSandbox;
use crate::shared::Shared;
use crate::swap::Swapper;

/// What an intercepted connection was opened for.
pub(crate) struct InterceptCtx {
    pub sandbox: SandboxId,
    pub host: String,
    pub port: u16,
    /// Set when the connection may carry no request (the SNI named another
    /// host than CONNECT did; a redirected connection's destination did not
    /// agree with its SNI): every request gets this error.
    pub refusal: Option<ProxyError>,
}

/// What every request on one intercepted connection shares: made once, so a
/// request takes the host and the upstream authority without copying them.
pub(crate) struct Connection {
    pub ctx: InterceptCtx,
    host: Arc<str>,
    /// `host[:port]` for the upstream URL; `None` when the host cannot be one.
    authority: Option<Authority>,
}

impl Connection {
    pub fn new(ctx: InterceptCtx) -> Self {
        let host = host_for_uri(&ctx.host);
        let text = if ctx.port == 443 {
            host
        } else {
            format!("{host}:{}", ctx.port)
        };
        Self {
            host: Arc::from(ctx.host.as_str()),
            authority: Authority::from_maybe_shared(Bytes::from(text)).ok(),
            ctx,
        }
    }
}

/// What a request on an intercepted connection goes on to, decided
/// without waiting.
pub(super) enum Route {
    /// Refused (or answered) already.
    Answered(ToSandbox),
    /// airlock's own host.
    Internal {
        method: http::Method,
        path: String,
        audit: AuditRecord,
    },
    WebSocket(Request<Incoming>, Authority, Swapper, AuditRecord),
    Forward(Outgoing, Incoming, Swapper, AuditRecord),
}

pub(super) fn route(shared: &Shared, req: Request<Incoming>, conn: &Connection) -> Route {
    let ctx = &conn.ctx;
    let mut audit = shared.audit(
        ctx.sandbox.clone(),
        Mode::Intercept,
        req.method().as_str(),
        conn.host.clone(),
        ctx.port,
        crate::telemetry::RequestPath::of(req.uri()),
    );
    let refused = |audit: &mut AuditRecord, err| Route::Answered(refuse(audit, err));
    if let Some(err) = &ctx.refusal {
        return refused(&mut audit, err.clone());
    }
    if let Some(err) = crate::headers::head_too_large(&req, shared.settings.max_header_bytes) {
        return refused(&mut audit, err);
    }
    if let Err(err) = check_authority(
        &req,
        &ctx.host,
        ctx.port,
        conn.authority.as_ref().map(Authority::as_str),
    ) {
        return refused(&mut audit, err);
    }
    if crate::internal::is_internal(&ctx.host) {
        return Route::Internal {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            audit,
        };
    }
    let Some(authority) = conn.authority.clone() else {
        let err = ProxyError::BadRequest(format!("{} cannot be a URL's host", ctx.host));
        return refused(&mut audit, err);
    };
    let swapper = shared.swapper(ctx.sandbox.clone(), conn.host.clone());
    if is_upgrade(&req) {
        return Route::WebSocket(req, authority, swapper, audit);
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let (parts, body) = req.into_parts();
    let out = Outgoing {
        method: parts.method,
        headers: parts.headers,
        scheme: "https",
        authority,
        path_and_query,
        version: parts.version,
    };
    Route::Forward(out, body, swapper, audit)
}

/// The answer to a request [`route`] did not answer at once.
pub(super) async fn answer_rare(shared: Arc<Shared>, route: Route) -> ToSandbox {
    match route {
        Route::Answered(answer) => answer,
        Route::Internal {
            method,
            path,
            audit,
        } => crate::internal::handle(&shared, &method, &path, audit).await,
        Route::WebSocket(req, authority, swapper, audit) => {
            websocket(&shared, req, authority, swapper, audit).await
        }
        Route::Forward(out, body, swapper, audit) => {
            forward(shared, out, body, swapper, audit).await
        }
    }
}

/// `Host`/`:authority` must name the host and port the connection was opened for.
/// `canonical` is the connection's own `host[:port]`: a `Host` header
/// spelled exactly so (ignoring case) needs no parsing.
fn check_authority<B>(
    req: &Request<B>,
    host: &str,
    port: u16,
    canonical: Option<&str>,
) -> Result<(), ProxyError> {
    let from_uri = req.uri().authority().cloned();
    let from_header = match req.headers().get(header::HOST) {
        Some(value)
            if canonical.is_some_and(|c| value.as_bytes().eq_ignore_ascii_case(c.as_bytes())) =>
        {
            None
        }
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.parse::<Authority>().ok())
                .ok_or_else(|| {
                    ProxyError::BadRequest("Host header is not a valid host[:port]".into())
                })?,
        ),
        None => None,
    };
    if from_uri.is_none() && from_header.is_none() && !req.headers().contains_key(header::HOST) {
        return Err(ProxyError::BadRequest(
            "request names no host (Host header missing)".into(),
        ));
    }
    for authority in from_uri.into_iter().chain(from_header) {
        // `host` is normalized already: equal ignoring case is the same
        // name, without normalizing (allocating) again.
        let same_host = authority.host().eq_ignore_ascii_case(host)
            || normalize_host(authority.host()).as_deref() == Some(host);
        let same_port = authority.port_u16().unwrap_or(443) == port;
        if !same_host || !same_port || authority.as_str().contains('@') {
            return Err(ProxyError::Misdirected(format!(
                "request for {authority} on a connection opened (CONNECT) for {host}:{port}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_must_match_the_connect_target() {
        let req = Request::builder()
            .uri("/x")
            .header(header::HOST, "API.github.test")
            .body(())
            .unwrap();
        assert!(check_authority(&req, "api.github.test", 443, None).is_ok());
        let req = Request::builder()
            .uri("/x")
            .header(header::HOST, "evil.test")
            .body(())
            .unwrap();
        assert!(matches!(
            check_authority(&req, "api.github.test", 443, None),
            Err(ProxyError::Misdirected(_))
        ));
        let req = Request::builder()
            .uri("https://api.github.test:8443/x")
            .body(())
            .unwrap();
        assert!(check_authority(&req, "api.github.test", 443, None).is_err());
        let req = Request::builder().uri("/x").body(()).unwrap();
        assert!(check_authority(&req, "api.github.test", 443, None).is_err());
    }

    #[test]
    fn the_connections_own_spelling_is_taken_as_is_and_nothing_else_is() {
        let canonical = Some("api.github.test:8443");
        let with_host = |host: &str, uri: &str| {
            Request::builder()
                .uri(uri)
                .header(header::HOST, host)
                .body(())
                .unwrap()
        };
        let ok = |req: &Request<()>| check_authority(req, "api.github.test", 8443, canonical);
        assert!(ok(&with_host("api.github.test:8443", "/x")).is_ok());
        assert!(ok(&with_host("API.GitHub.test:8443", "/x")).is_ok());
        // Anything else is parsed and judged as before.
        assert!(ok(&with_host("api.github.test", "/x")).is_err());
        assert!(ok(&with_host("u@api.github.test:8443", "/x")).is_err());
        assert!(ok(&with_host("evil.test:8443", "/x")).is_err());
        // The URI's authority is still checked beside a matching Host.
        let req = with_host("api.github.test:8443", "https://evil.test:8443/x");
        assert!(matches!(ok(&req), Err(ProxyError::Misdirected(_))));
    }
}
