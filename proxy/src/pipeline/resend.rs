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

use http::{HeaderMap, Method, Response};

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

/// The request built again from the kept body (with the swapper's current
/// tokens) and sent once more, after `first` (the first send's error, which
/// [`Resend::allows`]).
pub(crate) async fn again(
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
