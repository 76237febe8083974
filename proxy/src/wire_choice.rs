//! `upstream_protocol = "auto"`: which wire (HTTP/1.1, or ALPN offering
//! HTTP/2) each upstream answers faster on, measured on live traffic.
//!
//! A host starts on the sandbox's own protocol. Once it has had
//! [`WARMUP`] requests, the other wire is tried until both have
//! [`MIN_SAMPLES`] answers; from then on requests take one wire, the
//! verdict: the host's first protocol unless the other answers [`MARGIN`]
//! faster (recent time to the response head), and after that whichever wire
//! last beat the other by [`MARGIN`]. One request in [`EXPLORE_EVERY`] takes
//! the other wire so a change on the upstream's side is noticed. Requests that
//! need HTTP/2 semantics (gRPC, `TE: trailers`) are never moved.
//!
//! Time to the response head tells the wires apart only while the upstream
//! is not busy. With [`BUSY`] or more requests to a host awaiting their
//! heads, both wires answer in the time the queue takes (measured at 256
//! connections: 9.3 vs 10.4 ms, the lead changing from one answer to the
//! next), while HTTP/2 carries many requests per system call on one
//! connection and HTTP/1.1 one per connection (23 800 vs 15 800 req/s). So a
//! busy host's requests offer HTTP/2, and their times are not recorded.
//!
//! Time to the head says nothing of the body either. A host whose answers
//! are large ([`BULK_BYTES`] and more, a running mean of the body bytes each
//! answer carried) costs more on HTTP/2: measured, 1.5–1.9 s of CPU per GB
//! against 1.15–1.35 on HTTP/1.1 with the response firewall on (framing,
//! flow control, a copy more). Such a host's requests take HTTP/1.1, busy or
//! not, once it is known to answer on it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use http::HeaderMap;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::WireLabel;
use crate::settings::UpstreamWire;

/// Requests to a host before anything is measured: a host seldom used keeps
/// the sandbox's protocol.
pub const WARMUP: u64 = 32;
/// Answers each wire needs before the two are compared.
pub const MIN_SAMPLES: u64 = 8;
/// One request in this many takes the slower wire.
pub const EXPLORE_EVERY: u64 = 100;
/// The other wire must be this much faster (per mille) to take over.
pub const MARGIN: u64 = 100;
/// Requests awaiting their response heads from one host at which it counts
/// as busy: the next request offers HTTP/2 and is not measured.
pub const BUSY: u32 = 4;
/// Hosts measured at once; others keep the sandbox's protocol.
const MAX_HOSTS: usize = 4096;
/// A host whose answers carry this many body bytes (running mean) is a bulk
/// host: its requests take HTTP/1.1.
pub const BULK_BYTES: u64 = 256 * 1024;

/// Time to the response head, per upstream and wire.
#[derive(Default)]
pub struct WireChoice {
    hosts: DashMap<Arc<str>, Arc<HostWires>>,
    /// Hosts by their faster wire, for the metrics endpoint.
    faster_wire: Family<WireLabel, Gauge>,
}

struct HostWires {
    /// `host:port`, for the log.
    name: Arc<str>,
    requests: AtomicU64,
    /// Indexed by [`slot`].
    wires: [WireStats; 2],
    /// The protocol of the host's first request: kept unless the other
    /// wire measures [`MARGIN`] faster.
    first: UpstreamWire,
    /// The wire requests take once both are measured: 0 before, else
    /// [`slot`] + 1. It changes only when the other wire is [`MARGIN`]
    /// faster; the log line and the gauge follow it.
    verdict: AtomicU8,
    /// Requests sent and not yet answered (a [`Pick`] each).
    awaiting: AtomicU32,
    /// Body bytes per answer, a running mean (weight 1/8).
    answer_bytes: AtomicU64,
    /// An answer came over HTTP/1.1 (so the host speaks it).
    answered_http1: AtomicBool,
}

/// The wire one request takes. While it lives, the request counts as
/// awaiting its answer; drop it once the response head is in.
pub struct Pick {
    pub wire: UpstreamWire,
    /// The host's measurements; `None` when the request is not measured.
    host: Option<Arc<HostWires>>,
    /// Sent while the host was busy: its time says nothing about the wire.
    busy: bool,
}

impl Pick {
    fn unmeasured(wire: UpstreamWire) -> Self {
        Self {
            wire,
            host: None,
            busy: false,
        }
    }

    /// Where the answer's body size goes once it is known (`None` for a
    /// request that is not measured).
    pub fn answer_size(&self) -> Option<AnswerSize> {
        self.host.clone().map(|host| AnswerSize {
            host,
            wire: self.wire,
        })
    }
}

/// Takes the body bytes of one answer from a measured host, when its body
/// has ended (or was dropped).
pub struct AnswerSize {
    host: Arc<HostWires>,
    wire: UpstreamWire,
}

impl AnswerSize {
    /// `bytes` the answer's body carried; `version` the upstream spoke.
    pub fn record(&self, bytes: u64, version: http::Version) {
        let host = &self.host;
        // `Alpn` may land on HTTP/1.1 too, when that is all the host offers.
        if self.wire == UpstreamWire::Http1 || version < http::Version::HTTP_2 {
            host.answered_http1.store(true, Ordering::Relaxed);
        }
        let old = host.answer_bytes.load(Ordering::Relaxed);
        // Races lose an update: an estimate, like the times.
        host.answer_bytes
            .store(old - old / 8 + bytes / 8, Ordering::Relaxed);
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        if let Some(host) = &self.host {
            host.awaiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct WireStats {
    samples: AtomicU64,
    /// Exponentially weighted mean, in nanoseconds.
    mean_ns: AtomicU64,
}

fn slot(wire: UpstreamWire) -> usize {
    match wire {
        UpstreamWire::Http1 => 0,
        UpstreamWire::Alpn => 1,
    }
}

fn wire_name(wire: UpstreamWire) -> &'static str {
    match wire {
        UpstreamWire::Http1 => "http1",
        UpstreamWire::Alpn => "alpn",
    }
}

/// The wire a `verdict` mark stands for.
fn marked(mark: u8) -> Option<UpstreamWire> {
    match mark {
        1 => Some(UpstreamWire::Http1),
        2 => Some(UpstreamWire::Alpn),
        _ => None,
    }
}

fn mark_of(wire: UpstreamWire) -> u8 {
    slot(wire) as u8 + 1
}

fn other(wire: UpstreamWire) -> UpstreamWire {
    match wire {
        UpstreamWire::Http1 => UpstreamWire::Alpn,
        UpstreamWire::Alpn => UpstreamWire::Http1,
    }
}

/// gRPC and requests asking for trailers keep the protocol they came with.
pub fn pinned(headers: &HeaderMap) -> bool {
    let grpc = headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let trailers = headers.get_all(http::header::TE).iter().any(|v| {
        v.as_bytes()
            .windows(8)
            .any(|w| w.eq_ignore_ascii_case(b"trailers"))
    });
    grpc || trailers
}

impl HostWires {
    fn new(name: Arc<str>, first: UpstreamWire) -> Self {
        Self {
            name,
            requests: AtomicU64::new(0),
            wires: Default::default(),
            first,
            verdict: AtomicU8::new(0),
            awaiting: AtomicU32::new(0),
            answer_bytes: AtomicU64::new(0),
            answered_http1: AtomicBool::new(false),
        }
    }

    /// Large answers, and HTTP/1.1 known to work: see [`BULK_BYTES`].
    fn bulk(&self) -> bool {
        self.answer_bytes.load(Ordering::Relaxed) >= BULK_BYTES
            && self.answered_http1.load(Ordering::Relaxed)
    }

    fn samples(&self, wire: UpstreamWire) -> u64 {
        self.wires[slot(wire)].samples.load(Ordering::Relaxed)
    }

    fn mean_ns(&self, wire: UpstreamWire) -> u64 {
        self.wires[slot(wire)].mean_ns.load(Ordering::Relaxed)
    }

    fn measured(&self) -> bool {
        self.samples(UpstreamWire::Http1) >= MIN_SAMPLES
            && self.samples(UpstreamWire::Alpn) >= MIN_SAMPLES
    }

    fn verdict(&self) -> Option<UpstreamWire> {
        marked(self.verdict.load(Ordering::Relaxed))
    }

    /// `challenger` answers at least [`MARGIN`] faster than `holder`.
    fn clearly_faster(&self, challenger: UpstreamWire, holder: UpstreamWire) -> bool {
        self.mean_ns(challenger).saturating_mul(1000)
            < self.mean_ns(holder).saturating_mul(1000 - MARGIN)
    }
}

impl WireChoice {
    /// Counts measured hosts by their faster wire in `faster_wire`.
    pub fn new(faster_wire: Family<WireLabel, Gauge>) -> Self {
        Self {
            hosts: DashMap::new(),
            faster_wire,
        }
    }

    /// The wire for the next request to `host`, whose default (the
    /// sandbox's own protocol) is `start`. Hand the pick back to
    /// [`WireChoice::record`] with the time to the response head.
    pub fn choose(&self, host: &str, start: UpstreamWire) -> Pick {
        let Some(stats) = self.stats(host, start) else {
            return Pick::unmeasured(start);
        };
        let n = stats.requests.fetch_add(1, Ordering::Relaxed);
        let busy = stats.awaiting.fetch_add(1, Ordering::Relaxed) >= BUSY;
        let wire = if n < WARMUP {
            start
        } else if stats.bulk() {
            UpstreamWire::Http1
        } else if busy {
            UpstreamWire::Alpn
        } else {
            match stats.verdict() {
                // Learning: every other request takes the other wire.
                None if n % 2 == 0 => other(start),
                None => start,
                Some(faster) if n % EXPLORE_EVERY == 0 => other(faster),
                Some(faster) => faster,
            }
        };
        Pick {
            wire,
            host: Some(stats),
            busy,
        }
    }

    /// Notes how long the picked wire took to bring the response head.
    pub fn record(&self, pick: Pick, took: Duration) {
        let Some(stats) = &pick.host else {
            return;
        };
        if pick.busy || stats.requests.load(Ordering::Relaxed) <= WARMUP {
            return;
        }
        let wire = pick.wire;
        let w = &stats.wires[slot(wire)];
        let x = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let n = w.samples.fetch_add(1, Ordering::Relaxed);
        // Races between two answers lose one of them: an estimate, not a count.
        let old = w.mean_ns.load(Ordering::Relaxed);
        let new = if n == 0 {
            x
        } else {
            // Weight 1/8: a few answers move it, one outlier does not.
            old - old / 8 + x / 8
        };
        w.mean_ns.store(new, Ordering::Relaxed);
        if !stats.measured() {
            return;
        }
        // The verdict moves only when the other wire is clearly faster, so
        // two wires answering alike do not take turns (nor flood the log).
        let mark = stats.verdict.load(Ordering::Relaxed);
        let holder = marked(mark).unwrap_or(stats.first);
        let challenger = other(holder);
        let verdict = if stats.clearly_faster(challenger, holder) {
            challenger
        } else if mark == 0 {
            holder
        } else {
            return;
        };
        // One answer makes each change: the one whose exchange succeeds.
        if stats
            .verdict
            .compare_exchange(mark, mark_of(verdict), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        if let Some(before) = marked(mark) {
            self.gauge(before).dec();
        }
        self.gauge(verdict).inc();
        // Said once each time a host's wire changes, so an operator can see
        // what `auto` chose.
        tracing::info!(
            upstream = &*stats.name,
            faster = wire_name(verdict),
            http1_us = stats.mean_ns(UpstreamWire::Http1) / 1000,
            alpn_us = stats.mean_ns(UpstreamWire::Alpn) / 1000,
            "upstream protocol measured"
        );
    }

    /// The wire `host`'s requests take, once both are measured.
    pub fn preferred(&self, host: &str) -> Option<UpstreamWire> {
        self.hosts.get(host)?.verdict()
    }

    fn gauge(&self, wire: UpstreamWire) -> Gauge {
        self.faster_wire
            .get_or_create(&WireLabel {
                wire: wire_name(wire),
            })
            .clone()
    }

    fn stats(&self, host: &str, start: UpstreamWire) -> Option<Arc<HostWires>> {
        if let Some(stats) = self.hosts.get(host) {
            return Some(stats.clone());
        }
        if self.hosts.len() >= MAX_HOSTS {
            return None;
        }
        let name: Arc<str> = Arc::from(host);
        let entry = self.hosts.entry(name.clone());
        Some(
            entry
                .or_insert_with(|| Arc::new(HostWires::new(name, start)))
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: UpstreamWire = UpstreamWire::Http1;
    const H2: UpstreamWire = UpstreamWire::Alpn;

    /// Sends `n` requests to `host` whose answers take `h1` or `h2`; the wires taken.
    fn drive(
        c: &WireChoice,
        host: &str,
        start: UpstreamWire,
        n: u64,
        h1: u64,
        h2: u64,
    ) -> Vec<UpstreamWire> {
        (0..n)
            .map(|_| {
                let pick = c.choose(host, start);
                let wire = pick.wire;
                let took = if wire == H1 { h1 } else { h2 };
                c.record(pick, Duration::from_micros(took));
                wire
            })
            .collect()
    }

    /// Sends `n` requests to `host`, `held` of them awaiting their heads
    /// (so the host is busy from [`BUSY`] on), each answer carrying `bytes`
    /// over HTTP/1.1 when that wire was taken and `h1_answers`, else over
    /// HTTP/2; the wires taken.
    fn drive_sized(
        c: &WireChoice,
        host: &str,
        n: u64,
        held: usize,
        bytes: u64,
        h1_answers: bool,
    ) -> Vec<UpstreamWire> {
        let waiting: Vec<Pick> = (0..held).map(|_| c.choose(host, H2)).collect();
        let taken = (0..n)
            .map(|_| {
                let pick = c.choose(host, H2);
                let wire = pick.wire;
                let size = pick.answer_size().expect("measured");
                c.record(pick, Duration::from_micros(100));
                if wire == H1 && !h1_answers {
                    return wire; // no answer on HTTP/1.1: nothing to size
                }
                let version = if wire == H1 {
                    http::Version::HTTP_11
                } else {
                    http::Version::HTTP_2
                };
                size.record(bytes, version);
                wire
            })
            .collect();
        drop(waiting);
        taken
    }

    #[test]
    fn a_host_of_large_answers_takes_http1_busy_or_not() {
        let c = WireChoice::default();
        // Small answers, busy: HTTP/2 once warmed up.
        let small = drive_sized(&c, "dl.test", WARMUP + 50, BUSY as usize, 2_000, true);
        assert!(small[WARMUP as usize..].iter().all(|w| *w == H2));
        // A quiet moment: the learning phase tries HTTP/1.1, which answers.
        drive_sized(&c, "dl.test", 2 * MIN_SAMPLES, 0, 2_000, true);
        // Large answers (downloads): once the mean crosses BULK_BYTES,
        // HTTP/1.1.
        let large = drive_sized(&c, "dl.test", 40, BUSY as usize, 8 * BULK_BYTES, true);
        assert!(large[..20].contains(&H2), "not before the mean is large");
        assert!(
            large[20..].iter().all(|w| *w == H1),
            "then HTTP/1.1, busy or not: {large:?}"
        );
        // Small answers again: the mean falls, and busy requests offer HTTP/2.
        let after = drive_sized(&c, "dl.test", 200, BUSY as usize, 2_000, true);
        assert!(after[150..].iter().all(|w| *w == H2), "{after:?}");
    }

    #[test]
    fn large_answers_move_no_host_that_never_answered_on_http1() {
        let c = WireChoice::default();
        // An HTTP/2-only upstream: HTTP/1.1 attempts get no answer.
        drive_sized(&c, "h2only.test", WARMUP, 0, 8 * BULK_BYTES, false);
        let later = drive_sized(&c, "h2only.test", 100, BUSY as usize, 8 * BULK_BYTES, false);
        assert!(later.iter().all(|w| *w == H2), "{later:?}");
    }

    #[test]
    fn a_host_keeps_the_sandboxs_protocol_until_it_is_busy() {
        let c = WireChoice::default();
        assert!(drive(&c, "a.test", H2, WARMUP, 100, 900)
            .iter()
            .all(|w| *w == H2));
        assert_eq!(c.preferred("a.test"), None, "nothing measured yet");
    }

    #[test]
    fn the_faster_wire_wins_and_the_slower_is_still_tried_now_and_then() {
        let c = WireChoice::default();
        // HTTP/2 behind an HTTP/2 client, but HTTP/1.1 answers in a third of the time.
        let taken = drive(&c, "a.test", H2, WARMUP + 2 * MIN_SAMPLES, 100, 300);
        let learning = &taken[WARMUP as usize..];
        assert_eq!(
            learning.iter().filter(|w| **w == H1).count() as u64,
            MIN_SAMPLES
        );
        assert_eq!(c.preferred("a.test"), Some(H1));
        let settled = drive(&c, "a.test", H2, 1000, 100, 300);
        let h2 = settled.iter().filter(|w| **w == H2).count();
        assert!((5..=15).contains(&h2), "explored {h2} times in 1000");
        // The upstream changes: HTTP/2 becomes much faster, and is taken again.
        drive(&c, "a.test", H2, 3 * EXPLORE_EVERY, 900, 100);
        let later = drive(&c, "a.test", H2, 200, 900, 100);
        assert!(later.iter().filter(|w| **w == H2).count() > 190);
        assert_eq!(c.preferred("a.test"), Some(H2));
    }

    #[test]
    fn a_small_difference_keeps_the_sandboxs_protocol() {
        let c = WireChoice::default();
        drive(&c, "a.test", H1, WARMUP + 2 * MIN_SAMPLES, 100, 95);
        let settled = drive(&c, "a.test", H1, 500, 100, 95);
        assert!(settled.iter().filter(|w| **w == H1).count() >= 490);
    }

    #[test]
    fn hosts_are_measured_apart_and_counted_by_their_faster_wire() {
        let gauges = Family::<WireLabel, Gauge>::default();
        let hosts_on = |wire| gauges.get_or_create(&WireLabel { wire }).get();
        let c = WireChoice::new(gauges.clone());
        drive(&c, "slow-h2.test", H2, 200, 100, 300);
        drive(&c, "fast-h2.test", H2, 200, 300, 100);
        drive(&c, "also-slow-h2.test", H2, 200, 100, 300);
        assert_eq!(c.preferred("slow-h2.test"), Some(H1));
        assert_eq!(c.preferred("fast-h2.test"), Some(H2));
        assert_eq!((hosts_on("http1"), hosts_on("alpn")), (2, 1));
        // One host's HTTP/2 gets faster: it moves from one count to the other.
        drive(&c, "slow-h2.test", H2, 3 * EXPLORE_EVERY, 900, 100);
        assert_eq!(c.preferred("slow-h2.test"), Some(H2));
        assert_eq!((hosts_on("http1"), hosts_on("alpn")), (1, 2));
    }

    #[test]
    fn wires_answering_alike_do_not_take_turns() {
        // Each wire is the faster one every other answer, by a few percent:
        // the verdict (what requests take, the log line, the gauge) stays.
        let gauges = Family::<WireLabel, Gauge>::default();
        let c = WireChoice::new(gauges.clone());
        let mut verdicts = Vec::new();
        for i in 0..2_000u64 {
            let (h1, h2) = if i % 2 == 0 { (100, 104) } else { (104, 100) };
            drive(&c, "alike.test", H1, 1, h1, h2);
            verdicts.extend(c.preferred("alike.test"));
        }
        assert!(verdicts.len() > 1_900);
        assert!(
            verdicts.iter().all(|w| *w == H1),
            "the first protocol stays"
        );
        let hosts_on = |wire| gauges.get_or_create(&WireLabel { wire }).get();
        assert_eq!((hosts_on("http1"), hosts_on("alpn")), (1, 0));
    }

    #[test]
    fn a_change_needs_the_margin_both_ways() {
        let c = WireChoice::default();
        drive(&c, "a.test", H1, 200, 300, 100);
        assert_eq!(c.preferred("a.test"), Some(H2));
        // HTTP/1.1 becomes a little faster than HTTP/2: not enough to go back.
        drive(&c, "a.test", H1, 20 * EXPLORE_EVERY, 95, 100);
        assert_eq!(c.preferred("a.test"), Some(H2));
        // Clearly faster: it does.
        drive(&c, "a.test", H1, 20 * EXPLORE_EVERY, 50, 100);
        assert_eq!(c.preferred("a.test"), Some(H1));
    }

    #[test]
    fn a_busy_host_offers_http2_and_its_times_are_not_recorded() {
        let c = WireChoice::default();
        // Quiet, HTTP/1.1 answers in a third of the time: it is the verdict.
        drive(&c, "a.test", H2, 200, 100, 300);
        assert_eq!(c.preferred("a.test"), Some(H1));
        let samples = |c: &WireChoice| {
            let host = c.hosts.get("a.test").unwrap();
            (host.samples(H1), host.samples(H2))
        };
        let before = samples(&c);
        // BUSY requests await their heads; every one sent beside them offers HTTP/2.
        let waiting: Vec<Pick> = (0..BUSY).map(|_| c.choose("a.test", H2)).collect();
        let beside: Vec<Pick> = (0..50).map(|_| c.choose("a.test", H2)).collect();
        assert!(beside.iter().all(|p| p.wire == H2 && p.busy));
        // Their times would say HTTP/1.1 is far slower; none of them counts.
        for pick in beside {
            c.record(pick, Duration::from_millis(50));
        }
        let (h1, h2) = samples(&c);
        assert_eq!(h2, before.1, "busy answers are not samples");
        // The requests sent while the host was quiet still count when answered.
        for pick in waiting {
            c.record(pick, Duration::from_micros(100));
        }
        assert!(samples(&c).0 + samples(&c).1 > h1 + h2);
        assert_eq!(c.preferred("a.test"), Some(H1));
        // Answered, or dropped unanswered (a failed send): the host is quiet again.
        assert_eq!(
            c.hosts
                .get("a.test")
                .unwrap()
                .awaiting
                .load(Ordering::Relaxed),
            0
        );
        let failed = c.choose("a.test", H2);
        drop(failed);
        let settled = drive(&c, "a.test", H2, 50, 100, 300);
        assert!(settled.iter().filter(|w| **w == H1).count() >= 49);
    }

    #[test]
    fn grpc_and_trailers_are_pinned() {
        let mut h = HeaderMap::new();
        assert!(!pinned(&h));
        h.insert(
            http::header::CONTENT_TYPE,
            "application/grpc+proto".parse().unwrap(),
        );
        assert!(pinned(&h));
        let mut h = HeaderMap::new();
        h.insert(http::header::TE, "gzip, Trailers".parse().unwrap());
        assert!(pinned(&h));
    }

    #[test]
    fn past_the_host_cap_nothing_is_measured() {
        let c = WireChoice::default();
        for i in 0..MAX_HOSTS {
            drop(c.choose(&format!("h{i}.test"), H1));
        }
        assert_eq!(c.hosts.len(), MAX_HOSTS);
        assert!(drive(&c, "one-more.test", H1, 200, 900, 100)
            .iter()
            .all(|w| *w == H1));
        assert_eq!(c.hosts.len(), MAX_HOSTS);
    }
}
