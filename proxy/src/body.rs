//! Body types shared by both sides of the proxy.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

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

/// Counts the data bytes that pass through, into a shared counter (a
/// request body the upstream connection reads) or for `on_drop`, which runs
/// once the body is finished or abandoned with whether it reached the end and
/// the count.
pub struct Metered<F: FnOnce(bool, u64) = fn(bool, u64)> {
    inner: ProxyBody,
    shared: Option<Arc<AtomicU64>>,
    counted: u64,
    finished: bool,
    /// Generic, not boxed: the audit's closure costs no allocation of its own.
    on_drop: Option<F>,
}

impl Metered {
    pub fn new(inner: ProxyBody, bytes: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            shared: Some(bytes),
            counted: 0,
            finished: false,
            on_drop: None,
        }
    }
}

impl<F: FnOnce(bool, u64)> Metered<F> {
    /// Counts for `on_drop` alone (the answer's body owns its audit record).
    pub fn with_on_drop(inner: ProxyBody, on_drop: F) -> Self {
        Self {
            inner,
            shared: None,
            counted: 0,
            finished: false,
            on_drop: Some(on_drop),
        }
    }
}

impl<F: FnOnce(bool, u64) + Unpin> Body for Metered<F> {
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
                    let len = data.len() as u64;
                    self.counted += len;
                    if let Some(shared) = &self.shared {
                        shared.fetch_add(len, Ordering::Relaxed);
                    }
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

impl<F: FnOnce(bool, u64)> Drop for Metered<F> {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f(self.finished || self.inner.is_end_stream(), self.counted);
        }
    }
}

/// How much of a request body is still read (and dropped) after the upstream
/// stopped taking it, so an early answer reaches the client intact.
#[derive(Clone, Copy, Debug)]
pub struct DrainLimit {
    pub bytes: u64,
    pub time: Duration,
}

impl DrainLimit {
    /// Larger or slower remainders are abandoned (an HTTP/2 client then gets
    /// RST_STREAM(NO_ERROR) once the answer is complete, RFC 9113 §8.1).
    pub const DEFAULT: DrainLimit = DrainLimit {
        bytes: 16 * 1024 * 1024,
        time: Duration::from_secs(10),
    };
}

/// A client's request body that, when dropped before its end (the upstream
/// answered early, or went away), keeps reading the rest in the background
/// within `limit`. Dropping it at once would reset the client's HTTP/2 stream
/// with CANCEL before the answer is sent, or leave it blocked on flow control,
/// and the client would lose the answer.
pub struct DrainOnDrop {
    inner: ProxyBody,
    limit: DrainLimit,
    finished: bool,
}

impl DrainOnDrop {
    pub fn new(inner: ProxyBody, limit: DrainLimit) -> Self {
        Self {
            inner,
            limit,
            finished: false,
        }
    }
}

impl Body for DrainOnDrop {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // After an error there is nothing left to drain either.
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.finished = true;
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

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        if self.finished || self.inner.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let rest = std::mem::replace(&mut self.inner, empty());
        runtime.spawn(drain(rest, self.limit));
    }
}

/// Reads and discards `body` until it ends, fails, or `limit` is reached.
/// Returns how many data bytes were read.
pub async fn drain(mut body: ProxyBody, limit: DrainLimit) -> u64 {
    let mut read = 0u64;
    let reading = async {
        while read <= limit.bytes {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        read += data.len() as u64;
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
    };
    let _ = tokio::time::timeout(limit.time, reading).await;
    read
}

/// A whole body with its trailers, if it had any.
pub fn with_trailers(data: Bytes, trailers: Option<http::HeaderMap>) -> ProxyBody {
    match trailers {
        None => full(data),
        Some(t) => {
            let frames: [Result<_, BoxError>; 2] = [Ok(Frame::data(data)), Ok(Frame::trailers(t))];
            boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
                frames,
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// A body fed by a channel of capacity 1: the sender only gets far when
    /// someone reads.
    fn channel_body() -> (mpsc::Sender<Bytes>, ProxyBody) {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
        });
        (tx, boxed(http_body_util::StreamBody::new(stream)))
    }

    const ROOMY: DrainLimit = DrainLimit {
        bytes: 1 << 20,
        time: Duration::from_secs(30),
    };

    #[tokio::test]
    async fn a_body_dropped_early_is_read_to_its_end_in_the_background() {
        let (tx, body) = channel_body();
        let mut body = DrainOnDrop::new(body, ROOMY);
        tx.send(Bytes::from_static(b"first")).await.unwrap();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"first");
        drop(body);
        // Each send waits for the drain to take the previous chunk.
        for _ in 0..100 {
            tx.send(Bytes::from(vec![0u8; 1000])).await.unwrap();
        }
        drop(tx);
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_is_not_drained() {
        let (tx, body) = channel_body();
        let mut body = DrainOnDrop::new(body, ROOMY);
        tx.send(Bytes::from_static(b"all")).await.unwrap();
        drop(tx);
        while body.frame().await.is_some() {}
        assert!(body.finished);
    }

    #[tokio::test]
    async fn the_drain_stops_at_its_byte_limit() {
        let (tx, body) = channel_body();
        let limit = DrainLimit {
            bytes: 10_000,
            time: Duration::from_secs(30),
        };
        let sender = tokio::spawn(async move {
            let mut sent = 0u64;
            // Ends when the drain gives up and drops the body.
            for _ in 0..10_000 {
                if tx.send(Bytes::from(vec![0u8; 1000])).await.is_err() {
                    break;
                }
                sent += 1000;
            }
            sent
        });
        let read = drain(body, limit).await;
        assert!(read > limit.bytes && read <= limit.bytes + 1000, "{read}");
        let sent = sender.await.unwrap();
        assert!(sent < 10_000 * 1000, "the sender was cut off: {sent}");
    }

    #[tokio::test]
    async fn the_drain_stops_at_its_time_limit() {
        let (tx, body) = channel_body();
        let limit = DrainLimit {
            bytes: 1 << 20,
            time: Duration::from_millis(50),
        };
        tx.send(Bytes::from_static(b"some")).await.unwrap();
        // The client never finishes; the drain still returns.
        assert_eq!(drain(body, limit).await, 4);
        assert!(tx.send(Bytes::from_static(b"more")).await.is_err());
    }

    #[tokio::test]
    async fn metered_counts_what_was_polled() {
        let bytes = Arc::new(AtomicU64::new(0));
        let mut body = Metered::new(full(Bytes::from_static(b"12345")), bytes.clone());
        while body.frame().await.is_some() {}
        assert_eq!(bytes.load(Ordering::Relaxed), 5);
        // Without a shared counter, `on_drop` gets the count.
        let seen = Arc::new(std::sync::Mutex::new(None));
        let report = seen.clone();
        let mut body = Metered::with_on_drop(full(Bytes::from_static(b"123")), move |done, n| {
            *report.lock().unwrap() = Some((done, n));
        });
        while body.frame().await.is_some() {}
        drop(body);
        assert_eq!(*seen.lock().unwrap(), Some((true, 3)));
    }
}
