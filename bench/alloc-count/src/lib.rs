#![forbid(unsafe_code)]
//! Allocation counts for the bench (issue 19: allocations per request,
//! airlock beside the ceiling). A binary built with its `alloc-count`
//! feature installs [`COUNTING`] as its global allocator and calls
//! [`start_reporting`]; while `ALLOC_COUNT_FILE` is set, a thread writes the
//! totals there every 50 ms: `allocations reallocations bytes_allocated`.
//! Never in a release that ships: the counting costs two atomic adds per
//! allocation.

use std::alloc::System;
use std::time::Duration;

pub use stats_alloc::StatsAlloc;

/// The system allocator, counted.
pub static COUNTING: StatsAlloc<System> = StatsAlloc::system();

/// Writes the totals to `$ALLOC_COUNT_FILE` until the process ends.
pub fn start_reporting(counting: &'static StatsAlloc<System>) {
    let Some(path) = std::env::var_os("ALLOC_COUNT_FILE") else {
        return;
    };
    let tmp = {
        let mut p = path.clone();
        p.push(".tmp");
        p
    };
    std::thread::spawn(move || loop {
        let s = counting.stats();
        let line = format!(
            "{} {} {}\n",
            s.allocations, s.reallocations, s.bytes_allocated
        );
        // Written aside and renamed: a reader never sees half a line.
        if std::fs::write(&tmp, line).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
        std::thread::sleep(Duration::from_millis(50));
    });
}
