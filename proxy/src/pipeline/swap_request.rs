//! The swap stage: the request as the sandbox sent it (placeholders intact)
//! becomes the request the upstream gets. Run again with refreshed tokens for
//! a replay, so the original is never changed.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Uri, Version};

use crate::body::{empty, with_trailers, ProxyBody};
use crate::body_swap::{self, StreamMode};
use crate::compression;
use crate::error::ProxyError;
use crate::pipeline::body_plan::BodyPlan;
use crate::swap::Swapper;

/// The request as the sandbox sent it (placeholders intact), so it can be
/// swapped again with a refreshed token.
pub struct Outgoing {
    pub method: Method,
    pub headers: HeaderMap,
    pub scheme: &'static str,
    pub authority: String,
    pub path_and_query: String,
}

/// Swaps `out` (and the body) into a request ready to send. `guarded`: the
/// response firewall will read the answer, so it must not come compressed.
pub(crate) async fn build(
    out: &Outgoing,
    swapper: &mut Swapper,
    body: &mut BodyPlan,
    guarded: bool,
    add_via: bool,
) -> Result<Request<ProxyBody>, ProxyError> {
    let pq = swapper
        .swap_path_and_query(&out.path_and_query)
        .await?
        .unwrap_or_else(|| out.path_and_query.clone());
    let mut headers = out.headers.clone();
    // `Host` was checked against the CONNECT target; the client derives it
    // (HTTP/1.1) or `:authority` (HTTP/2) from the URI. Sending both makes
    // HTTP/2 servers such as nginx refuse the request.
    headers.remove(header::HOST);
    swapper.swap_headers(&mut headers).await?;
    let context = body_swap::context_of(&headers);
    let body = match std::mem::replace(body, BodyPlan::Spent) {
        BodyPlan::Empty => {
            *body = BodyPlan::Empty;
            empty()
        }
        BodyPlan::Whole {
            data,
            encoding,
            mut trailers,
            held,
        } => {
            // Trailers are a credential position, like headers.
            if let Some(t) = trailers.as_mut() {
                swapper.swap_headers(t).await?;
            }
            let swapped = body_swap::swap_whole(swapper, &data, context).await?;
            let wire = match encoding {
                Some(e) => compression::encode(e, &swapped)?,
                None => swapped,
            };
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(wire.len()));
            headers.remove(header::TRANSFER_ENCODING);
            // The whole body is here: nothing to wait for.
            headers.remove(header::EXPECT);
            let sent = with_trailers(wire, trailers.clone());
            *body = BodyPlan::Whole {
                data,
                encoding,
                trailers,
                held,
            };
            sent
        }
        BodyPlan::Untouched { read, rest } => {
            // Same bytes, same framing: Content-Length (when sent) stays.
            body_swap::streaming_passthrough(read, rest)
        }
        BodyPlan::Stream { read, rest, mode } => {
            if mode == StreamMode::Swap {
                // The swapped length is unknown up front: chunked on HTTP/1.1.
                headers.remove(header::CONTENT_LENGTH);
            }
            body_swap::streaming(read, rest, swapper.fork(), context, mode)
        }
        BodyPlan::Spent => return Err(ProxyError::Internal("request body already sent".into())),
    };
    if guarded || !swapper.swapped_bindings().is_empty() {
        // The firewall must see the response's bytes, not a compressed form of them.
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    if add_via {
        headers.append(header::VIA, HeaderValue::from_static("1.1 airlock"));
    }
    let uri = Uri::builder()
        .scheme(out.scheme)
        .authority(out.authority.as_str())
        .path_and_query(pq)
        .build()
        .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream URL: {e}")))?;
    let mut request = Request::new(body);
    *request.method_mut() = out.method.clone();
    *request.uri_mut() = uri;
    // The pooled client picks HTTP/2 or HTTP/1.1 per upstream from ALPN.
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use airlock_vault_client::{SandboxId, SwapLocation};
    use bytes::Bytes;
    use http_body_util::BodyExt;

    use super::*;
    use crate::swap::Scanner;
    use crate::testing::{MockTokens, PREFIX};

    const HOST: &str = "api.example.test";

    fn outgoing(headers: &[(&'static str, String)]) -> Outgoing {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        Outgoing {
            method: Method::POST,
            headers: map,
            scheme: "https",
            authority: HOST.into(),
            path_and_query: "/v1/things?q=1".into(),
        }
    }

    fn swapper(tokens: &Arc<MockTokens>) -> Swapper {
        Swapper::new(
            tokens.clone(),
            Arc::new(Scanner::new(PREFIX)),
            SandboxId::default_sandbox(),
            HOST.into(),
        )
    }

    async fn body_of(request: Request<ProxyBody>) -> Bytes {
        request.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_whole_body_is_swapped_sized_and_kept_for_a_replay() {
        let tokens = MockTokens::new();
        let p = tokens.add("KEY", HOST, "real-token", |b| {
            b.swap_in.insert(SwapLocation::Body);
        });
        let out = outgoing(&[
            ("host", HOST.into()),
            ("authorization", format!("Bearer {p}")),
            ("content-type", "application/json".into()),
            ("transfer-encoding", "chunked".into()),
            ("expect", "100-continue".into()),
        ]);
        let body: &'static str = Box::leak(format!("{{\"key\":\"{p}\"}}").into_boxed_str());
        let mut plan = BodyPlan::whole(body);
        let mut swapper = swapper(&tokens);
        let request = build(&out, &mut swapper, &mut plan, false, false)
            .await
            .unwrap();
        let h = request.headers().clone();
        assert_eq!(request.uri(), "https://api.example.test/v1/things?q=1");
        assert_eq!(h["authorization"], "Bearer real-token");
        assert!(
            !h.contains_key("host"),
            "the client derives it from the URI"
        );
        assert!(!h.contains_key("transfer-encoding") && !h.contains_key("expect"));
        assert_eq!(h["accept-encoding"], "identity", "a token went out");
        assert!(!h.contains_key("via"));
        let sent = body_of(request).await;
        assert_eq!(sent, "{\"key\":\"real-token\"}");
        assert_eq!(h["content-length"], sent.len().to_string().as_str());
        // The original is intact: a replay swaps it again.
        assert!(plan.replayable());
        let again = build(&out, &mut swapper, &mut plan, false, true)
            .await
            .unwrap();
        assert_eq!(again.headers()["via"], "1.1 airlock");
        assert_eq!(body_of(again).await, "{\"key\":\"real-token\"}");
    }

    #[tokio::test]
    async fn a_streamed_body_is_sent_once() {
        let tokens = MockTokens::new();
        let out = outgoing(&[("content-length", "5".into())]);
        let mut plan = BodyPlan::Untouched {
            read: Default::default(),
            rest: crate::body::full(Bytes::from_static(b"hello")),
        };
        let mut swapper = swapper(&tokens);
        let request = build(&out, &mut swapper, &mut plan, false, false)
            .await
            .unwrap();
        assert_eq!(request.headers()["content-length"], "5", "framing kept");
        assert!(
            !request.headers().contains_key("accept-encoding"),
            "nothing to guard"
        );
        assert_eq!(body_of(request).await, "hello");
        let err = build(&out, &mut swapper, &mut plan, false, false)
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), "internal");
    }

    #[tokio::test]
    async fn a_refused_placeholder_refuses_the_whole_request() {
        let tokens = MockTokens::new();
        let p = tokens.secret("KEY", "elsewhere.test", "real-token");
        let out = outgoing(&[("authorization", format!("Bearer {p}"))]);
        let err = build(
            &out,
            &mut swapper(&tokens),
            &mut BodyPlan::Empty,
            true,
            false,
        )
        .await
        .err()
        .unwrap();
        assert_eq!(err.code(), "host_not_allowed");
    }
}
