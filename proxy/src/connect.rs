//! A CONNECT from the sandbox: target, port, the egress decision (before
//! any `200`), the per-sandbox connection cap, then intercept or tunnel.

use std::sync::Arc;

use airlock_vault_client::SandboxId;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::Instrument;

use crate::audit::Mode;
use crate::body::empty;
use crate::error::ProxyError;
use crate::intercept::InterceptCtx;
use crate::parse::parse_connect_target;
use crate::pipeline::close::refuse;
use crate::screen::ToSandbox;
use crate::settings::InterceptMode;
use crate::shared::Shared;

pub(crate) async fn handle(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    sandbox: SandboxId,
) -> ToSandbox {
    let target = req.uri().authority().cloned();
    let mut audit = shared.audit(
        sandbox.clone(),
        Mode::Connect,
        "CONNECT",
        target.as_ref().map_or("-", |a| a.host()),
        target.as_ref().and_then(|a| a.port_u16()).unwrap_or(0),
        "",
    );
    let (host, port) = match parse_connect_target(target.as_ref()) {
        Ok(parsed) => parsed,
        Err(err) => return refuse(&mut audit, err),
    };
    let settings = &shared.settings;
    if crate::internal::is_internal(&host) {
        return internal(shared, req, sandbox, port, audit);
    }
    if let Err(err) = shared.check_port(port) {
        return refuse(&mut audit, err);
    }
    // The destination is judged before the `200`, in every mode: IP
    // literals in any spelling, the operator's lists, every DNS answer.
    // The checked answers are kept by the dialler, so the dials for this
    // connection use them (and any later lookup is checked again).
    let addrs = match shared.dialer.resolve(&host, port).await {
        Ok(addrs) => Some(addrs),
        Err(err) => {
            let err = ProxyError::from(&err);
            // A name that does not resolve is not a refusal: an
            // intercepted request gets a readable 502 for it.
            if !matches!(err, ProxyError::Dns(_)) || !intercepts(shared, &sandbox, &host).await {
                return refuse(&mut audit, err);
            }
            None
        }
    };
    let Some(slot) = shared
        .connections
        .acquire(&sandbox, settings.max_connections_per_sandbox)
    else {
        return refuse(
            &mut audit,
            ProxyError::TooManyConnections {
                sandbox: sandbox.to_string(),
                limit: settings.max_connections_per_sandbox,
            },
        );
    };
    if intercepts(shared, &sandbox, &host).await {
        let ctx = InterceptCtx {
            sandbox,
            host,
            port,
            refusal: None,
        };
        return intercept(shared, req, ctx, slot);
    }
    crate::tunnel::open(shared, req, &host, addrs.unwrap_or_default(), slot, audit).await
}

/// `CONNECT airlock.internal:443`: airlock answers inside the TLS itself,
/// so there is no destination to judge, resolve or dial, and
/// `allowed_ports` does not apply; any other port is refused.
fn internal(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    sandbox: SandboxId,
    port: u16,
    mut audit: crate::audit::AuditRecord,
) -> ToSandbox {
    if port != crate::internal::TLS_PORT {
        return refuse(
            &mut audit,
            crate::internal::wrong_port(port, crate::internal::TLS_PORT),
        );
    }
    let limit = shared.settings.max_connections_per_sandbox;
    let Some(slot) = shared.connections.acquire(&sandbox, limit) else {
        return refuse(
            &mut audit,
            ProxyError::TooManyConnections {
                sandbox: sandbox.to_string(),
                limit,
            },
        );
    };
    let ctx = InterceptCtx {
        sandbox,
        host: crate::INTERNAL_HOST.to_owned(),
        port,
        refusal: None,
    };
    intercept(shared, req, ctx, slot)
}

/// Answers `200` and terminates the sandbox's TLS once the connection is upgraded.
fn intercept(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    ctx: InterceptCtx,
    slot: crate::limits::Slot,
) -> ToSandbox {
    let shared = shared.clone();
    let span = tracing::debug_span!("intercept", host = %ctx.host, port = ctx.port, sandbox = %ctx.sandbox);
    // Taken out here: the request would keep its room in the task for the
    // tunnel's whole life.
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(
        async move {
            let _slot = slot;
            match upgrade.await {
                Ok(upgraded) => crate::intercept::serve(shared, TokioIo::new(upgraded), ctx).await,
                Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
            }
        }
        .instrument(span),
    );
    ToSandbox::local(Response::new(empty()))
}

/// Whether a CONNECT to `host` has its TLS terminated: every host under
/// `intercept = "all"`, bound hosts under `"bound"`, never a passthrough host.
pub(crate) async fn intercepts(shared: &Shared, sandbox: &SandboxId, host: &str) -> bool {
    let settings = &shared.settings;
    if settings.passthrough_hosts.iter().any(|p| p.matches(host)) {
        return false;
    }
    settings.intercept == InterceptMode::All || shared.tokens.is_bound_host(sandbox, host).await
}
