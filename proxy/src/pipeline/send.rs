//! The send stage: one attempt is the swap stage's request handed to the
//! pooled upstream client. The replay layer asks for a second attempt.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::{Request, Response};

use crate::body::{boxed, Metered, ProxyBody};
use crate::error::ProxyError;
use crate::pipeline::body_plan::BodyPlan;
use crate::pipeline::swap_request::{build, Outgoing};
use crate::swap::Swapper;
use crate::upstream::Upstream;

/// Builds and sends one attempt of a request. A trait so the replay layer
/// can be tested against a scripted upstream.
#[async_trait::async_trait]
pub(crate) trait Attempt: Sync {
    /// The request with the swapper's current tokens.
    async fn build(
        &self,
        swapper: &mut Swapper,
        plan: &mut BodyPlan,
    ) -> Result<Request<ProxyBody>, ProxyError>;

    /// Sends it and waits for the answer's head.
    async fn send(&self, request: Request<ProxyBody>) -> Result<Response<ProxyBody>, ProxyError>;
}

/// The real attempt: swap, then the pooled client.
pub(crate) struct UpstreamAttempt<'a> {
    pub upstream: &'a Upstream,
    pub out: &'a Outgoing,
    /// The response firewall will read the answer.
    pub guarded: bool,
    pub add_via: bool,
    /// The audit's `request_bytes`.
    pub request_bytes: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl Attempt for UpstreamAttempt<'_> {
    async fn build(
        &self,
        swapper: &mut Swapper,
        plan: &mut BodyPlan,
    ) -> Result<Request<ProxyBody>, ProxyError> {
        build(self.out, swapper, plan, self.guarded, self.add_via).await
    }

    async fn send(&self, request: Request<ProxyBody>) -> Result<Response<ProxyBody>, ProxyError> {
        let request = metered(request, &self.request_bytes);
        Ok(self.upstream.send(request).await?.map(boxed))
    }
}

/// Counts the body bytes handed to the upstream connection (after swapping
/// and encoding), for this attempt only: not what was read from the client.
fn metered(request: Request<ProxyBody>, counter: &Arc<AtomicU64>) -> Request<ProxyBody> {
    counter.store(0, Ordering::Relaxed);
    let counter = counter.clone();
    request.map(|body| boxed(Metered::new(body, counter)))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::BodyExt;

    use super::*;
    use crate::body::full;

    #[tokio::test]
    async fn each_attempt_counts_its_own_bytes() {
        let counter = Arc::new(AtomicU64::new(0));
        for _ in 0..2 {
            let request = Request::new(full(Bytes::from_static(b"12345")));
            let request = metered(request, &counter);
            request.into_body().collect().await.unwrap();
            assert_eq!(counter.load(Ordering::Relaxed), 5);
        }
    }
}
