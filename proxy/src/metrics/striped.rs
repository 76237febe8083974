//! Counts every request makes, spread over cache lines of their own, so that
//! threads counting at once do not take a cache line from each other.
//!
//! A plain `AtomicU64` that every worker thread adds to moves its cache line
//! between cores on each request, and `prometheus_client`'s histogram takes a
//! write lock per observation. Here each thread adds to one of [`STRIPES`]
//! slots; a scrape sums them. Totals are exact; a scrape racing a request may
//! see it in a bucket and not yet in the count.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Atomic;
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Slots per metric: more than the worker threads of most machines, so
/// each thread mostly has its own.
pub const STRIPES: usize = 16;

/// This thread's slot: threads take slots in turn as they first count.
pub fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// One cache line (two, against the adjacent-line prefetcher) per slot.
#[derive(Default)]
#[repr(align(128))]
struct Slot(AtomicU64);

/// A `u64` counter in [`STRIPES`] slots: `Counter<u64, StripedU64>`.
pub struct StripedU64 {
    slots: Box<[Slot]>,
}

impl std::fmt::Debug for StripedU64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StripedU64({})", self.get())
    }
}

impl Default for StripedU64 {
    fn default() -> Self {
        Self {
            slots: (0..STRIPES).map(|_| Slot::default()).collect(),
        }
    }
}

impl Atomic<u64> for StripedU64 {
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    /// Returns this thread's slot before the increment, not the total:
    /// summing would read every other core's line (nothing here uses it).
    fn inc_by(&self, v: u64) -> u64 {
        self.slots[stripe()].0.fetch_add(v, Ordering::Relaxed)
    }

    fn get(&self) -> u64 {
        self.slots
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

/// Sixteen counts on one aligned 128-byte span.
#[repr(align(128))]
struct Line([AtomicU64; 16]);

/// A Prometheus histogram that takes no lock to observe. Each slot is whole
/// [`Line`]s: its count, its sum (`f64` bits), then its per-bucket
/// observations (not cumulative, the last `+Inf`).
/// Clones share the counts, as `Histogram`'s do.
#[derive(Clone)]
pub struct StripedHistogram(Arc<Slots>);

struct Slots {
    /// Upper bounds, the last `f64::MAX` (`+Inf`), as `Histogram` has them.
    bounds: Box<[f64]>,
    lines: Box<[Line]>,
    lines_per_slot: usize,
}

impl std::fmt::Debug for StripedHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (sum, count, _) = self.totals();
        f.debug_struct("StripedHistogram")
            .field("count", &count)
            .field("sum", &sum)
            .finish_non_exhaustive()
    }
}

const COUNT: usize = 0;
const SUM: usize = 1;
const FIRST_BUCKET: usize = 2;

impl StripedHistogram {
    pub fn new(bounds: impl Iterator<Item = f64>) -> Self {
        let bounds: Box<[f64]> = bounds.chain(std::iter::once(f64::MAX)).collect();
        let lines_per_slot = (FIRST_BUCKET + bounds.len()).div_ceil(16);
        let lines = (0..STRIPES * lines_per_slot)
            .map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0))))
            .collect();
        Self(Arc::new(Slots {
            bounds,
            lines,
            lines_per_slot,
        }))
    }

    /// The `index`th count of `slot`.
    fn cell(&self, slot: usize, index: usize) -> &AtomicU64 {
        let slots = &*self.0;
        &slots.lines[slot * slots.lines_per_slot + index / 16].0[index % 16]
    }

    pub fn observe(&self, v: f64) {
        let slot = stripe();
        // Threads sharing a slot may add at once: a compare-and-swap on the
        // slot's own line, uncontended almost always. 0.0's bits are 0.
        let _ = self
            .cell(slot, SUM)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
        if let Some(i) = self.0.bounds.iter().position(|&upper| v <= upper) {
            self.cell(slot, FIRST_BUCKET + i)
                .fetch_add(1, Ordering::Relaxed);
        }
        self.cell(slot, COUNT).fetch_add(1, Ordering::Relaxed);
    }

    /// Sum, count and per-bucket observations over every slot.
    pub fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = self.0.bounds.iter().map(|&b| (b, 0)).collect();
        let (mut sum, mut count) = (0.0, 0);
        for slot in 0..STRIPES {
            sum += f64::from_bits(self.cell(slot, SUM).load(Ordering::Relaxed));
            count += self.cell(slot, COUNT).load(Ordering::Relaxed);
            for (i, total) in buckets.iter_mut().enumerate() {
                total.1 += self.cell(slot, FIRST_BUCKET + i).load(Ordering::Relaxed);
            }
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for StripedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for StripedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.totals();
        encoder.encode_histogram::<()>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
    use prometheus_client::registry::Registry;

    fn render(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn counts_from_many_threads_add_up_exactly() {
        let counter: Counter<u64, StripedU64> = Counter::default();
        std::thread::scope(|s| {
            for _ in 0..2 * STRIPES {
                s.spawn(|| {
                    for _ in 0..1000 {
                        counter.inc();
                    }
                    counter.inc_by(5);
                });
            }
        });
        assert_eq!(counter.get(), 2 * STRIPES as u64 * 1005);
    }

    #[test]
    fn the_histogram_renders_as_prometheus_clients_own() {
        let bounds = || exponential_buckets(0.0005, 2.0, 16);
        let striped = StripedHistogram::new(bounds());
        let plain = Histogram::new(bounds());
        let values = [0.0001, 0.0005, 0.0007, 0.003, 0.4, 1e6];
        std::thread::scope(|s| {
            for chunk in values.chunks(2) {
                let striped = &striped;
                s.spawn(move || chunk.iter().for_each(|&v| striped.observe(v)));
            }
        });
        values.iter().for_each(|&v| plain.observe(v));
        let mut a = Registry::default();
        a.register("latency", "time", striped);
        let mut b = Registry::default();
        b.register("latency", "time", plain);
        let (a, b) = (render(&a), render(&b));
        assert!(a.contains("latency_count 6"), "{a}");
        // Float sums may add in another order: compare the rest exactly.
        let without_sum = |text: &str| {
            text.lines()
                .filter(|l| !l.starts_with("latency_sum"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(without_sum(&a), without_sum(&b));
    }

    #[test]
    fn a_thread_keeps_its_stripe() {
        let here = stripe();
        assert_eq!(stripe(), here);
        assert!(here < STRIPES);
    }
}
