//! [`EventBus`]: the public API and the hot path (`ingest_raw`).
//!
//! # Shape
//! `ingest_raw` routes an event by its hash (the slot table of `routing`), takes a reservation
//! on that shard (`shard::Reservation`), checks the state word (`state`), pushes the event onto
//! the shard's ring and returns. The rest of the pipeline lives beside this file: the batch
//! workers in `worker`, resizing and the scaling monitor in `resize`, flush and shutdown in
//! `lifecycle`, and what they all share in `inner`.
//!
//! # Layout
//! `new` records the shard count in the backend ([`Adapter::record_layout`]) or checks it
//! against the one recorded there, so buses with another count refuse to start instead of
//! reading a subset of the stream; `add_shards` records the grown count.
//!
//! # Drop
//! Dropping an `EventBus` without shutdown closes it at once and runs the shutdown sequence
//! on the runtime in the background: nothing hangs and the tasks end.

use crate::clock::Clock;
use crate::config::EventBusConfig;
use crate::consume::{self, ConsumeRequest, ConsumeResponse};
use crate::error::{ConfigError, ConsumerResult, IngestionError, IngestionResult};
use crate::event::{Event, RawEvent};
use crate::inner::Inner;
use crate::nonce;
use crate::resize::run_monitor;
use crate::routing::{self, Routing, SharedRouting};
use crate::scaling::{ScalingDecision, ScalingError, ScalingState};
use crate::shard::{Reservation, Shard, Slot};
use crate::state::{Admission, StateWord};
use crate::stats::EventBusStats;
use crate::worker::run_worker;
use crossbeam_utils::CachePadded;
use net_adapter::{Adapter, AdapterError, LayoutWrite, StreamLayout};
use parking_lot::Mutex;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::Arc;
use tokio::sync::Notify;

/// How many times one ingest re-routes after racing resizes before giving up (`Unrouted`).
const MAX_REROUTES: u32 = 64;

/// The event bus. Create it inside a tokio runtime with [`EventBus::new`].
pub struct EventBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("shards", &self.inner.routing.load().shards.len())
            .field("adapter", &self.inner.adapter.name())
            .field("nonce", &format_args!("{:016x}", self.inner.identity.nonce))
            .finish()
    }
}

thread_local! {
    static SAMPLER: Cell<u64> = const { Cell::new(0) };
}

/// xorshift64* per thread: cheap randomness for sampling, seeded from the OS once.
fn sample_keep(one_in: u32) -> bool {
    SAMPLER.with(|s| {
        let mut x = s.get();
        if x == 0 {
            x = nonce::random_u64() | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) % u64::from(one_in) == 0
    })
}

/// Records `shards` as the stream's layout if the backend has none, or checks it against the
/// recorded one (see [`StreamLayout`]).
///
/// A backend that cannot be reached now (a retryable error) does not keep the bus from
/// starting, as an unreachable backend never did: its batches wait and retry. The check is
/// then skipped, loudly. A fatal error (an unreadable record, a wrong key type) fails.
async fn agree_layout(adapter: &dyn Adapter, shards: u16) -> Result<(), ConfigError> {
    let ours = StreamLayout::new(shards);
    match adapter.record_layout(ours, LayoutWrite::IfAbsent).await {
        Ok(Some(recorded)) if recorded != ours => Err(ConfigError::LayoutMismatch {
            adapter: adapter.name().to_owned(),
            recorded: recorded.shards,
            configured: shards,
        }),
        Ok(_) => Ok(()),
        Err(error) if error.is_retryable() => {
            tracing::warn!(
                %error,
                adapter = adapter.name(),
                "could not check the stream's shard count against the backend's record"
            );
            Ok(())
        }
        Err(error) => Err(ConfigError::Adapter(error)),
    }
}

impl EventBus {
    /// Builds the adapter, initialises it, loads the producer nonce and starts one batch
    /// worker per shard on the current tokio runtime.
    pub async fn new(config: EventBusConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let identity = match &config.producer_nonce_path {
            Some(path) => nonce::load_or_create(path)?,
            None => nonce::ephemeral(),
        };
        let mut adapter = config.adapter.build().await?;
        adapter.init().await?;
        if config.check_layout {
            agree_layout(&*adapter, config.shards).await?;
        }
        let adapter: Arc<dyn Adapter> = Arc::from(adapter);
        let n = usize::from(config.shards);
        let shards: Vec<Arc<Shard>> = (0..config.shards)
            .map(|id| Arc::new(Shard::new(id, config.ring_capacity)))
            .collect();
        let routing = SharedRouting::new(Routing {
            version: 0,
            table: routing::initial_table(config.shards).into_boxed_slice(),
            shards: shards.clone().into_boxed_slice(),
        });
        let stats = EventBusStats {
            routing: routing.clone(),
            ..EventBusStats::default()
        };
        let inner = Arc::new(Inner {
            adapter,
            routing,
            state: CachePadded::new(StateWord::new()),
            stats: CachePadded::new(stats),
            identity,
            clock: Clock::new(),
            aborting: AtomicBool::new(false),
            flushers: CachePadded::new(AtomicUsize::new(0)),
            progress: CachePadded::new(Notify::new()),
            workers: Mutex::new(Vec::with_capacity(n)),
            shutdown_started: AtomicBool::new(false),
            shutdown_done: tokio::sync::Mutex::new(false),
            scaling: tokio::sync::Mutex::new(ScalingState::default()),
            config,
        });
        let handles = shards
            .into_iter()
            .map(|shard| runtime.spawn(run_worker(inner.clone(), shard)))
            .collect();
        *inner.workers.lock() = handles;
        if let Some(policy) = inner.config.scaling {
            runtime.spawn(run_monitor(Arc::downgrade(&inner), policy));
        }
        tracing::info!(
            shards = n,
            adapter = inner.adapter.name(),
            nonce = %format_args!("{:016x}", inner.identity.nonce),
            "event bus started"
        );
        Ok(EventBus { inner })
    }

    /// Serializes `event` and ingests it (see [`EventBus::ingest_raw`]).
    pub fn ingest(&self, event: Event) -> IngestionResult<()> {
        match crate::event::serialize(&event.0) {
            Ok(bytes) => self.ingest_raw(RawEvent::from_bytes(bytes)),
            Err(e) => {
                self.inner
                    .stats
                    .rejected
                    .serialization
                    .fetch_add(1, Relaxed);
                Err(IngestionError::Serialization(e))
            }
        }
    }

    /// Queues `event` on its shard and returns at once (except in `BackpressureMode::Block`
    /// with a full ring). Takes ownership of the bytes without copying them; no lock, no
    /// allocation and no system call per event.
    ///
    /// A payload that is refused, or evicted by `DropOldest`, is dropped inside this call, on
    /// the caller's thread, once the bus's bookkeeping for it is done; a payload built with
    /// `Bytes::from_owner` may therefore run its owner's `Drop` here, and that `Drop` may
    /// ingest again.
    pub fn ingest_raw(&self, event: RawEvent) -> IngestionResult<()> {
        let inner = &*self.inner;
        let mut routing = inner.routing.load();
        self.ingest_routed(event, &mut routing, None)
    }

    /// What the bus shares with its tasks, for the other files of this crate.
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The body of [`EventBus::ingest_raw`], with the routing snapshot given by the caller.
    /// One event at a time loads a snapshot per event; a batch loads one for the whole call.
    /// When a resize raced the snapshot, the new one is loaded into `routing`, so the rest of a
    /// batch routes with it. `now` is the insertion timestamp a batch gives all its events
    /// (`None`: read the clock).
    #[inline(always)]
    pub(crate) fn ingest_routed(
        &self,
        event: RawEvent,
        routing: &mut arc_swap::Guard<Arc<Routing>>,
        now: Option<u64>,
    ) -> IngestionResult<()> {
        let inner = &*self.inner;
        let stats = &inner.stats;
        let max = inner.config.max_event_bytes;
        if event.len() > max {
            stats.rejected.too_large.fetch_add(1, Relaxed);
            return Err(IngestionError::TooLarge {
                size: event.len(),
                max,
            });
        }
        if let Some(policy) = inner.config.sampling {
            if policy.rate() > 1 && !sample_keep(policy.rate()) {
                stats.rejected.sampled.fetch_add(1, Relaxed);
                return Err(IngestionError::Sampled);
            }
        }
        let mut reroutes = 0u32;
        let (shard, reservation) = loop {
            let shard = &routing.shards[routing.route(event.hash())];
            let parity = (routing.version & 1) as usize;
            let reservation = Reservation::take(&shard.counters, parity);
            match inner.state.admit(routing.version) {
                Admission::Route => break (shard, reservation),
                Admission::Closing => {
                    drop(reservation);
                    stats.rejected.shutting_down.fetch_add(1, Relaxed);
                    return Err(IngestionError::ShuttingDown);
                }
                Admission::Reroute => drop(reservation),
            }
            // A resize was published after this table was loaded: route again. The new table
            // is already in place, so this repeats only if resizes keep racing the reload.
            reroutes += 1;
            if reroutes > MAX_REROUTES {
                stats.rejected.unrouted.fetch_add(1, Relaxed);
                return Err(IngestionError::Unrouted);
            }
            if reroutes > 1 {
                std::thread::yield_now();
            }
            *routing = inner.routing.load();
        };
        let slot = Slot {
            raw: event.into_bytes(),
            ts: now.unwrap_or_else(|| inner.clock.now_ns()),
        };
        // A payload that leaves here unqueued (refused, or evicted by this push) is dropped
        // only after the bookkeeping: its `Drop` may be user code (`Bytes::from_owner`), and
        // it must not run while this call holds a reservation that resizes and flushes wait
        // for. So the reservation is ended (pushed, or dropped and so taken back) first.
        let mut evicted = None;
        let refused = match inner.config.backpressure {
            crate::BackpressureMode::DropNewest => shard
                .queue
                .push(slot)
                .err()
                .map(|slot| (IngestionError::Backpressure, slot)),
            crate::BackpressureMode::DropOldest => {
                evicted = shard.queue.force_push(slot);
                if evicted.is_some() {
                    // The evicted event leaves its ring here: ingested, and dropped.
                    stats.events_ingested.fetch_add(1, Relaxed);
                    stats.events_dropped.fetch_add(1, Relaxed);
                    stats.events_evicted.fetch_add(1, Relaxed);
                    shard.counters.done.fetch_add(1, SeqCst);
                }
                None
            }
            crate::BackpressureMode::Block => shard
                .push_blocking(slot, || inner.state.closing())
                .err()
                .map(|slot| (IngestionError::ShuttingDown, slot)),
        };
        if let Some((e, slot)) = refused {
            drop(reservation);
            let reason = match e {
                IngestionError::Backpressure => &stats.rejected.backpressure,
                _ => &stats.rejected.shutting_down,
            };
            reason.fetch_add(1, Relaxed);
            drop(slot);
            return Err(e);
        }
        shard.pushed(reservation);
        drop(evicted);
        Ok(())
    }

    /// Reads events back from the adapter, merged across shards (see [`ConsumeRequest`]).
    pub async fn poll(&self, request: ConsumeRequest) -> ConsumerResult<ConsumeResponse> {
        consume::poll(&self.inner.adapter, self.inner.all_shards().len(), request).await
    }

    /// Barrier: returns once every event accepted before the call was dispatched (or
    /// dropped and counted) and the adapter's `flush` returned.
    pub async fn flush(&self) -> Result<(), AdapterError> {
        self.inner.flush().await
    }

    /// Stops accepting events, drains every ring to the adapter, flushes and shuts the
    /// adapter down. Bounded by `shutdown_timeout`. Calling it again is harmless.
    pub async fn shutdown(self) -> Result<(), AdapterError> {
        self.inner.shutdown().await
    }

    /// [`EventBus::shutdown`] for callers that hold the bus behind a shared reference.
    pub async fn shutdown_via_ref(&self) -> Result<(), AdapterError> {
        self.inner.shutdown().await
    }

    /// Whether the adapter reports its backend reachable, as its
    /// [`is_healthy`](Adapter::is_healthy) answers now (a cheap liveness check, e.g. a ping
    /// of the server). Events keep being accepted either way; this is for readiness probes
    /// and dashboards.
    pub async fn is_healthy(&self) -> bool {
        self.inner.adapter.is_healthy().await
    }

    /// The bus's counters.
    pub fn stats(&self) -> &EventBusStats {
        &self.inner.stats
    }

    /// Number of shards receiving events now.
    pub fn shard_count(&self) -> u16 {
        self.inner.active_ids().len() as u16
    }

    /// Ids of the shards receiving events now, ascending.
    pub fn active_shards(&self) -> Vec<u16> {
        self.inner.active_ids()
    }

    /// Adds `count` shards and returns their ids. Keys move only from old shards to the new
    /// ones, and a new shard dispatches nothing before the shards it took keys from have
    /// dispatched every event accepted before the change, so each key's events reach the
    /// adapter in ingest order.
    pub async fn add_shards(&self, count: u16) -> Result<Vec<u16>, ScalingError> {
        self.inner.add_shards(count).await
    }

    /// Stops routing to `shard_ids`, waits until everything they hold reached the adapter,
    /// and retires them. Their keys move to the remaining shards, which dispatch nothing
    /// before the removed shards are drained. Retired ids are never reused, and `poll` keeps
    /// reading them. Bounded by `shutdown_timeout` ([`ScalingError::DrainTimeout`]).
    pub async fn remove_shards(&self, shard_ids: Vec<u16>) -> Result<(), ScalingError> {
        self.inner.remove_shards(shard_ids).await
    }

    /// What the scaling rule (with the configured policy, or the default one) proposes now.
    /// See [`ScalingPolicy`](crate::ScalingPolicy) for the rule.
    pub async fn suggest_scaling(&self) -> ScalingDecision {
        let policy = self.inner.config.scaling.unwrap_or_default();
        self.inner.suggest(&policy).await
    }

    /// The producer nonce stamped on every batch.
    pub fn process_nonce(&self) -> u64 {
        self.inner.identity.nonce
    }

    /// The adapter's name.
    pub fn adapter_name(&self) -> &str {
        self.inner.adapter.name()
    }
}

impl Drop for EventBus {
    fn drop(&mut self) {
        if self.inner.shutdown_started.load(SeqCst) {
            return;
        }
        // Refuse new events at once; drain and stop in the background.
        self.inner.state.close();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let inner = self.inner.clone();
            rt.spawn(async move {
                if let Err(e) = inner.shutdown().await {
                    tracing::warn!(error = %e, "background shutdown of a dropped bus failed");
                }
            });
            return;
        }
        // No runtime to drive a drain from here: wake the workers so they see `closing`,
        // drain and finish on their own runtime.
        for shard in self.inner.all_shards() {
            shard.wake_worker();
            shard.release_blocked();
        }
    }
}
