//! The send stage: one attempt is the swap stage's request handed to the
//! pooled upstream client. The replay layer asks for a second attempt.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use http::{Request, Response};

use crate::body::{boxed, Metered, ProxyBody};
use crate::error::ProxyError;
use crate::pipeline::body_plan::BodyPlan;
use crate::pipeline::swap_request::{build, Outgoing};
use crate::settings::UpstreamWire;
use crate::swap::Swapper;
use crate::upstream::Upstream;

/// Builds and sends one attempt of a request. A trait so the replay layer
/// can be tested against a scripted upstream; used only generically, so its
/// futures are not boxed (two allocations per request fewer).
pub(crate) trait Attempt: Sync {
    /// The request with the swapper's current tokens.
    fn build(
        &self,
        swapper: &mut Swapper,
        plan: &mut BodyPlan,
    ) -> impl Future<Output = Result<Request<ProxyBody>, ProxyError>> + Send;

    /// Sends it and waits for the answer's head.
    fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send;
}

/// The real attempt: swap, then the pooled client.
pub(crate) struct UpstreamAttempt<'a> {
    pub upstream: &'a Upstream,
    pub out: &'a Outgoing,
    /// The response firewall will read the answer.
    pub guarded: bool,
    pub add_via: bool,
    /// HTTP/1.1 or ALPN to this upstream.
    pub wire: UpstreamWire,
    /// The audit's `request_counter`, made when a body is sent.
    pub request_counter: &'a OnceLock<Arc<AtomicU64>>,
}

impl Attempt for UpstreamAttempt<'_> {
    async fn build(
        &self,
        swapper: &mut Swapper,
        plan: &mut BodyPlan,
    ) -> Result<Request<ProxyBody>, ProxyError> {
        build(self.out, swapper, plan, self.guarded, self.add_via).await
    }

    // Not `async`: the request goes to the client before the future is
    // made, so the future does not keep room for it.
    fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send {
        let request = metered(request, self.request_counter);
        let answer = self.upstream.send(request, self.wire);
        async move { Ok(answer.await?.map(boxed)) }
    }
}

/// Counts the body bytes handed to the upstream connection (after swapping
/// and encoding), for this attempt only: not what was read from the client.
fn metered(request: Request<ProxyBody>, counter: &OnceLock<Arc<AtomicU64>>) -> Request<ProxyBody> {
    // Nothing to count: no wrapper (and no allocation) for a body-less request.
    if http_body::Body::is_end_stream(request.body()) {
        if let Some(counter) = counter.get() {
            counter.store(0, Ordering::Relaxed);
        }
        return request;
    }
    let counter = counter.get_or_init(Arc::default);
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
        let counter = OnceLock::new();
        // A body-less request makes no counter.
        let request = metered(Request::new(crate::body::empty()), &counter);
        assert!(http_body::Body::is_end_stream(request.body()));
        assert!(counter.get().is_none());
        for _ in 0..2 {
            let request = Request::new(full(Bytes::from_static(b"12345")));
            let request = metered(request, &counter);
            request.into_body().collect().await.unwrap();
            assert_eq!(counter.get().unwrap().load(Ordering::Relaxed), 5);
        }
        // A body-less attempt counts nothing, and resets what the last one counted.
        let request = metered(Request::new(crate::body::empty()), &counter);
        assert!(http_body::Body::is_end_stream(request.body()));
        assert_eq!(counter.get().unwrap().load(Ordering::Relaxed), 0);
    }
}
