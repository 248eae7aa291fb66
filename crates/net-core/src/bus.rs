//! [`EventBus`]: ingest, batch workers, dispatch with retry, flush and shutdown.
//!
//! # Shape
//! `ingest_raw` routes an event by its hash (jump consistent hash over the shards), pushes it
//! onto that shard's ring and returns. One batch worker task per shard pops runs of events,
//! closes a batch at `max_events` or `max_delay` after its oldest event, and hands it to the
//! adapter; at most one batch per shard is in flight, so per-shard FIFO holds.
//!
//! # Accounting (see `stats` and `shard` for the counters)
//! Every accepted event ends in exactly one of: dispatched (its batch's `on_batch` returned
//! `Ok`), dropped (non-retryable error, exhausted retries, evicted by `DropOldest`, or left
//! at the shutdown deadline). Stats are updated before `done`, so whoever sees
//! `done == reserved` on every shard also sees final stats.
//!
//! # Shutdown
//! `closing` is set first (SeqCst). A producer increments `reserved` (SeqCst) *before* it
//! checks `closing`, so either shutdown sees its reservation and waits for the event, or the
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
use crate::shard::{jump_hash, Shard, Slot};
use crate::stats::EventBusStats;
use net_adapter::{Adapter, AdapterError, Batch, BatchEvent};
use parking_lot::Mutex;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How long an idle worker sleeps before it looks at its ring again on its own.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// The event bus. Create it inside a tokio runtime with [`EventBus::new`].
pub struct EventBus {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: EventBusConfig,
    pub(crate) adapter: Arc<dyn Adapter>,
    pub(crate) shards: Box<[Shard]>,
    pub(crate) stats: EventBusStats,
    identity: ProducerIdentity,
    /// Set once: ingest refuses new events.
    closing: AtomicBool,
    /// Set when shutdown's deadline passed: workers stop retrying.
    aborting: AtomicBool,
    /// Number of `flush` calls in progress: workers close batches at once.
    flushers: AtomicUsize,
    /// Signalled by workers after every batch.
    progress: Notify,
    workers: Mutex<Vec<JoinHandle<()>>>,
    shutdown_started: AtomicBool,
    /// Held for the whole shutdown; `true` once it completed.
    shutdown_done: tokio::sync::Mutex<bool>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("shards", &self.inner.shards.len())
            .field("adapter", &self.inner.adapter.name())
            .field("nonce", &format_args!("{:016x}", self.inner.identity.nonce))
            .finish()
    }
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
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
        let adapter: Arc<dyn Adapter> = Arc::from(adapter);
        let n = usize::from(config.shards);
        let shards = (0..config.shards)
            .map(|id| Shard::new(id, config.ring_capacity))
            .collect();
        let inner = Arc::new(Inner {
            adapter,
            shards,
            stats: EventBusStats::with_shards(n),
            identity,
            closing: AtomicBool::new(false),
            aborting: AtomicBool::new(false),
            flushers: AtomicUsize::new(0),
            progress: Notify::new(),
            workers: Mutex::new(Vec::with_capacity(n)),
            shutdown_started: AtomicBool::new(false),
            shutdown_done: tokio::sync::Mutex::new(false),
            config,
        });
        let handles = (0..n)
            .map(|i| runtime.spawn(run_worker(inner.clone(), i)))
            .collect();
        *inner.workers.lock() = handles;
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
        match serde_json::to_vec(&event.0) {
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
        let count = inner.shards.len() as u32;
        let index = if count == 1 {
            0
        } else {
            jump_hash(event.hash(), count) as usize
        };
        let (Some(shard), Some(counters)) = (inner.shards.get(index), stats.shards.get(index))
        else {
            stats.rejected.unrouted.fetch_add(1, Relaxed);
            return Err(IngestionError::Unrouted);
        };
        counters.reserved.fetch_add(1, SeqCst);
        if inner.closing.load(SeqCst) {
            counters.reserved.fetch_sub(1, SeqCst);
            stats.rejected.shutting_down.fetch_add(1, Relaxed);
            return Err(IngestionError::ShuttingDown);
        }
        // Counted before the push so that a worker can never report an event dispatched
        // before it is counted ingested; taken back if the push is refused.
        stats.events_ingested.fetch_add(1, Relaxed);
        let slot = Slot {
            raw: event.into_bytes(),
            ts: now_ns(),
        };
        let refused = match inner.config.backpressure {
            crate::BackpressureMode::DropNewest => shard
                .queue
                .push(slot)
                .err()
                .map(|_| IngestionError::Backpressure),
            crate::BackpressureMode::DropOldest => {
                if shard.queue.force_push(slot).is_some() {
                    stats.events_dropped.fetch_add(1, Relaxed);
                    stats.events_evicted.fetch_add(1, Relaxed);
                    counters.done.fetch_add(1, SeqCst);
                }
                None
            }
            crate::BackpressureMode::Block => shard
                .push_blocking(slot, || inner.closing.load(SeqCst))
                .err()
                .map(|_| IngestionError::ShuttingDown),
        };
        if let Some(e) = refused {
            stats.events_ingested.fetch_sub(1, Relaxed);
            counters.reserved.fetch_sub(1, SeqCst);
            let reason = match e {
                IngestionError::Backpressure => &stats.rejected.backpressure,
                _ => &stats.rejected.shutting_down,
            };
            reason.fetch_add(1, Relaxed);
            return Err(e);
        }
        shard.wake_worker_if_idle();
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

    /// Number of shards.
    pub fn shard_count(&self) -> u16 {
        self.inner.shards.len() as u16
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
        self.inner.closing.store(true, SeqCst);
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
        for shard in self.inner.shards.iter() {
            shard.wake_worker();
            shard.release_blocked();
        }
    }
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

async fn run_worker(inner: Arc<Inner>, index: usize) {
    let shard = &inner.shards[index];
    let counters = &inner.stats.shards[index];
    let max_events = inner.config.batch.max_events;
    let max_delay = inner.config.batch.max_delay();
    let mut next_seq = inner.identity.sequence_base;
    let mut last_ts = 0u64;
    let mut events: Vec<BatchEvent> = Vec::with_capacity(max_events.min(1 << 16));
    loop {
        let popped = drain(shard, &mut events, max_events, &mut last_ts);
        if popped > 0 {
            counters.in_worker.fetch_add(popped, SeqCst);
            shard.signal_space();
        }
        if events.is_empty() {
            if inner.closing.load(SeqCst) {
                let done = counters.done.load(SeqCst);
                if done == counters.reserved.load(SeqCst) && shard.queue.is_empty() {
                    break;
                }
                shard.wait_for_events(Duration::from_millis(1)).await;
            } else {
                shard.wait_for_events(IDLE_WAIT).await;
            }
            continue;
        }
        if events.len() < max_events && !max_delay.is_zero() {
            let age = Duration::from_nanos(now_ns().saturating_sub(events[0].insertion_ts));
            let deadline = Instant::now() + max_delay.saturating_sub(age);
            while events.len() < max_events && !inner.urgent() {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                shard.wait_for_events(deadline - now).await;
                let popped = drain(shard, &mut events, max_events, &mut last_ts);
                if popped > 0 {
                    counters.in_worker.fetch_add(popped, SeqCst);
                    shard.signal_space();
                }
            }
        }
        let batch = Arc::new(Batch {
            shard_id: shard.id,
            events: std::mem::replace(&mut events, Vec::with_capacity(max_events.min(1 << 16))),
            sequence_start: next_seq,
            process_nonce: inner.identity.nonce,
        });
        next_seq += batch.events.len() as u64;
        inner.dispatch(index, batch).await;
        inner.progress.notify_waiters();
    }
    inner.progress.notify_waiters();
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
    fn urgent(&self) -> bool {
        self.flushers.load(SeqCst) > 0 || self.closing.load(SeqCst)
    }

    async fn dispatch(&self, index: usize, batch: Arc<Batch>) {
        let retry = &self.config.retry;
        let n = batch.events.len() as u64;
        let mut attempt = 0u32;
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
            if attempt >= retry.max_retries {
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
            tokio::time::sleep(backoff(retry, attempt)).await;
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
                });
            }
        }
        let counters = &self.stats.shards[index];
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
        for shard in self.shards.iter() {
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
        let targets: Vec<u64> = self
            .stats
            .shards
            .iter()
            .map(|c| c.reserved.load(SeqCst))
            .collect();
        self.flushers.fetch_add(1, SeqCst);
        let _flushing = Flushing(&self.flushers);
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // An event counted in `target` sits at a ring position below `target`; `reserved`
            // can also shrink when a refused push is taken back, hence the `min`.
            let pending = self
                .stats
                .shards
                .iter()
                .zip(&targets)
                .any(|(c, &target)| c.done.load(SeqCst) < target.min(c.reserved.load(SeqCst)));
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
        self.closing.store(true, SeqCst);
        for shard in self.shards.iter() {
            shard.wake_worker();
            shard.release_blocked();
        }
        let mut handles = std::mem::take(&mut *self.workers.lock());
        let mut timed_out = false;
        for handle in handles.iter_mut() {
            if tokio::time::timeout_at(deadline, handle).await.is_err() {
                timed_out = true;
                break;
            }
        }
        if timed_out {
            self.aborting.store(true, SeqCst);
            for handle in &handles {
                handle.abort();
            }
            for handle in handles.iter_mut() {
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
        for (index, shard) in self.shards.iter().enumerate() {
            let counters = &self.stats.shards[index];
            let mut shard_lost = 0u64;
            // A producer that reserved before `closing` was set may still be pushing.
            for _ in 0..1000 {
                let mut n = counters.in_worker.swap(0, SeqCst);
                while shard.queue.pop().is_some() {
                    n += 1;
                }
                if n > 0 {
                    self.stats.events_dropped.fetch_add(n, Relaxed);
                    counters.done.fetch_add(n, SeqCst);
                    shard_lost += n;
                }
                if counters.done.load(SeqCst) >= counters.reserved.load(SeqCst) {
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
                });
            }
            lost += shard_lost;
        }
        lost
    }
}
