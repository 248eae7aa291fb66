//! [`Inner`]: what a bus shares with its batch workers, its resizes and its scaling monitor,
//! and the questions they all ask of it (is the bus closing, which shards exist).
//!
//! The fields producers read on every event (the routing snapshot, the state word) are padded
//! away from the ones workers write after every batch (stats, progress).

use crate::clock::Clock;
use crate::config::EventBusConfig;
use crate::nonce::ProducerIdentity;
use crate::routing::{Routing, SharedRouting};
use crate::scaling::ScalingState;
use crate::shard::Shard;
use crate::state::StateWord;
use crate::stats::EventBusStats;
use crossbeam_utils::CachePadded;
use net_adapter::Adapter;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub(crate) struct Inner {
    pub(crate) config: EventBusConfig,
    pub(crate) adapter: Arc<dyn Adapter>,
    // Fields producers read on every event are padded away from fields the workers write
    // after every batch (stats, progress): sharing a cache line with those made the state
    // word and the routing pointer miss in the producer's cache.
    /// The current routing snapshot (read on every ingest); `stats` reads the same one.
    pub(crate) routing: SharedRouting,
    /// Closing bit and routing version (see `state`).
    pub(crate) state: CachePadded<StateWord>,
    pub(crate) stats: CachePadded<EventBusStats>,
    pub(crate) identity: ProducerIdentity,
    pub(crate) clock: Clock,
    /// Set when shutdown's deadline passed: workers stop retrying.
    pub(crate) aborting: AtomicBool,
    /// Number of `flush` calls in progress: workers close batches at once.
    pub(crate) flushers: CachePadded<AtomicUsize>,
    /// Signalled by workers after every batch.
    pub(crate) progress: CachePadded<Notify>,
    pub(crate) workers: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) shutdown_started: AtomicBool,
    /// Held for the whole shutdown; `true` once it completed.
    pub(crate) shutdown_done: tokio::sync::Mutex<bool>,
    /// Serialises resizes (and shutdown against them).
    pub(crate) scaling: tokio::sync::Mutex<ScalingState>,
}

impl Inner {
    pub(crate) fn closing(&self) -> bool {
        self.state.closing()
    }

    pub(crate) fn urgent(&self, shard: &Shard) -> bool {
        self.flushers.load(SeqCst) > 0 || self.closing() || shard.retiring.load(SeqCst)
    }

    /// Every shard ever created, by id: the shards of the current routing snapshot, which
    /// include those of a resize still in progress.
    pub(crate) fn all_shards(&self) -> Box<[Arc<Shard>]> {
        self.routing.shards()
    }

    pub(crate) fn active_ids(&self) -> Vec<u16> {
        self.routing
            .load()
            .shards
            .iter()
            .filter(|s| !s.retiring.load(SeqCst))
            .map(|s| s.id)
            .collect()
    }

    /// Publishes a new routing table and bumps the version in the state word.
    pub(crate) fn publish(&self, table: Box<[u16]>, shards: Box<[Arc<Shard>]>) {
        let version = self.routing.load().version + 1;
        self.routing.store(Routing {
            version,
            table,
            shards,
        });
        self.state.bump_version();
    }

    pub(crate) fn wake_all(&self) {
        for shard in self.all_shards() {
            shard.wake_worker();
        }
    }
}
