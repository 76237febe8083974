//! One intercepted (or plain `http://`) request, as stages:
//!
//! 1. [`body_plan`]: read as much of the body as the replay bound allows;
//! 2. [`swap_request`]: placeholders in URL, headers, Basic, body, trailers
//!    swapped for tokens (or refused);
//! 3. [`send`]: the pooled upstream client; [`resend`]: once more when the
//!    upstream closed the connection before answering (every send: the
//!    first, the replay, the step-up's);
//! 4. [`replay`]: on an expired-token answer, refresh and replay once;
//!    [`scope`]: an insufficient-scope answer gets the step-up headers;
//! 5. [`crate::screen`]: the response firewall, the only way an upstream
//!    answer becomes a [`ToSandbox`];
//! 6. [`close`]: the audit line, metrics and console entry, written once.
//!
//! WebSocket handshakes take [`websocket`] instead of stages 1–4.

pub(crate) mod body_plan;
pub(crate) mod close;
pub(crate) mod consent;
pub(crate) mod replay;
pub(crate) mod resend;
pub(crate) mod scope;
pub(crate) mod send;
pub(crate) mod swap_request;
pub(crate) mod websocket;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use hyper::body::Incoming;

use crate::audit::AuditRecord;
use crate::body::{boxed, DrainLimit, DrainOnDrop};
use crate::error::ProxyError;
use crate::headers::strip_hop_by_hop;
use crate::screen::ToSandbox;
use crate::shared::Shared;
use crate::swap::Swapper;
use crate::wire_choice;
use body_plan::{plan_body, BodyPlan};
use close::{on_body_end_sized, refuse};
use replay::{refresh_and_replay, Replayed};
use send::{Attempt, UpstreamAttempt};
pub use swap_request::Outgoing;

/// Sends the request and streams the answer back to the sandbox.
///
/// Its future is allocated once per request, so it is kept small: not an
/// `async fn` (whose arguments would be stored twice: as given, and moved
/// into the body), and the rare waits (consent, refresh and replay, step-up,
/// signed requests) are boxed where they happen.
///
/// `shared` is `&Shared` or an `Arc<Shared>`: with the latter the future is
/// `'static`, and a connection's service can return it as it is, without an
/// outer future that would keep the arguments a second time.
#[allow(clippy::manual_async_fn)] // see above: an `async fn` stores its arguments twice
pub(crate) fn forward<S>(
    shared: S,
    mut out: Outgoing,
    body: Incoming,
    mut swapper: Swapper,
    mut audit: AuditRecord,
) -> impl Future<Output = ToSandbox> + Send
where
    S: Deref<Target = Shared> + Send + Sync,
{
    async move {
        let request_counter = OnceLock::new();
        let done = stages(
            &shared,
            &mut out,
            body,
            &mut swapper,
            &mut audit,
            &request_counter,
        )
        .await;
        // Made only when there is something to note or count; shared with
        // the request body (and its swapper's fork) that may still stream.
        audit.marks = swapper.marks();
        audit.request_counter = request_counter.into_inner();
        match done {
            Ok((answer, answer_size)) => on_body_end_sized(audit, answer, answer_size),
            Err(err) => refuse(&mut audit, err),
        }
    }
}

/// The stages from the body plan to the response firewall; the one place
/// that refuses is the caller.
async fn stages(
    shared: &Shared,
    out: &mut Outgoing,
    body: Incoming,
    swapper: &mut Swapper,
    audit: &mut AuditRecord,
    request_counter: &OnceLock<Arc<AtomicU64>>,
) -> Result<(ToSandbox, Option<wire_choice::AnswerSize>), ProxyError> {
    strip_hop_by_hop(&mut out.headers);
    let mut plan = drained_when_dropped(plan_body(shared, &out.headers, body, audit).await?);
    let out = &*out;
    let screening = shared.settings.scrub_responses;
    // Every token the sandbox could obtain, not only this request's.
    let guarded = screening && shared.ledger.firewall(&audit.sandbox).await.is_some();
    let (start, measured) = shared
        .settings
        .upstream_protocol
        .plan(&audit.host, out.version);
    // Plain `http://` has no ALPN: both wires are HTTP/1.1.
    let measured = measured && out.scheme == "https" && !wire_choice::pinned(&out.headers);
    // The pick counts this request as awaiting its host's answer until it
    // is recorded below (or dropped with a refusal); a request held for
    // consent counts too, which at worst offers HTTP/2 a little early.
    let pick = measured.then(|| shared.wire_choice.choose(out.authority.as_str(), start));
    let wire = pick.as_ref().map_or(start, |p| p.wire);
    let attempt = UpstreamAttempt {
        upstream: shared.upstream(),
        out,
        guarded,
        add_via: shared.settings.add_via,
        wire,
        request_counter,
    };
    let asked_wait = consent::asked_wait(&out.headers);
    let built = match attempt.build(swapper, &mut plan).await {
        Ok(request) => Ok((request, None)),
        Err(err) if consent::needs_human(&err).is_none() => Err(err),
        // Boxed: rare, and it would make every request's future larger.
        Err(err) => {
            Box::pin(consent::hold_until_built(
                shared, &attempt, swapper, &mut plan, audit, asked_wait, err,
            ))
            .await
        }
    };
    let (request, mut hold) = built?;
    audit.swapped = swapper.swapped_ids();
    let sent = Instant::now();
    let resend::Sent { response, resent } =
        resend::send(&attempt, swapper, &mut plan, request).await?;
    if resent {
        audit.outcome = crate::audit::Outcome::Resent;
    }
    let answer_size = pick.as_ref().and_then(wire_choice::Pick::answer_size);
    if let Some(pick) = pick {
        shared.wire_choice.record(pick, sent.elapsed());
    }
    let tokens = shared.tokens.as_ref();
    let sandbox = audit.sandbox.clone();
    let Replayed { response, outcome } =
        refresh_and_replay(&attempt, tokens, &sandbox, swapper, &mut plan, response).await?;
    if let Some(outcome) = outcome {
        audit.outcome = outcome;
    }
    let (insufficient, response) = scope::screen_scopes(tokens, &sandbox, swapper, response).await;
    let mut response = match insufficient {
        None => response,
        Some(lacking) => {
            audit.outcome = crate::audit::Outcome::InsufficientScope;
            let stepped = consent::StepUpWait {
                shared,
                attempt: &attempt,
                asked: asked_wait,
                audit,
            };
            // Boxed: rare, and it would make every request's future larger.
            let (response, still_lacking) =
                Box::pin(stepped.wait_and_resend(swapper, &mut plan, &mut hold, lacking, response))
                    .await?;
            if !still_lacking {
                audit.outcome = crate::audit::Outcome::Ok;
            }
            response
        }
    };
    if let Some(h) = &hold {
        // The agent sees a slow answer; this says why.
        if let Ok(v) = http::HeaderValue::from_str(&h.since.elapsed().as_millis().to_string()) {
            response.headers_mut().insert("x-airlock-held-ms", v);
        }
    }
    audit.upstream_time = Some(sent.elapsed());
    audit.upstream_version = Some(response.version());
    audit.status = response.status().as_u16();
    let firewall = if screening {
        // Read again: this request's swaps and refreshes are in it now (its
        // freshness was seen to before the request went).
        let current = shared.ledger.current_firewall(&audit.sandbox);
        let narrowed = swapper.narrowed_swaps();
        if narrowed.is_empty() {
            current
        } else {
            shared
                .ledger
                .firewall_for_narrowed(&audit.sandbox, &narrowed)
        }
    } else {
        None
    };
    let decoding = crate::screen::Decoding {
        max: shared.settings.max_decoded_body,
        budget: &shared.decompression,
    };
    let answer = crate::screen::screen(response, firewall, decoding).await?;
    Ok((answer, answer_size))
}

/// A body streamed once is drained when the upstream answers before reading
/// it all (an early 401); what the upstream connection took is counted once,
/// by the attempt that sends it (`send::metered`).
fn drained_when_dropped(plan: BodyPlan) -> BodyPlan {
    match plan {
        BodyPlan::Stream { read, rest, mode } => BodyPlan::Stream {
            read,
            rest: boxed(DrainOnDrop::new(rest, DrainLimit::DEFAULT)),
            mode,
        },
        BodyPlan::Untouched { read, rest } => BodyPlan::Untouched {
            read,
            rest: boxed(DrainOnDrop::new(rest, DrainLimit::DEFAULT)),
        },
        other => other,
    }
}
