//! Plain `http://` requests in absolute form: forwarded through the same
//! request pipeline, but never with a placeholder in them (the swapper
//! refuses every one it finds).

use airlock_vault_client::{normalize_host, SandboxId};
use http::Request;
use hyper::body::Incoming;

use crate::audit::Mode;
use crate::error::ProxyError;
use crate::parse::host_for_uri;
use crate::pipeline::close::refuse;
use crate::pipeline::{forward, Outgoing};
use crate::screen::ToSandbox;
use crate::shared::Shared;

pub(crate) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
    sandbox: SandboxId,
) -> ToSandbox {
    let host = req
        .uri()
        .host()
        .and_then(normalize_host)
        .unwrap_or_default();
    let port = req.uri().port_u16().unwrap_or(80);
    let mut audit = shared.audit(
        sandbox.clone(),
        Mode::Http,
        req.method().as_str(),
        host.as_str(),
        port,
        crate::telemetry::RequestPath::of(req.uri()),
    );
    if host.is_empty() {
        return refuse(
            &mut audit,
            ProxyError::BadRequest("request URL has no valid host".into()),
        );
    }
    if crate::internal::is_internal(&host) {
        // Answered here on its own port, whatever `allowed_ports` says.
        if port != crate::internal::PLAIN_PORT {
            return refuse(
                &mut audit,
                crate::internal::wrong_port(port, crate::internal::PLAIN_PORT),
            );
        }
        let path = req.uri().path().to_owned();
        return crate::internal::handle(shared, req.method(), &path, audit).await;
    }
    if let Err(err) = shared.check_port(port) {
        return refuse(&mut audit, err);
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let (parts, body) = req.into_parts();
    let swapper = shared.swapper(sandbox, host.clone()).plaintext();
    let text = if port == 80 {
        host_for_uri(&host)
    } else {
        format!("{}:{port}", host_for_uri(&host))
    };
    let authority = match http::uri::Authority::try_from(text) {
        Ok(authority) => authority,
        Err(_) => {
            let err = ProxyError::BadRequest(format!("{host} cannot be a URL's host"));
            return refuse(&mut audit, err);
        }
    };
    let out = Outgoing {
        method: parts.method,
        headers: parts.headers,
        scheme: "http",
        authority,
        path_and_query,
        version: parts.version,
    };
    forward(shared, out, body, swapper, audit).await
}
