//! The per-connection service inside intercepted TLS: each request's
//! authority is checked against the CONNECT target, then it enters the
//! request pipeline (or the WebSocket relay).

use airlock_vault_client::{normalize_host, SandboxId};
use http::header;
use http::uri::Authority;
use http::Request;
use hyper::body::Incoming;

use crate::audit::Mode;
use crate::error::ProxyError;
use crate::parse::host_for_uri;
use crate::pipeline::close::refuse;
use crate::pipeline::websocket::{is_upgrade, websocket};
use crate::pipeline::{forward, Outgoing};
use crate::screen::ToSandbox;
use crate::shared::Shared;

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

pub(super) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
    ctx: &InterceptCtx,
) -> ToSandbox {
    let mut audit = shared.audit(
        ctx.sandbox.clone(),
        Mode::Intercept,
        req.method().as_str(),
        &ctx.host,
        ctx.port,
        req.uri().path(),
    );
    if let Some(err) = &ctx.refusal {
        return refuse(&mut audit, err.clone());
    }
    if let Err(err) = check_authority(&req, &ctx.host, ctx.port) {
        return refuse(&mut audit, err);
    }
    if crate::internal::is_internal(&ctx.host) {
        let path = req.uri().path().to_owned();
        return crate::internal::handle(shared, req.method(), &path, audit).await;
    }
    let swapper = shared.swapper(ctx.sandbox.clone(), ctx.host.clone());
    let authority = if ctx.port == 443 {
        ctx.host.clone()
    } else {
        format!("{}:{}", host_for_uri(&ctx.host), ctx.port)
    };
    if is_upgrade(&req) {
        return websocket(shared, req, authority, swapper, audit).await;
    }
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let (parts, body) = req.into_parts();
    let out = Outgoing {
        method: parts.method,
        headers: parts.headers,
        scheme: "https",
        authority,
        path_and_query: pq,
    };
    forward(shared, out, body, swapper, audit).await
}

/// `Host`/`:authority` must name the host and port the connection was opened for.
fn check_authority<B>(req: &Request<B>, host: &str, port: u16) -> Result<(), ProxyError> {
    let mut named = Vec::with_capacity(2);
    if let Some(authority) = req.uri().authority() {
        named.push(authority.clone());
    }
    if let Some(value) = req.headers().get(header::HOST) {
        let authority = value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<Authority>().ok())
            .ok_or_else(|| {
                ProxyError::BadRequest("Host header is not a valid host[:port]".into())
            })?;
        named.push(authority);
    }
    if named.is_empty() {
        return Err(ProxyError::BadRequest(
            "request names no host (Host header missing)".into(),
        ));
    }
    for authority in named {
        let same_host = normalize_host(authority.host()).as_deref() == Some(host);
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
        assert!(check_authority(&req, "api.github.test", 443).is_ok());
        let req = Request::builder()
            .uri("/x")
            .header(header::HOST, "evil.test")
            .body(())
            .unwrap();
        assert!(matches!(
            check_authority(&req, "api.github.test", 443),
            Err(ProxyError::Misdirected(_))
        ));
        let req = Request::builder()
            .uri("https://api.github.test:8443/x")
            .body(())
            .unwrap();
        assert!(check_authority(&req, "api.github.test", 443).is_err());
        let req = Request::builder().uri("/x").body(()).unwrap();
        assert!(check_authority(&req, "api.github.test", 443).is_err());
    }
}
