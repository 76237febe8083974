//! WebSocket through an intercepted connection: the handshake's placeholders
//! are swapped like any request's, then frames are relayed both ways as bytes.
//! Sandboxes may use HTTP/1.1 `Upgrade` or RFC 8441 extended CONNECT over
//! HTTP/2; upstream always gets an HTTP/1.1 upgrade.

use std::sync::atomic::Ordering;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::audit::AuditRecord;
use crate::body::{boxed, empty, ProxyBody};
use crate::error::ProxyError;
use crate::server::{refuse, strip_hop_by_hop, Proxy};
use crate::swap::Swapper;

/// An HTTP/1.1 `Upgrade: websocket` or an HTTP/2 extended CONNECT for websocket.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    if req.method() == Method::CONNECT {
        return req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    }
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

impl Proxy {
    pub(crate) async fn websocket(
        &self,
        mut req: Request<Incoming>,
        authority: String,
        mut swapper: Swapper,
        mut audit: AuditRecord,
    ) -> Response<ProxyBody> {
        audit.mode = "websocket";
        let extended_connect = req.method() == Method::CONNECT;
        let client_side = hyper::upgrade::on(&mut req);
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let mut headers = req.headers().clone();
        let pq = match swapper.swap_path_and_query(&pq).await {
            Ok(swapped) => swapped.unwrap_or(pq),
            Err(err) => return refuse(&mut audit, err),
        };
        strip_hop_by_hop(&mut headers);
        // The client derives `Host` from the URI.
        headers.remove(header::HOST);
        if let Err(err) = swapper.swap_headers(&mut headers).await {
            return refuse(&mut audit, err);
        }
        audit.swapped = swapper
            .swapped_bindings()
            .iter()
            .map(|b| b.id.clone())
            .collect();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if extended_connect {
            // RFC 8441 has no key; HTTP/1.1 needs one (the answer's accept is ours to check).
            let key: [u8; 16] = rand_bytes();
            headers.insert(
                header::SEC_WEBSOCKET_KEY,
                HeaderValue::from_str(&BASE64.encode(key)).expect("base64 is a valid header"),
            );
            headers
                .entry(header::SEC_WEBSOCKET_VERSION)
                .or_insert(HeaderValue::from_static("13"));
        }
        let uri = match Uri::builder()
            .scheme("https")
            .authority(authority.as_str())
            .path_and_query(pq)
            .build()
        {
            Ok(uri) => uri,
            Err(e) => {
                return refuse(
                    &mut audit,
                    ProxyError::BadRequest(format!("websocket URL: {e}")),
                )
            }
        };
        let mut upstream_req = Request::new(empty());
        *upstream_req.method_mut() = Method::GET;
        *upstream_req.uri_mut() = uri;
        *upstream_req.version_mut() = Version::HTTP_11;
        *upstream_req.headers_mut() = headers;
        let mut response = match self.upstream().send_upgrade(upstream_req).await {
            Ok(r) => r,
            Err(err) => return refuse(&mut audit, err),
        };
        audit.status = response.status().as_u16();
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            audit.outcome = "websocket_refused_upstream";
            audit.emit(true);
            return Response::from_parts(parts, boxed(body));
        }
        let upstream_side = hyper::upgrade::on(&mut response);
        let mut answer = Response::new(empty());
        for name in [
            header::SEC_WEBSOCKET_PROTOCOL,
            header::SEC_WEBSOCKET_EXTENSIONS,
        ] {
            if let Some(v) = response.headers().get(&name) {
                answer.headers_mut().insert(name, v.clone());
            }
        }
        if extended_connect {
            *answer.status_mut() = StatusCode::OK;
        } else {
            *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            answer
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            answer
                .headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            if let Some(accept) = response.headers().get(header::SEC_WEBSOCKET_ACCEPT) {
                answer
                    .headers_mut()
                    .insert(header::SEC_WEBSOCKET_ACCEPT, accept.clone());
            }
        }
        tokio::spawn(async move {
            let (client, upstream) = match tokio::join!(client_side, upstream_side) {
                (Ok(c), Ok(u)) => (c, u),
                _ => {
                    audit.outcome = "websocket_upgrade_failed";
                    audit.emit(false);
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            let result = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            if let Ok((up, down)) = result {
                audit.request_bytes.store(up, Ordering::Relaxed);
                audit.response_bytes.store(down, Ordering::Relaxed);
            }
            audit.emit(result.is_ok());
        });
        answer
    }
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut out)
        .expect("the system random number generator failed");
    out
}
