//! A proxy running in the test's own process: a loopback TLS upstream
//! (its leaf from a throwaway CA the proxy is told to trust), the proxy's
//! listener on `127.0.0.1:0` with `api.example.test` resolved to the
//! upstream, and a sandbox-side client that CONNECTs, trusts the proxy's
//! interception CA, and speaks HTTP/1.1 inside.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use airlock_certs::{CertificateAuthority, LeafCache};
use airlock_vault_client::TokenSource;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use crate::body::ProxyBody;
use crate::egress::{OverrideTarget, ResolveOverrides};
use crate::settings::ProxySettings;
use crate::shared::Shared;
use crate::telemetry::Telemetry;
use crate::tls::FixedCert;

/// The upstream's name as the sandbox uses it.
pub(crate) const HOST: &str = "api.example.test";

/// What the upstream saw of one request (its body is the handler's to read).
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: http::Method,
    pub path: String,
    pub headers: HeaderMap,
}

pub(crate) type Answer = Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>;
pub(crate) type Handler = Arc<dyn Fn(Request<Incoming>) -> Answer + Send + Sync>;

pub(crate) struct InProcess {
    pub telemetry: Telemetry,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    proxy_addr: SocketAddr,
    sandbox_tls: Arc<rustls::ClientConfig>,
}

/// A handler from a closure that answers without awaiting anything.
pub(crate) fn handler(
    f: impl Fn(Request<Incoming>) -> Response<ProxyBody> + Send + Sync + 'static,
) -> Handler {
    Arc::new(move |req| {
        let answer = f(req);
        Box::pin(async move { answer })
    })
}

impl InProcess {
    pub async fn start(tokens: Arc<dyn TokenSource>, handler: Handler) -> Self {
        Self::start_with(tokens, handler, |_| {}).await
    }

    pub async fn start_with(
        tokens: Arc<dyn TokenSource>,
        handler: Handler,
        configure: impl FnOnce(&mut ProxySettings),
    ) -> Self {
        let upstream_ca = CertificateAuthority::generate("test upstream CA").unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let upstream_addr = serve_upstream(&upstream_ca, handler, seen.clone()).await;
        let mut proxy = Self::start_at(tokens, &upstream_ca, upstream_addr, configure).await;
        proxy.seen = seen;
        proxy
    }

    /// A proxy in front of an upstream the test serves itself on
    /// `upstream_addr`, its leaf for [`HOST`] from `upstream_ca` (see
    /// [`serve_raw_upstream`]); `seen` stays empty.
    pub async fn start_at(
        tokens: Arc<dyn TokenSource>,
        upstream_ca: &CertificateAuthority,
        upstream_addr: SocketAddr,
        configure: impl FnOnce(&mut ProxySettings),
    ) -> Self {
        let interception_ca = Arc::new(CertificateAuthority::generate("test airlock CA").unwrap());
        let mut settings = ProxySettings {
            upstream_ca: vec![upstream_ca.cert_der()],
            resolve: ResolveOverrides::new([(
                HOST,
                OverrideTarget {
                    ip: upstream_addr.ip(),
                    port: Some(upstream_addr.port()),
                },
            )])
            .unwrap(),
            ..ProxySettings::default()
        };
        configure(&mut settings);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let telemetry = Telemetry::default();
        let leaves = Arc::new(LeafCache::new(interception_ca.clone(), 100));
        let shared = Arc::new(Shared::new(
            settings,
            tokens,
            leaves,
            proxy_addr,
            telemetry.clone(),
            Arc::new(crate::limits::Descriptors::for_process()),
        ));
        tokio::spawn(crate::listen::serve(shared, listener));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(interception_ca.cert_der()).unwrap();
        let mut sandbox_tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        sandbox_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            telemetry,
            seen: Arc::default(),
            proxy_addr,
            sandbox_tls: Arc::new(sandbox_tls),
        }
    }

    /// A sandbox connection to [`HOST`] through the proxy, ready for requests.
    pub async fn connect(&self) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        self.connect_to(HOST).await
    }

    /// A sandbox connection to `host:443` through the proxy (trusting the
    /// proxy's CA), ready for requests.
    pub async fn connect_to(
        &self,
        host: &str,
    ) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let (head, tcp) = self.tunnel_to(&format!("{host}:443"), "").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let tls = tokio_rustls::TlsConnector::from(self.sandbox_tls.clone())
            .connect(ServerName::try_from(host.to_owned()).unwrap(), tcp)
            .await
            .unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        sender
    }

    /// A connection to the proxy after its `200` to `CONNECT HOST:443`.
    pub async fn tunnel(&self) -> TcpStream {
        let mut tcp = TcpStream::connect(self.proxy_addr).await.unwrap();
        tcp.write_all(
            format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        tcp
    }

    /// `CONNECT target` with `extra` header lines: the proxy's answer head
    /// and the connection.
    pub async fn tunnel_to(&self, target: &str, extra: &str) -> (String, TcpStream) {
        let mut tcp = TcpStream::connect(self.proxy_addr).await.unwrap();
        tcp.write_all(
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        (String::from_utf8_lossy(&head).into_owned(), tcp)
    }

    /// Writes `raw` (a whole HTTP/1.1 request, `Connection: close`) to the
    /// proxy's listener and reads everything it answers.
    pub async fn raw(&self, raw: &str) -> String {
        let mut tcp = TcpStream::connect(self.proxy_addr).await.unwrap();
        tcp.write_all(raw.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tcp.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// One request on a fresh connection: (status, headers, body).
    pub async fn send(&self, request: Request<Full<Bytes>>) -> (u16, HeaderMap, Bytes) {
        let mut sender = self.connect().await;
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    }

    /// What the upstream saw, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The audit outcomes written so far, oldest first. Waits briefly: the
    /// closing step runs when the response body is dropped.
    pub async fn outcomes(&self, at_least: usize) -> Vec<&'static str> {
        for _ in 0..200 {
            let recent = self.telemetry.recent.newest_first();
            if recent.len() >= at_least {
                return recent.into_iter().rev().map(|r| r.outcome).collect();
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("fewer than {at_least} audit records were written");
    }
}

/// A request to [`HOST`] with `header: value`.
pub(crate) fn request(path: &str, header: &str, value: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header(http::header::HOST, HOST)
        .header(header, value)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// What a raw upstream does with each TLS connection (the connection's
/// number, counted from 0, and the stream).
pub(crate) type RawConnection = Arc<
    dyn Fn(usize, TlsStream<TcpStream>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync,
>;

/// An upstream for [`HOST`] that hands each TLS connection (HTTP/1.1) to
/// `on_connection`, for what a well-behaved HTTP server would never do.
pub(crate) async fn serve_raw_upstream(
    ca: &CertificateAuthority,
    on_connection: RawConnection,
) -> SocketAddr {
    let acceptor = upstream_acceptor(ca);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for number in 0.. {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, on_connection) = (acceptor.clone(), on_connection.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    on_connection(number, tls).await;
                }
            });
        }
    });
    addr
}

fn upstream_acceptor(ca: &CertificateAuthority) -> tokio_rustls::TlsAcceptor {
    let leaf = Arc::new(ca.mint_leaf(HOST).unwrap());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(FixedCert(leaf)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn serve_upstream(
    ca: &CertificateAuthority,
    handler: Handler,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> SocketAddr {
    let acceptor = upstream_acceptor(ca);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, handler, seen) = (acceptor.clone(), handler.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req: Request<Incoming>| {
                    seen.lock().unwrap().push(Seen {
                        method: req.method().clone(),
                        path: req.uri().path().to_owned(),
                        headers: req.headers().clone(),
                    });
                    let answer = handler(req);
                    async move { Ok::<_, std::convert::Infallible>(answer.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}
