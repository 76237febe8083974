#![forbid(unsafe_code)]
//! The bench's ceiling: the cost of TLS interception alone, on the crates
//! airlock is built on (tokio, hyper 1, hyper-util's pooled client,
//! rustls/ring, rcgen through airlock-certs' leaf cache). A CONNECT is
//! answered `200`, the client's TLS is terminated with a minted leaf (HTTP/1.1
//! or HTTP/2), and each request is sent on over verified TLS with one header
//! set, the way the bench's Squid swaps its credential. No policy, no
//! vault, no audit, no response screening: whatever airlock costs above
//! this is airlock's own.
//!
//! ```text
//! ceiling --listen 127.0.0.1:18090 --ca-dir DIR --upstream-ca CA.pem \
//!         --resolve bench.test=127.0.0.1:18443 --resolve '*.bench.test=127.0.0.1:18443' \
//!         --set-header 'authorization: Bearer REAL'
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use airlock_certs::{CertificateAuthority, LeafCache};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

type Body = BoxBody<Bytes, hyper::Error>;
type Upstream = Client<hyper_rustls::HttpsConnector<HttpConnector<Resolve>>, Incoming>;

/// Names to addresses, like airlock's `[resolve]` (the bench's upstream is on loopback).
#[derive(Clone, Default)]
struct Resolve(Arc<HashMap<String, SocketAddr>>);

impl tower_service::Service<Name> for Resolve {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let name = name.as_str();
        // Exact names first, then `*.suffix` entries.
        let found = self.0.get(name).or_else(|| {
            self.0
                .iter()
                .find(|(pattern, _)| {
                    pattern
                        .strip_prefix('*')
                        .is_some_and(|suffix| suffix.starts_with('.') && name.ends_with(suffix))
                })
                .map(|(_, addr)| addr)
        });
        std::future::ready(match found {
            Some(addr) => Ok(vec![*addr].into_iter()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{name} is not in --resolve"),
            )),
        })
    }
}

struct Ceiling {
    leaves: LeafCache,
    upstream: Upstream,
    set_header: Option<(HeaderName, HeaderValue)>,
}

struct Args {
    listen: SocketAddr,
    ca_dir: std::path::PathBuf,
    upstream_ca: Vec<std::path::PathBuf>,
    resolve: HashMap<String, SocketAddr>,
    set_header: Option<(HeaderName, HeaderValue)>,
}

fn usage(why: &str) -> ! {
    eprintln!("ceiling: {why}\nusage: ceiling --listen ADDR --ca-dir DIR [--upstream-ca PEM]… [--resolve NAME=IP:PORT]… [--set-header 'NAME: VALUE']");
    std::process::exit(2)
}

fn args() -> Args {
    let mut out = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 18090)),
        ca_dir: std::path::PathBuf::new(),
        upstream_ca: Vec::new(),
        resolve: HashMap::new(),
        set_header: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--listen" => out.listen = value.parse().unwrap_or_else(|_| usage("--listen ADDR")),
            "--ca-dir" => out.ca_dir = value.into(),
            "--upstream-ca" => out.upstream_ca.push(value.into()),
            "--resolve" => {
                let (name, addr) = value
                    .split_once('=')
                    .unwrap_or_else(|| usage("--resolve NAME=IP:PORT"));
                let addr = addr
                    .parse()
                    .unwrap_or_else(|_| usage("--resolve NAME=IP:PORT"));
                out.resolve.insert(name.to_owned(), addr);
            }
            "--set-header" => {
                let (name, v) = value
                    .split_once(':')
                    .unwrap_or_else(|| usage("--set-header 'NAME: VALUE'"));
                let name =
                    HeaderName::try_from(name.trim()).unwrap_or_else(|_| usage("bad header name"));
                let v =
                    HeaderValue::try_from(v.trim()).unwrap_or_else(|_| usage("bad header value"));
                out.set_header = Some((name, v));
            }
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if out.ca_dir.as_os_str().is_empty() {
        usage("--ca-dir is required");
    }
    out
}

fn upstream_client(args: &Args) -> Upstream {
    let mut roots = rustls::RootCertStore::empty();
    for path in &args.upstream_ca {
        let pem =
            std::fs::read(path).unwrap_or_else(|e| usage(&format!("{}: {e}", path.display())));
        for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: rustls_pki_types::CertificateDer<'static> =
                cert.unwrap_or_else(|e| usage(&format!("{}: {e}", path.display())));
            roots
                .add(cert)
                .unwrap_or_else(|e| usage(&format!("{}: {e}", path.display())));
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new_with_resolver(Resolve(Arc::new(args.resolve.clone())));
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}

// Bench builds only (`--features alloc-count`): every allocation counted.
#[cfg(feature = "alloc-count")]
#[global_allocator]
static ALLOCATOR: &airlock_alloc_count::StatsAlloc<std::alloc::System> =
    &airlock_alloc_count::COUNTING;

fn main() {
    #[cfg(feature = "alloc-count")]
    airlock_alloc_count::start_reporting(&airlock_alloc_count::COUNTING);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = args();
    let ca = CertificateAuthority::load_dir(&args.ca_dir)
        .unwrap_or_else(|e| usage(&format!("CA in {}: {e}", args.ca_dir.display())));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let ceiling = Arc::new(Ceiling {
            leaves: LeafCache::new(Arc::new(ca), 10_000),
            upstream: upstream_client(&args),
            set_header: args.set_header.clone(),
        });
        let listener = TcpListener::bind(args.listen)
            .await
            .unwrap_or_else(|e| usage(&format!("cannot listen on {}: {e}", args.listen)));
        // SIGTERM ends the process by returning from `main`: a build made to
        // collect a profile (PGO) writes it at a normal exit only.
        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = terminate.recv() => return,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let ceiling = ceiling.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| connect(ceiling.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
}

/// A CONNECT: `200`, then the client's TLS is terminated on the upgraded stream.
async fn connect(
    ceiling: Arc<Ceiling>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if req.method() != Method::CONNECT {
        return Ok(empty(StatusCode::METHOD_NOT_ALLOWED));
    }
    let Some(authority) = req.uri().authority().cloned() else {
        return Ok(empty(StatusCode::BAD_REQUEST));
    };
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let Ok(leaf) = ceiling.leaves.get(authority.host()).await else {
            return;
        };
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(leaf)));
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let Ok(stream) = tokio_rustls::TlsAcceptor::from(Arc::new(tls))
            .accept(TokioIo::new(upgraded))
            .await
        else {
            return;
        };
        let service = service_fn(move |req| forward(ceiling.clone(), authority.clone(), req));
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
    Ok(empty(StatusCode::OK))
}

#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// One request, sent on to `https://AUTHORITY` with the header set.
async fn forward(
    ceiling: Arc<Ceiling>,
    authority: http::uri::Authority,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("https://{authority}{path}").parse::<Uri>() else {
        return Ok(empty(StatusCode::BAD_REQUEST));
    };
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    for hop in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
    ] {
        parts.headers.remove(hop);
    }
    // The upstream's authority is in the URI; HTTP/1.1 sends it as Host.
    parts.headers.remove(http::header::HOST);
    if let Some((name, value)) = &ceiling.set_header {
        parts.headers.insert(name.clone(), value.clone());
    }
    match ceiling
        .upstream
        .request(Request::from_parts(parts, body))
        .await
    {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            for hop in ["connection", "keep-alive", "transfer-encoding", "upgrade"] {
                parts.headers.remove(hop);
            }
            Ok(Response::from_parts(parts, body.boxed()))
        }
        Err(_) => Ok(empty(StatusCode::BAD_GATEWAY)),
    }
}
