//! The API's accept loop. `axum::serve` holds any number of connections for
//! as long as their clients like (it sets no timer, so hyper's header read
//! timeout never runs): a client that opens connections and sends nothing
//! would use up the process's descriptors, which in `airlock up` the proxy
//! counts on. Here each connection needs a place under
//! [`Limits::max_connections`] and whatever the caller's `admit` hands out (in
//! `airlock up`, a descriptor of the proxy's budget); one more is answered
//! `503 vault_busy` and closed. A connection that does not finish a request
//! head within [`Limits::idle_timeout`] (idle keep-alive time included) is
//! closed.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Refusals written at once; past this, more are closed unanswered.
const BUSY_ANSWERS: usize = 16;
/// Refusals are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// How long writing one refusal may take.
const BUSY_WRITE: Duration = Duration::from_secs(1);

/// The refusal past the cap: the API's error shape, with the service API's
/// `unavailable` code, so a remote proxy takes it for a vault it cannot
/// reach for a moment.
fn busy_answer() -> Vec<u8> {
    let body = serde_json::json!({
        "error": "vault_busy: the vault holds max_connections API connections already; try again",
        "code": "unavailable",
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What the accept loop allows.
pub struct Limits<A> {
    /// API connections open at once.
    pub max_connections: usize,
    /// A request head must arrive within this (from the connection's start,
    /// or from the previous answer on a kept-alive connection).
    pub idle_timeout: Duration,
    /// What else a connection needs (a descriptor of the process's budget);
    /// held until it closes. `None` refuses the connection.
    pub admit: A,
}

/// Serves `router` on `listener` under `limits` until the listener fails.
pub async fn serve_limited<A, T>(
    listener: TcpListener,
    router: Router,
    limits: Limits<A>,
) -> std::io::Result<()>
where
    A: Fn() -> Option<T> + Send + 'static,
    T: Send + 'static,
{
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let busy = Arc::new(Semaphore::new(BUSY_ANSWERS));
    let mut last_warned: Option<std::time::Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE and the like: accepting again at once would spin.
                tracing::error!(error = %e, "vault API: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let admitted = places
            .clone()
            .try_acquire_owned()
            .ok()
            .and_then(|place| Some((place, (limits.admit)()?)));
        match admitted {
            Some(held) => {
                let router = router.clone();
                let idle = limits.idle_timeout;
                tokio::spawn(async move {
                    serve_connection(stream, router, idle).await;
                    drop(held);
                });
            }
            None => {
                // Once per WARN_EVERY at most: a flood must not become one.
                if last_warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    last_warned = Some(std::time::Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "vault API: max_connections reached or no descriptor left, connections refused"
                    );
                }
                refuse(stream, &busy);
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, router: Router, idle_timeout: Duration) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(router);
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "vault API connection ended");
    }
}

/// One `503 vault_busy` and close, while few are being written; otherwise
/// just close.
fn refuse(mut stream: TcpStream, busy: &Arc<Semaphore>) {
    let Ok(answering) = busy.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(BUSY_WRITE, async {
            stream.write_all(&busy_answer()).await?;
            stream.shutdown().await?;
            // Read what the client sent until it closes: closing with its
            // request unread would reset the connection, and the client
            // could lose the answer.
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            std::io::Result::Ok(())
        })
        .await;
        drop(answering);
    });
}

/// Errors of one connection, not of the listener (as hyper's and axum's loops).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::AsyncReadExt;

    async fn start<A, T>(limits: Limits<A>) -> std::net::SocketAddr
    where
        A: Fn() -> Option<T> + Send + 'static,
        T: Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/ok", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve_limited(listener, router, limits));
        addr
    }

    fn limits(max_connections: usize) -> Limits<impl Fn() -> Option<()> + Send + 'static> {
        Limits {
            max_connections,
            idle_timeout: Duration::from_secs(30),
            admit: || Some(()),
        }
    }

    /// One request on a new connection; the whole answer (the connection closes after it).
    async fn ask(addr: std::net::SocketAddr) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /ok HTTP/1.1\r\nhost: vault\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        read_all(&mut stream).await
    }

    async fn read_all(stream: &mut TcpStream) -> String {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("the vault answered and closed in time")
            .unwrap();
        String::from_utf8(answer).unwrap()
    }

    /// Connections the listener has taken: a request on each is answered.
    async fn held(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
        let mut open = Vec::new();
        for _ in 0..n {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /ok HTTP/1.1\r\nhost: vault\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            open.push(stream);
        }
        open
    }

    #[tokio::test]
    async fn a_connection_past_max_connections_is_answered_503_and_the_place_comes_back() {
        let addr = start(limits(2)).await;
        let open = held(addr, 2).await;
        let refused = ask(addr).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("retry-after: 1\r\n"), "{refused}");
        let body = refused.split("\r\n\r\n").nth(1).unwrap();
        let answer: airlock_vault_client::contract::ErrorAnswer =
            serde_json::from_str(body).expect("the service API's error shape");
        assert_eq!(
            answer.code,
            Some(airlock_vault_client::ErrorCode::Unavailable)
        );
        assert!(answer.error.starts_with("vault_busy"), "{}", answer.error);
        // The held ones are still served.
        let mut open = open;
        let kept = &mut open[0];
        kept.write_all(b"GET /ok HTTP/1.1\r\nhost: vault\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = kept.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        drop(open.pop());
        // One closed: its place comes back (the close is seen shortly).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let answer = ask(addr).await;
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{answer}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_connection_refused_by_admit_is_answered_503_and_admit_is_held_while_open() {
        let allowed = Arc::new(AtomicBool::new(true));
        let allow = allowed.clone();
        let addr = start(Limits {
            max_connections: 10,
            idle_timeout: Duration::from_secs(30),
            admit: move || {
                allow
                    .swap(false, Ordering::SeqCst)
                    .then(|| DropFlag(allow.clone()))
            },
        })
        .await;
        // The one admission: held by this connection.
        let open = held(addr, 1).await;
        assert!(ask(addr).await.starts_with("HTTP/1.1 503"));
        drop(open);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !allowed.load(Ordering::SeqCst) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the admission was given back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ask(addr).await.starts_with("HTTP/1.1 200"));
    }

    /// Gives the one admission back when dropped.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
        let addr = start(Limits {
            max_connections: 1,
            idle_timeout: Duration::from_millis(300),
            admit: || Some(()),
        })
        .await;
        // Silent from the start, then idle after an answer: both closed.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut buf))
            .await
            .expect("closed by the vault")
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        let mut kept = held(addr, 1).await.pop().unwrap();
        let rest = read_all(&mut kept).await;
        assert!(!rest.contains("HTTP/1.1 200"), "nothing more was asked");
        // The one place is free again.
        assert!(ask(addr).await.starts_with("HTTP/1.1 200"));
    }
}
