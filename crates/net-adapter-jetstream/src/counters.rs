//! What the adapter asked the server for: the live counters every request path bumps, and
//! [`RequestCounts`], the snapshot the adapter hands out.
//!
//! Counters are relaxed atomics: they are statistics, never used to order anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counts of what the adapter asked the server for, since it was created.
///
/// Useful for monitoring, and for checking that reads cost a few requests per page rather
/// than one per event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestCounts {
    /// Messages published (every attempt, retries included).
    pub published: u64,
    /// Publishes the server acknowledged as duplicates (dropped by its dedup window).
    pub duplicates: u64,
    /// Stream info requests.
    pub stream_infos: u64,
    /// Streams the adapter created.
    pub streams_created: u64,
    /// Pull consumers created (one per page read, plus durable consumers).
    pub consumers_created: u64,
    /// Read consumers deleted after their page (in the background).
    pub consumers_deleted: u64,
    /// Pull requests (fetches) sent: one per page read.
    pub fetches: u64,
    /// Pages answered by `poll_shard`.
    pub pages: u64,
    /// Stored messages skipped because they could not be decoded.
    pub corrupt_skipped: u64,
}

impl RequestCounts {
    /// Every request other than publishes: stream infos and creations, consumer creations and
    /// deletions, and fetches. A page read costs four of them.
    pub fn api_requests(&self) -> u64 {
        self.stream_infos
            + self.streams_created
            + self.consumers_created
            + self.consumers_deleted
            + self.fetches
    }
}

/// The live counters behind [`RequestCounts`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) stream_infos: AtomicU64,
    pub(crate) streams_created: AtomicU64,
    pub(crate) consumers_created: AtomicU64,
    /// Shared with the background tasks that delete read consumers.
    pub(crate) consumers_deleted: Arc<AtomicU64>,
    pub(crate) fetches: AtomicU64,
    pub(crate) pages: AtomicU64,
    pub(crate) corrupt_skipped: AtomicU64,
}

impl Counters {
    /// The counts so far.
    pub(crate) fn snapshot(&self) -> RequestCounts {
        let r = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RequestCounts {
            published: r(&self.published),
            duplicates: r(&self.duplicates),
            stream_infos: r(&self.stream_infos),
            streams_created: r(&self.streams_created),
            consumers_created: r(&self.consumers_created),
            consumers_deleted: r(&self.consumers_deleted),
            fetches: r(&self.fetches),
            pages: r(&self.pages),
            corrupt_skipped: r(&self.corrupt_skipped),
        }
    }
}

/// Adds `n` to a counter.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_every_counter() {
        let counters = Counters::default();
        bump(&counters.published, 5);
        bump(&counters.stream_infos, 1);
        bump(&counters.streams_created, 2);
        bump(&counters.consumers_created, 3);
        bump(&counters.consumers_deleted, 4);
        bump(&counters.fetches, 6);
        bump(&counters.pages, 7);
        let counts = counters.snapshot();
        assert_eq!(counts.published, 5);
        assert_eq!(counts.pages, 7);
        assert_eq!(counts.api_requests(), 1 + 2 + 3 + 4 + 6);
    }
}
