//! Where finished requests are reported: the Prometheus [`Metrics`] and the
//! recent-requests feed the console shows. Made once by whoever assembles the
//! process and handed in, so tests and several proxies in one process each
//! see their own.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use airlock_vault_client::Binding;

use crate::metrics::{stripe, Metrics, STRIPES};

/// How many recent requests the console can show.
const RECENT_CAPACITY: usize = 200;

/// The bindings whose tokens a request carried, each once; the audit line
/// and the console show their ids. The bindings are shared, not their ids
/// copied, and a request's one or two are held inline: no allocation.
#[derive(Clone, Debug, Default)]
pub struct Swapped(smallvec::SmallVec<[Arc<Binding>; 2]>);

impl Swapped {
    /// Adds `binding` unless a binding of the same id is here already.
    pub fn add(&mut self, binding: &Arc<Binding>) {
        if !self.0.iter().any(|b| b.id == binding.id) {
            self.0.push(binding.clone());
        }
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> + Clone {
        self.0.iter().map(|b| b.id.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl serde::Serialize for Swapped {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.ids())
    }
}

/// A request's path, without its query (the query can hold secrets of its
/// own). Made from the request's URI it shares the URI's bytes: no copy per
/// request for the audit line and the console's entry. Every way out of it
/// (`as_str`, `Display`, `Debug`, serde) gives the path alone.
#[derive(Clone)]
pub enum RequestPath {
    Uri(http::uri::PathAndQuery),
    Text(String),
}

impl RequestPath {
    /// The path of `uri`, sharing its bytes.
    pub fn of(uri: &http::Uri) -> Self {
        match uri.path_and_query() {
            Some(pq) => Self::Uri(pq.clone()),
            None => Self::Text(uri.path().to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Uri(pq) => pq.path(),
            Self::Text(text) => text,
        }
    }
}

impl Default for RequestPath {
    fn default() -> Self {
        Self::Text(String::new())
    }
}

impl From<&str> for RequestPath {
    fn from(path: &str) -> Self {
        Self::Text(path.to_owned())
    }
}

impl From<RequestPath> for String {
    fn from(path: RequestPath) -> Self {
        match path {
            RequestPath::Uri(pq) => pq.path().to_owned(),
            RequestPath::Text(text) => text,
        }
    }
}

impl std::fmt::Debug for RequestPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for RequestPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<T: AsRef<str> + ?Sized> PartialEq<T> for RequestPath {
    fn eq(&self, other: &T) -> bool {
        self.as_str() == other.as_ref()
    }
}

impl serde::Serialize for RequestPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A finished request as the console shows it: never a value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecentRequest {
    pub at: u64,
    pub sandbox: airlock_vault_client::SandboxId,
    pub mode: &'static str,
    #[serde(serialize_with = "serialize_method")]
    pub method: Option<http::Method>,
    pub host: Arc<str>,
    pub path: RequestPath,
    pub status: u16,
    /// [`crate::audit::Outcome::as_str`]: the audit line's word.
    pub outcome: &'static str,
    pub swapped: Swapped,
    /// Body bytes the sandbox was sent.
    pub response_bytes: u64,
}

/// A request's method as written in its record: `-` before there was one.
pub fn method_str(method: Option<&http::Method>) -> &str {
    method.map_or("-", http::Method::as_str)
}

fn serialize_method<S: serde::Serializer>(
    method: &Option<http::Method>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(method_str(method.as_ref()))
}

/// The last [`RECENT_CAPACITY`] finished requests. Cheap to clone; clones
/// share the feed. Every request adds to it, so each thread adds to a shard
/// of its own ([`stripe`]): no lock or cache line is shared between threads
/// counting at once. Reading merges the shards by when each entry came.
#[derive(Clone)]
pub struct RecentRequests(Arc<[RecentShard]>);

/// A shard's entries, oldest first, each with when it was added.
#[derive(Default)]
#[repr(align(128))]
struct RecentShard(Mutex<VecDeque<(Instant, RecentRequest)>>);

impl Default for RecentRequests {
    fn default() -> Self {
        Self((0..STRIPES).map(|_| RecentShard::default()).collect())
    }
}

impl RecentRequests {
    pub fn push(&self, entry: RecentRequest) {
        let now = Instant::now();
        let mut shard = self.0[stripe()].0.lock().unwrap_or_else(|e| e.into_inner());
        // Each shard keeps as many as the feed shows: the newest may all
        // have come through one thread.
        let evicted = (shard.len() == RECENT_CAPACITY)
            .then(|| shard.pop_front())
            .flatten();
        shard.push_back((now, entry));
        drop(shard);
        drop(evicted);
    }

    /// The most recent requests, newest first.
    pub fn newest_first(&self) -> Vec<RecentRequest> {
        let mut all: Vec<(Instant, RecentRequest)> = Vec::new();
        for shard in self.0.iter() {
            let shard = shard.0.lock().unwrap_or_else(|e| e.into_inner());
            all.extend(shard.iter().cloned());
        }
        // Stable: a shard's entries that came at the same instant keep their order.
        all.sort_by_key(|(at, _)| *at);
        all.into_iter()
            .rev()
            .take(RECENT_CAPACITY)
            .map(|(_, entry)| entry)
            .collect()
    }
}

/// Where finished requests go besides this process's feed: a bounded queue
/// that a reporter drains (a remote proxy reports to its vault, so the
/// console covers the fleet). Offering never blocks: when the queue is full
/// the entry is dropped and counted.
#[derive(Clone, Default)]
pub struct Outbox(Option<tokio::sync::mpsc::Sender<RecentRequest>>);

impl Outbox {
    /// An outbox holding at most `capacity` entries, and its reader.
    pub fn bounded(capacity: usize) -> (Self, tokio::sync::mpsc::Receiver<RecentRequest>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        (Self(Some(tx)), rx)
    }

    pub fn is_open(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn offer(&self, entry: RecentRequest, metrics: &Metrics) {
        let Some(tx) = &self.0 else { return };
        if tx.try_send(entry).is_err() {
            metrics.count_report(crate::metrics::ReportResult::DroppedQueueFull, 1);
        }
    }
}

/// A request waiting for a human, as the console shows it: never a value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeldRequest {
    /// Unix seconds when it began to wait, and when it gives up.
    pub since: u64,
    pub until: u64,
    pub sandbox: String,
    pub binding: String,
    /// `not_connected`, `reconnect_needed` or `insufficient_scope`.
    pub reason: &'static str,
    pub method: String,
    pub host: String,
    pub path: String,
    pub connect_url: Option<String>,
}

/// The requests held now, by a process-unique id.
#[derive(Clone, Default)]
pub struct HeldRequests(Arc<Mutex<std::collections::BTreeMap<u64, HeldRequest>>>);

impl HeldRequests {
    pub fn insert(&self, id: u64, entry: HeldRequest) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, entry);
    }

    pub fn remove(&self, id: u64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// Oldest first.
    pub fn all(&self) -> Vec<HeldRequest> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// The handles a proxy reports to. Cheap to clone.
#[derive(Clone, Default)]
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub recent: RecentRequests,
    pub held: HeldRequests,
    pub outbox: Outbox,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> RecentRequest {
        RecentRequest {
            at: 0,
            sandbox: airlock_vault_client::SandboxId::new("s"),
            mode: "intercept",
            method: Some(http::Method::GET),
            host: "h".into(),
            path: path.into(),
            status: 200,
            outcome: "ok",
            swapped: Swapped::default(),
            response_bytes: 0,
        }
    }

    #[test]
    fn an_entry_is_written_for_the_console_as_plain_values() {
        let mut e = entry("/x");
        e.response_bytes = 42;
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["sandbox"], "s");
        assert_eq!(json["method"], "GET");
        assert_eq!(json["host"], "h");
        assert_eq!(json["response_bytes"], 42);
        // A connection refused before a request line has no method.
        e.method = None;
        assert_eq!(serde_json::to_value(&e).unwrap()["method"], "-");
    }

    #[test]
    fn the_feed_keeps_the_newest_entries_newest_first() {
        let recent = RecentRequests::default();
        for i in 0..RECENT_CAPACITY + 5 {
            recent.push(entry(&format!("/{i}")));
        }
        let seen = recent.newest_first();
        assert_eq!(seen.len(), RECENT_CAPACITY);
        assert_eq!(seen[0].path, format!("/{}", RECENT_CAPACITY + 4));
        assert_eq!(seen.last().unwrap().path, "/5");
    }

    #[test]
    fn a_path_from_the_uri_leaves_the_query_out() {
        let uri: http::Uri = "https://api.test/repos/x?token=abc".parse().unwrap();
        let path = RequestPath::of(&uri);
        assert!(
            matches!(path, RequestPath::Uri(_)),
            "shares the URI's bytes"
        );
        assert_eq!(path.as_str(), "/repos/x");
        assert_eq!(path.to_string(), "/repos/x");
        assert_eq!(format!("{path:?}"), "\"/repos/x\"");
        assert_eq!(serde_json::to_value(&path).unwrap(), "/repos/x");
        assert_eq!(String::from(path), "/repos/x");
        assert_eq!(RequestPath::from("/y"), "/y");
    }

    #[test]
    fn entries_from_many_threads_merge_newest_first() {
        let recent = RecentRequests::default();
        std::thread::scope(|s| {
            for t in 0..4 {
                let recent = &recent;
                s.spawn(move || {
                    for i in 0..RECENT_CAPACITY {
                        recent.push(entry(&format!("/{t}/{i}")));
                    }
                });
            }
        });
        recent.push(entry("/last"));
        let seen = recent.newest_first();
        assert_eq!(seen.len(), RECENT_CAPACITY);
        assert_eq!(seen[0].path, "/last");
        // Each thread's own entries stay in the order it added them.
        for t in 0..4 {
            let mine: Vec<usize> = seen
                .iter()
                .filter_map(|e| e.path.as_str().strip_prefix(&format!("/{t}/")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert!(mine.windows(2).all(|w| w[0] > w[1]), "{mine:?}");
        }
    }

    #[test]
    fn two_feeds_do_not_share_entries() {
        let (a, b) = (RecentRequests::default(), RecentRequests::default());
        a.push(entry("/a"));
        assert!(b.newest_first().is_empty());
        assert_eq!(a.clone().newest_first().len(), 1);
    }
}
