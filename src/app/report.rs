//! A remote proxy's finished requests, reported to its vault in batches so
//! the console's recent requests cover the fleet. Never in a request's way:
//! the audit path only offers to a bounded queue; a batch the vault does
//! not take is dropped and counted.

use std::sync::Arc;
use std::time::Duration;

use airlock_proxy::metrics::{Metrics, ReportResult};
use airlock_proxy::telemetry::RecentRequest;
use airlock_vault_client::contract::{RequestBatch, RequestRecord, MAX_REQUEST_BATCH};
use airlock_vault_client::RemoteVault;
use tokio::sync::mpsc::Receiver;

/// Requests waiting to be reported, at most.
pub(super) const QUEUE: usize = 10_000;
/// How long a batch gathers after its first request.
const GATHER: Duration = Duration::from_secs(1);

pub(super) fn spawn(
    vault: Arc<RemoteVault>,
    mut queue: Receiver<RecentRequest>,
    metrics: Arc<Metrics>,
) {
    let proxy = format!(
        "{}:{}",
        hostname().unwrap_or_else(|| "proxy".into()),
        std::process::id()
    );
    tokio::spawn(async move {
        let mut records = Vec::new();
        while let Some(first) = queue.recv().await {
            records.push(record(first));
            let until = tokio::time::Instant::now() + GATHER;
            while records.len() < MAX_REQUEST_BATCH {
                match tokio::time::timeout_at(until, queue.recv()).await {
                    Ok(Some(next)) => records.push(record(next)),
                    Ok(None) | Err(_) => break,
                }
            }
            let n = records.len() as u64;
            let batch = RequestBatch {
                proxy: proxy.clone(),
                records: std::mem::take(&mut records),
            };
            match vault.report_requests(&batch).await {
                Ok(_) => metrics.count_report(ReportResult::Reported, n),
                Err(error) => {
                    tracing::debug!(%error, dropped = n, "could not report finished requests to the vault");
                    metrics.count_report(ReportResult::DroppedVaultUnavailable, n);
                }
            }
        }
    });
}

fn record(r: RecentRequest) -> RequestRecord {
    RequestRecord {
        at: r.at,
        sandbox: r.sandbox.to_string(),
        mode: r.mode.to_owned(),
        method: airlock_proxy::telemetry::method_str(r.method.as_ref()).to_owned(),
        host: r.host.to_string(),
        path: r.path.into(),
        status: r.status,
        outcome: r.outcome.to_owned(),
        swapped: r.swapped.ids().map(str::to_owned).collect(),
    }
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}
