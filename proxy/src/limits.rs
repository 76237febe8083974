//! Per-client and per-sandbox limits: failed proxy authentication is slowed
//! down, and a sandbox cannot hold more than so many connections open.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_vault_client::SandboxId;
use dashmap::DashMap;

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
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionSlots {
    pub fn acquire(&self, sandbox: &SandboxId, limit: usize) -> Option<Slot> {
        let counter = self.open.entry(sandbox.clone()).or_default().clone();
        let previous = counter.fetch_add(1, Ordering::AcqRel);
        if previous >= limit {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(counter))
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
