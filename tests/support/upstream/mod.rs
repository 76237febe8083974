#![allow(dead_code)] // each integration-test binary uses only part of the fixtures

//! A real HTTPS origin (HTTP/1.1 and HTTP/2) that records every request it gets.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::test_ca::TestCa;

mod leaks;
mod websocket;

pub use leaks::leak_forms;
use leaks::*;
use websocket::*;
pub use websocket::{read_ws_frame, write_ws_frame_masked};

/// How much of each request body is kept for assertions.
pub const BODY_SAMPLE_LIMIT: usize = 64 * 1024;

const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// `/download/{n}` content: the byte at offset `i` is `i % 256`.
static DOWNLOAD_PATTERN: [u8; DOWNLOAD_CHUNK] = download_pattern();

const fn download_pattern() -> [u8; DOWNLOAD_CHUNK] {
    let mut chunk = [0u8; DOWNLOAD_CHUNK];
    let mut i = 0;
    while i < DOWNLOAD_CHUNK {
        chunk[i] = i as u8;
        i += 1;
    }
    chunk
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    /// "HTTP/1.1" or "HTTP/2.0".
    pub version: String,
    /// The request-target authority: `:authority` on h2, absent for origin-form h1.
    pub authority: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    /// The first [`BODY_SAMPLE_LIMIT`] bytes of the body.
    pub body_sample: Vec<u8>,
    pub sni: Option<String>,
}

impl Recorded {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn contains(&self, needle: &str) -> bool {
        self.path_and_query.contains(needle)
            || self
                .authority
                .as_deref()
                .is_some_and(|a| a.contains(needle))
            || self
                .headers
                .iter()
                .any(|(n, v)| n.contains(needle) || v.contains(needle))
            || contains_bytes(&self.body_sample, needle.as_bytes())
    }
}

pub struct Upstream {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Serves a leaf for `names` signed by `ca`, offering ALPN `h2` and `http/1.1`.
    pub async fn start(ca: &TestCa, names: &[&str]) -> Upstream {
        Self::start_with_config(ca.server_config(names, &[b"h2", b"http/1.1"])).await
    }

    pub async fn start_with_config(config: Arc<ServerConfig>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream local addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler_log = log.clone();
        let task = spawn_https_server(listener, config, move |req, sni| {
            handle(req, sni, handler_log.clone())
        });
        Upstream { addr, log, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far, in arrival order of completed bodies.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// Whether `needle` appears in any recorded header name or value, path,
    /// authority or body sample.
    pub fn raw_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|r| r.contains(needle))
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type RespBody = BoxBody<Bytes, Infallible>;

async fn handle(
    req: Request<Incoming>,
    sni: Option<String>,
    log: Arc<Mutex<Vec<Recorded>>>,
) -> Response<RespBody> {
    if req.uri().path() == "/ws" {
        return websocket_echo(req, sni, log);
    }
    if req.uri().path() == "/early-401" {
        return early_401(req, sni, log);
    }
    let (parts, mut body) = req.into_parts();
    let mut body_len = 0u64;
    let mut body_sample = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return text(StatusCode::BAD_REQUEST, "request body error\n");
        };
        if let Ok(data) = frame.into_data() {
            body_len += data.len() as u64;
            let room = BODY_SAMPLE_LIMIT.saturating_sub(body_sample.len());
            body_sample.extend_from_slice(&data[..room.min(data.len())]);
        }
    }

    let path = parts.uri.path().to_string();
    log.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| path.clone()),
        version: format!("{:?}", parts.version),
        authority: parts.uri.authority().map(|a| a.to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len,
        body_sample,
        sni,
    });

    let method = &parts.method;
    if let Some(n) = path.strip_prefix("/download/") {
        // `/download/N[/H1_MS]`: HTTP/1.1 answers its head H1_MS late.
        let (n, h1_ms) = n.split_once('/').unwrap_or((n, "0"));
        let (Ok(n), Ok(h1_ms)) = (n.parse::<u64>(), h1_ms.parse::<u64>()) else {
            return text(StatusCode::BAD_REQUEST, "bad length\n");
        };
        if parts.version != hyper::Version::HTTP_2 {
            tokio::time::sleep(Duration::from_millis(h1_ms)).await;
        }
        return Response::builder()
            .header("content-length", n)
            .header("content-type", "application/octet-stream")
            .body(PatternBody { remaining: n }.boxed())
            .unwrap();
    }
    if let Some(delays) = path.strip_prefix("/slow-h2/") {
        // Each HTTP version answers after its own delay,
        // `/slow-h2/H2_MS[/H1_MS]` (HTTP/1.1 at once unless given).
        let (h2, h1) = delays.split_once('/').unwrap_or((delays, "0"));
        let (Ok(h2), Ok(h1)) = (h2.parse::<u64>(), h1.parse::<u64>()) else {
            return text(StatusCode::BAD_REQUEST, "bad delay\n");
        };
        let ms = if parts.version == hyper::Version::HTTP_2 {
            h2
        } else {
            h1
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return text(StatusCode::OK, "ok\n");
    }
    if path == "/upload" && (method == Method::POST || method == Method::PUT) {
        let json = serde_json::json!({ "received": body_len }).to_string();
        return Response::builder()
            .header("content-type", "application/json")
            .body(full(json))
            .unwrap();
    }
    if let Some(n) = path.strip_prefix("/sse/") {
        let n: u32 = n.parse().unwrap_or(5);
        // One event every 100 ms, each sent the moment it is made.
        let events = futures_util::stream::unfold(0u32, move |i| async move {
            if i == n {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let event = format!("id: {i}\ndata: event {i}\n\n");
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), i + 1))
        });
        return Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(StreamBody::new(events).boxed())
            .unwrap();
    }
    if path == "/redirect" {
        // `/redirect?to=URL`: a hostile or careless upstream sending the client elsewhere.
        let to = parts
            .uri
            .query()
            .and_then(|q| q.strip_prefix("to="))
            .unwrap_or("/")
            .to_owned();
        return Response::builder()
            .status(StatusCode::FOUND)
            .header("location", to)
            .body(full("redirecting\n"))
            .unwrap();
    }
    if path == "/echo-body" {
        return Response::builder()
            .header("content-type", "text/plain")
            .body(full(Bytes::from(body_sample_for_echo(&log))))
            .unwrap();
    }
    if path == "/echo-headers" {
        let mut map = serde_json::Map::new();
        for (name, value) in &parts.headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match map.get_mut(name.as_str()) {
                Some(serde_json::Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(&value);
                }
                _ => {
                    map.insert(name.to_string(), value.into());
                }
            }
        }
        let mut response = Response::builder().header("content-type", "application/json");
        // A hostile upstream reflects the credential in a header too.
        if let Some(auth) = parts.headers.get("authorization") {
            response = response.header("x-echo-authorization", auth.clone());
        }
        return response
            .body(full(serde_json::Value::Object(map).to_string()))
            .unwrap();
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let status = match code.parse::<u16>().map(StatusCode::from_u16) {
            Ok(Ok(s)) if s.as_u16() >= 200 => s,
            _ => return text(StatusCode::BAD_REQUEST, "bad status code\n"),
        };
        let bodyless = method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let body = if bodyless {
            empty()
        } else {
            full(format!("status {}\n", status.as_u16()))
        };
        return Response::builder().status(status).body(body).unwrap();
    }
    if path == "/leak" {
        return leak(&parts.headers, &log);
    }
    if path == "/trailers" {
        let mut trailers = HeaderMap::new();
        trailers.insert(
            HeaderName::from_static("x-trailer"),
            HeaderValue::from_static("yes"),
        );
        let frames = futures_util::stream::iter([
            Ok(Frame::data(Bytes::from_static(b"chunk one\n"))),
            Ok(Frame::data(Bytes::from_static(b"chunk two\n"))),
            Ok(Frame::trailers(trailers)),
        ]);
        // hyper's HTTP/1.1 server only emits trailers that are announced in a
        // `trailer` header, and only when the request carried `te: trailers`.
        return Response::builder()
            .header("trailer", "x-trailer")
            .body(StreamBody::new(frames).boxed())
            .unwrap();
    }
    Response::builder()
        .header("x-upstream", "yes")
        .body(full("ok\n"))
        .unwrap()
}

/// `/early-401`: answers 401 at once, never reads the request body, and closes
/// the connection soon after (HTTP/1.1: `connection: close`; both: the
/// connection is dropped 200 ms later, as a server that gives up would).
fn early_401(
    req: Request<Incoming>,
    sni: Option<String>,
    log: Arc<Mutex<Vec<Recorded>>>,
) -> Response<RespBody> {
    record_head(&log, &req, req.uri().path().to_owned(), sni);
    if let Some(close) = req.extensions().get::<CloseConnection>().cloned() {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            close.0.notify_one();
        });
    }
    let mut response = Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header("content-type", "text/plain")
        .header("www-authenticate", "Basic realm=\"early\"");
    if req.version() == hyper::Version::HTTP_11 {
        response = response.header("connection", "close");
    }
    drop(req);
    response
        .body(full("early 401: not reading your upload\n"))
        .unwrap()
}

/// Lets a handler drop its connection (a test of abrupt closes).
#[derive(Clone)]
struct CloseConnection(Arc<tokio::sync::Notify>);

/// Records a request whose body is not read (upgrades, early answers).
fn record_head<B>(
    log: &Arc<Mutex<Vec<Recorded>>>,
    req: &Request<B>,
    path_and_query: String,
    sni: Option<String>,
) {
    log.lock().unwrap().push(Recorded {
        method: req.method().to_string(),
        path_and_query,
        version: format!("{:?}", req.version()),
        authority: req.uri().authority().map(|a| a.to_string()),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len: 0,
        body_sample: Vec::new(),
        sni,
    });
}

fn full(body: impl Into<Bytes>) -> RespBody {
    Full::new(body.into()).boxed()
}

fn empty() -> RespBody {
    http_body_util::Empty::new().boxed()
}

fn text(status: StatusCode, body: &'static str) -> Response<RespBody> {
    Response::builder().status(status).body(full(body)).unwrap()
}

/// Streams `remaining` bytes of [`DOWNLOAD_PATTERN`] without allocating.
struct PatternBody {
    remaining: u64,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(DOWNLOAD_CHUNK as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &DOWNLOAD_PATTERN[..n],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

pub(super) fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Accepts TLS connections on `listener` and serves each with hyper's auto
/// (h1/h2) builder. `handler` gets the request and the client's SNI. Aborting
/// the returned task drops every connection with it.
pub(super) fn spawn_https_server<H, Fut, B>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    handler: H,
) -> JoinHandle<()>
where
    H: Fn(Request<Incoming>, Option<String>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            connections.spawn(async move {
                let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
                let Ok(Ok(tls)) = handshake.await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_string);
                let close = CloseConnection(Arc::new(tokio::sync::Notify::new()));
                let closed = close.0.clone();
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(close.clone());
                    let response = handler(req, sni.clone());
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                // A handler's close drops the connection, streams and all.
                tokio::select! {
                    _ = conn => {}
                    _ = closed.notified() => {}
                }
            });
        }
    })
}
