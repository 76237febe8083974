//! The response stage. Every answer an upstream sends toward the sandbox
//! (intercepted, plain `http://`, WebSocket handshakes of any status) passes
//! [`screen`], which puts it through the sandbox's response firewall: status
//! line (reason phrase), headers, body in every content coding airlock
//! decodes, and trailers. Nothing else turns upstream bytes into a response.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::Response;

use crate::body::{boxed, full, ProxyBody};
use crate::body_swap::{self, Collected};
use crate::compression;
use crate::error::ProxyError;
use crate::firewall::Firewall;
use crate::headers::strip_hop_by_hop;
use crate::limits::{Budget, Reservation};

/// How far airlock decodes a compressed answer to screen it: at most `max`
/// bytes for one answer, taken from the process-wide `budget` while held.
#[derive(Clone, Copy)]
pub struct Decoding<'a> {
    pub max: usize,
    pub budget: &'a Budget,
}

/// A response that may go to the sandbox: it came out of [`screen`] (or
/// [`switching`]), or airlock wrote it itself ([`ToSandbox::local`]: refusals,
/// CONNECT answers). The connection services take nothing else, so a new
/// response path cannot skip the firewall by accident.
pub struct ToSandbox(Response<ProxyBody>);

impl ToSandbox {
    /// An answer airlock wrote itself, holding no upstream byte.
    pub(crate) fn local(response: Response<ProxyBody>) -> Self {
        Self(response)
    }

    pub fn status(&self) -> http::StatusCode {
        self.0.status()
    }

    /// Wraps the body (byte counting, audit on drop); the bytes stay as screened.
    pub(crate) fn map_body(self, f: impl FnOnce(ProxyBody) -> ProxyBody) -> Self {
        let (parts, body) = self.0.into_parts();
        Self(Response::from_parts(parts, f(body)))
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        self.0
    }
}

/// A WebSocket handshake answer airlock builds from the upstream's 101: the
/// upstream's headers in it are screened (servers echo the subprotocol).
pub fn switching(mut answer: Response<ProxyBody>, firewall: Option<&Firewall>) -> ToSandbox {
    if let Some(fw) = firewall {
        fw.scrub_headers(answer.headers_mut());
    }
    ToSandbox(answer)
}

/// Answers up to this size are screened whole (keeping a `Content-Length`).
const WHOLE_LIMIT: usize = 64 * 1024;

/// Screens one upstream answer. `firewall` is `None` when the sandbox has no
/// token at all (or scrubbing is off); hop-by-hop headers go either way.
/// `decoding` bounds a compressed answer that must be decoded to be screened.
///
/// Not an `async fn`: the head is screened at once, so the future (one per
/// request) keeps only what the body's screening needs.
pub fn screen<'a>(
    response: Response<ProxyBody>,
    firewall: Option<Arc<Firewall>>,
    decoding: Decoding<'a>,
) -> impl Future<Output = Result<ToSandbox, ProxyError>> + Send + 'a {
    let head = screen_head(response, firewall);
    async move {
        match head {
            Head::Done(answer) => Ok(answer),
            Head::BodyToScreen(mut parts, body, firewall) => {
                let body = screen_body(&mut parts.headers, body, firewall, decoding).await?;
                Ok(ToSandbox(Response::from_parts(parts, body)))
            }
        }
    }
}

/// An answer whose head is screened.
enum Head {
    /// Nothing more to screen.
    Done(ToSandbox),
    /// The body is still to be screened.
    BodyToScreen(http::response::Parts, ProxyBody, Arc<Firewall>),
}

fn screen_head(response: Response<ProxyBody>, firewall: Option<Arc<Firewall>>) -> Head {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let Some(firewall) = firewall else {
        return Head::Done(ToSandbox(Response::from_parts(parts, body)));
    };
    firewall.scrub_headers(&mut parts.headers);
    if let Some(reason) = parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        let clean = firewall.scrub_reason(reason.as_bytes());
        if clean.as_ref() != reason.as_bytes() {
            // A reason phrase is decoration: drop it rather than risk it.
            match hyper::ext::ReasonPhrase::try_from(clean.into_owned()) {
                Ok(r) => {
                    parts.extensions.insert(r);
                }
                Err(_) => {
                    parts.extensions.remove::<hyper::ext::ReasonPhrase>();
                }
            }
        }
    }
    // HEAD, 204, 304 and friends: nothing to read, and the length stays.
    if http_body::Body::is_end_stream(&body) {
        return Head::Done(ToSandbox(Response::from_parts(parts, body)));
    }
    Head::BodyToScreen(parts, body, firewall)
}

async fn screen_body(
    headers: &mut HeaderMap,
    body: ProxyBody,
    firewall: Arc<Firewall>,
    decoding: Decoding<'_>,
) -> Result<ProxyBody, ProxyError> {
    let reading = |e: crate::body::BoxError| {
        ProxyError::Upstream(format!("reading the upstream's answer: {e}"))
    };
    let encoding = compression::encoding_of(headers).map_err(|_| {
        ProxyError::Upstream(
            "the upstream answered in a content coding airlock cannot screen".into(),
        )
    })?;
    if let Some(encoding) = encoding {
        let max = decoding.max;
        let data = match body_swap::collect_up_to(body, max).await.map_err(reading)? {
            Collected::Whole(data, _) => data,
            Collected::Partial { .. } => {
                return Err(ProxyError::Upstream(format!(
                    "compressed answer larger than {max} bytes cannot be screened"
                )))
            }
        };
        // The compressed and the decoded bytes both count against the
        // process-wide budget until the sandbox has read the answer.
        let budget = decoding.budget;
        let mut held = budget.reservation();
        if !budget.grow(&mut held, data.len()) {
            return Err(ProxyError::DecompressionBudget {
                budget: budget.limit(),
                retry_after: 1,
            });
        }
        let plain =
            compression::decode_budgeted(encoding, &data, max, budget, &mut held).map_err(|e| {
                match e {
                    ProxyError::DecompressionBudget { .. } => e,
                    e => ProxyError::Upstream(format!("the upstream's compressed answer: {e}")),
                }
            })?;
        drop(data);
        let clean = Bytes::from(firewall.scrub(&plain).into_owned());
        drop(plain);
        headers.remove(header::CONTENT_ENCODING);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(clean.len()));
        return Ok(boxed(Holding::new(full(clean), held)));
    }
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let Some(announced) = announced.filter(|len| *len <= WHOLE_LIMIT) {
        return match body_swap::collect_up_to(body, WHOLE_LIMIT)
            .await
            .map_err(reading)?
        {
            Collected::Whole(data, trailers) => {
                // The same bytes back, uncopied, when nothing matched.
                let clean = firewall.scrub_bytes(data);
                if clean.len() != announced {
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(clean.len()));
                }
                let mut trailers = trailers;
                if let Some(t) = trailers.as_mut() {
                    firewall.scrub_headers(t);
                }
                Ok(crate::body::with_trailers(clean, trailers))
            }
            Collected::Partial { read, rest } => {
                headers.remove(header::CONTENT_LENGTH);
                Ok(firewall.body(body_swap::streaming_passthrough(read, rest)))
            }
        };
    }
    headers.remove(header::CONTENT_LENGTH);
    Ok(firewall.body(body))
}

/// A body that keeps its share of the decompression budget until it is
/// dropped (sent or abandoned).
struct Holding {
    inner: ProxyBody,
    _held: Reservation,
}

impl Holding {
    fn new(inner: ProxyBody, held: Reservation) -> Self {
        Self { inner, _held: held }
    }
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::Encoding;
    use crate::firewall::Guarded;
    use airlock_vault_client::SecretString;
    use http_body_util::BodyExt;

    const TOKEN: &str = "tok_REAL_0123456789abcdefghij";
    const PLACEHOLDER: &str = "miosa-tok-PH";

    fn firewall() -> Arc<Firewall> {
        Arc::new(
            Firewall::new([Guarded {
                placeholder: PLACEHOLDER.into(),
                token: SecretString::from(TOKEN),
            }])
            .expect("a token to guard"),
        )
    }

    fn gzip_answer(plain: &[u8]) -> Response<ProxyBody> {
        let wire = compression::encode(Encoding::Gzip, plain).unwrap();
        Response::builder()
            .header(header::CONTENT_ENCODING, "gzip")
            .header(header::CONTENT_LENGTH, wire.len())
            .body(full(wire))
            .unwrap()
    }

    #[tokio::test]
    async fn a_compressed_answer_is_decoded_screened_and_holds_budget_until_read() {
        let budget = Budget::new(1 << 20);
        let plain = format!("{{\"echo\":\"{TOKEN}\"}}{}", " ".repeat(10_000));
        let decoding = Decoding {
            max: 1 << 20,
            budget: &budget,
        };
        let answer = screen(gzip_answer(plain.as_bytes()), Some(firewall()), decoding)
            .await
            .unwrap()
            .into_response();
        assert!(answer.headers().get(header::CONTENT_ENCODING).is_none());
        assert!(budget.used() > 0, "held while the sandbox has not read it");
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.starts_with(&format!("{{\"echo\":\"{PLACEHOLDER}\"}}")));
        assert!(!text.contains(TOKEN));
        assert_eq!(budget.used(), 0, "given back once the body is gone");
    }

    #[tokio::test]
    async fn a_compressed_answer_over_the_shared_budget_is_refused_not_decoded() {
        // 4 MiB of zeros compress to a few KiB: the decode outgrows the budget.
        let budget = Budget::new(256 * 1024);
        let decoding = Decoding {
            max: 16 << 20,
            budget: &budget,
        };
        let err = screen(gzip_answer(&vec![0u8; 4 << 20]), Some(firewall()), decoding)
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(err, ProxyError::DecompressionBudget { .. }),
            "{err:?}"
        );
        assert_eq!(budget.used(), 0);
    }
}
