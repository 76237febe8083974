//! A request sent once more when the upstream closed the connection before
//! any of its answer came. The common cause is a race no client avoids: a
//! pooled keep-alive connection the upstream closes (HTTP/1.1 has no GOAWAY)
//! just as a request goes out on it. hyper-util sends again a request it
//! never wrote; this layer covers one it wrote.
//!
//! Like browsers and Go's `net/http`, only what may be sent twice is: an
//! idempotent method (RFC 9110 9.2.2) or a request with an `Idempotency-Key`,
//! or any request the upstream said it did not process (RFC 9113 8.7). And
//! only when the body was kept ([`BodyPlan::replayable`]): a streamed body
//! is gone once sent. Once: a second close is the sandbox's 502.
//!
//! Every send of the pipeline goes through [`send`]: the first, the replay
//! after a refresh, and the resend after a step-up. The later two follow a
//! wait (a refresh, a human) on a pooled connection the upstream may have
//! closed meanwhile, so they meet the race more often than the first.

use http::{HeaderMap, Method, Request, Response};

use crate::body::ProxyBody;
use crate::error::{ClosedAfter, ProxyError};
use crate::pipeline::body_plan::BodyPlan;
use crate::pipeline::send::Attempt;
use crate::swap::Swapper;

/// How far a request may be sent again, decided before it is sent (the
/// request itself is gone by the time its send fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// After any close before the answer.
    AfterClose,
    /// Only when the upstream said it did not process it.
    IfUnprocessed,
    /// Never: the body was streamed, so nothing is left to send again.
    Never,
}

impl Resend {
    pub fn of(method: &Method, headers: &HeaderMap, plan: &BodyPlan) -> Self {
        if !plan.replayable() {
            Self::Never
        } else if is_idempotent(method) || has_idempotency_key(headers) {
            Self::AfterClose
        } else {
            Self::IfUnprocessed
        }
    }

    /// Whether `err` (the first send's) allows a second.
    pub fn allows(self, err: &ProxyError) -> bool {
        let ProxyError::UpstreamClosed { after, .. } = err else {
            return false;
        };
        match self {
            Self::AfterClose => true,
            Self::IfUnprocessed => *after == ClosedAfter::Unprocessed,
            Self::Never => false,
        }
    }
}

/// RFC 9110 9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The IETF draft's `Idempotency-Key` (and the `X-` form Go's `net/http`
/// honours too): the client says the server drops a repeat.
fn has_idempotency_key(headers: &HeaderMap) -> bool {
    headers.contains_key("idempotency-key") || headers.contains_key("x-idempotency-key")
}

/// What [`send`] got: the answer, and whether it took a second send.
pub(crate) struct Sent {
    pub response: Response<ProxyBody>,
    pub resent: bool,
}

/// Sends `request` (built by `attempt` from `plan`); when the upstream
/// closed the connection before answering and the request may be sent
/// twice ([`Resend`]), builds it again from the kept body and sends it once
/// more.
pub(crate) async fn send(
    attempt: &impl Attempt,
    swapper: &mut Swapper,
    plan: &mut BodyPlan,
    request: Request<ProxyBody>,
) -> Result<Sent, ProxyError> {
    let resend = Resend::of(request.method(), request.headers(), plan);
    match attempt.send(request).await {
        Err(err) if resend.allows(&err) => {
            // Boxed: rare, and it would make every request's future larger.
            let response = Box::pin(again(attempt, swapper, plan, err)).await?;
            Ok(Sent {
                response,
                resent: true,
            })
        }
        answer => Ok(Sent {
            response: answer?,
            resent: false,
        }),
    }
}

/// The request built again from the kept body (with the swapper's current
/// tokens) and sent once more, after `first` (the first send's error, which
/// [`Resend::allows`]).
async fn again(
    attempt: &impl Attempt,
    swapper: &mut Swapper,
    plan: &mut BodyPlan,
    first: ProxyError,
) -> Result<Response<ProxyBody>, ProxyError> {
    tracing::info!(error = %first, "the upstream closed the connection before answering; sending the request again");
    let request = attempt.build(swapper, plan).await?;
    attempt.send(request).await
}

#[cfg(test)]
mod tests;
