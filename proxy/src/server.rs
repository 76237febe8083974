//! The forward proxy: accepts sandbox connections, answers CONNECT by
//! intercepting (TLS terminated with a minted leaf) or tunnelling, forwards
//! plain `http://` requests, and swaps placeholders on the way out.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use airlock_certs::LeafCache;
use airlock_vault_client::{normalize_host, SandboxId, TokenSource};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::audit::AuditRecord;
use crate::body::{empty, ProxyBody};
use crate::egress::Dialer;
use crate::error::ProxyError;
use crate::forward::Outgoing;
use crate::parse::{parse_basic, parse_connect_target};
use crate::rewind::Rewind;
use crate::settings::{InterceptMode, ProxySettings};
use crate::swap::{Scanner, Swapper};
use crate::upstream::{client_tls_config, root_store, Upstream};

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A running proxy's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ProxySettings,
    tokens: Arc<dyn TokenSource>,
    leaves: Arc<LeafCache>,
    dialer: Arc<Dialer>,
    upstream: Upstream,
    scanner: Arc<Scanner>,
    /// Cloned per intercepted connection with that host's leaf; clones share
    /// the session cache and ticketer.
    tls_template: rustls::ServerConfig,
    auth_failures: crate::limits::AuthFailures,
    connections: crate::limits::ConnectionSlots,
    /// Response scrubbers by the digest of the tokens they look for.
    scrubbers: moka::sync::Cache<[u8; 32], Option<Arc<crate::scrub::Scrubber>>>,
}

/// What an intercepted connection was opened for.
struct InterceptCtx {
    sandbox: SandboxId,
    host: String,
    port: u16,
    /// The SNI the client sent, when it named another host than CONNECT did.
    sni_mismatch: Option<String>,
}

impl Proxy {
    /// `local_addr` is the bound listener's address: the proxy never dials itself.
    pub fn new(
        settings: ProxySettings,
        tokens: Arc<dyn TokenSource>,
        leaves: Arc<LeafCache>,
        local_addr: SocketAddr,
    ) -> Self {
        let dialer = Arc::new(
            Dialer::new(
                settings.resolve.clone(),
                settings.allow_private_destinations,
                settings.connect_timeout,
            )
            .with_own_addr(local_addr)
            .with_lists(settings.egress.clone()),
        );
        let (roots, system_roots) = root_store(&settings.upstream_ca);
        tracing::debug!(
            system_roots,
            extra_roots = settings.upstream_ca.len(),
            "upstream trust loaded"
        );
        let upstream = Upstream::new(
            dialer.clone(),
            client_tls_config(roots),
            settings.response_timeout,
            settings.upstream_idle_timeout,
        );
        let scanner = Arc::new(Scanner::new(tokens.placeholder_prefix()));
        let settings_auth_limit = settings.auth_failures_per_minute;
        Self {
            inner: Arc::new(Inner {
                settings,
                tokens,
                leaves,
                dialer,
                upstream,
                scanner,
                tls_template: interception_tls_template(),
                auth_failures: crate::limits::AuthFailures::new(settings_auth_limit),
                connections: crate::limits::ConnectionSlots::default(),
                scrubbers: moka::sync::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_idle(std::time::Duration::from_secs(3600))
                    .build(),
            }),
        }
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and similar: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let proxy = self.clone();
            let span = tracing::debug_span!("conn", %peer);
            tokio::spawn(proxy.serve_client(stream, peer.ip()).instrument(span));
        }
    }

    async fn serve_client(self, stream: TcpStream, peer: IpAddr) {
        let _open = crate::metrics::ConnectionGuard::open();
        let _ = stream.set_nodelay(true);
        let settings = &self.inner.settings;
        let proxy = self.clone();
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(proxy.handle_outer(req, peer).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .max_buf_size(settings.max_header_bytes.max(8192))
            .max_headers(settings.max_headers)
            .preserve_header_case(true);
        if let Err(error) = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await
        {
            count_connection_error(&error);
            tracing::debug!(%error, "client connection ended with an error");
        }
    }

    /// A request on the plain listener: CONNECT, an absolute `http://` URL,
    /// or a mistake.
    async fn handle_outer(&self, mut req: Request<Incoming>, peer: IpAddr) -> Response<ProxyBody> {
        let sandbox = match self.authenticate(req.headers(), peer).await {
            Ok(sandbox) => sandbox,
            Err(err) => {
                let mut audit = AuditRecord::new(
                    SandboxId::new("-"),
                    "auth",
                    req.method().as_str(),
                    req.uri().host().unwrap_or("-"),
                    req.uri().port_u16().unwrap_or(0),
                    "",
                );
                return refuse(&mut audit, err);
            }
        };
        req.headers_mut().remove(header::PROXY_AUTHORIZATION);
        if req.method() == Method::CONNECT {
            return self.handle_connect(req, sandbox).await;
        }
        match req.uri().scheme() {
            Some(scheme) if *scheme == Scheme::HTTP => self.forward_plain(req, sandbox).await,
            Some(_) => ProxyError::BadRequest(
                "send https:// requests through CONNECT (set HTTPS_PROXY), not as absolute URLs"
                    .into(),
            )
            .to_response(),
            None => ProxyError::BadRequest(
                "airlock is a forward proxy: point HTTPS_PROXY/HTTP_PROXY at it instead of requesting it directly"
                    .into(),
            )
            .to_response(),
        }
    }

    async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Result<SandboxId, ProxyError> {
        if !self.inner.settings.require_auth {
            return Ok(SandboxId::default_sandbox());
        }
        // Guessing proxy secrets is slowed down per client address.
        if let Some(wait) = self.inner.auth_failures.blocked(peer) {
            return Err(ProxyError::TooManyAuthFailures {
                retry_after: wait.as_secs().max(1),
            });
        }
        let result = self.check_credentials(headers).await;
        if result.is_err() {
            self.inner.auth_failures.record(peer);
        }
        result
    }

    async fn check_credentials(&self, headers: &HeaderMap) -> Result<SandboxId, ProxyError> {
        let value = headers
            .get(header::PROXY_AUTHORIZATION)
            .ok_or(ProxyError::ProxyAuth(
                "send Proxy-Authorization (http://SANDBOX_ID:SECRET@proxy)",
            ))?;
        let (id, secret) = parse_basic(value.as_bytes()).ok_or(ProxyError::ProxyAuth(
            "Proxy-Authorization must be Basic SANDBOX_ID:SECRET",
        ))?;
        self.inner
            .tokens
            .authenticate(&id, &secret)
            .await
            .map_err(|_| ProxyError::ProxyAuth("unknown sandbox or wrong proxy secret"))
    }

    async fn handle_connect(
        &self,
        req: Request<Incoming>,
        sandbox: SandboxId,
    ) -> Response<ProxyBody> {
        let target = req.uri().authority().cloned();
        let mut audit = AuditRecord::new(
            sandbox.clone(),
            "connect",
            "CONNECT",
            target.as_ref().map_or("-", |a| a.host()),
            target.as_ref().and_then(|a| a.port_u16()).unwrap_or(0),
            "",
        );
        let (host, port) = match parse_connect_target(target.as_ref()) {
            Ok(parsed) => parsed,
            Err(err) => return refuse(&mut audit, err),
        };
        let settings = &self.inner.settings;
        if !settings.allowed_ports.contains(&port) {
            let allowed = settings
                .allowed_ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return refuse(&mut audit, ProxyError::PortNotAllowed { port, allowed });
        }
        let Some(slot) = self
            .inner
            .connections
            .acquire(&sandbox, settings.max_connections_per_sandbox)
        else {
            return refuse(
                &mut audit,
                ProxyError::TooManyConnections {
                    sandbox: sandbox.to_string(),
                    limit: settings.max_connections_per_sandbox,
                },
            );
        };
        let intercept = settings.intercept == InterceptMode::All
            || self.inner.tokens.is_bound_host(&sandbox, &host).await;
        if intercept {
            let proxy = self.clone();
            let ctx = InterceptCtx {
                sandbox,
                host,
                port,
                sni_mismatch: None,
            };
            let span = tracing::debug_span!("intercept", host = %ctx.host, port = ctx.port, sandbox = %ctx.sandbox);
            tokio::spawn(
                async move {
                    let _slot = slot;
                    match hyper::upgrade::on(req).await {
                        Ok(upgraded) => proxy.intercept(TokioIo::new(upgraded), ctx).await,
                        Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
                    }
                }
                .instrument(span),
            );
            return Response::new(empty());
        }
        // Tunnel: dial first so the sandbox learns of a refusal or failure in
        // the CONNECT response rather than as a dropped connection.
        let upstream = match self.inner.dialer.dial(&host, port).await {
            Ok(stream) => stream,
            Err(err) => return refuse(&mut audit, err.into()),
        };
        audit.mode = "tunnel";
        audit.status = 200;
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(upgraded) = hyper::upgrade::on(req).await else {
                return;
            };
            let mut client = TokioIo::new(upgraded);
            let mut upstream = upstream;
            let result = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            if let Ok((up, down)) = result {
                audit.request_bytes.store(up, Ordering::Relaxed);
                audit.response_bytes.store(down, Ordering::Relaxed);
            }
            audit.emit(result.is_ok());
        });
        Response::new(empty())
    }

    /// Terminates the sandbox's TLS with a leaf for the CONNECT host and serves
    /// HTTP/1.1 or HTTP/2 inside it.
    async fn intercept(self, io: TokioIo<hyper::upgrade::Upgraded>, mut ctx: InterceptCtx) {
        let settings = &self.inner.settings;
        let mut audit = AuditRecord::new(
            ctx.sandbox.clone(),
            "intercept",
            "-",
            &ctx.host,
            ctx.port,
            "",
        );
        // The first byte tells TLS (a handshake record) from a client that
        // speaks plain HTTP into the tunnel; the latter gets an answer it can read.
        let mut io = io;
        let mut first = [0u8; 1];
        let first_read =
            tokio::time::timeout(settings.tls_handshake_timeout, io.read_exact(&mut first)).await;
        if !matches!(first_read, Ok(Ok(_))) {
            audit.outcome = if first_read.is_err() {
                "tls_handshake_timeout"
            } else {
                "client_closed"
            };
            audit.emit(false);
            return;
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            let body = format!(
                "airlock: expected a TLS ClientHello for {} after CONNECT; got something else (plain HTTP?)\n",
                ctx.host
            );
            let head = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nx-airlock-error: bad_request\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = io.write_all(head.as_bytes()).await;
            let _ = io.write_all(body.as_bytes()).await;
            let _ = io.shutdown().await;
            audit.status = 400;
            audit.outcome = "bad_request";
            audit.refused = Some("not TLS after CONNECT".into());
            audit.emit(true);
            return;
        }
        let io = Rewind::new(first.to_vec(), io);
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
        let step = tokio::time::timeout(settings.tls_handshake_timeout, acceptor).await;
        let Some(start) = handshake_step(&mut audit, step) else {
            return;
        };
        if let Some(sni) = start.client_hello().server_name() {
            if normalize_host(sni).as_deref() != Some(ctx.host.as_str()) {
                ctx.sni_mismatch = Some(sni.to_owned());
            }
        }
        let leaf = match self.inner.leaves.get(&ctx.host).await {
            Ok(leaf) => leaf,
            Err(error) => {
                tracing::warn!(%error, "could not mint a leaf certificate");
                audit.outcome = "mint_failed";
                audit.emit(false);
                return;
            }
        };
        let mut config = self.inner.tls_template.clone();
        config.cert_resolver = Arc::new(FixedCert(leaf));
        // A failure here usually means the client distrusts our CA or hung up.
        let step = tokio::time::timeout(
            settings.tls_handshake_timeout,
            start.into_stream(Arc::new(config)),
        )
        .await;
        let Some(tls) = handshake_step(&mut audit, step) else {
            return;
        };
        let ctx = Arc::new(ctx);
        let proxy = self.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            let ctx = ctx.clone();
            // One span per request; the path without its query (it can hold secrets).
            let span = tracing::info_span!(
                "request",
                sandbox = %ctx.sandbox,
                method = %req.method(),
                host = %ctx.host,
                path = %req.uri().path(),
            );
            async move { Ok::<_, Infallible>(proxy.handle_intercepted(req, &ctx).await) }
                .instrument(span)
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .max_buf_size(settings.max_header_bytes.max(8192))
            .max_headers(settings.max_headers)
            .preserve_header_case(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(settings.max_header_bytes as u32)
            .enable_connect_protocol()
            .adaptive_window(true);
        if let Err(error) = builder
            .serve_connection_with_upgrades(TokioIo::new(tls), service)
            .await
        {
            if let Some(e) = error.downcast_ref::<hyper::Error>() {
                count_connection_error(e);
            }
            tracing::debug!(%error, "intercepted connection ended with an error");
        }
    }

    async fn handle_intercepted(
        &self,
        req: Request<Incoming>,
        ctx: &InterceptCtx,
    ) -> Response<ProxyBody> {
        let mut audit = AuditRecord::new(
            ctx.sandbox.clone(),
            "intercept",
            req.method().as_str(),
            &ctx.host,
            ctx.port,
            req.uri().path(),
        );
        if let Some(sni) = &ctx.sni_mismatch {
            return refuse(
                &mut audit,
                ProxyError::Misdirected(format!(
                    "TLS SNI {sni:?} does not match the CONNECT host {}",
                    ctx.host
                )),
            );
        }
        if let Err(err) = check_authority(&req, &ctx.host, ctx.port) {
            return refuse(&mut audit, err);
        }
        let swapper = Swapper::new(
            self.inner.tokens.clone(),
            self.inner.scanner.clone(),
            ctx.sandbox.clone(),
            ctx.host.clone(),
        );
        let authority = if ctx.port == 443 {
            ctx.host.clone()
        } else {
            format!("{}:{}", host_for_uri(&ctx.host), ctx.port)
        };
        if crate::websocket::is_upgrade(&req) {
            return self.websocket(req, authority, swapper, audit).await;
        }
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let (parts, body) = req.into_parts();
        let out = Outgoing {
            method: parts.method,
            headers: parts.headers,
            scheme: "https",
            authority,
            path_and_query: pq,
        };
        self.forward(out, body, swapper, audit).await
    }

    /// Plain `http://` requests: forwarded, but never with a placeholder in them.
    async fn forward_plain(
        &self,
        req: Request<Incoming>,
        sandbox: SandboxId,
    ) -> Response<ProxyBody> {
        let host = req
            .uri()
            .host()
            .and_then(normalize_host)
            .unwrap_or_default();
        let port = req.uri().port_u16().unwrap_or(80);
        let mut audit = AuditRecord::new(
            sandbox.clone(),
            "http",
            req.method().as_str(),
            &host,
            port,
            req.uri().path(),
        );
        if host.is_empty() {
            return refuse(
                &mut audit,
                ProxyError::BadRequest("request URL has no valid host".into()),
            );
        }
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let (parts, body) = req.into_parts();
        let swapper = Swapper::new(
            self.inner.tokens.clone(),
            self.inner.scanner.clone(),
            sandbox,
            host.clone(),
        )
        .plaintext();
        let authority = if port == 80 {
            host_for_uri(&host)
        } else {
            format!("{}:{port}", host_for_uri(&host))
        };
        let out = Outgoing {
            method: parts.method,
            headers: parts.headers,
            scheme: "http",
            authority,
            path_and_query: pq,
        };
        self.forward(out, body, swapper, audit).await
    }

    pub(crate) fn settings(&self) -> &ProxySettings {
        &self.inner.settings
    }

    pub(crate) fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }

    pub(crate) fn scrubbers(
        &self,
    ) -> &moka::sync::Cache<[u8; 32], Option<Arc<crate::scrub::Scrubber>>> {
        &self.inner.scrubbers
    }

    pub(crate) fn tokens(&self) -> &Arc<dyn TokenSource> {
        &self.inner.tokens
    }
}

/// Records the refusal, writes the audit line, and builds the sandbox's answer.
pub(crate) fn refuse(audit: &mut AuditRecord, err: ProxyError) -> Response<ProxyBody> {
    let response = err.to_response();
    audit.status = response.status().as_u16();
    audit.outcome = err.code();
    audit.refused = Some(err.to_string());
    // Refusals are the audit line's business; failures of other parties also
    // warn, so operators see an unreachable upstream or vault.
    let side = err.side();
    if side != crate::error::Side::Sandbox {
        tracing::warn!(error = %err, %side, "request failed");
    }
    audit.emit(true);
    response
}

/// `Host`/`:authority` must name the host and port the connection was opened for.
fn check_authority<B>(req: &Request<B>, host: &str, port: u16) -> Result<(), ProxyError> {
    let mut named = Vec::with_capacity(2);
    if let Some(authority) = req.uri().authority() {
        named.push(authority.clone());
    }
    if let Some(value) = req.headers().get(header::HOST) {
        let authority = value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<Authority>().ok())
            .ok_or_else(|| {
                ProxyError::BadRequest("Host header is not a valid host[:port]".into())
            })?;
        named.push(authority);
    }
    if named.is_empty() {
        return Err(ProxyError::BadRequest(
            "request names no host (Host header missing)".into(),
        ));
    }
    for authority in named {
        let same_host = normalize_host(authority.host()).as_deref() == Some(host);
        let same_port = authority.port_u16().unwrap_or(443) == port;
        if !same_host || !same_port || authority.as_str().contains('@') {
            return Err(ProxyError::Misdirected(format!(
                "request for {authority} on a connection opened (CONNECT) for {host}:{port}"
            )));
        }
    }
    Ok(())
}

fn host_for_uri(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// The value of a timed TLS handshake step, or `None` once the audit line
/// says why it failed.
fn handshake_step<T>(
    audit: &mut AuditRecord,
    step: Result<std::io::Result<T>, tokio::time::error::Elapsed>,
) -> Option<T> {
    match step {
        Ok(Ok(value)) => Some(value),
        Ok(Err(error)) => {
            audit.outcome = "tls_handshake_failed";
            audit.refused = Some(error.to_string());
            audit.emit(false);
            None
        }
        Err(_) => {
            audit.outcome = "tls_handshake_timeout";
            audit.emit(false);
            None
        }
    }
}

/// Limits hyper enforces itself (head size, header-read timeout) show up
/// here; count them so an operator can see them.
fn count_connection_error(error: &hyper::Error) {
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
    crate::metrics::metrics()
        .connection_errors
        .get_or_create(&crate::metrics::ReasonLabel { reason })
        .inc();
}

/// Removes connection-scoped headers (RFC 9110 §7.6.1), including those the
/// `Connection` header names. `TE: trailers` survives: it asks for trailers end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if name != header::TE {
            headers.remove(name);
        }
    }
    let keep_te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    if keep_te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Serves one already-minted leaf, whatever the ClientHello asks for: the SNI
/// was checked against the CONNECT host before the handshake went on.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn interception_tls_template() -> rustls::ServerConfig {
    let mut provider = rustls::crypto::ring::default_provider();
    // AES-128-GCM first: as safe as AES-256 here and measurably cheaper per byte.
    provider
        .cipher_suites
        .sort_by_key(|suite| match suite.suite() {
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
            _ => 3,
        });
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCert));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    config
}

#[derive(Debug)]
struct NoCert;

impl ResolvesServerCert for NoCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert(header::TE, "trailers, gzip".parse().unwrap());
        h.insert(header::PROXY_AUTHORIZATION, "Basic abc".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-keep", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn authority_must_match_the_connect_target() {
        let req = Request::builder()
            .uri("/x")
            .header(header::HOST, "API.github.test")
            .body(())
            .unwrap();
        assert!(check_authority(&req, "api.github.test", 443).is_ok());
        let req = Request::builder()
            .uri("/x")
            .header(header::HOST, "evil.test")
            .body(())
            .unwrap();
        assert!(matches!(
            check_authority(&req, "api.github.test", 443),
            Err(ProxyError::Misdirected(_))
        ));
        let req = Request::builder()
            .uri("https://api.github.test:8443/x")
            .body(())
            .unwrap();
        assert!(check_authority(&req, "api.github.test", 443).is_err());
        let req = Request::builder().uri("/x").body(()).unwrap();
        assert!(check_authority(&req, "api.github.test", 443).is_err());
    }

    #[test]
    fn connect_targets() {
        let a: Authority = "Example.com:443".parse().unwrap();
        assert_eq!(
            parse_connect_target(Some(&a)).unwrap(),
            ("example.com".into(), 443)
        );
        let a: Authority = "example.com".parse().unwrap();
        assert!(parse_connect_target(Some(&a)).is_err());
        let a: Authority = "[::1]:443".parse().unwrap();
        assert_eq!(parse_connect_target(Some(&a)).unwrap(), ("::1".into(), 443));
        assert!(parse_connect_target(None).is_err());
    }

    #[test]
    fn basic_credentials() {
        let v = format!("Basic {}", BASE64.encode("sbx:secret"));
        assert_eq!(
            parse_basic(v.as_bytes()),
            Some(("sbx".into(), "secret".into()))
        );
        assert_eq!(parse_basic(b"Bearer x"), None);
    }
}
