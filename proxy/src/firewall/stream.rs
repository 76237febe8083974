//! Streaming: a bounded hold-back over one byte stream, and the body wrapper.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use aho_corasick::Match;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::Firewall;
use crate::body::{BoxError, ProxyBody};

/// The unsettled tail of one stream, in two stages. The input not yet
/// settled: the longest suffix that is a proper prefix of some spelling,
/// shorter than the longest spelling. And scrubbed output not yet released:
/// a replacement can complete a spelling with the bytes beside it, so output
/// near one is searched again and such a spelling masked, as
/// [`Firewall::scrub`] does. Together under twice the longest spelling.
#[derive(Default)]
pub struct Holdback {
    held: BytesMut,
    unreleased: BytesMut,
    matches: Vec<Match>,
}

impl Holdback {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes currently held back.
    pub fn held_len(&self) -> usize {
        self.held.len() + self.unreleased.len()
    }

    /// Scrubs `chunk` as the continuation of the stream and returns what can
    /// go now. A chunk with nothing to replace and nothing held before it is
    /// returned as a slice of itself, without copying.
    pub fn push(&mut self, fw: &Firewall, chunk: Bytes) -> Bytes {
        if !self.held.is_empty() {
            self.held.extend_from_slice(&chunk);
            return self.drain(fw, false);
        }
        self.matches.clear();
        let settled = fw.settle(&chunk, false, &mut self.matches);
        self.held.extend_from_slice(&chunk[settled..]);
        if self.matches.is_empty() {
            return self.release(fw, chunk.slice(..settled), false, false);
        }
        let mut out = BytesMut::with_capacity(settled + 64);
        fw.write_scrubbed(&chunk[..settled], &self.matches, &mut out);
        self.release(fw, out.freeze(), true, false)
    }

    /// The stream ended: everything held is settled.
    pub fn finish(&mut self, fw: &Firewall) -> Bytes {
        self.drain(fw, true)
    }

    /// Like [`push`](Self::push) (or [`finish`](Self::finish) after `chunk`
    /// when `complete`), appending the output to `out`.
    pub fn push_into(&mut self, fw: &Firewall, chunk: &[u8], complete: bool, out: &mut BytesMut) {
        self.matches.clear();
        let start = out.len();
        if self.held.is_empty() {
            let settled = fw.settle(chunk, complete, &mut self.matches);
            fw.write_scrubbed(&chunk[..settled], &self.matches, out);
            self.held.extend_from_slice(&chunk[settled..]);
        } else {
            self.held.extend_from_slice(chunk);
            let settled = fw.settle(&self.held, complete, &mut self.matches);
            let ready = self.held.split_to(settled);
            fw.write_scrubbed(&ready, &self.matches, out);
        }
        let replaced = !self.matches.is_empty();
        if self.unreleased.is_empty() && !replaced && (complete || self.held.is_empty()) {
            return;
        }
        let scrubbed = out.split_off(start).freeze();
        out.extend_from_slice(&self.release(fw, scrubbed, replaced, complete));
    }

    fn drain(&mut self, fw: &Firewall, complete: bool) -> Bytes {
        self.matches.clear();
        let settled = fw.settle(&self.held, complete, &mut self.matches);
        let ready = self.held.split_to(settled);
        if self.matches.is_empty() {
            return self.release(fw, ready.freeze(), false, complete);
        }
        let mut out = BytesMut::with_capacity(ready.len() + 64);
        fw.write_scrubbed(&ready, &self.matches, &mut out);
        self.release(fw, out.freeze(), true, complete)
    }

    /// The second stage: `scrubbed` is the next settled output, `replaced`
    /// whether it holds a replacement. Output with no replacement in or
    /// before it needs no second search: the first stage found every
    /// spelling there. Only its tail may be completed by a replacement still
    /// to come, and only when the first stage holds input back.
    fn release(&mut self, fw: &Firewall, scrubbed: Bytes, replaced: bool, complete: bool) -> Bytes {
        if self.unreleased.is_empty() && !replaced {
            if complete || self.held.is_empty() {
                return scrubbed;
            }
            let open = fw.first_open(&scrubbed, 0);
            self.unreleased.extend_from_slice(&scrubbed[open..]);
            return scrubbed.slice(..open);
        }
        self.unreleased.extend_from_slice(&scrubbed);
        self.matches.clear();
        // Until the first stage is done, a replacement may still come.
        let settled = fw.settle(&self.unreleased, complete, &mut self.matches);
        let mut ready = self.unreleased.split_to(settled);
        fw.mask(&mut ready, &self.matches);
        debug_assert!(self.held.len() < fw.longest_pattern());
        debug_assert!(self.unreleased.len() < fw.longest_pattern());
        ready.freeze()
    }
}

/// A body scrubbed on the way through: data with a bounded hold-back,
/// trailers with [`Firewall::scrub_headers`]; errors pass through (and drop
/// what was held). Its length is unknown: a replacement may change it.
pub struct FirewallBody {
    inner: ProxyBody,
    fw: Arc<Firewall>,
    hold: Holdback,
    trailers: Option<HeaderMap>,
    done: bool,
}

impl FirewallBody {
    pub fn new(fw: Arc<Firewall>, inner: ProxyBody) -> Self {
        Self {
            inner,
            fw,
            hold: Holdback::new(),
            trailers: None,
            done: false,
        }
    }
}

impl Body for FirewallBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let ready = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.hold.push(&this.fw, data),
                    Err(frame) => {
                        if let Ok(mut trailers) = frame.into_trailers() {
                            this.fw.scrub_headers(&mut trailers);
                            this.trailers = Some(trailers);
                        }
                        this.done = true;
                        this.hold.finish(&this.fw)
                    }
                },
                Some(Err(err)) => {
                    this.done = true;
                    this.hold = Holdback::new();
                    return Poll::Ready(Some(Err(err)));
                }
                None => {
                    this.done = true;
                    this.hold.finish(&this.fw)
                }
            };
            if !ready.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(ready))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return self.trailers.is_none();
        }
        self.hold.held_len() == 0 && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.is_end_stream() {
            SizeHint::with_exact(0)
        } else {
            SizeHint::default()
        }
    }
}

impl Firewall {
    /// Scrubs a body as it streams.
    pub fn body(self: Arc<Self>, body: ProxyBody) -> ProxyBody {
        crate::body::boxed(FirewallBody::new(self, body))
    }
}
