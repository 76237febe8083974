//! hyper's server settings for the sandbox's side, in one place: the plain
//! listener (HTTP/1.1) and intercepted connections (HTTP/1.1 or HTTP/2) take
//! the same limits from [`ProxySettings`].

use std::time::Duration;

use futures_util::FutureExt;
use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::metrics::{Metrics, ReasonLabel};
use crate::rewind::Rewind;
use crate::settings::ProxySettings;

/// The HTTP/1.1 limits, for hyper's two builder types (the plain one and
/// the auto builder's HTTP/1.1 half) that share no trait.
macro_rules! http1_limits {
    ($builder:expr, $settings:expr) => {
        $builder
            .timer(TokioTimer::new())
            .header_read_timeout($settings.header_read_timeout)
            .max_buf_size(max_buf_size($settings))
            .max_headers($settings.max_headers)
    };
}

/// HTTP/1.1 with the proxy's header limits and timeouts.
pub(crate) fn http1(settings: &ProxySettings) -> http1::Builder {
    let mut builder = http1::Builder::new();
    http1_limits!(builder, settings);
    builder
}

/// The HTTP/2 limits, for hyper's HTTP/2 builder and the auto builder's
/// HTTP/2 half; extended CONNECT (RFC 8441 WebSocket) is accepted.
macro_rules! http2_limits {
    ($builder:expr, $settings:expr) => {
        $builder
            .timer(TokioTimer::new())
            .max_header_list_size($settings.max_header_bytes as u32)
            .enable_connect_protocol()
            .adaptive_window(true)
    };
}

/// HTTP/1.1 or HTTP/2 by the client's preface, both with the proxy's limits.
fn auto(settings: &ProxySettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    http1_limits!(builder.http1(), settings);
    http2_limits!(builder.http2(), settings);
    builder
}

/// What a TLS handshake's ALPN chose for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Negotiated {
    Http1,
    Http2,
    /// The client offered no ALPN: told apart by its preface.
    Nothing,
}

impl Negotiated {
    pub(crate) fn from_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Self::Http2,
            // Only what the leaf's config offers can be chosen.
            Some(_) => Self::Http1,
            None => Self::Nothing,
        }
    }

    /// Without ALPN, the client's first bytes tell: HTTP/2's preface starts
    /// `PRI `, a method no HTTP/1.1 request has. Fewer bytes than that are
    /// left to hyper-util's sniffing.
    fn or_by_preface(self, first: &[u8]) -> Self {
        match self {
            Self::Nothing if first.len() >= 4 => {
                if first.starts_with(b"PRI ") {
                    Self::Http2
                } else {
                    Self::Http1
                }
            }
            chosen => chosen,
        }
    }
}

/// How much of the client's first bytes is read before hyper takes over: as
/// much as hyper's first read takes, so a request head that came whole is
/// parsed whole (a partial first read doubles hyper's read buffer to 16 KiB
/// for the connection's life).
const FIRST_READ: usize = 8192;

/// The client's first bytes: one awaited (nothing is allocated while the
/// connection idles), then whatever else is readable at once — the rest of
/// the TLS record that byte came in. Empty if the client closed.
async fn first_bytes<I: AsyncRead + Unpin>(io: &mut I) -> std::io::Result<Vec<u8>> {
    let mut byte = [0u8; 1];
    if io.read(&mut byte).await? == 0 {
        return Ok(Vec::new());
    }
    let mut first = vec![0; FIRST_READ];
    first[0] = byte[0];
    let mut len = 1;
    while len < first.len() {
        match io.read(&mut first[len..]).now_or_never() {
            Some(Ok(0)) | None => break,
            Some(Ok(n)) => len += n,
            Some(Err(error)) => return Err(error),
        }
    }
    first.truncate(len);
    Ok(first)
}

/// Serves an intercepted TLS connection on the protocol its handshake chose.
/// hyper's buffers (16 KiB) are allocated only once the client has sent its
/// first bytes, within `header_read_timeout`; a client that offered no ALPN
/// is told apart by those bytes.
pub(crate) async fn serve_tls<I, S, B>(
    settings: &ProxySettings,
    metrics: &Metrics,
    mut io: I,
    negotiated: Negotiated,
    service: S,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<http::Request<Incoming>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let first = tokio::time::timeout(settings.header_read_timeout, first_bytes(&mut io)).await;
    let first = match first {
        Ok(Ok(first)) if first.is_empty() => return Ok(()),
        Ok(Ok(first)) => first,
        Ok(Err(error)) => return Err(error.into()),
        Err(_) => {
            count(metrics, "header_read_timeout");
            return Ok(());
        }
    };
    let negotiated = negotiated.or_by_preface(&first);
    let io = TokioIo::new(Rewind::new(first, io));
    // HTTP/2 and sniffing connections are boxed (1.5 KiB each), so an
    // HTTP/1.1 connection's task is only as large as its own state.
    let served = match negotiated {
        Negotiated::Http2 => {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            http2_limits!(builder, settings);
            Box::pin(builder.serve_connection(io, service))
                .await
                .map_err(Into::into)
        }
        Negotiated::Http1 => http1(settings)
            .serve_connection(io, service)
            .with_upgrades()
            .await
            .map_err(Into::into),
        Negotiated::Nothing => {
            let builder = auto(settings);
            Box::pin(builder.serve_connection_with_upgrades(io, service)).await
        }
    };
    if let Err(error) = &served {
        if let Some(error) = error.downcast_ref::<hyper::Error>() {
            count_connection_error(metrics, error);
        }
    }
    served
}

/// For a connection over `max_connections`: one request read quickly, then closed.
pub(crate) fn http1_busy(settings: &ProxySettings, header_timeout: Duration) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(settings.header_read_timeout.min(header_timeout))
        .max_buf_size(max_buf_size(settings));
    builder
}

/// hyper refuses buffers under 8 KiB.
fn max_buf_size(settings: &ProxySettings) -> usize {
    settings.max_header_bytes.max(8192)
}

/// Limits hyper enforces itself (head size, header-read timeout) show up
/// here; count them so an operator can see them.
pub(crate) fn count_connection_error(metrics: &Metrics, error: &hyper::Error) {
    let reason = if error.is_parse_too_large() {
        "header_too_large"
    } else if error.is_timeout() {
        "header_read_timeout"
    } else if error.is_parse() {
        "malformed_request"
    } else if error.is_incomplete_message() {
        "client_went_away"
    } else {
        return;
    };
    count(metrics, reason);
}

fn count(metrics: &Metrics, reason: &'static str) {
    metrics
        .connection_errors
        .get_or_create(&ReasonLabel { reason })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn the_handshake_s_alpn_picks_the_protocol() {
        assert_eq!(Negotiated::from_alpn(Some(b"h2")), Negotiated::Http2);
        assert_eq!(Negotiated::from_alpn(Some(b"http/1.1")), Negotiated::Http1);
        assert_eq!(Negotiated::from_alpn(None), Negotiated::Nothing);
    }

    #[test]
    fn without_alpn_the_first_bytes_pick_the_protocol() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(
            Negotiated::Nothing.or_by_preface(preface),
            Negotiated::Http2
        );
        assert_eq!(
            Negotiated::Nothing.or_by_preface(b"GET / HTTP/1.1\r\n"),
            Negotiated::Http1
        );
        assert_eq!(
            Negotiated::Nothing.or_by_preface(b"PRI"),
            Negotiated::Nothing
        );
        // ALPN's choice stands whatever follows.
        assert_eq!(Negotiated::Http1.or_by_preface(preface), Negotiated::Http1);
        assert_eq!(
            Negotiated::Http2.or_by_preface(b"GET / HTTP/1.1\r\n"),
            Negotiated::Http2
        );
    }

    #[tokio::test]
    async fn first_bytes_takes_all_that_is_readable_at_once() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let head = b"GET / HTTP/1.1\r\nHost: a.test\r\n";
        client.write_all(head).await.unwrap();
        client.write_all(b"\r\n").await.unwrap();
        let first = first_bytes(&mut server).await.unwrap();
        assert_eq!(first, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    }

    #[tokio::test]
    async fn first_bytes_waits_for_the_client_and_sees_it_leave() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move { first_bytes(&mut server).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!reader.is_finished(), "nothing was sent yet");
        client.write_all(b"PRI * HTTP/2.0").await.unwrap();
        assert_eq!(reader.await.unwrap(), b"PRI * HTTP/2.0");

        let (client, mut server) = tokio::io::duplex(1024);
        drop(client);
        assert!(first_bytes(&mut server).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn first_bytes_stops_at_hyper_s_first_read() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&[b'a'; FIRST_READ + 100]).await.unwrap();
        let first = first_bytes(&mut server).await.unwrap();
        assert_eq!(first.len(), FIRST_READ);
    }
}
