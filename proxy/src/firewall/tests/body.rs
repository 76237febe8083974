//! Bodies: streamed frames, SSE, errors.

use super::*;

fn channel_body() -> (
    tokio::sync::mpsc::UnboundedSender<Result<Frame<Bytes>, BoxError>>,
    ProxyBody,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, StreamBody::new(stream).boxed_unsync())
}

#[tokio::test]
async fn sse_events_in_separate_frames_flow_at_once_and_a_split_token_is_scrubbed() {
    use futures_util::FutureExt;
    let fw = Arc::new(one());
    let (tx, inner) = channel_body();
    let mut body = fw.body(inner);
    let send = |s: &str| tx.send(Ok(Frame::data(Bytes::from(s.to_owned())))).unwrap();

    send("data: {\"n\":1}\n\n");
    let f = body
        .frame()
        .now_or_never()
        .expect("not stalled")
        .unwrap()
        .unwrap();
    assert_eq!(f.into_data().unwrap(), "data: {\"n\":1}\n\n");

    send("data: {\"echo\":\"ghp_Se");
    let f = body
        .frame()
        .now_or_never()
        .expect("not stalled")
        .unwrap()
        .unwrap();
    assert_eq!(f.into_data().unwrap(), "data: {\"echo\":\"");
    assert!(
        body.frame().now_or_never().is_none(),
        "only the token's start waits"
    );

    send("CrEt+To/Ken=0123456789abc\"}\n\n");
    let f = body
        .frame()
        .now_or_never()
        .expect("not stalled")
        .unwrap()
        .unwrap();
    assert_eq!(
        f.into_data().unwrap(),
        Bytes::from(format!("{PLACEHOLDER}\"}}\n\n"))
    );

    let mut trailers = HeaderMap::new();
    trailers.insert("x-echo", HeaderValue::from_str(TOKEN).unwrap());
    send("tail ghp_");
    tx.send(Ok(Frame::trailers(trailers))).unwrap();
    drop(tx);
    let mut data = Vec::new();
    let mut seen_trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(f) => seen_trailers = Some(f.into_trailers().unwrap()),
        }
    }
    assert_eq!(data, b"tail ghp_");
    assert_eq!(seen_trailers.unwrap()["x-echo"], PLACEHOLDER);
}

#[tokio::test]
async fn body_errors_pass_through() {
    let fw = Arc::new(one());
    let (tx, inner) = channel_body();
    let mut body = fw.body(inner);
    tx.send(Ok(Frame::data(Bytes::from_static(b"ok ghp_Se"))))
        .unwrap();
    tx.send(Err("upstream reset".into())).unwrap();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "ok "
    );
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "upstream reset");
    assert!(body.frame().await.is_none());
}
