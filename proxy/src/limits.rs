//! Limits: failed proxy authentication is slowed down, a sandbox and the
//! whole proxy hold at most so many connections open, and decoded request
//! bodies share one process-wide budget.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use airlock_vault_client::SandboxId;
use bytes::Bytes;
use dashmap::DashMap;
use http_body::{Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};
use crate::error::ProxyError;

const WINDOW: Duration = Duration::from_secs(60);

/// Failed `Proxy-Authorization` attempts per client address, per minute.
pub struct AuthFailures {
    limit: u32,
    seen: DashMap<IpAddr, (Instant, u32)>,
}

impl AuthFailures {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            seen: DashMap::new(),
        }
    }

    /// How long `peer` must wait, if it failed too often in the last minute.
    pub fn blocked(&self, peer: IpAddr) -> Option<Duration> {
        let entry = self.seen.get(&peer)?;
        let (start, count) = *entry;
        let elapsed = start.elapsed();
        (elapsed < WINDOW && count >= self.limit).then(|| WINDOW - elapsed)
    }

    pub fn record(&self, peer: IpAddr) {
        let mut entry = self.seen.entry(peer).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        drop(entry);
        // Old windows are of no use; keep the map from growing without end.
        if self.seen.len() > 10_000 {
            self.seen.retain(|_, (start, _)| start.elapsed() < WINDOW);
        }
    }
}

/// Open CONNECT tunnels and intercepted connections per sandbox.
#[derive(Default)]
pub struct ConnectionSlots {
    open: DashMap<SandboxId, Arc<AtomicUsize>>,
}

/// Held while a connection is open; frees its slot when dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionSlots {
    pub fn acquire(&self, sandbox: &SandboxId, limit: usize) -> Option<Slot> {
        let counter = self.open.entry(sandbox.clone()).or_default().clone();
        take_slot(counter, limit)
    }
}

fn take_slot(counter: Arc<AtomicUsize>, limit: usize) -> Option<Slot> {
    let previous = counter.fetch_add(1, Ordering::AcqRel);
    if previous >= limit {
        counter.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    Some(Slot(counter))
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None`
/// when unknown or unlimited.
pub fn open_files_limit() -> Option<u64> {
    parse_open_files_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Connections over `max_connections` that are answered `503` at once (each
/// holds its descriptor for a few seconds); more are closed unanswered.
pub const BUSY_ANSWERS: usize = 256;

/// Descriptors outside the connection budget: listeners, logs, the
/// database, the vault's outbound HTTP clients and the admin endpoint's
/// connections (`metrics::ADMIN_CONNECTIONS`), 64 in all, and the busy
/// answers. (The vault API's connections take theirs from the budget.)
const RESERVED_DESCRIPTORS: u64 = 64 + BUSY_ANSWERS as u64;

/// The sockets the proxy holds for connections, client and upstream sides
/// together, as one budget under the open-files limit (nginx's
/// `worker_connections`). A client connection costs one descriptor; an
/// upstream connection costs one for as long as it exists, and pooled ones
/// are shared between client connections, so an idle intercepted connection
/// holds one, not two. Client connections stop short of the whole budget,
/// leaving headroom for the upstream connections of requests in flight; a
/// dial past the whole budget is refused with a clear answer instead of
/// failing with `EMFILE` in whatever part of the process asks next.
pub struct Descriptors {
    used: Arc<AtomicUsize>,
    limit: usize,
    clients_up_to: usize,
}

impl Descriptors {
    /// The budget for a process allowed `open_files` descriptors (`None`:
    /// unknown or unlimited).
    pub fn for_open_files(open_files: Option<u64>) -> Self {
        let Some(open_files) = open_files else {
            return Self::unlimited();
        };
        let limit = open_files.saturating_sub(RESERVED_DESCRIPTORS).max(2) as usize;
        // A sixteenth for upstream connections, at least 64 of them, never
        // more than half.
        let headroom = (limit / 16).max(64).min(limit / 2);
        Self {
            used: Arc::default(),
            limit,
            clients_up_to: limit - headroom,
        }
    }

    /// The budget under this process's open-files limit.
    pub fn for_process() -> Self {
        Self::for_open_files(open_files_limit())
    }

    pub fn unlimited() -> Self {
        Self {
            used: Arc::default(),
            limit: usize::MAX,
            clients_up_to: usize::MAX,
        }
    }

    /// A descriptor for a client connection, unless only the upstream
    /// headroom is left.
    pub fn client(&self) -> Option<Slot> {
        take_slot(self.used.clone(), self.clients_up_to)
    }

    /// A descriptor for an upstream connection, unless the budget is spent.
    pub fn upstream(&self) -> Option<Slot> {
        take_slot(self.used.clone(), self.limit)
    }

    /// The most client connections that can be open at once.
    pub fn clients_up_to(&self) -> usize {
        self.clients_up_to
    }

    /// The whole budget.
    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// A client connection let in: its place under `max_connections` and its
/// descriptor, both given back when the connection ends.
pub struct Admitted {
    _connection: Slot,
    _descriptor: Slot,
    /// Counted among its worker's connections, when served on one.
    _worker: Option<Slot>,
}

impl Admitted {
    /// Counted in `live` (its worker's connections) until the connection ends.
    pub fn on_worker(mut self, live: Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::AcqRel);
        self._worker = Some(Slot(live));
        self
    }
}

/// Every client connection the proxy holds, whatever the sandbox. A clone
/// counts the same connections (the metrics endpoint reads one).
#[derive(Default, Clone)]
pub struct GlobalSlots {
    open: Arc<AtomicUsize>,
}

impl GlobalSlots {
    pub fn acquire(&self, limit: usize) -> Option<Slot> {
        take_slot(self.open.clone(), limit)
    }

    /// A place under `limit` and a client descriptor from `descriptors`, or
    /// neither.
    pub fn admit(&self, limit: usize, descriptors: &Descriptors) -> Option<Admitted> {
        let connection = self.acquire(limit)?;
        let descriptor = descriptors.client()?;
        Some(Admitted {
            _connection: connection,
            _descriptor: descriptor,
            _worker: None,
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Bytes of decoded request bodies held at once, process-wide: a cap per
/// request alone lets a dozen small bombs take gigabytes together.
#[derive(Clone)]
pub struct Budget {
    limit: usize,
    used: Arc<AtomicUsize>,
}

/// Bytes taken from a [`Budget`], given back when dropped.
pub struct Reservation {
    used: Arc<AtomicUsize>,
    bytes: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: Arc::default(),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// An empty reservation, grown as a body decodes.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            used: self.used.clone(),
            bytes: 0,
        }
    }

    /// Adds `more` bytes to `r`, or leaves it as it was when the budget is spent.
    pub fn grow(&self, r: &mut Reservation, more: usize) -> bool {
        debug_assert!(Arc::ptr_eq(&self.used, &r.used));
        let mut current = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = current.checked_add(more).filter(|n| *n <= self.limit) else {
                return false;
            };
            match self.used.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    r.bytes += more;
                    return true;
                }
                Err(seen) => current = seen,
            }
        }
    }
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A request body that fails with [`ProxyError::BodyReadTimeout`] when the
/// client sends nothing for `after`. Time spent while nobody asks for the
/// next frame (the upstream is slow to read) does not count.
pub struct IdleTimeout {
    inner: ProxyBody,
    after: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
}

impl IdleTimeout {
    pub fn new(inner: ProxyBody, after: Duration) -> Self {
        Self {
            inner,
            after,
            sleep: Box::pin(tokio::time::sleep(after)),
            waiting: false,
        }
    }
}

impl http_body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let deadline = tokio::time::Instant::now() + this.after;
                    this.sleep.as_mut().reset(deadline);
                }
                match this.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(Box::new(ProxyError::BodyReadTimeout {
                            after: this.after,
                        }))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_after_the_limit() {
        let f = AuthFailures::new(3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(f.blocked(ip).is_none());
            f.record(ip);
        }
        assert!(f.blocked(ip).is_some());
        assert!(f.blocked("10.0.0.2".parse().unwrap()).is_none());
    }

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let budget = Budget::new(100);
        let mut a = budget.reservation();
        let mut b = budget.reservation();
        assert!(budget.grow(&mut a, 60));
        assert!(!budget.grow(&mut b, 41), "over the shared limit");
        assert_eq!(b.bytes(), 0, "a refused growth takes nothing");
        assert!(budget.grow(&mut b, 40));
        assert_eq!(budget.used(), 100);
        assert!(!budget.grow(&mut a, 1));
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(budget.grow(&mut b, 60));
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(!budget.grow(&mut budget.reservation(), usize::MAX));
    }

    #[test]
    fn the_budget_holds_under_concurrent_growth() {
        let budget = Budget::new(1000);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    let mut r = budget.reservation();
                    let mut granted = 0;
                    for _ in 0..1000 {
                        if budget.grow(&mut r, 7) {
                            granted += 7;
                        }
                        assert!(budget.used() <= 1000);
                    }
                    (granted, r)
                })
            })
            .collect();
        let held: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let total: usize = held.iter().map(|(g, _)| g).sum();
        assert_eq!(total, budget.used());
        assert!(total <= 1000 && total > 1000 - 7 * 8, "{total}");
        drop(held);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_body_that_stops_sending_times_out() {
        use http_body_util::BodyExt;
        let (mut tx, rx) = futures_channel_body();
        let mut body = IdleTimeout::new(rx, Duration::from_millis(200));
        tx.send(Bytes::from_static(b"a")).await;
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "a"
        );
        // Time while nobody polls the body does not count.
        tokio::time::sleep(Duration::from_millis(500)).await;
        tx.send(Bytes::from_static(b"b")).await;
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "b"
        );
        let started = tokio::time::Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(200));
        let err = err.downcast::<ProxyError>().unwrap();
        assert!(matches!(*err, ProxyError::BodyReadTimeout { .. }), "{err}");
        assert_eq!(err.status(), http::StatusCode::REQUEST_TIMEOUT);
        drop(tx);
    }

    /// A body fed by hand: data sent on `tx` arrives as frames.
    fn futures_channel_body() -> (Feeder, ProxyBody) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
        });
        (
            Feeder(tx),
            crate::body::boxed(http_body_util::StreamBody::new(stream)),
        )
    }

    struct Feeder(tokio::sync::mpsc::Sender<Bytes>);

    impl Feeder {
        async fn send(&mut self, b: Bytes) {
            self.0.send(b).await.unwrap();
        }
    }

    #[test]
    fn the_open_files_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             96362                96362                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(unlimited), None);
        if cfg!(target_os = "linux") {
            assert!(open_files_limit().is_some());
        }
    }

    #[test]
    fn descriptors_count_both_sides_and_keep_headroom_for_upstreams() {
        let small = Descriptors::for_open_files(Some(1024));
        assert_eq!((small.limit(), small.clients_up_to()), (704, 640));
        let here = Descriptors::for_open_files(Some(20_000));
        assert_eq!((here.limit(), here.clients_up_to()), (19_680, 18_450));
        assert!(here.clients_up_to() >= 10_000, "10 000 idle clients fit");
        let tiny = Descriptors::for_open_files(Some(10));
        assert_eq!((tiny.limit(), tiny.clients_up_to()), (2, 1));
        let unlimited = Descriptors::for_open_files(None);
        assert_eq!(unlimited.clients_up_to(), usize::MAX);

        // Clients stop at the headroom; upstream connections may use it,
        // and nothing more; a descriptor given back is taken again.
        let clients: Vec<_> = (0..640)
            .map(|_| small.client().expect("a client"))
            .collect();
        assert!(small.client().is_none(), "clients stop short of the budget");
        let upstreams: Vec<_> = (0..64)
            .map(|_| small.upstream().expect("headroom"))
            .collect();
        assert!(small.upstream().is_none(), "the budget is spent");
        assert_eq!(small.in_use(), 704);
        drop(upstreams);
        assert!(
            small.client().is_none(),
            "an upstream's descriptor is not a client's"
        );
        drop(clients);
        assert_eq!(small.in_use(), 0);
        assert!(small.client().is_some());

        // Admission takes both a place and a descriptor, or neither.
        let global = GlobalSlots::default();
        let admitted = global.admit(1, &tiny).expect("admitted");
        assert!(
            global.admit(2, &tiny).is_none(),
            "no client descriptor left"
        );
        assert_eq!(
            global.open(),
            1,
            "the place taken for the refused one is back"
        );
        drop(admitted);
        assert_eq!((global.open(), tiny.in_use()), (0, 0));
    }

    #[test]
    fn global_slots_cap_every_connection() {
        let g = GlobalSlots::default();
        let a = g.acquire(1).unwrap();
        assert!(g.acquire(1).is_none());
        assert_eq!(g.open(), 1);
        drop(a);
        assert!(g.acquire(1).is_some());
    }

    #[test]
    fn slots_are_freed_when_dropped() {
        let slots = ConnectionSlots::default();
        let sbx = SandboxId::default_sandbox();
        let a = slots.acquire(&sbx, 2).unwrap();
        let _b = slots.acquire(&sbx, 2).unwrap();
        assert!(slots.acquire(&sbx, 2).is_none());
        drop(a);
        assert!(slots.acquire(&sbx, 2).is_some());
    }
}
