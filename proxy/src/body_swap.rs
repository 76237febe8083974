//! Placeholders in request bodies: whole small bodies (kept for a replay) and
//! streamed large ones, swapped chunk-boundary safe while holding back only
//! the bytes that could still begin a placeholder.

use std::collections::VecDeque;

use airlock_vault_client::SwapLocation;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use crate::body::{BoxError, ProxyBody};
use crate::error::ProxyError;
use crate::swap::{Context, Swapper};

/// How the body's bytes are to be read, from its `Content-Type`.
pub fn context_of(headers: &HeaderMap) -> Context {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence == "application/json" || essence.ends_with("+json") {
        Context::Json
    } else if essence == "application/x-www-form-urlencoded" {
        Context::Url
    } else {
        Context::Raw
    }
}

/// Whether a body of this type may be re-framed (chunked) when a swap
/// changes its length. Opaque uploads keep their `Content-Length`.
pub fn is_textual(headers: &HeaderMap) -> bool {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    ct.is_empty()
        || ct.starts_with("text/")
        || ct.starts_with("multipart/")
        || ct.contains("json")
        || ct.contains("xml")
        || ct.contains("x-www-form-urlencoded")
        || ct.contains("graphql")
}

/// A body read up to a bound: whole, or the part read so far and the rest.
pub enum Collected {
    Whole(Bytes, Option<HeaderMap>),
    Partial {
        read: VecDeque<Bytes>,
        rest: ProxyBody,
    },
}

/// Reads `body` until it ends or more than `bound` bytes arrived. A body of
/// one frame (the usual small answer) is kept without a queue or a copy.
pub async fn collect_up_to(mut body: ProxyBody, bound: usize) -> Result<Collected, BoxError> {
    let mut first: Option<Bytes> = None;
    let mut read = VecDeque::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => {
                total += data.len();
                if first.is_none() && read.is_empty() {
                    first = Some(data);
                } else {
                    read.extend(first.take());
                    read.push_back(data);
                }
                if total > bound {
                    read.extend(first.take());
                    return Ok(Collected::Partial { read, rest: body });
                }
                // The last frame (HTTP/2's END_STREAM, a Content-Length
                // reached): no poll to learn there is nothing more.
                if http_body::Body::is_end_stream(&body) {
                    return Ok(Collected::Whole(concat(first, read, total), None));
                }
            }
            Err(frame) => {
                let trailers = frame.into_trailers().ok();
                return Ok(Collected::Whole(concat(first, read, total), trailers));
            }
        }
    }
    Ok(Collected::Whole(concat(first, read, total), None))
}

fn concat(first: Option<Bytes>, rest: VecDeque<Bytes>, total: usize) -> Bytes {
    if rest.is_empty() {
        return first.unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(total);
    for p in rest {
        out.extend_from_slice(&p);
    }
    out.freeze()
}

/// Swaps a whole body.
pub async fn swap_whole(
    swapper: &mut Swapper,
    body: &Bytes,
    context: Context,
) -> Result<Bytes, ProxyError> {
    Ok(
        match swapper
            .swap_bytes(body, SwapLocation::Body, context)
            .await?
        {
            Some(swapped) => Bytes::from(swapped),
            None => body.clone(),
        },
    )
}

/// What a streamed body may do with a placeholder it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    /// Swap it (the body was re-framed, so its length may change).
    Swap,
    /// Refuse it: the body keeps its `Content-Length`, so nothing may change size.
    RefuseAny,
}

struct StreamState {
    prefix: VecDeque<Bytes>,
    body: ProxyBody,
    swapper: Swapper,
    pending: BytesMut,
    context: Context,
    mode: StreamMode,
    trailers: Option<HeaderMap>,
    done: bool,
}

impl StreamState {
    async fn next_frame(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        if let Some(data) = self.prefix.pop_front() {
            return Some(Ok(Frame::data(data)));
        }
        self.body.frame().await
    }

    /// Swaps what is certain, keeps what could still start a placeholder.
    async fn process(&mut self, complete: bool) -> Result<Bytes, ProxyError> {
        let (found, hold) = self.swapper.scanner().scan(&self.pending, complete);
        let ready = self.pending.split_to(hold).freeze();
        if found.is_empty() {
            return Ok(ready);
        }
        if self.mode == StreamMode::RefuseAny {
            // Inert placeholders (bound elsewhere) may stay; one to swap may not.
            if self.swapper.body_needs_swap(&found).await? {
                return Err(ProxyError::BodyNotSwappable);
            }
            return Ok(ready);
        }
        self.swapper
            .apply(&ready, &found, SwapLocation::Body, self.context)
            .await
            .map(Bytes::from)
    }

    async fn step(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        loop {
            if self.done {
                return self.trailers.take().map(|t| Ok(Frame::trailers(t)));
            }
            match self.next_frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        // Fast path: nothing held and nothing placeholder-like in this chunk.
                        if self.pending.is_empty() {
                            let (found, hold) = self.swapper.scanner().scan(&data, false);
                            if found.is_empty() && hold == data.len() {
                                return Some(Ok(Frame::data(data)));
                            }
                        }
                        self.pending.extend_from_slice(&data);
                        match self.process(false).await {
                            Ok(out) if out.is_empty() => continue,
                            Ok(out) => return Some(Ok(Frame::data(out))),
                            Err(e) => {
                                self.done = true;
                                return Some(Err(Box::new(e)));
                            }
                        }
                    }
                    Err(frame) => {
                        let mut trailers = frame.into_trailers().ok();
                        // Trailers are a credential position, like headers.
                        if let Some(t) = trailers.as_mut() {
                            if let Err(e) = self.swapper.swap_headers(t).await {
                                self.done = true;
                                return Some(Err(Box::new(e)));
                            }
                        }
                        self.trailers = trailers;
                        return self.finish().await;
                    }
                },
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => return self.finish().await,
            }
        }
    }

    async fn finish(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        self.done = true;
        match self.process(true).await {
            Ok(out) if out.is_empty() => self.trailers.take().map(|t| Ok(Frame::trailers(t))),
            Ok(out) => Some(Ok(Frame::data(out))),
            Err(e) => Some(Err(Box::new(e))),
        }
    }
}

/// `prefix` then `rest`, with placeholders swapped (or refused) as they stream.
pub fn streaming(
    prefix: VecDeque<Bytes>,
    rest: ProxyBody,
    swapper: Swapper,
    context: Context,
    mode: StreamMode,
) -> ProxyBody {
    let state = StreamState {
        prefix,
        body: rest,
        swapper,
        pending: BytesMut::new(),
        context,
        mode,
        trailers: None,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        state.step().await.map(|frame| (frame, state))
    });
    StreamBody::new(stream).boxed_unsync()
}

/// `read` then `rest`, unchanged.
pub fn streaming_passthrough(read: VecDeque<Bytes>, rest: ProxyBody) -> ProxyBody {
    let head =
        futures_util::stream::iter(read.into_iter().map(|b| Ok::<_, BoxError>(Frame::data(b))));
    let tail = futures_util::stream::unfold(rest, |mut rest| async move {
        rest.frame().await.map(|f| (f, rest))
    });
    StreamBody::new(futures_util::StreamExt::chain(head, tail)).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swap::Scanner;
    use std::pin::Pin;
    use std::task::{Context as TaskContext, Poll};

    /// One data frame, then the end of the stream, which it reports; polled
    /// again, it fails.
    struct EndsAfterOne(Option<Bytes>);

    impl http_body::Body for EndsAfterOne {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            Poll::Ready(Some(match self.0.take() {
                Some(data) => Ok(http_body::Frame::data(data)),
                None => Err("polled after its end".into()),
            }))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_none()
        }
    }

    #[tokio::test]
    async fn a_body_that_says_it_ended_is_not_polled_again() {
        let body = crate::body::boxed(EndsAfterOne(Some(Bytes::from_static(b"hello"))));
        match collect_up_to(body, 1024).await.unwrap() {
            Collected::Whole(data, trailers) => {
                assert_eq!(data, "hello");
                assert!(trailers.is_none());
            }
            Collected::Partial { .. } => panic!("the whole body fits"),
        }
    }
    use airlock_vault_client::{
        generate_placeholder, HostPattern, SandboxId, SecretString, StaticSecret, StaticSecrets,
    };
    use proptest::prelude::*;
    use std::sync::Arc;

    const REAL: &str = "tok_REAL+value/with=chars";

    fn swapper(placeholder: &str) -> Swapper {
        let src = StaticSecrets::new(
            "miosa-tok-",
            SandboxId::default_sandbox(),
            vec![StaticSecret {
                name: "T".into(),
                value: SecretString::from(REAL),
                placeholder: placeholder.to_owned(),
                hosts: vec![HostPattern::parse("api.test").unwrap()],
                swap_in: [SwapLocation::Header, SwapLocation::Body]
                    .into_iter()
                    .collect(),
                on_foreign_body: Default::default(),
                rules: Default::default(),
                signing: None,
                inject_when_absent: None,
            }],
        );
        Swapper::new(
            Arc::new(src),
            Arc::new(Scanner::new("miosa-tok-")),
            SandboxId::default_sandbox(),
            "api.test",
        )
    }

    fn body_of(chunks: Vec<Vec<u8>>) -> ProxyBody {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from(c))));
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    async fn run_stream(
        placeholder: &str,
        chunks: Vec<Vec<u8>>,
        context: Context,
    ) -> Result<Vec<u8>, String> {
        let body = streaming(
            VecDeque::new(),
            body_of(chunks),
            swapper(placeholder),
            context,
            StreamMode::Swap,
        );
        body.collect()
            .await
            .map(|c| c.to_bytes().to_vec())
            .map_err(|e| e.to_string())
    }

    fn split(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.sort();
        points.dedup();
        let mut out = Vec::new();
        let mut last = 0;
        for p in points {
            out.push(data[last..p].to_vec());
            last = p;
        }
        out.push(data[last..].to_vec());
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// For random bodies, placeholder positions, spellings and chunkings
        /// (1-byte chunks included), the stream equals the whole-buffer swap.
        #[test]
        fn streamed_swap_equals_whole_swap(
            filler in proptest::collection::vec(any::<u8>(), 0..300),
            positions in proptest::collection::vec(0usize..300, 0..4),
            spellings in proptest::collection::vec(0usize..3, 4),
            cuts in proptest::collection::vec(0usize..1000, 0..40),
            byte_chunks in any::<bool>(),
        ) {
            let placeholder = "miosa-tok-AbCdEfGhIjKlMnOpQrStUvWxYz012345";
            let random = &placeholder["miosa-tok-".len()..];
            let mut body = filler.clone();
            let mut sorted = positions.clone();
            sorted.sort_by(|a, b| b.cmp(a));
            for (i, pos) in sorted.iter().enumerate() {
                let written = match spellings[i % spellings.len()] {
                    0 => placeholder.to_owned(),
                    1 => format!("miosa\\u002dtok\\u002d{random}"),
                    _ => format!("miosa%2Dtok%2D{random}"),
                };
                // A separator keeps random filler from extending the base62 run.
                let at = (*pos).min(body.len());
                body.splice(at..at, format!(" {written} ").into_bytes());
            }
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let whole = runtime.block_on(async {
                let mut s = swapper(placeholder);
                s.swap_bytes(&body, SwapLocation::Body, Context::Raw).await.map(|o| o.unwrap_or(body.clone())).map_err(|e| e.to_string())
            });
            let chunks = if byte_chunks { body.iter().map(|b| vec![*b]).collect() } else { split(&body, &cuts) };
            let streamed = runtime.block_on(run_stream(placeholder, chunks, Context::Raw));
            prop_assert_eq!(whole, streamed);
        }
    }

    #[tokio::test]
    async fn json_and_form_bodies_get_encoded_tokens() {
        let p = generate_placeholder("miosa-tok-");
        let json = format!(r#"{{"token":"{p}"}}"#).into_bytes();
        let out = run_stream(&p, vec![json], Context::Json).await.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"token":"tok_REAL+value/with=chars"}"#
        );
        let form = format!("a=1&token={p}").into_bytes();
        let out = run_stream(&p, vec![form], Context::Url).await.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a=1&token=tok_REAL%2Bvalue%2Fwith%3Dchars"
        );
    }

    #[tokio::test]
    async fn an_unknown_placeholder_in_a_body_is_inert_text() {
        let p = generate_placeholder("miosa-tok-");
        let other = generate_placeholder("miosa-tok-");
        let body = format!("x {other} y {p} z");
        let out = run_stream(&p, vec![body.clone().into_bytes()], Context::Raw)
            .await
            .unwrap();
        // The unknown one stays as written; the bound one is swapped.
        assert_eq!(out, format!("x {other} y {REAL} z").into_bytes());
    }

    #[tokio::test]
    async fn scan_only_streams_refuse_instead_of_changing_length() {
        let p = generate_placeholder("miosa-tok-");
        let body = streaming(
            VecDeque::new(),
            body_of(vec![p.clone().into_bytes()]),
            swapper(&p),
            Context::Raw,
            StreamMode::RefuseAny,
        );
        let err = body.collect().await.err().unwrap().to_string();
        assert!(err.contains("Content-Length"), "{err}");
    }
}
