//! One request out and its response back: swap (URL, headers, body), send,
//! refresh-and-replay once on an expired-token answer, scrub the response.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use airlock_vault_client::{BindingKind, ExpiredSignal, ExposeSecret, TokenError};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::audit::AuditRecord;
use crate::body::{boxed, empty, full, Metered, ProxyBody};
use crate::body_swap::{self, Collected, StreamMode};
use crate::compression::{self, Encoding};
use crate::error::ProxyError;
use crate::scrub::Scrubber;
use crate::server::{refuse, strip_hop_by_hop, Proxy};
use crate::swap::{encode_token, Context, Spelling, Swapper};

/// How much of an expired-token answer is read to look for a body marker.
const MARKER_READ_LIMIT: usize = 64 * 1024;
/// Answers up to this size are scrubbed whole (keeping their length).
const SCRUB_WHOLE_LIMIT: usize = 64 * 1024;

/// The request as the sandbox sent it (placeholders intact), so it can be
/// swapped again with a refreshed token.
pub struct Outgoing {
    pub method: Method,
    pub headers: HeaderMap,
    pub scheme: &'static str,
    pub authority: String,
    pub path_and_query: String,
}

/// The body, as far as it was read before sending.
enum BodyPlan {
    Empty,
    /// Read whole (decoded when it came compressed): can be sent again.
    Whole {
        data: Bytes,
        encoding: Option<Encoding>,
        trailers: Option<HeaderMap>,
    },
    /// Too large to keep: streamed once.
    Stream {
        read: VecDeque<Bytes>,
        rest: ProxyBody,
        mode: StreamMode,
    },
    Spent,
}

impl BodyPlan {
    fn replayable(&self) -> bool {
        matches!(self, Self::Empty | Self::Whole { .. })
    }
}

impl Proxy {
    /// Reads as much of the body as the replay bound allows.
    async fn plan_body(&self, headers: &HeaderMap, body: Incoming) -> Result<BodyPlan, ProxyError> {
        let settings = self.settings();
        if http_body::Body::is_end_stream(&body) {
            return Ok(BodyPlan::Empty);
        }
        let body = boxed(body);
        let client_err = |e: crate::body::BoxError| ProxyError::ClientBody(e.to_string());
        if let Some(encoding) = compression::encoding_of(headers)? {
            // Compressed bodies are looked inside, or not forwarded at all.
            return match body_swap::collect_up_to(body, settings.max_decoded_body)
                .await
                .map_err(client_err)?
            {
                Collected::Whole(data, trailers) => Ok(BodyPlan::Whole {
                    data: Bytes::from(compression::decode(
                        encoding,
                        &data,
                        settings.max_decoded_body,
                    )?),
                    encoding: Some(encoding),
                    trailers,
                }),
                Collected::Partial { .. } => Err(ProxyError::BodyTooLarge(format!(
                    "compressed request bodies are limited to {} bytes",
                    settings.max_decoded_body
                ))),
            };
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mode = if declared.is_some() && !body_swap::is_textual(headers) {
            StreamMode::RefuseAny
        } else {
            StreamMode::Swap
        };
        if declared.is_some_and(|len| len > settings.replay_buffer_bytes as u64) {
            return Ok(BodyPlan::Stream {
                read: VecDeque::new(),
                rest: body,
                mode,
            });
        }
        Ok(
            match body_swap::collect_up_to(body, settings.replay_buffer_bytes)
                .await
                .map_err(client_err)?
            {
                Collected::Whole(data, trailers) => BodyPlan::Whole {
                    data,
                    encoding: None,
                    trailers,
                },
                Collected::Partial { read, rest } => BodyPlan::Stream { read, rest, mode },
            },
        )
    }

    /// Swaps `out` (and the body) into a request ready to send.
    async fn build(
        &self,
        out: &Outgoing,
        swapper: &mut Swapper,
        body: &mut BodyPlan,
        scrubbing: bool,
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
                trailers,
            } => {
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
                };
                sent
            }
            BodyPlan::Stream { read, rest, mode } => {
                if mode == StreamMode::Swap {
                    // The swapped length is unknown up front: chunked on HTTP/1.1.
                    headers.remove(header::CONTENT_LENGTH);
                }
                body_swap::streaming(read, rest, swapper.fork(), context, mode)
            }
            BodyPlan::Spent => {
                return Err(ProxyError::Internal("request body already sent".into()))
            }
        };
        if scrubbing && !swapper.swapped_bindings().is_empty() {
            // Scrubbing must see the response's bytes, not a compressed form of them.
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        if self.settings().add_via {
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

    /// Sends the request and streams the answer back to the sandbox.
    pub(crate) async fn forward(
        &self,
        mut out: Outgoing,
        body: Incoming,
        mut swapper: Swapper,
        mut audit: AuditRecord,
    ) -> Response<ProxyBody> {
        strip_hop_by_hop(&mut out.headers);
        let plan = match self.plan_body(&out.headers, body).await {
            Ok(plan) => plan,
            Err(err) => return refuse(&mut audit, err),
        };
        let mut plan = match plan {
            BodyPlan::Stream { read, rest, mode } => BodyPlan::Stream {
                read,
                rest: boxed(Metered::new(rest, audit.request_bytes.clone())),
                mode,
            },
            other => other,
        };
        let scrubbing = self.settings().scrub_responses;
        let request = match self.build(&out, &mut swapper, &mut plan, scrubbing).await {
            Ok(r) => r,
            Err(err) => return refuse(&mut audit, err),
        };
        audit.swapped = swapper
            .swapped_bindings()
            .iter()
            .map(|b| b.id.clone())
            .collect();
        if let BodyPlan::Whole { data, .. } = &plan {
            audit
                .request_bytes
                .store(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let sent = Instant::now();
        let mut response = match self.upstream().send(request).await {
            Ok(r) => r.map(boxed),
            Err(err) => return refuse(&mut audit, err),
        };

        // An expired-token answer to a request that carried an OAuth token:
        // refresh (sharing the refresh with everyone holding the same failed
        // token), and replay once when the token changed and the body was kept.
        let (expired, kept) = self.expired(&swapper, response).await;
        response = kept;
        if expired {
            match self.refresh_tokens(&mut swapper, &audit).await {
                Err(err) => return refuse(&mut audit, err),
                Ok(false) => audit.outcome = "expired_token_not_refreshed",
                Ok(true) if plan.replayable() => {
                    let replay = match self.build(&out, &mut swapper, &mut plan, scrubbing).await {
                        Ok(r) => r,
                        Err(err) => return refuse(&mut audit, err),
                    };
                    response = match self.upstream().send(replay).await {
                        Ok(r) => r.map(boxed),
                        Err(err) => return refuse(&mut audit, err),
                    };
                    audit.outcome = "refreshed_replayed";
                }
                Ok(true) => audit.outcome = "refreshed_not_replayed",
            }
        }
        audit.upstream_time = Some(sent.elapsed());
        audit.status = response.status().as_u16();
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let mut body = body;
        if scrubbing {
            if let Some(scrubber) = self.scrubber_for(&swapper) {
                scrubber.headers(&mut parts.headers);
                body = match self.scrub_body(&mut parts.headers, body, scrubber).await {
                    Ok(b) => b,
                    Err(err) => return refuse(&mut audit, err),
                };
            }
        }
        let response_bytes = audit.response_bytes.clone();
        let body =
            Metered::new(body, response_bytes).on_drop(move |completed| audit.emit(completed));
        Response::from_parts(parts, boxed(body))
    }

    /// Whether `response` means an injected OAuth token expired. Reads a
    /// little of the body when a provider's rule needs a marker.
    async fn expired(
        &self,
        swapper: &Swapper,
        response: Response<ProxyBody>,
    ) -> (bool, Response<ProxyBody>) {
        let status = response.status().as_u16();
        let signals: Vec<ExpiredSignal> = swapper
            .swapped_bindings()
            .iter()
            .filter(|b| matches!(b.kind, BindingKind::OAuth { .. }))
            .flat_map(|b| b.expired_on.iter().filter(|s| s.status == status).cloned())
            .collect();
        if signals.is_empty() {
            return (false, response);
        }
        if signals.iter().any(|s| s.body_contains.is_none()) {
            return (true, response);
        }
        let (parts, body) = response.into_parts();
        match body_swap::collect_up_to(body, MARKER_READ_LIMIT).await {
            Ok(Collected::Whole(data, trailers)) => {
                let text = String::from_utf8_lossy(&data);
                let hit = signals
                    .iter()
                    .any(|s| s.body_contains.as_deref().is_some_and(|m| text.contains(m)));
                (
                    hit,
                    Response::from_parts(parts, with_trailers(data, trailers)),
                )
            }
            Ok(Collected::Partial { read, rest }) => {
                let body = body_swap::streaming_passthrough(read, rest);
                (false, Response::from_parts(parts, body))
            }
            Err(e) => {
                let err = ProxyError::Upstream(format!("reading the upstream's answer: {e}"));
                (false, err.to_response())
            }
        }
    }

    /// Asks for fresh tokens for every OAuth binding the request used.
    /// `Ok(true)` when at least one token changed.
    async fn refresh_tokens(
        &self,
        swapper: &mut Swapper,
        audit: &AuditRecord,
    ) -> Result<bool, ProxyError> {
        let used: Vec<(String, airlock_vault_client::Resolved)> = swapper
            .swapped()
            .filter(|(_, r)| matches!(r.binding.kind, BindingKind::OAuth { .. }))
            .map(|(p, r)| (p.to_owned(), r.clone()))
            .collect();
        let mut changed = false;
        for (placeholder, old) in used {
            match self
                .tokens()
                .refresh(&audit.sandbox, &placeholder, &old.token)
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

    /// Scrubs the response body; a compressed one is decoded first (bounded).
    async fn scrub_body(
        &self,
        headers: &mut HeaderMap,
        body: ProxyBody,
        scrubber: Arc<Scrubber>,
    ) -> Result<ProxyBody, ProxyError> {
        let encoding = match compression::encoding_of(headers) {
            Ok(e) => e,
            Err(_) => {
                return Err(ProxyError::Upstream(
                    "the upstream answered in a content coding airlock cannot scrub".into(),
                ))
            }
        };
        let Some(encoding) = encoding else {
            // A small answer is scrubbed whole and keeps a Content-Length.
            let small = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                .is_some_and(|len| len <= SCRUB_WHOLE_LIMIT);
            if small {
                return match body_swap::collect_up_to(body, SCRUB_WHOLE_LIMIT).await {
                    Ok(Collected::Whole(data, trailers)) => {
                        let clean = scrubber.whole(&data);
                        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(clean.len()));
                        Ok(with_trailers(clean, trailers))
                    }
                    Ok(Collected::Partial { read, rest }) => {
                        headers.remove(header::CONTENT_LENGTH);
                        Ok(scrubber.body(body_swap::streaming_passthrough(read, rest)))
                    }
                    Err(e) => Err(ProxyError::Upstream(format!(
                        "reading the upstream's answer: {e}"
                    ))),
                };
            }
            headers.remove(header::CONTENT_LENGTH);
            return Ok(scrubber.body(body));
        };
        let cap = self.settings().max_decoded_body;
        let data = match body_swap::collect_up_to(body, cap).await {
            Ok(Collected::Whole(data, _)) => data,
            Ok(Collected::Partial { .. }) => {
                return Err(ProxyError::Upstream(format!(
                    "compressed answer larger than {cap} bytes cannot be scrubbed"
                )))
            }
            Err(e) => {
                return Err(ProxyError::Upstream(format!(
                    "reading the upstream's answer: {e}"
                )))
            }
        };
        let plain = compression::decode(encoding, &data, cap)
            .map_err(|e| ProxyError::Upstream(format!("the upstream's compressed answer: {e}")))?;
        let clean = scrubber.whole(&plain);
        headers.remove(header::CONTENT_ENCODING);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(clean.len()));
        Ok(full(clean))
    }
}

fn with_trailers(data: Bytes, trailers: Option<HeaderMap>) -> ProxyBody {
    match trailers {
        None => full(data),
        Some(t) => {
            let frames: [Result<_, crate::body::BoxError>; 2] = [
                Ok(http_body::Frame::data(data)),
                Ok(http_body::Frame::trailers(t)),
            ];
            boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
                frames,
            )))
        }
    }
}

impl Proxy {
    /// What must not come back: each token this request carried, raw and in
    /// the spellings the swap may have written (JSON-escaped, percent-encoded),
    /// and each swapped Basic credential, mapped to what the sandbox sent.
    /// Built once per set of tokens and kept: building the automaton per
    /// request cost as much as the rest of the request.
    fn scrubber_for(&self, swapper: &Swapper) -> Option<Arc<Scrubber>> {
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (placeholder, resolved) in swapper.swapped() {
            let token = resolved.token.expose_secret();
            for context in [Context::Raw, Context::Json, Context::Url] {
                let written = encode_token(token, Spelling::Plain, context);
                if !pairs.iter().any(|(t, _)| t == &written) {
                    pairs.push((written, encode_token(placeholder, Spelling::Plain, context)));
                }
            }
        }
        pairs.extend(swapper.basic_pairs());
        if pairs.is_empty() {
            return None;
        }
        let mut key = ring::digest::Context::new(&ring::digest::SHA256);
        for (from, to) in &pairs {
            key.update(&(from.len() as u64).to_le_bytes());
            key.update(from);
            key.update(&(to.len() as u64).to_le_bytes());
            key.update(to);
        }
        let key: [u8; 32] = key
            .finish()
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        self.scrubbers()
            .get_with(key, || Scrubber::new(pairs).map(Arc::new))
    }
}
