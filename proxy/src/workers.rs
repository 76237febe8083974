//! Client connections served on one single-threaded runtime per core
//! (nginx's and pingora's model, `[proxy] workers`): a connection's tasks,
//! and the pooled upstream connections its requests use (one pool per
//! worker, [`crate::shared::Shared::upstream`]), stay on the thread that
//! took it. On the shared work-stealing runtime, the connections of two
//! cores shared one upstream HTTP/2 connection and woke each other's tasks
//! on every request (bench/ANALYSIS.md).

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::sync::oneshot;

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The worker this thread is, if it is one.
pub fn current() -> Option<usize> {
    WORKER.get()
}

/// The worker threads; they stop (and drop what they still serve) when
/// this is dropped.
pub struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    _stop: Vec<oneshot::Sender<()>>,
    next: AtomicUsize,
}

impl Workers {
    /// `n` worker threads, each running its own runtime.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for i in 0..n {
            let (started, handle) = std::sync::mpsc::channel();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("airlock-w{i}"))
                .spawn(move || {
                    WORKER.set(Some(i));
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match runtime {
                        Ok(runtime) => {
                            let _ = started.send(Ok(runtime.handle().clone()));
                            let _ = runtime.block_on(stopped);
                        }
                        Err(e) => {
                            let _ = started.send(Err(e));
                        }
                    }
                })?;
            handles.push(handle.recv().map_err(std::io::Error::other)??);
            stops.push(stop);
        }
        Ok(Self {
            handles,
            _stop: stops,
            next: AtomicUsize::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Serves `stream` with the future `serve` makes of it, on the next
    /// worker in turn. The socket moves to that worker's reactor first (it
    /// was registered with the accepting runtime's), so its readiness wakes
    /// that worker's thread.
    pub fn spawn<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        let handle = &self.handles[turn];
        let Ok(std) = stream.into_std() else {
            return;
        };
        let _entered = handle.enter();
        match TcpStream::from_std(std) {
            Ok(stream) => drop(handle.spawn(serve(stream))),
            Err(error) => tracing::warn!(%error, "could not hand a connection to a worker"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Each connection is served on a worker, in turn, and its socket works
    /// there; dropping the workers stops their threads.
    #[tokio::test]
    async fn connections_are_served_on_the_workers_in_turn() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.len(), 2);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut served_on = Vec::new();
        for _ in 0..4 {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            workers.spawn(stream, |mut stream| async move {
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).await.unwrap();
                let worker = current().map_or(b'-', |i| b'0' + i as u8);
                stream.write_all(&[worker]).await.unwrap();
            });
            client.write_all(b"?").await.unwrap();
            let mut answer = [0u8; 1];
            client.read_exact(&mut answer).await.unwrap();
            served_on.push(answer[0]);
        }
        assert_eq!(served_on, b"0101");
        assert_eq!(current(), None, "the test's own thread is no worker");
        let threads = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("airlock-w"))
                .count()
        };
        assert_eq!(threads(), 2);
        drop(workers);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while threads() > 0 {
            assert!(std::time::Instant::now() < deadline, "worker threads left");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
