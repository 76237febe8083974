//! Routes that hand back what the upstream stored or was sent: the hostile
//! upstream the response firewall is tested against.

use super::*;

/// The latest bearer credential this server was sent (what a hostile server keeps).
pub(super) fn stored_bearer(log: &Arc<Mutex<Vec<Recorded>>>) -> Option<String> {
    log.lock().unwrap().iter().rev().find_map(|r| {
        r.header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
    })
}

/// Every spelling a hostile upstream could use to hand back a token.
pub fn leak_forms(token: &str) -> Vec<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
    let mut forms = vec![
        token.to_owned(),
        STANDARD.encode(format!("x-access-token:{token}")),
        hex.clone(),
        hex.to_uppercase(),
    ];
    for pad in ["", "a", "ab"] {
        forms.push(STANDARD.encode(format!("{pad}{token}")));
        forms.push(URL_SAFE_NO_PAD.encode(format!("{pad}{token}")));
    }
    forms
}

/// `/leak`: a hostile upstream that stored every bearer credential it was
/// ever sent and hands the latest back (to a request that carried none) in
/// every form it can: raw, Basic, base64/base64url at each alignment, hex,
/// in headers, the reason phrase, a body split across delayed frames, and
/// trailers.
pub(super) fn leak(headers: &HeaderMap, log: &Arc<Mutex<Vec<Recorded>>>) -> Response<RespBody> {
    let Some(token) = stored_bearer(log) else {
        return text(StatusCode::NOT_FOUND, "nothing stored\n");
    };
    let forms = leak_forms(&token);
    let mut body = forms.join("\n");
    body.push('\n');
    // The raw token once more, split over two frames sent 50 ms apart.
    let (first, second) = token.split_at(token.len() / 2);
    let tail = format!("split:{first}");
    let rest = format!("{second}:end\n");
    let mut trailers = HeaderMap::new();
    trailers.insert(
        HeaderName::from_static("x-leak-trailer"),
        HeaderValue::from_str(&token).unwrap(),
    );
    let want_trailers = headers
        .get("te")
        .is_some_and(|v| v.to_str().unwrap_or("").contains("trailers"));
    let frames = futures_util::stream::unfold(0u8, move |i| {
        let body = body.clone();
        let tail = tail.clone();
        let rest = rest.clone();
        let trailers = trailers.clone();
        async move {
            let frame = match i {
                0 => Frame::data(Bytes::from(body)),
                1 => Frame::data(Bytes::from(tail)),
                2 => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Frame::data(Bytes::from(rest))
                }
                3 if want_trailers => Frame::trailers(trailers),
                _ => return None,
            };
            Some((Ok::<_, Infallible>(frame), i + 1))
        }
    });
    let mut response = Response::builder()
        .header("content-type", "text/plain")
        .header("x-leak", token.as_str())
        .header("x-leak-basic", forms[1].as_str())
        .header("trailer", "x-leak-trailer")
        .body(StreamBody::new(frames).boxed())
        .unwrap();
    if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(format!("OK {token}").into_bytes()) {
        response.extensions_mut().insert(reason);
    }
    response
}

/// The body of the request just recorded (for `/echo-body`).
pub(super) fn body_sample_for_echo(log: &Arc<Mutex<Vec<Recorded>>>) -> Vec<u8> {
    log.lock()
        .unwrap()
        .last()
        .map(|r| r.body_sample.clone())
        .unwrap_or_default()
}
