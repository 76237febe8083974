//! Streaming: a bounded hold-back over one byte stream, and the body wrapper.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use aho_corasick::Match;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use smallvec::SmallVec;

use super::Firewall;
use crate::body::{BoxError, ProxyBody};

/// What one push releases, in order: slices of the chunk wherever nothing
/// was replaced, so a large chunk is not copied to join it to a few held bytes.
pub type Pieces = SmallVec<[Bytes; 4]>;

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
    /// go now, joined. [`push_pieces`](Self::push_pieces) is the same
    /// without joining.
    pub fn push(&mut self, fw: &Firewall, chunk: Bytes) -> Bytes {
        let mut out = Pieces::new();
        self.push_pieces(fw, chunk, &mut out);
        join(out)
    }

    /// Scrubs `chunk` as the continuation of the stream and appends what can
    /// go now to `out`. Where nothing is replaced the output is slices of
    /// `chunk`: only the bytes that join it to what was held before are copied.
    pub fn push_pieces(&mut self, fw: &Firewall, mut chunk: Bytes, out: &mut Pieces) {
        if !self.held.is_empty() {
            // What is held and the chunk's first `longest - 1` bytes settle
            // all that was held: what stays open is shorter than a spelling.
            // From where that settled, the chunk is searched as a stream of
            // its own, in place.
            let held = self.held.len();
            let seam = (fw.longest_pattern() - 1).min(chunk.len());
            self.held.extend_from_slice(&chunk[..seam]);
            if seam == chunk.len() {
                return self.drain(fw, false, out);
            }
            self.matches.clear();
            let settled = fw.settle(&self.held, false, &mut self.matches);
            debug_assert!(settled >= held, "the seam settles what was held");
            let ready = self.held.split_to(settled);
            self.held.clear();
            let (scrubbed, replaced) = self.scrubbed(fw, ready);
            // The rest of the chunk follows: a replacement may still come.
            self.release(fw, scrubbed, replaced, false, true, out);
            chunk = chunk.slice(settled - held..);
        }
        self.matches.clear();
        let settled = fw.settle(&chunk, false, &mut self.matches);
        self.held.extend_from_slice(&chunk[settled..]);
        let more = !self.held.is_empty();
        if self.matches.is_empty() {
            return self.release(fw, chunk.slice(..settled), false, false, more, out);
        }
        let mut scrubbed = BytesMut::with_capacity(settled + 64);
        fw.write_scrubbed(&chunk[..settled], &self.matches, &mut scrubbed);
        self.release(fw, scrubbed.freeze(), true, false, more, out);
    }

    /// The stream ended: everything held is settled.
    pub fn finish(&mut self, fw: &Firewall) -> Bytes {
        let mut out = Pieces::new();
        self.drain(fw, true, &mut out);
        join(out)
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
        let more = !self.held.is_empty();
        if self.unreleased.is_empty() && !replaced && (complete || !more) {
            return;
        }
        let scrubbed = out.split_off(start).freeze();
        let mut pieces = Pieces::new();
        self.release(fw, scrubbed, replaced, complete, more, &mut pieces);
        for piece in pieces {
            out.extend_from_slice(&piece);
        }
    }

    fn drain(&mut self, fw: &Firewall, complete: bool, out: &mut Pieces) {
        self.matches.clear();
        let settled = fw.settle(&self.held, complete, &mut self.matches);
        let ready = self.held.split_to(settled);
        let more = !self.held.is_empty();
        let (scrubbed, replaced) = self.scrubbed(fw, ready);
        self.release(fw, scrubbed, replaced, complete, more, out);
    }

    /// `ready` with `self.matches` replaced, and whether any was.
    fn scrubbed(&self, fw: &Firewall, ready: BytesMut) -> (Bytes, bool) {
        if self.matches.is_empty() {
            return (ready.freeze(), false);
        }
        let mut out = BytesMut::with_capacity(ready.len() + 64);
        fw.write_scrubbed(&ready, &self.matches, &mut out);
        (out.freeze(), true)
    }

    /// The second stage: `scrubbed` is the next settled output, `replaced`
    /// whether it holds a replacement, `more` whether the first stage holds
    /// input back (a replacement may come right after this output). Output
    /// with no replacement in or before it needs no second search: the first
    /// stage found every spelling there. Only its tail may be completed by a
    /// replacement still to come, and only when the first stage holds input
    /// back.
    fn release(
        &mut self,
        fw: &Firewall,
        scrubbed: Bytes,
        replaced: bool,
        complete: bool,
        more: bool,
        out: &mut Pieces,
    ) {
        if self.unreleased.is_empty() && !replaced {
            if complete || !more {
                out.push(scrubbed);
                return;
            }
            let open = fw.first_open(&scrubbed, 0);
            self.unreleased.extend_from_slice(&scrubbed[open..]);
            out.push(scrubbed.slice(..open));
            return;
        }
        let seam = fw.longest_pattern() - 1;
        if !replaced && scrubbed.len() > seam {
            // A spelling a replacement before `scrubbed` completed ends
            // within its first `longest - 1` bytes; past what that settles,
            // `scrubbed` is clean output as above, released in place.
            let unreleased = self.unreleased.len();
            self.unreleased.extend_from_slice(&scrubbed[..seam]);
            self.matches.clear();
            let settled = fw.settle(&self.unreleased, false, &mut self.matches);
            debug_assert!(
                settled >= unreleased,
                "the seam settles what was unreleased"
            );
            let mut ready = self.unreleased.split_to(settled);
            self.unreleased.clear();
            fw.mask(&mut ready, &self.matches);
            out.push(ready.freeze());
            let rest = scrubbed.slice(settled - unreleased..);
            return self.release(fw, rest, false, complete, more, out);
        }
        self.unreleased.extend_from_slice(&scrubbed);
        self.matches.clear();
        // Until the first stage is done, a replacement may still come.
        let settled = fw.settle(&self.unreleased, complete, &mut self.matches);
        let mut ready = self.unreleased.split_to(settled);
        fw.mask(&mut ready, &self.matches);
        debug_assert!(self.held.len() < fw.longest_pattern());
        debug_assert!(self.unreleased.len() < fw.longest_pattern());
        out.push(ready.freeze());
    }
}

/// The pieces as one buffer: copied only when there are several.
fn join(mut pieces: Pieces) -> Bytes {
    match pieces.len() {
        0 => Bytes::new(),
        1 => pieces.pop().expect("one piece"),
        _ => {
            let mut joined = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
            for piece in &pieces {
                joined.extend_from_slice(piece);
            }
            joined.freeze()
        }
    }
}

/// A body scrubbed on the way through: data with a bounded hold-back,
/// trailers with [`Firewall::scrub_headers`]; errors pass through (and drop
/// what was held). Its length is unknown: a replacement may change it.
pub struct FirewallBody {
    inner: ProxyBody,
    fw: Arc<Firewall>,
    hold: Holdback,
    /// Released and not yet sent, in reverse order (the next one last).
    ready: Pieces,
    trailers: Option<HeaderMap>,
    done: bool,
}

impl FirewallBody {
    pub fn new(fw: Arc<Firewall>, inner: ProxyBody) -> Self {
        Self {
            inner,
            fw,
            hold: Holdback::new(),
            ready: Pieces::new(),
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
            while let Some(piece) = this.ready.pop() {
                if !piece.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(piece))));
                }
            }
            if this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let mut released = Pieces::new();
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.hold.push_pieces(&this.fw, data, &mut released),
                    Err(frame) => {
                        if let Ok(mut trailers) = frame.into_trailers() {
                            this.fw.scrub_headers(&mut trailers);
                            this.trailers = Some(trailers);
                        }
                        this.done = true;
                        released.push(this.hold.finish(&this.fw));
                    }
                },
                Some(Err(err)) => {
                    this.done = true;
                    this.hold = Holdback::new();
                    return Poll::Ready(Some(Err(err)));
                }
                None => {
                    this.done = true;
                    released.push(this.hold.finish(&this.fw));
                }
            }
            released.reverse();
            this.ready = released;
        }
    }

    fn is_end_stream(&self) -> bool {
        if !self.ready.iter().all(Bytes::is_empty) {
            return false;
        }
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
