//! Response scrubbing: a real token the upstream echoes back (in an error
//! message, an introspection answer, a reflected header) is replaced by its
//! placeholder before the sandbox sees it. Streams, holding back only a tail
//! that could still begin a token.

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use crate::body::{BoxError, ProxyBody};

pub struct Scrubber {
    needles: AhoCorasick,
    tokens: Vec<Vec<u8>>,
    replacements: Vec<Vec<u8>>,
}

impl Scrubber {
    /// `pairs` are (what must not reach the sandbox, what it sees instead).
    pub fn new(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Option<Self> {
        let pairs: Vec<_> = pairs.into_iter().filter(|(t, _)| !t.is_empty()).collect();
        if pairs.is_empty() {
            return None;
        }
        let (tokens, replacements): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        Some(Self {
            needles: AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&tokens)
                .expect("token patterns build"),
            tokens,
            replacements,
        })
    }

    fn replace(&self, data: &[u8]) -> Option<Vec<u8>> {
        self.needles
            .is_match(data)
            .then(|| self.needles.replace_all_bytes(data, &self.replacements))
    }

    pub fn headers(&self, headers: &mut HeaderMap) {
        for value in headers.values_mut() {
            if let Some(clean) = self.replace(value.as_bytes()) {
                if let Ok(v) = HeaderValue::from_bytes(&clean) {
                    *value = v;
                }
            }
        }
    }

    /// Scrubs a whole buffer.
    pub fn whole(&self, data: &[u8]) -> Bytes {
        self.replace(data)
            .map(Bytes::from)
            .unwrap_or_else(|| Bytes::copy_from_slice(data))
    }

    /// Length of the longest suffix of `tail` that begins some token.
    fn partial_len(&self, tail: &[u8]) -> usize {
        let longest = self
            .tokens
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(1)
            .saturating_sub(1)
            .min(tail.len());
        (1..=longest)
            .rev()
            .find(|&k| {
                let suffix = &tail[tail.len() - k..];
                self.tokens.iter().any(|t| t.starts_with(suffix))
            })
            .unwrap_or(0)
    }

    /// Splits `pending` into what can go now (scrubbed) and what stays.
    fn take_ready(&self, pending: &mut BytesMut, complete: bool) -> Bytes {
        let last_end = self
            .needles
            .find_iter(&pending[..])
            .map(|m| m.end())
            .last()
            .unwrap_or(0);
        let hold_from = if complete {
            pending.len()
        } else {
            pending.len() - self.partial_len(&pending[last_end..])
        };
        let ready = pending.split_to(hold_from);
        self.whole(&ready)
    }

    pub fn body(self: std::sync::Arc<Self>, body: ProxyBody) -> ProxyBody {
        let state = (body, self, BytesMut::new(), None::<HeaderMap>, false);
        let stream = futures_util::stream::unfold(
            state,
            |(mut body, scrub, mut pending, mut trailers, mut done)| async move {
                loop {
                    if done {
                        return trailers.take().map(|t| {
                            (
                                Ok::<_, BoxError>(Frame::trailers(t)),
                                (body, scrub, pending, None, true),
                            )
                        });
                    }
                    match body.frame().await {
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) => {
                                if pending.is_empty()
                                    && !scrub.needles.is_match(&data)
                                    && scrub.partial_len(&data) == 0
                                {
                                    return Some((
                                        Ok(Frame::data(data)),
                                        (body, scrub, pending, trailers, done),
                                    ));
                                }
                                pending.extend_from_slice(&data);
                                let ready = scrub.take_ready(&mut pending, false);
                                if !ready.is_empty() {
                                    return Some((
                                        Ok(Frame::data(ready)),
                                        (body, scrub, pending, trailers, done),
                                    ));
                                }
                            }
                            Err(frame) => {
                                trailers = frame.into_trailers().ok();
                                done = true;
                                let ready = scrub.take_ready(&mut pending, true);
                                if !ready.is_empty() {
                                    return Some((
                                        Ok(Frame::data(ready)),
                                        (body, scrub, pending, trailers, done),
                                    ));
                                }
                            }
                        },
                        Some(Err(e)) => return Some((Err(e), (body, scrub, pending, None, true))),
                        None => {
                            done = true;
                            let ready = scrub.take_ready(&mut pending, true);
                            if !ready.is_empty() {
                                return Some((
                                    Ok(Frame::data(ready)),
                                    (body, scrub, pending, trailers, done),
                                ));
                            }
                        }
                    }
                }
            },
        );
        StreamBody::new(stream).boxed_unsync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn tokens_split_across_chunks_are_scrubbed() {
        let scrub = Arc::new(
            Scrubber::new(vec![(b"ghp_REALTOKEN".to_vec(), b"miosa-tok-P".to_vec())]).unwrap(),
        );
        let chunks: [&'static str; 5] = [
            "error: bad token ghp_RE",
            "AL",
            "TOKEN given; ",
            "ghp_REALTOKEN",
            "!",
        ];
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from_static(c.as_bytes()))));
        let body = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
        let out = scrub.body(body).collect().await.unwrap().to_bytes();
        assert_eq!(
            &out[..],
            b"error: bad token miosa-tok-P given; miosa-tok-P!"
        );
    }

    #[test]
    fn headers_are_scrubbed() {
        let scrub = Scrubber::new(vec![(b"SECRET".to_vec(), b"PLACE".to_vec())]).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-echo", "Bearer SECRET".parse().unwrap());
        scrub.headers(&mut h);
        assert_eq!(h["x-echo"], "Bearer PLACE");
    }
}
