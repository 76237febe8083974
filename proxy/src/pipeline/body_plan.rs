//! The first stage: how much of the sandbox's body is read before sending.
//! Bodies up to `replay_buffer_bytes` are read whole (so the request can be
//! replayed), compressed ones decoded under the process-wide budget, the rest
//! streamed once.

use std::collections::VecDeque;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use hyper::body::Incoming;

use crate::audit::{AuditRecord, Mode};
use crate::body::{boxed, ProxyBody};
use crate::body_swap::{self, Collected, StreamMode};
use crate::compression::{self, Encoding};
use crate::error::ProxyError;
use crate::limits::{IdleTimeout, Reservation};
use crate::shared::Shared;

/// The body, as far as it was read before sending.
pub(crate) enum BodyPlan {
    Empty,
    /// Read whole (decoded when it came compressed): can be sent again.
    Whole {
        data: Bytes,
        encoding: Option<Encoding>,
        trailers: Option<HeaderMap>,
        /// The decompression budget this decoded body holds while kept.
        held: Option<Reservation>,
    },
    /// Too large to keep: streamed once.
    Stream {
        read: VecDeque<Bytes>,
        rest: ProxyBody,
        mode: StreamMode,
    },
    /// Too large to keep, and no binding of the sandbox for this host may
    /// swap in a body: streamed once, untouched, with its framing.
    Untouched {
        read: VecDeque<Bytes>,
        rest: ProxyBody,
    },
    Spent,
}

impl BodyPlan {
    /// Whether the request can be built again for a replay: the replay
    /// buffer is the body kept whole, never more than `replay_buffer_bytes`
    /// (or `max_decoded_body` decoded).
    pub fn replayable(&self) -> bool {
        matches!(self, Self::Empty | Self::Whole { .. })
    }

    /// A plan for a body already in memory.
    #[cfg(test)]
    pub fn whole(data: &'static str) -> Self {
        Self::Whole {
            data: Bytes::from_static(data.as_bytes()),
            encoding: None,
            trailers: None,
            held: None,
        }
    }
}

/// Reads as much of the body as the replay bound allows. A client that
/// stops sending for `body_read_timeout` gets a 408 (or, mid-stream, a cut
/// connection); a decoded compressed body holds part of the process-wide
/// decompression budget while it is kept.
pub(crate) async fn plan_body(
    shared: &Shared,
    headers: &HeaderMap,
    body: Incoming,
    audit: &AuditRecord,
) -> Result<BodyPlan, ProxyError> {
    if http_body::Body::is_end_stream(&body) {
        return Ok(BodyPlan::Empty);
    }
    plan(shared, headers, boxed(body), audit).await
}

async fn plan(
    shared: &Shared,
    headers: &HeaderMap,
    body: ProxyBody,
    audit: &AuditRecord,
) -> Result<BodyPlan, ProxyError> {
    let settings = &shared.settings;
    let body = boxed(IdleTimeout::new(body, settings.body_read_timeout));
    let client_err = |e: crate::body::BoxError| match e.downcast::<ProxyError>() {
        Ok(err) => *err,
        Err(e) => ProxyError::ClientBody(e.to_string()),
    };
    if let Some(encoding) = compression::encoding_of(headers)? {
        // Compressed bodies are looked inside, or not forwarded at all.
        return match body_swap::collect_up_to(body, settings.max_decoded_body)
            .await
            .map_err(client_err)?
        {
            Collected::Whole(data, trailers) => {
                let budget = &shared.decompression;
                let mut held = budget.reservation();
                if !budget.grow(&mut held, data.len()) {
                    return Err(ProxyError::DecompressionBudget {
                        budget: budget.limit(),
                        retry_after: 1,
                    });
                }
                let decoded = compression::decode_budgeted(
                    encoding,
                    &data,
                    settings.max_decoded_body,
                    budget,
                    &mut held,
                )?;
                Ok(BodyPlan::Whole {
                    data: Bytes::from(decoded),
                    encoding: Some(encoding),
                    trailers,
                    held: Some(held),
                })
            }
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
    // Which bindings a body carries is known only once it is read, so a
    // body too large to read first is judged by the sandbox's bindings
    // for this host: when none may swap in a body, nothing in it can be
    // swapped and it goes untouched, keeping its Content-Length. Plain
    // http:// never swaps, but scans for placeholders to refuse them.
    let untouched = || async {
        audit.mode != Mode::Http
            && !shared
                .tokens
                .may_swap_body(&audit.sandbox, &audit.host)
                .await
    };
    if declared.is_some_and(|len| len > settings.replay_buffer_bytes as u64) {
        if untouched().await {
            return Ok(BodyPlan::Untouched {
                read: VecDeque::new(),
                rest: body,
            });
        }
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
                held: None,
            },
            Collected::Partial { read, rest } => {
                if untouched().await {
                    BodyPlan::Untouched { read, rest }
                } else {
                    BodyPlan::Stream { read, rest, mode }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use airlock_vault_client::{SandboxId, SwapLocation};
    use http::HeaderValue;

    use super::*;
    use crate::body::full;
    use crate::testing::{shared, MockTokens};

    const HOST: &str = "api.example.test";

    fn audit(shared: &Shared, mode: Mode) -> AuditRecord {
        shared.audit(SandboxId::default_sandbox(), mode, "POST", HOST, 443, "/")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    async fn planned(
        shared: &Shared,
        h: &HeaderMap,
        data: &'static [u8],
        mode: Mode,
    ) -> Result<BodyPlan, ProxyError> {
        plan(
            shared,
            h,
            full(Bytes::from_static(data)),
            &audit(shared, mode),
        )
        .await
    }

    #[tokio::test]
    async fn a_body_within_the_replay_buffer_is_kept_whole() {
        let shared = shared(MockTokens::new(), |_| {});
        let h = headers(&[("content-length", "5")]);
        let plan = planned(&shared, &h, b"hello", Mode::Intercept)
            .await
            .unwrap();
        assert!(plan.replayable());
        assert!(
            matches!(plan, BodyPlan::Whole { ref data, encoding: None, .. } if data == "hello")
        );
    }

    #[tokio::test]
    async fn a_larger_body_streams_and_keeps_its_framing_when_nothing_may_swap_in_it() {
        let tokens = MockTokens::new();
        let shared_without = shared(tokens.clone(), |s| s.replay_buffer_bytes = 4);
        tokens.secret("KEY", HOST, "real");
        let h = headers(&[
            ("content-length", "11"),
            ("content-type", "application/json"),
        ]);
        let plan = planned(&shared_without, &h, b"hello world", Mode::Intercept)
            .await
            .unwrap();
        assert!(matches!(plan, BodyPlan::Untouched { .. }));
        assert!(!plan.replayable());

        let tokens = MockTokens::new();
        tokens.add("BODY", HOST, "real", |b| {
            b.swap_in.insert(SwapLocation::Body);
        });
        let shared_with = shared(tokens.clone(), |s| s.replay_buffer_bytes = 4);
        let plan = planned(&shared_with, &h, b"hello world", Mode::Intercept)
            .await
            .unwrap();
        assert!(matches!(
            plan,
            BodyPlan::Stream {
                mode: StreamMode::Swap,
                ..
            }
        ));
        // Plain http:// scans every body, to refuse placeholders in it.
        let plan = planned(&shared_without, &h, b"hello world", Mode::Http)
            .await
            .unwrap();
        assert!(matches!(plan, BodyPlan::Stream { .. }));
    }

    #[tokio::test]
    async fn a_binary_body_with_a_length_is_scanned_not_swapped() {
        let tokens = MockTokens::new();
        tokens.add("BODY", HOST, "real", |b| {
            b.swap_in.insert(SwapLocation::Body);
        });
        let shared = shared(tokens, |s| s.replay_buffer_bytes = 4);
        let h = headers(&[
            ("content-length", "11"),
            ("content-type", "application/octet-stream"),
        ]);
        let plan = planned(&shared, &h, b"hello world", Mode::Intercept)
            .await
            .unwrap();
        assert!(matches!(
            plan,
            BodyPlan::Stream {
                mode: StreamMode::RefuseAny,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_compressed_body_is_decoded_under_the_budget() {
        let gz = compression::encode(Encoding::Gzip, b"{\"a\":1}").unwrap();
        let gz: &'static [u8] = Box::leak(gz.to_vec().into_boxed_slice());
        let h = headers(&[("content-encoding", "gzip")]);
        let roomy = shared(MockTokens::new(), |_| {});
        let plan = planned(&roomy, &h, gz, Mode::Intercept).await.unwrap();
        assert!(
            matches!(plan, BodyPlan::Whole { ref data, encoding: Some(Encoding::Gzip), held: Some(_), .. } if data == "{\"a\":1}")
        );
        assert!(roomy.decompression.used() > 0, "the kept body holds budget");
        drop(plan);
        assert_eq!(roomy.decompression.used(), 0);

        let tight = shared(MockTokens::new(), |s| s.decompression_budget = 4);
        let err = planned(&tight, &h, gz, Mode::Intercept)
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), "decompression_budget");
        let small = shared(MockTokens::new(), |s| s.max_decoded_body = 4);
        let err = planned(&small, &h, gz, Mode::Intercept)
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), "body_too_large");
    }

    #[test]
    fn shared_is_built_per_test() {
        let _ = Arc::new(shared(MockTokens::new(), |_| {}));
    }
}
