//! The values that cross the adapter boundary.

use bytes::Bytes;
use std::fmt::Write as _;

/// The largest page an adapter is asked to return in one `poll_shard` call.
///
/// Callers may pass any `limit` (including `usize::MAX`); the shipped adapters clamp it to
/// this value so one call does bounded work, and report `has_more` truthfully.
pub const MAX_PAGE: usize = 10_000;

/// One event inside a [`Batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchEvent {
    /// The payload exactly as the producer handed it in (JSON by convention).
    pub raw: Bytes,
    /// When the bus accepted the event, in nanoseconds since the Unix epoch.
    ///
    /// Non-decreasing within a shard: the batch worker clamps a timestamp that would go
    /// backwards (two producers racing on one shard) to its predecessor's.
    pub insertion_ts: u64,
    /// The shard the event was routed to (the same for every event of a batch).
    pub shard_id: u16,
}

/// A run of consecutive events of one shard, handed to [`crate::Adapter::on_batch`].
///
/// Events are in ingest order. `sequence_start` is the per-shard sequence number of the
/// first event; the sequence numbers of a shard are contiguous and never reused within one
/// `process_nonce`. A retried batch carries the same nonce, shard and `sequence_start`, so
/// `(process_nonce, shard_id, sequence_start)` identifies it across retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The shard every event of this batch belongs to.
    pub shard_id: u16,
    /// The events, oldest first.
    pub events: Vec<BatchEvent>,
    /// Sequence number of `events[0]` within the shard.
    pub sequence_start: u64,
    /// Identifies the producing bus (stable across restarts when the bus persists it).
    pub process_nonce: u64,
}

impl Batch {
    /// Number of events in the batch.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when the batch carries no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The dedup id of event `index` of this batch (see [`dedup_id`]).
    pub fn dedup_id(&self, index: usize) -> String {
        dedup_id(
            self.process_nonce,
            self.shard_id,
            self.sequence_start,
            index,
        )
    }
}

/// The dedup id of event `index` of the batch `(nonce, shard_id, sequence_start)`:
/// `"{nonce:x}:{shard_id}:{sequence_start}:{index}"`.
///
/// It is the same on every retry of the batch and unique per logical event, so a consumer
/// (or a backend with native dedup) can drop redelivered copies.
pub fn dedup_id(nonce: u64, shard_id: u16, sequence_start: u64, index: usize) -> String {
    let mut s = String::with_capacity(48);
    // Writing into a String cannot fail.
    let _ = write!(s, "{nonce:x}:{shard_id}:{sequence_start}:{index}");
    s
}

/// An event as a consumer gets it back from an adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// The adapter's position of this event (a Redis entry id, a JetStream sequence, an
    /// offset). Passing it back as the cursor of `poll_shard` resumes right after this event.
    pub id: String,
    /// The payload bytes as ingested.
    pub raw: Bytes,
    /// Ingestion time in nanoseconds since the Unix epoch.
    pub insertion_ts: u64,
    /// The shard the event was stored under.
    pub shard_id: u16,
    /// The dedup id written with the event, when the adapter persists one.
    pub dedup_id: Option<String>,
}

impl StoredEvent {
    /// Parses the payload as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.raw)
    }
}

/// One page of a shard, returned by [`crate::Adapter::poll_shard`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardPollResult {
    /// The events of the page, in shard order.
    pub events: Vec<StoredEvent>,
    /// Where the next call resumes (exclusive). It covers everything the adapter looked at
    /// for this page, including entries it skipped because they were corrupt or trimmed, so
    /// a page without events can still move the cursor forward.
    pub cursor: String,
    /// True when the shard holds entries after `cursor` at the time of the call.
    pub has_more: bool,
}
