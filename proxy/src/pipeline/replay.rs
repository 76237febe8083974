//! The refresh-and-replay layer, around the send stage. An expired-token
//! answer to a request whose OAuth token sat in its provider's injection slot
//! asks the token source for a fresh token (passing the one that failed, so
//! concurrent callers share one refresh) and, when a token changed and the
//! body was kept (the replay buffer: [`BodyPlan::replayable`]), sends the
//! request once more. Anything else passes through untouched.

use std::future::Future;

use airlock_vault_client::{
    BindingKind, ExpiredSignal, ExposeSecret, Resolved, SandboxId, TokenError, TokenSource,
};
use http::header::{self, HeaderMap};
use http::Response;

use crate::audit::Outcome;
use crate::body::{with_trailers, ProxyBody};
use crate::body_swap::{self, Collected};
use crate::error::ProxyError;
use crate::pipeline::body_plan::BodyPlan;
use crate::pipeline::resend;
use crate::pipeline::send::Attempt;
use crate::swap::Swapper;

/// How much of an expired-token answer is read to look for a body marker.
const MARKER_READ_LIMIT: usize = 64 * 1024;

/// The answer for the sandbox, and what the layer did when it saw an
/// expired-token answer (`None`: it did not see one).
pub(crate) struct Replayed {
    pub response: Response<ProxyBody>,
    pub outcome: Option<Outcome>,
}

/// Looks at the first answer; refreshes and replays once when it says an
/// injected token expired.
///
/// Not an `async fn`: whether the answer can mean expiry is known without
/// waiting, and only then is the rest (kilobytes of state) boxed, so an
/// ordinary answer does not make every request's future larger.
pub(crate) fn refresh_and_replay<'a, A: Attempt>(
    attempt: &'a A,
    tokens: &'a dyn TokenSource,
    sandbox: &'a SandboxId,
    swapper: &'a mut Swapper,
    plan: &'a mut BodyPlan,
    response: Response<ProxyBody>,
) -> impl Future<Output = Result<Replayed, ProxyError>> + Send + 'a {
    let candidates = expiry_candidates(swapper, &response);
    async move {
        if candidates.is_empty() {
            return Ok(Replayed {
                response,
                outcome: None,
            });
        }
        Box::pin(replay_expired(
            attempt, tokens, sandbox, swapper, plan, response, candidates,
        ))
        .await
    }
}

/// `(placeholder, signals)` of the OAuth tokens that sat in their slot and
/// whose provider says an answer like this one can mean they expired.
type Candidates = Vec<(String, Vec<ExpiredSignal>)>;

async fn replay_expired(
    attempt: &impl Attempt,
    tokens: &dyn TokenSource,
    sandbox: &SandboxId,
    swapper: &mut Swapper,
    plan: &mut BodyPlan,
    response: Response<ProxyBody>,
    candidates: Candidates,
) -> Result<Replayed, ProxyError> {
    let (expired, response) = expired(candidates, response).await;
    if expired.is_empty() {
        return Ok(Replayed {
            response,
            outcome: None,
        });
    }
    let outcome = match refresh_tokens(tokens, sandbox, swapper, &expired).await? {
        false => Outcome::ExpiredTokenNotRefreshed,
        true if plan.replayable() => {
            let replay = attempt.build(swapper, plan).await?;
            let sent = resend::send(attempt, swapper, plan, replay).await?;
            return Ok(Replayed {
                response: sent.response,
                outcome: Some(Outcome::RefreshedReplayed),
            });
        }
        true => Outcome::RefreshedNotReplayed,
    };
    Ok(Replayed {
        response,
        outcome: Some(outcome),
    })
}

/// The tokens `response` may say expired, found without reading its body.
fn expiry_candidates(swapper: &Swapper, response: &Response<ProxyBody>) -> Candidates {
    let status = response.status().as_u16();
    if !bearer_error_may_mean_expiry(response.headers()) {
        return Vec::new();
    }
    swapper
        .swapped()
        .filter(|(_, r)| matches!(r.binding.kind, BindingKind::OAuth { .. }))
        .filter(|(p, r)| swapper.in_injection_slot(p, r.binding.inject.as_ref()))
        .map(|(p, r)| {
            let signals = r
                .binding
                .expired_on
                .iter()
                .filter(|s| s.status == status)
                .cloned()
                .collect::<Vec<_>>();
            (p.to_owned(), signals)
        })
        .filter(|(_, signals)| !signals.is_empty())
        .collect()
}

/// Placeholders among `candidates` whose injected OAuth token `response`
/// says expired. Reads a little of the body when a provider's rule needs a
/// marker; the answer comes back whole either way.
async fn expired(
    candidates: Candidates,
    response: Response<ProxyBody>,
) -> (Vec<String>, Response<ProxyBody>) {
    let unconditional: Vec<String> = candidates
        .iter()
        .filter(|(_, s)| s.iter().any(|s| s.body_contains.is_none()))
        .map(|(p, _)| p.clone())
        .collect();
    if !unconditional.is_empty() {
        return (unconditional, response);
    }

    let (parts, body) = response.into_parts();
    match body_swap::collect_up_to(body, MARKER_READ_LIMIT).await {
        Ok(Collected::Whole(data, trailers)) => {
            let text = String::from_utf8_lossy(&data);
            let hit: Vec<String> = candidates
                .iter()
                .filter(|(_, s)| {
                    s.iter()
                        .any(|s| s.body_contains.as_deref().is_some_and(|m| text.contains(m)))
                })
                .map(|(p, _)| p.clone())
                .collect();
            (
                hit,
                Response::from_parts(parts, with_trailers(data, trailers)),
            )
        }
        Ok(Collected::Partial { read, rest }) => {
            let body = body_swap::streaming_passthrough(read, rest);
            (Vec::new(), Response::from_parts(parts, body))
        }
        Err(e) => {
            let err = ProxyError::Upstream(format!("reading the upstream's answer: {e}"));
            (Vec::new(), err.to_response())
        }
    }
}

/// Asks for fresh tokens for the OAuth bindings the answer said expired.
/// `Ok(true)` when at least one token changed.
async fn refresh_tokens(
    tokens: &dyn TokenSource,
    sandbox: &SandboxId,
    swapper: &mut Swapper,
    expired: &[String],
) -> Result<bool, ProxyError> {
    let used: Vec<(String, Resolved)> = swapper
        .swapped()
        .filter(|(p, _)| expired.iter().any(|e| e == p))
        .map(|(p, r)| (p.to_owned(), r.clone()))
        .collect();
    let mut changed = false;
    for (placeholder, old) in used {
        match tokens
            .refresh(sandbox, &placeholder, &old.token.to_secret_string())
            .await
        {
            Ok(fresh) => {
                if fresh.token.expose_secret() != old.token.expose_secret() {
                    changed = true;
                    swapper.replace_token(&placeholder, fresh);
                }
            }
            Err(err @ TokenError::ReconnectNeeded { .. }) => return Err(err.into()),
            Err(err) => {
                tracing::warn!(binding = %old.binding.id, error = %err, "refresh after an expired-token answer failed")
            }
        }
    }
    Ok(changed)
}

/// RFC 6750: an answer whose `WWW-Authenticate` names an error other than
/// `invalid_token` (`insufficient_scope`, `invalid_request`) is not about an
/// expired token, whatever its status.
fn bearer_error_may_mean_expiry(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .all(|v| {
            let lower = v.to_ascii_lowercase();
            match lower.find("error=") {
                None => true,
                Some(at) => lower[at + 6..]
                    .trim_start_matches('"')
                    .starts_with("invalid_token"),
            }
        })
}

#[cfg(test)]
mod tests;
