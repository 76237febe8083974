//! OpenTelemetry export (`--features otel`): spans reach an OTLP/HTTP collector.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::support::clients::curl;
use crate::support::{assert_not_leaked, blocking, real_secret, Airlock, TestCa, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_an_otlp_collector() {
    // A collector that records every export it receives.
    // (path, body) of every export.
    type Exports = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let received: Exports = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    let log = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|c| c.to_bytes().to_vec())
                            .unwrap_or_default();
                        log.lock().unwrap().push((path, body));
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::new()),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let ca = TestCa::new();
    let api = Upstream::start(&ca, &["api.otel.test"]).await;
    let real = real_secret("otel");
    let cfg = format!(
        "[proxy]\nupstream_ca = [{:?}]\n[resolve]\n\"api.otel.test\" = \"127.0.0.1:{}\"\n[[secret]]\nname = \"T\"\nvalue = {real:?}\nhosts = [\"api.otel.test\"]\n",
        ca.cert_pem_path().display().to_string(),
        api.port()
    );
    let airlock = Airlock::start_with_env(
        &cfg,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let env = airlock.env.clone();
    let auth = format!("Authorization: Bearer {}", airlock.var("T"));
    let out = blocking(move || {
        curl(
            &env,
            &["-s", "-H", &auth, "https://api.otel.test/traced?q=secret"],
        )
    })
    .await;
    assert_eq!(out.stdout, "ok\n");
    let deadline = Instant::now() + Duration::from_secs(15);
    let exported = loop {
        let seen = received.lock().unwrap().clone();
        if let Some((_, body)) = seen
            .iter()
            .find(|(p, b)| p == "/v1/traces" && b.windows(7).any(|w| w == b"request"))
        {
            break body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no span reached the collector: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = String::from_utf8_lossy(&exported).into_owned();
    assert!(text.contains("airlock"), "service name");
    assert!(
        text.contains("/traced") && !text.contains("q=secret"),
        "the path, never the query"
    );
    assert_not_leaked(&real, &[&text]);
}
