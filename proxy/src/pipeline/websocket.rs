//! WebSocket through an intercepted connection: the handshake's placeholders
//! are swapped like any request's, then frames are relayed both ways as bytes.
//! Sandboxes may use HTTP/1.1 `Upgrade` or RFC 8441 extended CONNECT over
//! HTTP/2; upstream always gets an HTTP/1.1 upgrade.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::audit::{AuditRecord, Mode, Outcome};
use crate::body::{boxed, empty};
use crate::error::ProxyError;
use crate::headers::strip_hop_by_hop;
use crate::pipeline::close::{on_body_end, refuse};
use crate::rules::RuleRequest;
use crate::screen::ToSandbox;
use crate::shared::Shared;
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

/// Swaps the handshake, sends it upstream as an HTTP/1.1 upgrade, and on
/// `101` relays frames until either side closes; the audit line is written
/// when the relay ends.
pub(crate) async fn websocket(
    shared: &Shared,
    mut req: Request<Incoming>,
    authority: http::uri::Authority,
    mut swapper: Swapper,
    mut audit: AuditRecord,
) -> ToSandbox {
    audit.mode = Mode::Websocket;
    let extended_connect = req.method() == Method::CONNECT;
    let client_side = hyper::upgrade::on(&mut req);
    let target = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let pq = target.as_str().to_owned();
    let mut headers = req.headers().clone();
    // Sent upstream as an HTTP/1.1 GET upgrade, so judged as one.
    swapper.set_rule_request(RuleRequest::new(&Method::GET, target));
    audit.marks = Some(swapper.shared_marks());
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
    if let Err(err) = swapper.check_required().await {
        return refuse(&mut audit, err);
    }
    audit.swapped = swapper.swapped_ids();
    // permessage-deflate would hide the frames from the response firewall.
    headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
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
        .authority(authority)
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
    let mut response = match shared.upstream().send_upgrade(upstream_req).await {
        Ok(r) => r,
        Err(err) => return refuse(&mut audit, err),
    };
    audit.status = response.status().as_u16();
    let narrowed = swapper.narrowed_swaps();
    let firewall = if shared.settings.scrub_responses && !narrowed.is_empty() {
        shared.ledger.firewall(&audit.sandbox).await;
        shared
            .ledger
            .firewall_for_narrowed(&audit.sandbox, &narrowed)
    } else if shared.settings.scrub_responses {
        shared.ledger.firewall(&audit.sandbox).await
    } else {
        None
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        audit.outcome = Outcome::WebsocketRefusedUpstream;
        let decoding = crate::screen::Decoding {
            max: shared.settings.max_decoded_body,
            budget: &shared.decompression,
        };
        let screened = crate::screen::screen(response.map(boxed), firewall, decoding).await;
        return match screened {
            Ok(answer) => on_body_end(audit, answer),
            Err(err) => refuse(&mut audit, err),
        };
    }
    let upstream_side = hyper::upgrade::on(&mut response);
    let mut answer = Response::new(empty());
    // No extensions: none were offered (see above), so none can be in use.
    for name in [header::SEC_WEBSOCKET_PROTOCOL] {
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
    let firewall_for_answer = firewall.clone();
    tokio::spawn(async move {
        let (client, upstream) = match tokio::join!(client_side, upstream_side) {
            (Ok(c), Ok(u)) => (c, u),
            _ => {
                audit.outcome = Outcome::WebsocketUpgradeFailed;
                audit.emit(false);
                return;
            }
        };
        let (up, down) = relay(TokioIo::new(client), TokioIo::new(upstream), firewall).await;
        let ok = up.is_ok() && down.is_ok();
        audit.request_bytes = up.unwrap_or(0);
        audit.response_bytes = down.unwrap_or(0);
        audit.emit(ok);
    });
    // Servers echo the subprotocol the client offered: a placeholder there
    // came back as the token.
    crate::screen::switching(answer, firewall_for_answer.as_deref())
}

/// Relays frames both ways: the sandbox's as they are, the server's through
/// the response firewall (frame by frame, payloads screened, lengths fixed).
/// Bytes (sandbox → server, server → sandbox).
async fn relay<C, U>(
    client: C,
    upstream: U,
    firewall: Option<std::sync::Arc<crate::firewall::Firewall>>,
) -> (std::io::Result<u64>, std::io::Result<u64>)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let outbound = async {
        let n = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        let _ = upstream_write.shutdown().await;
        n
    };
    let inbound = async {
        let n = match firewall {
            Some(fw) => {
                fw.websocket_server_to_client()
                    .pump(&mut upstream_read, &mut client_write)
                    .await
            }
            None => tokio::io::copy(&mut upstream_read, &mut client_write).await,
        };
        let _ = client_write.shutdown().await;
        n
    };
    tokio::join!(outbound, inbound)
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut out)
        .expect("the system random number generator failed");
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use airlock_vault_client::SecretString;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::firewall::{Firewall, Guarded};

    #[test]
    fn upgrades_are_recognised_in_both_protocols() {
        let h1 = Request::builder()
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "WebSocket")
            .body(())
            .unwrap();
        assert!(is_upgrade(&h1));
        let not = Request::builder()
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(!is_upgrade(&not), "Connection must name the upgrade");
        let mut h2 = Request::builder().method(Method::CONNECT).body(()).unwrap();
        assert!(!is_upgrade(&h2));
        h2.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        assert!(is_upgrade(&h2));
    }

    #[tokio::test]
    async fn the_relay_scrubs_server_frames_and_passes_client_bytes_as_they_are() {
        let fw = Firewall::new([Guarded {
            token: SecretString::from("tok-SECRET-1234567890"),
            placeholder: "miosa-tok-AbCdEfGhIjKlMnOpQrStUv".into(),
        }])
        .map(Arc::new);
        let (client, mut sandbox) = tokio::io::duplex(4096);
        let (upstream, mut server) = tokio::io::duplex(4096);
        let relay = tokio::spawn(relay(client, upstream, fw));

        // A masked client frame goes upstream byte for byte.
        let client_frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        sandbox.write_all(&client_frame).await.unwrap();
        let mut got = [0u8; 8];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, client_frame);

        let payload = b"token tok-SECRET-1234567890";
        let mut frame = vec![0x81, payload.len() as u8];
        frame.extend_from_slice(payload);
        server.write_all(&frame).await.unwrap();
        server.shutdown().await.unwrap();
        sandbox.shutdown().await.unwrap();
        let mut out = Vec::new();
        sandbox.read_to_end(&mut out).await.unwrap();
        let expected = b"token miosa-tok-AbCdEfGhIjKlMnOpQrStUv";
        assert_eq!(out[0], 0x81);
        assert_eq!(usize::from(out[1]), expected.len());
        assert_eq!(&out[2..], expected);
        let (up, down) = relay.await.unwrap();
        assert_eq!(up.unwrap(), 8);
        assert_eq!(down.unwrap(), out.len() as u64);
    }
}
