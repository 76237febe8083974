//! Client connections served on one single-threaded runtime per core
//! (nginx's and pingora's model, `[proxy] workers`): a connection's tasks,
//! and the pooled upstream connections its requests use (one pool per
//! worker, [`crate::shared::Shared::upstream`]), stay on the thread that
//! took it. On the shared work-stealing runtime, the connections of two
//! cores shared one upstream HTTP/2 connection and woke each other's tasks
//! on every request (bench/ANALYSIS.md).
//!
//! A new connection goes to the worker serving the fewest (Envoy's exact
//! connection balance), in turn among equals: in turn alone, connections
//! that outlive others (tunnels, WebSockets, idle keep-alive) pile up on
//! whichever workers they happened to fall to.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::limits::Admitted;

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
    /// The connections each worker serves now.
    live: Vec<Arc<AtomicUsize>>,
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
            live: (0..n).map(|_| Arc::default()).collect(),
            handles,
            _stop: stops,
            next: AtomicUsize::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Serves `stream` with the future `serve` makes of it, on the worker
    /// serving the fewest connections. The socket moves to that worker's
    /// reactor first (it was registered with the accepting runtime's), so
    /// its readiness wakes that worker's thread; `admitted` (which goes
    /// with the socket wherever the connection is handed) counts it among
    /// the worker's connections until it ends.
    pub fn spawn<F, Fut>(&self, stream: TcpStream, admitted: Admitted, serve: F)
    where
        F: FnOnce(TcpStream, Admitted) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let worker = self.least_busy();
        let handle = &self.handles[worker];
        let Ok(std) = stream.into_std() else {
            return;
        };
        let _entered = handle.enter();
        match TcpStream::from_std(std) {
            Ok(stream) => {
                let admitted = admitted.on_worker(self.live[worker].clone());
                drop(handle.spawn(serve(stream, admitted)));
            }
            Err(error) => tracing::warn!(%error, "could not hand a connection to a worker"),
        }
    }

    /// The worker serving the fewest connections; among equals, the first
    /// from a start that moves on by one each time.
    fn least_busy(&self) -> usize {
        let n = self.handles.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (start..start + n)
            .map(|i| i % n)
            .min_by_key(|&i| self.live[i].load(Ordering::Relaxed))
            .unwrap_or(start)
    }

    /// Each worker's count of the connections it serves (for the metrics).
    pub fn live_counts(&self) -> Vec<Arc<AtomicUsize>> {
        self.live.clone()
    }

    /// The connections each worker serves now.
    #[cfg(test)]
    fn live(&self) -> Vec<usize> {
        self.live
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Descriptors, GlobalSlots};
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Bench {
        workers: Workers,
        listener: tokio::net::TcpListener,
        slots: GlobalSlots,
    }

    impl Bench {
        async fn new() -> Self {
            Self {
                workers: Workers::start(2).unwrap(),
                listener: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
                slots: GlobalSlots::default(),
            }
        }

        /// A connection served on a worker, which answers the worker's
        /// number and holds the connection until the client closes it.
        async fn connect(&self) -> (u8, TcpStream) {
            let addr = self.listener.local_addr().unwrap();
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (stream, _) = self.listener.accept().await.unwrap();
            let admitted = self
                .slots
                .admit(usize::MAX, &Descriptors::unlimited())
                .unwrap();
            self.workers
                .spawn(stream, admitted, |mut stream, admitted| async move {
                    let worker = current().map_or(b'-', |i| b'0' + i as u8);
                    stream.write_all(&[worker]).await.unwrap();
                    let _ = stream.read(&mut [0u8; 1]).await;
                    drop(admitted);
                });
            let mut answer = [0u8; 1];
            client.read_exact(&mut answer).await.unwrap();
            (answer[0], client)
        }

        async fn wait_for_live(&self, want: &[usize]) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.workers.live() != want {
                assert!(Instant::now() < deadline, "{:?}", self.workers.live());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// Workers serving as many connections take new ones in turn; each
    /// socket works on its worker; dropping the workers stops their threads.
    #[tokio::test]
    async fn equally_busy_workers_take_connections_in_turn() {
        let bench = Bench::new().await;
        assert_eq!(bench.workers.len(), 2);
        let mut held = Vec::new();
        let mut served_on = Vec::new();
        for _ in 0..4 {
            let (worker, client) = bench.connect().await;
            served_on.push(worker);
            held.push(client);
        }
        assert_eq!(served_on, b"0101");
        assert_eq!(bench.workers.live(), [2, 2]);
        assert_eq!(current(), None, "the test's own thread is no worker");
        drop(held);
        bench.wait_for_live(&[0, 0]).await;
        let threads = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("airlock-w"))
                .count()
        };
        assert_eq!(threads(), 2);
        drop(bench);
        let deadline = Instant::now() + Duration::from_secs(5);
        while threads() > 0 {
            assert!(Instant::now() < deadline, "worker threads left");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A worker whose connections ended takes the next one, though it is
    /// not its turn: long-lived connections do not pile up on one worker.
    #[tokio::test]
    async fn the_worker_serving_fewest_takes_the_next_connection() {
        let bench = Bench::new().await;
        let (a, first) = bench.connect().await;
        let (b, _long_lived) = bench.connect().await;
        let (c, third) = bench.connect().await;
        assert_eq!([a, b, c], *b"010");
        drop((first, third));
        bench.wait_for_live(&[0, 1]).await;
        // In turn it would be worker 1's.
        let (d, _fourth) = bench.connect().await;
        assert_eq!(d, b'0');
        assert_eq!(bench.workers.live(), [1, 1]);
    }
}
