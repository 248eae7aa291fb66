//! [`EventBusStats`]: lock-free counters of what the bus did.
//!
//! Meanings (each counter only ever grows):
//! - `events_ingested`: events accepted into a ring (`ingest` returned `Ok`). A rejected
//!   ingest is counted only under its rejection reason. To keep a shared counter off the
//!   ingest path, the field is advanced when events leave their ring (taken by the batch
//!   worker, or evicted), so it trails the `ingest` calls by the events still queued;
//!   [`EventBusStats::snapshot`] adds those back, and after `flush()` or `shutdown()` the two
//!   agree.
//! - `events_dropped`: accepted events that will never reach the adapter (evicted by
//!   `DropOldest`, in a batch dropped after a non-retryable error or an exhausted retry
//!   budget, or left behind by the shutdown deadline).
//! - `events_dispatched` / `batches_dispatched`: events and batches whose `on_batch`
//!   returned `Ok`.
//!
//! After `shutdown()` returns, `events_dispatched + events_dropped == events_ingested`.
//! While the bus runs, the difference is what is queued or in flight.

use crate::routing::SharedRouting;
use net_adapter::{AdapterError, AdapterErrorKind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters of the bus. Read them with `load(Ordering::Relaxed)` or take a
/// [`EventBusStats::snapshot`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct EventBusStats {
    /// Events accepted into a ring, counted as they leave it (see the module documentation;
    /// [`EventBusStats::snapshot`] includes the events still queued).
    pub events_ingested: AtomicU64,
    /// Accepted events that will never reach the adapter.
    pub events_dropped: AtomicU64,
    /// Batches the adapter accepted.
    pub batches_dispatched: AtomicU64,
    /// Events in batches the adapter accepted.
    pub events_dispatched: AtomicU64,
    /// Set when shutdown hit its deadline and dropped events.
    pub shutdown_was_lossy: AtomicBool,
    /// Retries of batches after retryable adapter errors.
    pub batches_retried: AtomicU64,
    /// Batches dropped (adapter rejection, exhausted retries, shutdown deadline).
    pub batches_dropped: AtomicU64,
    /// Of `events_dropped`: events evicted by `DropOldest`.
    pub events_evicted: AtomicU64,
    /// Ingest calls rejected, by reason.
    pub rejected: RejectionCounts,
    /// Adapter errors seen by the batch workers, by kind.
    pub adapter_errors: AdapterErrorCounts,
    /// Shards added by `add_shards` (or the scaling monitor).
    pub shards_added: AtomicU64,
    /// Shards retired by `remove_shards` (or the scaling monitor).
    pub shards_removed: AtomicU64,
    /// The bus's routing snapshot, read for the shards (every shard ever created, by id).
    pub(crate) routing: SharedRouting,
}

/// Rejected ingest calls, by [`crate::IngestionError`] variant.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RejectionCounts {
    /// `Backpressure`.
    pub backpressure: AtomicU64,
    /// `Sampled`.
    pub sampled: AtomicU64,
    /// `Unrouted`.
    pub unrouted: AtomicU64,
    /// `ShuttingDown`.
    pub shutting_down: AtomicU64,
    /// `Serialization`.
    pub serialization: AtomicU64,
    /// `TooLarge`.
    pub too_large: AtomicU64,
}

/// Adapter errors returned to the batch workers, by kind.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct AdapterErrorCounts {
    /// `Transient` (including attempt timeouts).
    pub transient: AtomicU64,
    /// `Fatal`.
    pub fatal: AtomicU64,
    /// `Backpressure`.
    pub backpressure: AtomicU64,
    /// `Connection`.
    pub connection: AtomicU64,
    /// `Shutdown`.
    pub shutdown: AtomicU64,
    /// `Serialization`.
    pub serialization: AtomicU64,
    /// `TooLarge`.
    pub too_large: AtomicU64,
    /// Any other kind.
    pub other: AtomicU64,
}

impl AdapterErrorCounts {
    pub(crate) fn record(&self, e: &AdapterError) {
        let c = match e.kind() {
            AdapterErrorKind::Transient => &self.transient,
            AdapterErrorKind::Fatal => &self.fatal,
            AdapterErrorKind::Backpressure => &self.backpressure,
            AdapterErrorKind::Connection => &self.connection,
            AdapterErrorKind::Shutdown => &self.shutdown,
            AdapterErrorKind::Serialization => &self.serialization,
            AdapterErrorKind::TooLarge => &self.too_large,
            _ => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A plain copy of the counters, for printing and comparing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Events accepted into a ring, including those still queued.
    pub events_ingested: u64,
    /// See [`EventBusStats::events_dropped`].
    pub events_dropped: u64,
    /// See [`EventBusStats::batches_dispatched`].
    pub batches_dispatched: u64,
    /// See [`EventBusStats::events_dispatched`].
    pub events_dispatched: u64,
    /// See [`EventBusStats::shutdown_was_lossy`].
    pub shutdown_was_lossy: bool,
    /// See [`EventBusStats::batches_retried`].
    pub batches_retried: u64,
    /// See [`EventBusStats::batches_dropped`].
    pub batches_dropped: u64,
    /// See [`EventBusStats::events_evicted`].
    pub events_evicted: u64,
    /// Sum of all rejection reasons.
    pub events_rejected: u64,
    /// Events queued or in flight, per shard id (retired shards included).
    pub shard_depths: Vec<u64>,
    /// Shards currently receiving events.
    pub active_shards: usize,
}

impl EventBusStats {
    /// Events queued in a ring or held by a worker, per shard id.
    pub fn shard_depths(&self) -> Vec<u64> {
        self.routing
            .shards()
            .iter()
            .map(|s| s.counters.depth())
            .collect()
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let rej = &self.rejected;
        let shards = self.routing.shards();
        StatsSnapshot {
            events_ingested: r(&self.events_ingested)
                + shards.iter().map(|s| s.counters.queued()).sum::<u64>(),
            events_dropped: r(&self.events_dropped),
            batches_dispatched: r(&self.batches_dispatched),
            events_dispatched: r(&self.events_dispatched),
            shutdown_was_lossy: self.shutdown_was_lossy.load(Ordering::Relaxed),
            batches_retried: r(&self.batches_retried),
            batches_dropped: r(&self.batches_dropped),
            events_evicted: r(&self.events_evicted),
            events_rejected: r(&rej.backpressure)
                + r(&rej.sampled)
                + r(&rej.unrouted)
                + r(&rej.shutting_down)
                + r(&rej.serialization)
                + r(&rej.too_large),
            shard_depths: shards.iter().map(|s| s.counters.depth()).collect(),
            active_shards: shards
                .iter()
                .filter(|s| !s.retiring.load(Ordering::Relaxed))
                .count(),
        }
    }
}
