//! One intercepted (or plain `http://`) request, as stages:
//!
//! 1. [`body_plan`]: read as much of the body as the replay bound allows;
//! 2. [`swap_request`]: placeholders in URL, headers, Basic, body, trailers
//!    swapped for tokens (or refused);
//! 3. [`send`]: the pooled upstream client;
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
pub(crate) mod scope;
pub(crate) mod send;
pub(crate) mod swap_request;
pub(crate) mod websocket;

#[cfg(test)]
mod tests;

use std::time::Instant;

use hyper::body::Incoming;

use crate::audit::AuditRecord;
use crate::body::{boxed, DrainLimit, DrainOnDrop, Metered};
use crate::error::ProxyError;
use crate::headers::strip_hop_by_hop;
use crate::screen::ToSandbox;
use crate::shared::Shared;
use crate::swap::Swapper;
use body_plan::{plan_body, BodyPlan};
use close::{on_body_end, refuse};
use replay::{refresh_and_replay, Replayed};
use send::{Attempt, UpstreamAttempt};
pub use swap_request::Outgoing;

/// Sends the request and streams the answer back to the sandbox.
pub(crate) async fn forward(
    shared: &Shared,
    mut out: Outgoing,
    body: Incoming,
    mut swapper: Swapper,
    mut audit: AuditRecord,
) -> ToSandbox {
    strip_hop_by_hop(&mut out.headers);
    let plan = match plan_body(shared, &out.headers, body, &audit).await {
        Ok(plan) => plan,
        Err(err) => return refuse(&mut audit, err),
    };
    let mut plan = match plan {
        BodyPlan::Stream { read, rest, mode } => BodyPlan::Stream {
            read,
            rest: boxed(DrainOnDrop::new(rest, DrainLimit::DEFAULT)),
            mode,
        },
        // Both are drained when the upstream answers before reading them all
        // (an early 401); only what the upstream connection took is counted.
        BodyPlan::Untouched { read, rest } => BodyPlan::Untouched {
            read,
            rest: boxed(Metered::new(
                boxed(DrainOnDrop::new(rest, DrainLimit::DEFAULT)),
                audit.request_bytes.clone(),
            )),
        },
        other => other,
    };
    let screening = shared.settings.scrub_responses;
    // Every token the sandbox could obtain, not only this request's.
    let guarded = screening && shared.ledger.firewall(&audit.sandbox).await.is_some();
    let attempt = UpstreamAttempt {
        upstream: &shared.upstream,
        out: &out,
        guarded,
        add_via: shared.settings.add_via,
        request_bytes: audit.request_bytes.clone(),
    };
    audit.rules_dry_run = swapper.dry_run_marks();
    let asked_wait = consent::asked_wait(&out.headers);
    let mut hold: Option<consent::Hold> = None;
    let request = loop {
        let err = match attempt.build(&mut swapper, &mut plan).await {
            Ok(r) => break r,
            Err(err) => err,
        };
        let Some(binding) = consent::needs_human(&err).map(str::to_owned) else {
            return refuse(&mut audit, err);
        };
        let (link, sandbox_wait) = consent::connect_url(shared, &audit.sandbox, &binding).await;
        let wait = consent::effective_wait(asked_wait, sandbox_wait, shared);
        let with_link = |err: ProxyError| match (err, &link) {
            (ProxyError::Token(error), Some(url)) => ProxyError::ConsentNeeded {
                error,
                connect_url: url.clone(),
            },
            (err, _) => err,
        };
        // Only a request whose body is kept can wait: nothing was sent yet.
        if wait.is_zero() || link.is_none() || !plan.replayable() {
            return refuse(&mut audit, with_link(err));
        }
        if hold.is_none() {
            let reason = consent::reason_of(&err);
            match consent::Hold::begin(shared, &audit, &binding, reason, link.as_deref(), wait) {
                Ok(h) => hold = Some(h),
                Err(full) => return refuse(&mut audit, full),
            }
        }
        if !hold.as_ref().expect("just set").tick().await {
            return refuse(&mut audit, with_link(err));
        }
    };
    audit.swapped = swapper
        .swapped_bindings()
        .iter()
        .map(|b| b.id.clone())
        .collect();
    audit.inert = swapper.inert_marks();
    let sent = Instant::now();
    let response = match attempt.send(request).await {
        Ok(r) => r,
        Err(err) => return refuse(&mut audit, err),
    };
    let tokens = shared.tokens.as_ref();
    let sandbox = audit.sandbox.clone();
    let replayed = refresh_and_replay(
        &attempt,
        tokens,
        &sandbox,
        &mut swapper,
        &mut plan,
        response,
    )
    .await;
    let response = match replayed {
        Ok(Replayed { response, outcome }) => {
            if let Some(outcome) = outcome {
                audit.outcome = outcome;
            }
            response
        }
        Err(err) => return refuse(&mut audit, err),
    };
    let (mut insufficient, mut response) =
        scope::screen_scopes(tokens, &sandbox, &swapper, response).await;
    // A step-up the request may wait for: hold until the token changes
    // (the user consented), then build and send again.
    while let Some(lacking) = insufficient.take() {
        audit.outcome = crate::audit::Outcome::InsufficientScope;
        let sandbox_wait = match asked_wait {
            Some(_) => None,
            None => tokens
                .status(&sandbox)
                .await
                .ok()
                .and_then(|s| s.consent_wait_secs),
        };
        let wait = consent::effective_wait(asked_wait, sandbox_wait, shared);
        if wait.is_zero() || !plan.replayable() {
            break;
        }
        if hold.is_none() {
            let link = response
                .headers()
                .get(scope::CONNECT_URL)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match consent::Hold::begin(
                shared,
                &audit,
                &lacking.binding,
                consent::INSUFFICIENT_SCOPE,
                link.as_deref(),
                wait,
            ) {
                Ok(h) => hold = Some(h),
                // No place to wait: the answer, with its step-up link, goes on.
                Err(_) => break,
            }
        }
        let Some(fresh) =
            consent::new_token(tokens, &sandbox, &lacking, hold.as_ref().expect("just set")).await
        else {
            break;
        };
        swapper.replace_token(&lacking.placeholder, fresh);
        let request = match attempt.build(&mut swapper, &mut plan).await {
            Ok(r) => r,
            Err(err) => return refuse(&mut audit, err),
        };
        response = match attempt.send(request).await {
            Ok(r) => r,
            Err(err) => return refuse(&mut audit, err),
        };
        audit.outcome = crate::audit::Outcome::Ok;
        (insufficient, response) = scope::screen_scopes(tokens, &sandbox, &swapper, response).await;
    }
    if let Some(h) = &hold {
        // The agent sees a slow answer; this says why.
        if let Ok(v) = http::HeaderValue::from_str(&h.since.elapsed().as_millis().to_string()) {
            response.headers_mut().insert("x-airlock-held-ms", v);
        }
    }
    audit.upstream_time = Some(sent.elapsed());
    audit.status = response.status().as_u16();
    let firewall = if screening {
        // Asked again: this request's swaps and refreshes are in it now.
        let current = shared.ledger.firewall(&audit.sandbox).await;
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
    match crate::screen::screen(response, firewall, decoding).await {
        Ok(answer) => on_body_end(audit, answer),
        Err(err) => refuse(&mut audit, err),
    }
}
