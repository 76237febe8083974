//! Body types shared by both sides of the proxy.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy sends or forwards. Streams; never buffers whole.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Counts the data bytes that pass through, and runs `on_drop` once the body
/// is finished or abandoned (with the count and whether it reached the end).
pub struct Metered {
    inner: ProxyBody,
    bytes: Arc<AtomicU64>,
    finished: bool,
    on_drop: Option<Box<dyn FnOnce(bool) + Send>>,
}

impl Metered {
    pub fn new(inner: ProxyBody, bytes: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            bytes,
            finished: false,
            on_drop: None,
        }
    }

    pub fn on_drop(mut self, f: impl FnOnce(bool) + Send + 'static) -> Self {
        self.on_drop = Some(Box::new(f));
        self
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) => self.finished = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f(self.finished || self.inner.is_end_stream());
        }
    }
}
