//! [`EventBus`]: ingest, batch workers, dispatch with retry, flush and shutdown.
//!
//! # Shape
//! `ingest_raw` routes an event by its hash (the slot table of `routing`), pushes it onto that
//! shard's ring and returns. One batch worker task per shard pops runs of events,
//! closes a batch at `max_events` or `max_delay` after its oldest event, and hands it to the
//! adapter; at most one batch per shard is in flight, so per-shard FIFO holds.
//!
//! # Accounting (see `stats` and `shard` for the counters)
//! Every accepted event ends in exactly one of: dispatched (its batch's `on_batch` returned
//! `Ok`), dropped (non-retryable error, exhausted retries, evicted by `DropOldest`, or left
//! at the shutdown deadline). Stats are updated before `done`, so whoever sees
//! `done == reserved` on every shard also sees final stats.
//!
//! # The state word
//! `state` holds the closing flag (top bit) and the routing version (the rest). A producer
//! increments its shard's reservation count for its routing parity (SeqCst) *before* it reads `state`
//! (SeqCst); shutdown and resizes change `state` *before* they read those counts. A producer
//! that finds the bus closing refuses the event; one whose routing table is older than the
//! state word takes its reservation back and routes again (a table one version ahead of the
//! state word is fine: resizes publish the table before they bump the version).
//!
//! # Layout
//! `new` records the shard count in the backend ([`Adapter::record_layout`]) or checks it
//! against the one recorded there, so buses with another count refuse to start instead of
//! reading a subset of the stream; `add_shards` records the grown count.
//!
//! # Shutdown
//! The closing bit is set first. Because producers reserve before they read it, either shutdown sees its reservation and waits for the event, or the
//! producer sees `closing` and refuses the event: no event is stranded in a ring. Workers
//! drain their rings and exit once `done == reserved`. If that takes longer than
//! `shutdown_timeout`, the workers are aborted and what is left is counted as dropped
//! (`shutdown_was_lossy`). Dropping an `EventBus` without shutdown runs the same sequence on
//! the runtime in the background: nothing hangs and the tasks end.

use crate::config::{DropReason, DroppedEvents, EventBusConfig, RetryPolicy};
use crate::consume::{self, ConsumeRequest, ConsumeResponse};
use crate::error::{ConfigError, ConsumerResult, IngestionError, IngestionResult};
use crate::event::{Event, RawEvent};
use crate::nonce::{self, ProducerIdentity};
use crate::routing::{self, Routing, SharedRouting};
use crate::scaling::{self, ScalingDecision, ScalingError, ScalingPolicy, ScalingState};
use crate::shard::{Reservation, Shard, Slot};
use crate::state::{Admission, StateWord};
use crate::stats::EventBusStats;
use crossbeam_utils::CachePadded;
use net_adapter::{Adapter, AdapterError, Batch, BatchEvent, LayoutWrite, StreamLayout};
use parking_lot::Mutex;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How long an idle worker sleeps before it looks at its ring again on its own.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// The resolution of tokio's timer.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// How many times one ingest re-routes after racing resizes before giving up (`Unrouted`).
const MAX_REROUTES: u32 = 64;

/// The event bus. Create it inside a tokio runtime with [`EventBus::new`].
pub struct EventBus {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: EventBusConfig,
    pub(crate) adapter: Arc<dyn Adapter>,
    // Fields producers read on every event are padded away from fields the workers write
    // after every batch (stats, progress): sharing a cache line with those made the state
    // word and the routing pointer miss in the producer's cache.
    /// The current routing snapshot (read on every ingest); `stats` reads the same one.
    routing: SharedRouting,
    /// Closing bit and routing version (see `state`).
    state: CachePadded<StateWord>,
    pub(crate) stats: CachePadded<EventBusStats>,
    identity: ProducerIdentity,
    clock: Clock,
    /// Set when shutdown's deadline passed: workers stop retrying.
    aborting: AtomicBool,
    /// Number of `flush` calls in progress: workers close batches at once.
    flushers: CachePadded<AtomicUsize>,
    /// Signalled by workers after every batch.
    progress: CachePadded<Notify>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    shutdown_started: AtomicBool,
    /// Held for the whole shutdown; `true` once it completed.
    shutdown_done: tokio::sync::Mutex<bool>,
    /// Serialises resizes (and shutdown against them).
    scaling: tokio::sync::Mutex<ScalingState>,
}

/// Wall-clock nanoseconds that never go backwards within a bus: the wall clock read once at
/// start plus the monotonic time elapsed since, read from the CPU's time-stamp counter when it
/// is reliable (`quanta` calibrates it against the OS clock and falls back to the OS clock
/// otherwise). About a third of the cost of a `clock_gettime` call per event.
struct Clock {
    unix_ns_at_start: u64,
    clock: quanta::Clock,
    start: quanta::Instant,
}

impl Clock {
    fn new() -> Self {
        let clock = quanta::Clock::new();
        let start = clock.now();
        Self {
            unix_ns_at_start: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            clock,
            start,
        }
    }

    #[inline]
    fn now_ns(&self) -> u64 {
        let elapsed = self.clock.now().saturating_duration_since(self.start);
        self.unix_ns_at_start
            .saturating_add(elapsed.as_nanos() as u64)
    }
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
        let mut routing = inner.routing.load();
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
            routing = inner.routing.load();
        };
        let slot = Slot {
            raw: event.into_bytes(),
            ts: inner.clock.now_ns(),
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
        consume::poll(&self.inner, request).await
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
    /// See [`ScalingPolicy`] for the rule.
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

/// Accounts for `n` events the worker just took off its ring.
fn took(inner: &Inner, shard: &Shard, n: u64) {
    // Ingested first: whoever sees them leave the worker also sees them counted.
    inner.stats.events_ingested.fetch_add(n, Relaxed);
    shard.counters.in_worker.fetch_add(n, SeqCst);
    shard.signal_space();
}

/// Moves up to `max - events.len()` queued events into `events`; returns how many.
fn drain(shard: &Shard, events: &mut Vec<BatchEvent>, max: usize, last_ts: &mut u64) -> u64 {
    let mut n = 0;
    while events.len() < max {
        let Some(slot) = shard.queue.pop() else { break };
        // Keep timestamps non-decreasing within the shard even when producers race.
        let ts = slot.ts.max(*last_ts);
        *last_ts = ts;
        events.push(BatchEvent {
            raw: slot.raw,
            insertion_ts: ts,
            shard_id: shard.id,
        });
        n += 1;
    }
    n
}

async fn run_worker(inner: Arc<Inner>, shard: Arc<Shard>) {
    let counters = &shard.counters;
    let max_events = inner.config.batch.max_events;
    let max_delay = inner.config.batch.max_delay();
    let mut next_seq = inner.identity.sequence_base;
    let mut last_ts = 0u64;
    let mut events: Vec<BatchEvent> = Vec::with_capacity(max_events.min(1 << 16));
    loop {
        let popped = drain(&shard, &mut events, max_events, &mut last_ts);
        if popped > 0 {
            took(&inner, &shard, popped);
        }
        if events.is_empty() {
            if inner.closing() || shard.retiring.load(SeqCst) {
                let done = counters.done.load(SeqCst);
                if done == counters.reserved() && shard.queue.is_empty() {
                    break;
                }
                shard.wait_for_events(1, Duration::from_millis(1)).await;
            } else {
                shard.wait_for_events(1, IDLE_WAIT).await;
            }
            continue;
        }
        if events.len() < max_events && !max_delay.is_zero() {
            let age =
                Duration::from_nanos(inner.clock.now_ns().saturating_sub(events[0].insertion_ts));
            // tokio's timer fires on its next 1 ms tick after the deadline, so aim up to 1 ms
            // early: the batch then closes within max_delay rather than up to 1 ms after it.
            let slack = TIMER_TICK.min(max_delay / 2);
            let deadline = Instant::now() + max_delay.saturating_sub(age).saturating_sub(slack);
            while events.len() < max_events && !inner.urgent(&shard) {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                shard
                    .wait_for_events(max_events - events.len(), deadline - now)
                    .await;
                let popped = drain(&shard, &mut events, max_events, &mut last_ts);
                if popped > 0 {
                    took(&inner, &shard, popped);
                }
            }
        }
        // Hand-off after a resize: the shards this one took keys from go first.
        while shard.fenced() {
            let progress = inner.progress.notified();
            let _ = tokio::time::timeout(Duration::from_millis(5), progress).await;
        }
        let batch = Arc::new(Batch {
            shard_id: shard.id,
            events: std::mem::replace(&mut events, Vec::with_capacity(max_events.min(1 << 16))),
            sequence_start: next_seq,
            process_nonce: inner.identity.nonce,
        });
        next_seq += batch.events.len() as u64;
        inner.dispatch(&shard, batch).await;
        inner.progress.notify_waiters();
    }
    shard.finished.store(true, SeqCst);
    inner.progress.notify_waiters();
}

/// Applies the scaling policy on a timer. Holds the bus only weakly, so it never keeps a
/// dropped bus alive, and ends when the bus closes.
async fn run_monitor(bus: Weak<Inner>, policy: ScalingPolicy) {
    loop {
        tokio::time::sleep(policy.check_interval).await;
        let Some(inner) = bus.upgrade() else { return };
        if inner.closing() {
            return;
        }
        let decision = inner.suggest(&policy).await;
        let applied = match &decision {
            ScalingDecision::ScaleUp(n) => inner.add_shards(*n).await.map(|_| ()),
            ScalingDecision::ScaleDown(ids) => inner.remove_shards(ids.clone()).await,
            ScalingDecision::NoChange(_) => continue,
        };
        match applied {
            Ok(()) => tracing::info!(?decision, "scaling monitor applied a decision"),
            Err(e) => {
                tracing::warn!(?decision, error = %e, "scaling monitor could not apply a decision")
            }
        }
    }
}

fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .initial_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let base = exp.min(policy.max_backoff);
    // Full jitter in [base/2, base].
    let half = base / 2;
    let jitter = nonce::random_u64() % (half.as_nanos() as u64).max(1);
    half + Duration::from_nanos(jitter)
}

impl Inner {
    fn closing(&self) -> bool {
        self.state.closing()
    }

    fn urgent(&self, shard: &Shard) -> bool {
        self.flushers.load(SeqCst) > 0 || self.closing() || shard.retiring.load(SeqCst)
    }

    /// Every shard ever created, by id: the shards of the current routing snapshot, which
    /// include those of a resize still in progress.
    pub(crate) fn all_shards(&self) -> Box<[Arc<Shard>]> {
        self.routing.shards()
    }

    fn active_ids(&self) -> Vec<u16> {
        self.routing
            .load()
            .shards
            .iter()
            .filter(|s| !s.retiring.load(SeqCst))
            .map(|s| s.id)
            .collect()
    }

    /// Publishes a new routing table and bumps the version in the state word.
    fn publish(&self, table: Box<[u16]>, shards: Box<[Arc<Shard>]>) {
        let version = self.routing.load().version + 1;
        self.routing.store(Routing {
            version,
            table,
            shards,
        });
        self.state.bump_version();
    }

    async fn suggest(&self, policy: &ScalingPolicy) -> ScalingDecision {
        let active: Vec<(u16, u64)> = self
            .all_shards()
            .iter()
            .filter(|s| !s.retiring.load(SeqCst))
            .map(|s| (s.id, s.counters.depth()))
            .collect();
        let mut state = self.scaling.lock().await;
        scaling::decide(
            policy,
            &mut state,
            &scaling::Observation {
                active: &active,
                ring_capacity: self.config.ring_capacity,
                backpressure: self.stats.rejected.backpressure.load(Relaxed),
                now: Instant::now(),
            },
        )
    }

    async fn add_shards(self: &Arc<Self>, count: u16) -> Result<Vec<u16>, ScalingError> {
        if count == 0 {
            return Err(ScalingError::ZeroCount);
        }
        let mut scaling = self.scaling.lock().await;
        if self.closing() {
            return Err(ScalingError::ShuttingDown);
        }
        let max = self
            .config
            .scaling
            .map_or(routing::SLOTS, |p| usize::from(p.max_shards));
        let current = self.routing.load_full();
        let active = self.active_ids().len();
        let total = current.shards.len();
        if active + usize::from(count) > max || total + usize::from(count) > usize::from(u16::MAX) {
            return Err(ScalingError::AboveMaximum { max });
        }
        let mut table = current.table.to_vec();
        let mut shards = current.shards.to_vec();
        let mut added = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let id = shards.len() as u16;
            let shard = Arc::new(Shard::new(id, self.config.ring_capacity));
            let donors = routing::add_shard(&mut table, id);
            shards.push(shard.clone());
            added.push((shard, donors));
        }
        let old_parity = (current.version & 1) as usize;
        self.publish(table.into_boxed_slice(), shards.into_boxed_slice());
        // Every producer that routed with the old table to a donor is either counted in the
        // donor's old-parity reservations now or will route again with the new table. Wait until the
        // counted ones have pushed: then every event of a moved key that any producer pushed
        // before its first event to a new shard sits in the donor's ring at a position below
        // the donor's `reserved`.
        for (_, donors) in &added {
            for &donor in donors {
                if let Some(donor) = current.shards.get(usize::from(donor)) {
                    while donor.counters.pushing(old_parity) != 0 {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                }
            }
        }
        for (shard, donors) in &added {
            for &donor in donors {
                let donor = current.shards.get(usize::from(donor)).cloned().or_else(|| {
                    added
                        .iter()
                        .find(|(s, _)| s.id == donor)
                        .map(|(s, _)| s.clone())
                });
                if let Some(donor) = donor {
                    let count = donor.counters.reserved();
                    shard.add_fence(donor, Some(count));
                }
            }
        }
        let runtime = tokio::runtime::Handle::current();
        {
            let mut workers = self.workers.lock();
            for (shard, _) in &added {
                workers.push(runtime.spawn(run_worker(self.clone(), shard.clone())));
            }
        }
        self.stats.shards_added.fetch_add(u64::from(count), Relaxed);
        scaling.last_change = Some(Instant::now());
        let ids: Vec<u16> = added.iter().map(|(s, _)| s.id).collect();
        if self.config.check_layout {
            self.record_grown_layout(total + usize::from(count)).await;
        }
        tracing::info!(?ids, "shards added");
        Ok(ids)
    }

    /// Records that the stream now has `shards` shard ids, so buses opened later agree with
    /// this one. A failure is logged, not returned: the shards exist and route events already.
    async fn record_grown_layout(&self, shards: usize) {
        let Ok(shards) = u16::try_from(shards) else {
            return;
        };
        let layout = StreamLayout::new(shards);
        if let Err(error) = self
            .adapter
            .record_layout(layout, LayoutWrite::Replace)
            .await
        {
            tracing::warn!(
                %error,
                shards,
                "could not record the new shard count in the backend; buses opened with it \
                 will be refused until it is recorded"
            );
        }
    }

    async fn remove_shards(&self, mut ids: Vec<u16>) -> Result<(), ScalingError> {
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        let removed: Vec<Arc<Shard>> = {
            let mut scaling = self.scaling.lock().await;
            if self.closing() {
                return Err(ScalingError::ShuttingDown);
            }
            let current = self.routing.load_full();
            let mut removed = Vec::with_capacity(ids.len());
            for &id in &ids {
                match current.shards.get(usize::from(id)) {
                    Some(s) if !s.retiring.load(SeqCst) => removed.push(s.clone()),
                    _ => return Err(ScalingError::UnknownShard(id)),
                }
            }
            let min = self.config.scaling.map_or(1, |p| p.min_shards);
            if self.active_ids().len() < ids.len() + usize::from(min) {
                return Err(ScalingError::BelowMinimum { min });
            }
            // A shard added recently may still wait on its donors, and a donor may be among
            // its heirs: fencing the heirs on it now could make two shards wait on each
            // other. Once its own fences are clear it waits on nothing, and being retired it
            // never gets a fence again, so fences only ever point from newer shards to older
            // ones or to retired shards and cannot form a cycle.
            while removed.iter().any(|s| s.fenced()) {
                let progress = self.progress.notified();
                let _ = tokio::time::timeout(Duration::from_millis(5), progress).await;
            }
            let mut table = current.table.to_vec();
            for shard in &removed {
                for heir in routing::remove_shard(&mut table, shard.id) {
                    // Before the new table is visible: the heir must not dispatch a moved
                    // key's event until the removed shard has drained.
                    if let Some(heir) = current.shards.get(usize::from(heir)) {
                        heir.add_fence(shard.clone(), None);
                    }
                }
            }
            self.publish(table.into_boxed_slice(), current.shards.clone());
            for shard in &removed {
                shard.retiring.store(true, SeqCst);
                shard.wake_worker();
            }
            self.stats
                .shards_removed
                .fetch_add(removed.len() as u64, Relaxed);
            scaling.last_change = Some(Instant::now());
            removed
        };
        tracing::info!(?ids, "shards retiring");
        let deadline = tokio::time::Instant::now() + self.config.shutdown_timeout;
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if removed.iter().all(|s| s.finished.load(SeqCst)) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ScalingError::DrainTimeout(self.config.shutdown_timeout));
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), progress).await;
        }
    }

    async fn dispatch(&self, shard: &Shard, batch: Arc<Batch>) {
        let retry = &self.config.retry;
        let n = batch.events.len() as u64;
        let mut attempt = 0u32;
        let deadline = retry.max_elapsed.map(|window| Instant::now() + window);
        let outcome = loop {
            let call = self.adapter.on_batch(batch.clone());
            let result = match tokio::time::timeout(retry.attempt_timeout, call).await {
                Ok(r) => r,
                Err(_) => Err(AdapterError::Transient(format!(
                    "{}: on_batch for shard {} timed out after {:?}",
                    self.adapter.name(),
                    batch.shard_id,
                    retry.attempt_timeout
                ))),
            };
            let error = match result {
                Ok(()) => break Ok(()),
                Err(e) => e,
            };
            self.stats.adapter_errors.record(&error);
            if !error.is_retryable() {
                break Err((DropReason::AdapterRejected, error));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if attempt >= retry.max_retries || left.is_some_and(|l| l.is_zero()) {
                break Err((DropReason::RetriesExhausted, error));
            }
            if self.aborting.load(SeqCst) {
                break Err((DropReason::ShutdownDeadline, error));
            }
            attempt += 1;
            self.stats.batches_retried.fetch_add(1, Relaxed);
            tracing::debug!(
                shard = batch.shard_id,
                sequence_start = batch.sequence_start,
                attempt,
                error = %error,
                "retrying batch"
            );
            // The last retry of a time budget happens at its end, not after it.
            let wait = backoff(retry, attempt);
            tokio::time::sleep(left.map_or(wait, |l| wait.min(l))).await;
        };
        // From here on there is no await: an abort cannot split the accounting.
        match outcome {
            Ok(()) => {
                self.stats.events_dispatched.fetch_add(n, Relaxed);
                self.stats.batches_dispatched.fetch_add(1, Relaxed);
            }
            Err((reason, error)) => {
                self.stats.events_dropped.fetch_add(n, Relaxed);
                self.stats.batches_dropped.fetch_add(1, Relaxed);
                tracing::warn!(
                    shard = batch.shard_id,
                    sequence_start = batch.sequence_start,
                    events = n,
                    ?reason,
                    error = %error,
                    "dropping batch"
                );
                self.report_drop(DroppedEvents {
                    shard_id: batch.shard_id,
                    count: n,
                    sequence_start: Some(batch.sequence_start),
                    reason,
                    error: Some(error.to_string()),
                    payloads: batch.events.iter().map(|e| e.raw.clone()).collect(),
                });
            }
        }
        let counters = &shard.counters;
        counters.in_worker.fetch_sub(n, SeqCst);
        counters.done.fetch_add(n, SeqCst);
    }

    fn report_drop(&self, report: DroppedEvents) {
        if let Some(observer) = &self.config.on_drop {
            // A panicking observer must not take the worker (and the shard's events) with it.
            let call = std::panic::AssertUnwindSafe(|| observer(&report));
            if std::panic::catch_unwind(call).is_err() {
                tracing::error!("the drop observer panicked");
            }
        }
    }

    fn wake_all(&self) {
        for shard in self.all_shards() {
            shard.wake_worker();
        }
    }

    async fn flush(&self) -> Result<(), AdapterError> {
        struct Flushing<'a>(&'a AtomicUsize);
        impl Drop for Flushing<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        let shards = self.all_shards();
        let targets: Vec<u64> = shards.iter().map(|s| s.counters.reserved()).collect();
        self.flushers.fetch_add(1, SeqCst);
        let _flushing = Flushing(&self.flushers);
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // An event counted in `target` sits at a ring position below `target`; `reserved`
            // can also shrink when a refused push is taken back, hence the `min`.
            let pending = shards.iter().zip(&targets).any(|(s, &target)| {
                let c = &s.counters;
                c.done.load(SeqCst) < target.min(c.reserved())
            });
            if !pending {
                break;
            }
            self.wake_all();
            let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
        }
        match tokio::time::timeout(self.config.retry.attempt_timeout, self.adapter.flush()).await {
            Ok(r) => r,
            Err(_) => Err(AdapterError::Transient(format!(
                "{}: flush timed out",
                self.adapter.name()
            ))),
        }
    }

    async fn shutdown(&self) -> Result<(), AdapterError> {
        self.shutdown_started.store(true, SeqCst);
        let mut finished = self.shutdown_done.lock().await;
        if *finished {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.config.shutdown_timeout;
        self.state.close();
        // Wait for a resize in progress; none can start after the closing bit.
        drop(self.scaling.lock().await);
        for shard in self.all_shards() {
            shard.wake_worker();
            shard.release_blocked();
        }
        let mut handles = std::mem::take(&mut *self.workers.lock());
        // Handles before `joined` completed and their output was taken: they must not be
        // polled again.
        let mut joined = 0;
        while joined < handles.len() {
            if tokio::time::timeout_at(deadline, &mut handles[joined])
                .await
                .is_err()
            {
                break;
            }
            joined += 1;
        }
        if joined < handles.len() {
            let pending = &mut handles[joined..];
            self.aborting.store(true, SeqCst);
            for handle in pending.iter() {
                handle.abort();
            }
            for handle in pending.iter_mut() {
                // An aborted task ends at its next await; an adapter that blocks its thread
                // cannot be interrupted, so do not wait for it forever.
                let _ = tokio::time::timeout(Duration::from_secs(1), handle).await;
            }
            let lost = self.account_leftovers().await;
            if lost > 0 {
                self.stats.shutdown_was_lossy.store(true, SeqCst);
                tracing::warn!(events = lost, "shutdown deadline passed; events dropped");
            }
        }
        let timeout = self.config.retry.attempt_timeout;
        let name = self.adapter.name().to_owned();
        let flushed = match tokio::time::timeout(timeout, self.adapter.flush()).await {
            Ok(r) => r,
            Err(_) => Err(AdapterError::Transient(format!("{name}: flush timed out"))),
        };
        let closed = match tokio::time::timeout(timeout, self.adapter.shutdown()).await {
            Ok(r) => r,
            Err(_) => Err(AdapterError::Transient(format!(
                "{name}: shutdown timed out"
            ))),
        };
        *finished = true;
        self.progress.notify_waiters();
        let s = self.stats.snapshot();
        tracing::info!(
            ingested = s.events_ingested,
            dispatched = s.events_dispatched,
            dropped = s.events_dropped,
            lossy = s.shutdown_was_lossy,
            "event bus stopped"
        );
        flushed.and(closed)
    }

    /// After the workers were aborted: counts everything still queued or held as dropped.
    async fn account_leftovers(&self) -> u64 {
        let mut lost = 0u64;
        for shard in self.all_shards() {
            let counters = &shard.counters;
            let mut shard_lost = 0u64;
            let mut payloads = Vec::new();
            // A producer that reserved before `closing` was set may still be pushing.
            for _ in 0..1000 {
                let mut n = counters.in_worker.swap(0, SeqCst);
                let mut from_ring = 0;
                while let Some(slot) = shard.queue.pop() {
                    payloads.push(slot.raw);
                    from_ring += 1;
                }
                self.stats.events_ingested.fetch_add(from_ring, Relaxed);
                n += from_ring;
                if n > 0 {
                    self.stats.events_dropped.fetch_add(n, Relaxed);
                    counters.done.fetch_add(n, SeqCst);
                    shard_lost += n;
                }
                if counters.done.load(SeqCst) >= counters.reserved() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if shard_lost > 0 {
                self.stats.batches_dropped.fetch_add(1, Relaxed);
                self.report_drop(DroppedEvents {
                    shard_id: shard.id,
                    count: shard_lost,
                    sequence_start: None,
                    reason: DropReason::ShutdownDeadline,
                    error: None,
                    payloads,
                });
            }
            lost += shard_lost;
        }
        lost
    }
}
