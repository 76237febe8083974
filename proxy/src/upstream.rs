//! The upstream side: a pooled HTTP/1.1 + HTTP/2 client over verified TLS
//! that connects only through the egress [`Dialer`].

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

use crate::body::ProxyBody;
use crate::egress::{DialError, Dialer};
use crate::error::ProxyError;

/// Connector service for the pooled client: every connection goes through the dialler.
#[derive(Clone)]
pub struct DialConnector {
    dialer: Arc<Dialer>,
}

impl tower_service::Service<Uri> for DialConnector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = self.dialer.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_owned();
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("http") => 80,
                _ => 443,
            });
            dialer.dial(&host, port).await.map(TokioIo::new)
        })
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

/// Pooled client to upstreams.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<DialConnector>, ProxyBody>,
    /// HTTP/1.1 only: WebSocket upgrades; these connections are not pooled.
    upgrade_client: Client<HttpsConnector<DialConnector>, ProxyBody>,
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
            });
        let upgrade_client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(upgrade_connector);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(DialConnector { dialer });
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(idle_timeout)
            .pool_max_idle_per_host(256)
            .http2_adaptive_window(true)
            .build(connector);
        Self {
            client,
            upgrade_client,
            response_timeout,
        }
    }

    /// Sends an HTTP/1.1 upgrade request on a connection of its own.
    pub async fn send_upgrade(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        Self::send_with(&self.upgrade_client, self.response_timeout, req).await
    }

    /// Sends `req` (absolute URI) and waits for the response head.
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, ProxyError> {
        Self::send_with(&self.client, self.response_timeout, req).await
    }

    async fn send_with(
        client: &Client<HttpsConnector<DialConnector>, ProxyBody>,
        response_timeout: Duration,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let host = req.uri().host().unwrap_or_default().to_owned();
        match tokio::time::timeout(response_timeout, client.request(req)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(classify_client_error(&host, &err)),
            Err(_) => Err(ProxyError::Timeout(format!(
                "{host} did not answer within {response_timeout:?}"
            ))),
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
    } else {
        ProxyError::Upstream(format!("{host}: {}", error_chain(err)))
    }
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
