//! The end of a bus's work: `flush` (a barrier), shutdown (drain, flush and close the adapter
//! within a deadline) and the accounting of what a deadline leaves behind.
//!
//! # Shutdown
//! The closing bit is set first. Because producers reserve before they read it, either shutdown
//! sees a reservation and waits for its event, or the producer sees `closing` and refuses the
//! event: no event is stranded in a ring. Workers drain their rings and exit once
//! `done == reserved`. If that takes longer than `shutdown_timeout`, the workers are aborted and
//! what is left is counted as dropped (`shutdown_was_lossy`). Dropping an `EventBus` without
//! shutdown runs the same sequence on the runtime in the background.

use crate::config::{DropReason, DroppedEvents};
use crate::inner::Inner;
use net_adapter::AdapterError;
use std::sync::atomic::{
    AtomicUsize,
    Ordering::{Relaxed, SeqCst},
};
use std::time::Duration;

impl Inner {
    pub(crate) async fn flush(&self) -> Result<(), AdapterError> {
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

    pub(crate) async fn shutdown(&self) -> Result<(), AdapterError> {
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
    pub(crate) async fn account_leftovers(&self) -> u64 {
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
