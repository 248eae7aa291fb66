//! The batch worker of a shard: drains its ring into batches, waits out the hand-off fences
//! of resizes, dispatches each batch with retries and backoff, and reports dropped batches.
//!
//! A batch closes at `max_events` events or `max_delay` after its oldest event, whichever
//! comes first, or at once while a flush, a shutdown or a retirement is waiting. Each shard
//! has at most one batch in flight, so its batches reach the adapter in order.
//!
//! # Accounting
//! Every event the worker takes ends in exactly one of: dispatched (its batch's `on_batch`
//! returned `Ok`) or dropped (a non-retryable error, an exhausted retry budget, or the
//! shutdown deadline). Stats are updated before `done`, so whoever sees `done == reserved` on
//! every shard also sees final stats.

use crate::config::{DropReason, DroppedEvents, RetryPolicy};
use crate::inner::Inner;
use crate::nonce;
use crate::shard::Shard;
use net_adapter::{AdapterError, Batch, BatchEvent};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an idle worker sleeps before it looks at its ring again on its own.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// The resolution of tokio's timer.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Accounts for `n` events the worker just took off its ring.
pub(crate) fn took(inner: &Inner, shard: &Shard, n: u64) {
    // Ingested first: whoever sees them leave the worker also sees them counted.
    inner.stats.events_ingested.fetch_add(n, Relaxed);
    shard.counters.in_worker.fetch_add(n, SeqCst);
    shard.signal_space();
}

/// Moves up to `max - events.len()` queued events into `events`; returns how many.
pub(crate) fn drain(
    shard: &Shard,
    events: &mut Vec<BatchEvent>,
    max: usize,
    last_ts: &mut u64,
) -> u64 {
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

pub(crate) async fn run_worker(inner: Arc<Inner>, shard: Arc<Shard>) {
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
    pub(crate) async fn dispatch(&self, shard: &Shard, batch: Arc<Batch>) {
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

    pub(crate) fn report_drop(&self, report: DroppedEvents) {
        if let Some(observer) = &self.config.on_drop {
            // A panicking observer must not take the worker (and the shard's events) with it.
            let call = std::panic::AssertUnwindSafe(|| observer(&report));
            if std::panic::catch_unwind(call).is_err() {
                tracing::error!("the drop observer panicked");
            }
        }
    }
}
