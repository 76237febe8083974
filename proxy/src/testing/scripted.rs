//! A scripted [`Attempt`] for the layers around the send stage (replay,
//! resend): each build swaps one header the test set, each send takes the
//! next scripted result and records that header as it was sent.

use std::collections::VecDeque;
use std::sync::Mutex;

use http::{HeaderMap, HeaderValue, Request, Response};

use crate::body::{empty, ProxyBody};
use crate::error::ProxyError;
use crate::pipeline::body_plan::BodyPlan;
use crate::pipeline::send::Attempt;
use crate::swap::Swapper;

pub(crate) struct Scripted {
    headers: HeaderMap,
    results: Mutex<VecDeque<Result<Response<ProxyBody>, ProxyError>>>,
    sent: Mutex<Vec<String>>,
}

impl Scripted {
    /// Sends `header: value` (swapped); each send answers the next of `answers`.
    pub fn new(header: &str, value: String, answers: Vec<Response<ProxyBody>>) -> Self {
        Self::with_results(header, value, answers.into_iter().map(Ok).collect())
    }

    /// Like [`Self::new`], each send failing or answering as `results` say.
    pub fn with_results(
        header: &str,
        value: String,
        results: Vec<Result<Response<ProxyBody>, ProxyError>>,
    ) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::HeaderName::from_bytes(header.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
        Self {
            headers,
            results: Mutex::new(results.into()),
            sent: Mutex::default(),
        }
    }

    /// The header's value as each send carried it, oldest first.
    pub fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }
}

impl Attempt for Scripted {
    async fn build(
        &self,
        swapper: &mut Swapper,
        plan: &mut BodyPlan,
    ) -> Result<Request<ProxyBody>, ProxyError> {
        if matches!(plan, BodyPlan::Spent) {
            return Err(ProxyError::Internal("request body already sent".into()));
        }
        let mut headers = self.headers.clone();
        swapper.swap_headers(&mut headers).await?;
        let mut request = Request::new(empty());
        *request.headers_mut() = headers;
        Ok(request)
    }

    async fn send(&self, request: Request<ProxyBody>) -> Result<Response<ProxyBody>, ProxyError> {
        let seen = request
            .headers()
            .values()
            .next()
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        self.sent.lock().unwrap().push(seen);
        self.results
            .lock()
            .unwrap()
            .pop_front()
            .expect("the test scripted enough answers")
    }
}
