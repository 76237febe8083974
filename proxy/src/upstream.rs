//! The upstream side: a pooled HTTP/1.1 + HTTP/2 client over verified TLS
//! that connects only through the egress [`Dialer`].

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

use crate::body::ProxyBody;
use crate::egress::{DialError, Dialer, UpstreamStream};
use crate::error::{ClosedAfter, ProxyError};
use crate::settings::UpstreamWire;

/// Connector service for the pooled client: every connection goes through the dialler.
#[derive(Clone)]
pub struct DialConnector {
    dialer: Arc<Dialer>,
    /// Keep reading after the peer closed mid-request (not for WebSockets,
    /// whose relay must see the close at once).
    sink_after_close: bool,
}

impl tower_service::Service<Uri> for DialConnector {
    type Response = TokioIo<EarlyAnswerTcp>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = self.dialer.clone();
        let sink = if self.sink_after_close {
            SINK_AFTER_CLOSE_BYTES
        } else {
            0
        };
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_owned();
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("http") => 80,
                _ => 443,
            });
            let tcp = dialer.dial(&host, port).await?;
            Ok(TokioIo::new(EarlyAnswerTcp::new(tcp, sink)))
        })
    }
}

/// Bytes still "written" (dropped) after the peer closed, so hyper gets to
/// read an answer already sent. Past this, the write error comes back.
const SINK_AFTER_CLOSE_BYTES: u64 = 1024 * 1024;

/// An upstream TCP connection that, once the peer has closed it (EPIPE,
/// ECONNRESET on write), drops further writes for a while instead of failing.
/// An upstream that answers before reading an upload and closes leaves its
/// answer in our receive buffer; hyper's HTTP/1.1 client stops at the first
/// body write error and would never read it. Reads go on as before: the
/// answer, then EOF, which ends the connection.
pub struct EarlyAnswerTcp {
    inner: UpstreamStream,
    sink_limit: u64,
    closed: Option<(std::io::ErrorKind, u64)>,
}

impl EarlyAnswerTcp {
    /// `sink_limit`: how many bytes to drop after the close (0: none).
    pub fn new(inner: UpstreamStream, sink_limit: u64) -> Self {
        Self {
            inner,
            sink_limit,
            closed: None,
        }
    }

    /// `Some(result)` when the write is settled by the peer having closed.
    fn settle(
        &mut self,
        result: &std::io::Result<usize>,
        len: usize,
    ) -> Option<std::io::Result<usize>> {
        use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
        if let Err(e) = result {
            if matches!(e.kind(), BrokenPipe | ConnectionReset) && self.closed.is_none() {
                self.closed = Some((e.kind(), 0));
            }
        }
        let (kind, sunk) = self.closed.as_mut()?;
        if *sunk >= self.sink_limit {
            return Some(Err((*kind).into()));
        }
        *sunk += len as u64;
        Some(Ok(len))
    }
}

impl EarlyAnswerTcp {
    /// A write after the close: dropped, but only once there is something to
    /// read, so hyper reads the answer before the sink runs out.
    fn poll_sink(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<std::io::Result<usize>> {
        let Some((kind, sunk)) = self.closed else {
            return Poll::Ready(Ok(0));
        };
        if sunk >= self.sink_limit {
            return Poll::Ready(Err(kind.into()));
        }
        ready!(self.inner.get_ref().poll_read_ready(cx))?;
        self.closed = Some((kind, sunk + len as u64));
        Poll::Ready(Ok(len))
    }
}

impl tokio::io::AsyncRead for EarlyAnswerTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for EarlyAnswerTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.closed.is_some() {
            return self.poll_sink(cx, buf.len());
        }
        let result = ready!(Pin::new(&mut self.inner).poll_write(cx, buf));
        Poll::Ready(self.settle(&result, buf.len()).unwrap_or(result))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        if self.closed.is_some() {
            return self.poll_sink(cx, len);
        }
        let result = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs));
        Poll::Ready(self.settle(&result, len).unwrap_or(result))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.closed.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.closed.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl hyper_util::client::legacy::connect::Connection for EarlyAnswerTcp {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.inner.get_ref().connected()
    }
}

/// Trust for upstream TLS: the system roots plus the operator's extra roots.
pub fn root_store(extra: &[CertificateDer<'static>]) -> (RootCertStore, usize) {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "could not load some system root certificates");
    }
    let (system, _) = roots.add_parsable_certificates(native.certs);
    for cert in extra {
        if let Err(error) = roots.add(cert.clone()) {
            tracing::warn!(%error, "an upstream_ca certificate was not usable");
        }
    }
    (roots, system)
}

pub fn client_tls_config(roots: RootCertStore) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // ALPN (h2, http/1.1) is set by the connector builder.
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

type PooledClient = Client<HttpsConnector<DialConnector>, ProxyBody>;

/// Pooled clients to upstreams, one per [`UpstreamWire`].
#[derive(Clone)]
pub struct Upstream {
    /// ALPN offers `h2` and `http/1.1`.
    alpn: PooledClient,
    /// HTTP/1.1 only.
    http1: PooledClient,
    /// HTTP/1.1 only: WebSocket upgrades; these connections are not pooled.
    upgrade_client: PooledClient,
    response_timeout: Duration,
}

impl Upstream {
    pub fn new(
        dialer: Arc<Dialer>,
        tls: rustls::ClientConfig,
        response_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        let upgrade_connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(DialConnector {
                dialer: dialer.clone(),
                sink_after_close: false,
            });
        let upgrade_client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(upgrade_connector);
        let pooled = |connector: HttpsConnector<DialConnector>| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(idle_timeout)
                .pool_max_idle_per_host(256)
                .http2_adaptive_window(true)
                .build(connector)
        };
        let alpn = pooled(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(DialConnector {
                    dialer: dialer.clone(),
                    sink_after_close: true,
                }),
        );
        let http1 = pooled(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(DialConnector {
                    dialer,
                    sink_after_close: true,
                }),
        );
        Self {
            alpn,
            http1,
            upgrade_client,
            response_timeout,
        }
    }

    /// Sends an HTTP/1.1 upgrade request on a connection of its own.
    pub fn send_upgrade(
        &self,
        req: Request<ProxyBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, ProxyError>> + Send + 'static {
        Self::send_with(&self.upgrade_client, self.response_timeout, req)
    }

    /// Sends `req` (absolute URI) over `wire` and waits for the response head.
    pub fn send(
        &self,
        req: Request<ProxyBody>,
        wire: UpstreamWire,
    ) -> impl Future<Output = Result<Response<Incoming>, ProxyError>> + Send + 'static {
        let client = match wire {
            UpstreamWire::Alpn => &self.alpn,
            UpstreamWire::Http1 => &self.http1,
        };
        Self::send_with(client, self.response_timeout, req)
    }

    /// Not an `async fn`: the request is handed to the client before the
    /// future is made, so the future (one per request) does not also keep
    /// room for the request.
    fn send_with(
        client: &PooledClient,
        response_timeout: Duration,
        req: Request<ProxyBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, ProxyError>> + Send + 'static {
        // Shared with the request's URI, not copied: needed only on failure.
        let authority = req.uri().authority().cloned();
        let answer = tokio::time::timeout(response_timeout, client.request(req));
        async move {
            let host = || authority.as_ref().map_or("", |a| a.host());
            match answer.await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(err)) => Err(classify_client_error(host(), &err)),
                Err(_) => Err(ProxyError::Timeout(format!(
                    "{} did not answer within {response_timeout:?}",
                    host()
                ))),
            }
        }
    }
}

/// Names which step failed: DNS, policy, TCP, TLS or HTTP.
fn classify_client_error(host: &str, err: &hyper_util::client::legacy::Error) -> ProxyError {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(dial) = e.downcast_ref::<DialError>() {
            return ProxyError::from(dial);
        }
        // The request body refused a placeholder while streaming.
        if let Some(refused) = e.downcast_ref::<ProxyError>() {
            return refused.clone();
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return ProxyError::UpstreamTls {
                host: host.to_owned(),
                reason: tls.to_string(),
            };
        }
        // io::Error hides a custom inner error from `source()`: look inside.
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                current = Some(inner);
                continue;
            }
        }
        current = e.source();
    }
    if err.is_connect() {
        ProxyError::Connect(format!("{host}: {err}"))
    } else if let Some(after) = closed_before_answering(err) {
        ProxyError::UpstreamClosed {
            host: host.to_owned(),
            after,
            detail: error_chain(err),
        }
    } else {
        ProxyError::Upstream(format!("{host}: {}", error_chain(err)))
    }
}

/// The peer closed or reset the connection (`UnexpectedEof`: TLS without
/// its `close_notify`).
fn is_closing(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        kind,
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// Whether `err` says the connection closed before any of the answer came,
/// and what the upstream had of the request then.
fn closed_before_answering(err: &(dyn StdError + 'static)) -> Option<ClosedAfter> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            // RFC 9113 8.7: a refused stream, or one above a GOAWAY's last,
            // was not processed and can be sent again whatever its method.
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote())
            {
                return Some(ClosedAfter::Unprocessed);
            }
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            // The request's own body failed (the sandbox's upload ended
            // early): below it are the sandbox's errors, not the upstream's.
            if hyper.is_user() {
                return None;
            }
            // HTTP/1.1: end of stream where the answer's head should be.
            if hyper.is_incomplete_message() {
                return Some(ClosedAfter::Sent);
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if is_closing(io.kind()) {
                return Some(ClosedAfter::Sent);
            }
            if let Some(inner) = io.get_ref() {
                current = Some(inner);
                continue;
            }
        }
        current = e.source();
    }
    None
}

fn error_chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

#[cfg(test)]
mod early_answer_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A peer that reads a little, answers, and closes with our upload
    /// unread (the kernel then resets the connection).
    async fn answering_peer() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut peer, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 16];
            peer.read_exact(&mut head).await.unwrap();
            peer.write_all(b"HTTP/1.1 401 early\r\n\r\n").await.unwrap();
            drop(peer);
        });
        (addr, task)
    }

    #[tokio::test]
    async fn an_answer_sent_before_a_close_can_still_be_read_after_write_errors() {
        let (addr, peer) = answering_peer().await;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut io = EarlyAnswerTcp::new(UpstreamStream::uncounted(tcp), SINK_AFTER_CLOSE_BYTES);
        // More than the peer reads: it closes with some unread.
        io.write_all(&[b'h'; 32]).await.unwrap();
        peer.await.unwrap();
        let chunk = vec![b'u'; 64 * 1024];
        // Writes stop failing once the peer is gone, until the sink's bound.
        let mut written = 0u64;
        let mut error = None;
        for _ in 0..1000 {
            match io.write(&chunk).await {
                Ok(n) => written += n as u64,
                Err(e) => {
                    error = Some(e.kind());
                    break;
                }
            }
        }
        assert!(io.closed.is_some(), "the peer's close was noticed");
        assert!(
            matches!(
                error,
                Some(std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
            ),
            "{error:?} after {written} bytes"
        );
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        for _ in 0..100 {
            let read = tokio::time::timeout(Duration::from_secs(10), io.read(&mut buf));
            match read.await {
                Ok(Ok(0) | Err(_)) | Err(_) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(&answer[..], b"HTTP/1.1 401 early\r\n\r\n");
    }

    #[tokio::test]
    async fn other_write_errors_are_not_hidden() {
        let tcp = tokio::net::TcpStream::connect(answering_peer().await.0)
            .await
            .unwrap();
        let mut io = EarlyAnswerTcp::new(UpstreamStream::uncounted(tcp), SINK_AFTER_CLOSE_BYTES);
        let err = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert!(io.settle(&Err(err), 10).is_none());
        assert!(io.closed.is_none());
    }

    #[tokio::test]
    async fn without_a_sink_the_close_comes_back_at_once() {
        let tcp = tokio::net::TcpStream::connect(answering_peer().await.0)
            .await
            .unwrap();
        let mut io = EarlyAnswerTcp::new(UpstreamStream::uncounted(tcp), 0);
        let err = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let settled = io.settle(&Err(err), 10).expect("settled");
        assert_eq!(settled.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
    }
}

#[cfg(test)]
mod closed_tests {
    //! What a real hyper-util client's errors say when a peer closes.
    use super::*;
    use crate::body::{boxed, full};
    use bytes::Bytes;
    use hyper_util::client::legacy::connect::HttpConnector;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A peer that reads one request head, then does `then` with the socket.
    async fn peer(then: fn(tokio::net::TcpStream)) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            then(tcp);
        });
        addr
    }

    fn closed_after(err: &ProxyError) -> Option<ClosedAfter> {
        match err {
            ProxyError::UpstreamClosed { after, .. } => Some(*after),
            _ => None,
        }
    }

    /// What `client` classifies the failure of `request` as.
    async fn classified(
        client: Client<HttpConnector, ProxyBody>,
        request: Request<ProxyBody>,
    ) -> ProxyError {
        let err = tokio::time::timeout(Duration::from_secs(10), client.request(request))
            .await
            .expect("the client gave up in time")
            .expect_err("the peer never answered");
        classify_client_error("api.example.test", &err)
    }

    async fn error_from(addr: std::net::SocketAddr, body: ProxyBody) -> ProxyError {
        let client: Client<HttpConnector, ProxyBody> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let request = Request::post(format!("http://{addr}/x"))
            .body(body)
            .unwrap();
        classified(client, request).await
    }

    #[tokio::test]
    async fn a_peer_that_closes_after_reading_the_request_closed_it_after_it_was_sent() {
        let addr = peer(drop).await;
        let err = error_from(addr, full(Bytes::new())).await;
        assert_eq!(closed_after(&err), Some(ClosedAfter::Sent), "{err:?}");
        assert_eq!(err.status(), http::StatusCode::BAD_GATEWAY);
        assert_eq!(err.code(), "upstream_error");
        assert!(
            err.to_string().starts_with(
                "upstream error: api.example.test closed the connection before answering ("
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_peer_that_resets_the_connection_closed_it_after_it_was_sent() {
        let addr = peer(|tcp| {
            // Linger 0: the close is a reset, not a FIN.
            socket2::SockRef::from(&tcp)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(tcp);
        })
        .await;
        let err = error_from(addr, full(Bytes::new())).await;
        assert_eq!(closed_after(&err), Some(ClosedAfter::Sent), "{err:?}");
    }

    #[tokio::test]
    async fn a_peer_that_answers_garbage_did_not_close() {
        let addr = peer(|mut tcp| {
            tokio::spawn(async move {
                let _ = tcp.write_all(b"HELLO THERE\r\n\r\n").await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        })
        .await;
        let err = error_from(addr, full(Bytes::new())).await;
        assert!(matches!(err, ProxyError::Upstream(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_request_body_that_fails_is_not_the_upstream_closing() {
        // The body's own error, as the sandbox's upload cut short gives.
        let cut: crate::body::BoxError =
            std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into();
        let failing = http_body_util::StreamBody::new(futures_util::stream::iter([
            Ok(hyper::body::Frame::data(Bytes::from_static(b"part"))),
            Err(cut),
        ]));
        let addr = peer(|tcp| {
            tokio::spawn(async move {
                let _tcp = tcp;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        })
        .await;
        let err = error_from(addr, boxed(failing)).await;
        assert!(!matches!(err, ProxyError::UpstreamClosed { .. }), "{err:?}");
    }

    /// How an HTTP/2 peer treats the first stream it accepts.
    enum H2Peer {
        Refuses,
        /// Gone without a GOAWAY, the stream unanswered.
        Vanishes,
    }

    /// What a GET from an HTTP/2 client is refused with by `peer`.
    async fn h2_error_from(peer: H2Peer) -> ProxyError {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::handshake(tcp).await.unwrap();
            let Some(Ok((_, mut respond))) = connection.accept().await else {
                return;
            };
            match peer {
                H2Peer::Refuses => {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    // Driven on, so the reset goes out.
                    while connection.accept().await.is_some() {}
                }
                H2Peer::Vanishes => drop((connection, respond)),
            }
        });
        let client: Client<HttpConnector, ProxyBody> = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(HttpConnector::new());
        let request = Request::get(format!("http://{addr}/x"))
            .body(full(Bytes::new()))
            .unwrap();
        classified(client, request).await
    }

    /// hyper hands on h2's I/O errors as its own (`Io`, a broken pipe).
    #[tokio::test]
    async fn an_http2_connection_that_ends_under_a_stream_closed_it_after_it_was_sent() {
        let err = h2_error_from(H2Peer::Vanishes).await;
        assert_eq!(closed_after(&err), Some(ClosedAfter::Sent), "{err:?}");
    }

    #[tokio::test]
    async fn an_http2_stream_the_peer_refused_was_not_processed() {
        let err = h2_error_from(H2Peer::Refuses).await;
        assert_eq!(
            closed_after(&err),
            Some(ClosedAfter::Unprocessed),
            "{err:?}"
        );
    }
}
