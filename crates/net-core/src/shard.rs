//! A shard: its bounded ring, the worker's wake-up flag, and routing.
//!
//! # The ring
//! Each shard queues events in a bounded lock-free multi-producer queue
//! (`crossbeam_queue::ArrayQueue`; the shard's batch worker is its only consumer).
//! `ArrayQueue::force_push` atomically replaces the oldest element when the queue is full,
//! which is exactly `DropOldest`: the producer evicts the head safely even while the worker
//! is popping, and the evicted event comes back to the producer to be accounted for.
//! The queue stores the payload's `Bytes` handle and its timestamp inline: a push allocates
//! nothing.
//!
//! # Who touches what
//! - Producers: `reserved += 1` (before the push, taken back if refused), push, then wake
//!   the worker only if `reserved` reached the worker's `wake_at` mark.
//! - Worker: pops runs of events, `in_worker += n` when it pops them,
//!   `done += n` / `in_worker -= n` once the batch is dispatched or dropped.
//! - Evicting producers: `done += 1` for each event they evict.
//!
//! # Retirement and hand-off fences
//! A removed shard is marked `retiring`; routing no longer sends events to it, and its worker
//! ends once `done == reserved` and the ring is empty. A shard that gains keys in a resize gets
//! fences on the shards the keys came from, and dispatches nothing until those shards have
//! finished with every event reserved before the resize: a key's events reach the adapter in
//! ingest order across resizes.
//!
//! # Wake-ups
//! A sleeping worker publishes `wake_at`: the `reserved` count at which it has enough to do
//! (one event when idle; the rest of a batch while it fills one). It stores the mark (SeqCst)
//! and then re-reads `reserved`; a producer increments `reserved` (SeqCst) and then reads the
//! mark (SeqCst). In the single total order of SeqCst operations one of the two sees the
//! other, so a due wake-up is never missed, and a worker filling a batch is woken once per
//! batch rather than once per event. `Notify` keeps a permit if the wake comes before the wait,
//! and the worker never sleeps past its batch deadline or a short idle period.

use crate::stats::ShardCounters;
use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// One queued event.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) raw: Bytes,
    pub(crate) ts: u64,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.id)
            .field("queued", &self.queue.len())
            .field("retiring", &self.retiring.load(Ordering::Relaxed))
            .finish()
    }
}

pub(crate) struct Shard {
    pub(crate) id: u16,
    pub(crate) queue: ArrayQueue<Slot>,
    pub(crate) counters: ShardCounters,
    /// Set when the shard is being removed: once its ring is drained the worker ends.
    pub(crate) retiring: AtomicBool,
    /// Set by the worker when it ends (retired, or the bus stopped).
    pub(crate) finished: AtomicBool,
    /// Hand-off fences: before dispatching, wait until each listed shard has finished with
    /// its first `n` reserved events (`Some(n)`) or has ended (`None`). See `routing`.
    fences: Mutex<Vec<(std::sync::Arc<Shard>, Option<u64>)>>,
    has_fences: AtomicBool,
    wake: Notify,
    /// Producers parked in `BackpressureMode::Block`.
    blocked: AtomicUsize,
    space_lock: Mutex<()>,
    space: Condvar,
}

impl Shard {
    pub(crate) fn new(id: u16, capacity: usize) -> Self {
        Self {
            id,
            queue: ArrayQueue::new(capacity),
            counters: ShardCounters::default(),
            retiring: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            fences: Mutex::new(Vec::new()),
            has_fences: AtomicBool::new(false),
            wake: Notify::new(),
            blocked: AtomicUsize::new(0),
            space_lock: Mutex::new(()),
            space: Condvar::new(),
        }
    }

    /// Called by a producer after a successful push; `reserved` is the shard's reservation
    /// count including this event.
    #[inline]
    pub(crate) fn wake_worker_if_due(&self, reserved: u64) {
        if reserved >= self.counters.wake_at.load(Ordering::SeqCst)
            && self.counters.wake_at.swap(u64::MAX, Ordering::SeqCst) != u64::MAX
        {
            self.wake.notify_one();
        }
    }

    /// Wakes the worker unconditionally (flush, shutdown, a parked producer).
    pub(crate) fn wake_worker(&self) {
        self.counters.wake_at.store(u64::MAX, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Worker side: sleeps until at least `need` events are queued beyond those the worker
    /// already took, until `wake_worker` is called, or until `max` passes.
    pub(crate) async fn wait_for_events(&self, need: usize, max: Duration) {
        let c = &self.counters;
        let taken = c.done.load(Ordering::SeqCst) + c.in_worker.load(Ordering::SeqCst);
        let target = taken + need.max(1) as u64;
        self.counters.wake_at.store(target, Ordering::SeqCst);
        if c.reserved() < target {
            let _ = tokio::time::timeout(max, self.wake.notified()).await;
        }
        self.counters.wake_at.store(u64::MAX, Ordering::SeqCst);
    }

    /// Worker side: tells producers parked in `Block` mode that there is room again.
    pub(crate) fn signal_space(&self) {
        if self.blocked.load(Ordering::SeqCst) > 0 {
            let _guard = self.space_lock.lock();
            self.space.notify_all();
        }
    }

    /// Producer side of `Block`: pushes `slot`, waiting for room. Gives the slot back if
    /// `give_up()` becomes true first.
    pub(crate) fn push_blocking(&self, slot: Slot, give_up: impl Fn() -> bool) -> Result<(), Slot> {
        let mut slot = match self.queue.push(slot) {
            Ok(()) => return Ok(()),
            Err(s) => s,
        };
        let backoff = crossbeam_utils::Backoff::new();
        while !backoff.is_completed() {
            backoff.snooze();
            slot = match self.queue.push(slot) {
                Ok(()) => return Ok(()),
                Err(s) => s,
            };
        }
        self.blocked.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            if give_up() {
                break Err(slot);
            }
            slot = match self.queue.push(slot) {
                Ok(()) => break Ok(()),
                Err(s) => s,
            };
            self.wake_worker();
            let mut guard = self.space_lock.lock();
            if self.queue.is_full() {
                // Bounded wait: a missed signal costs at most a millisecond.
                self.space.wait_for(&mut guard, Duration::from_millis(1));
            }
        };
        self.blocked.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Makes this shard's worker wait, before its next dispatch, until `other` has finished
    /// with its first `count` reserved events (or, with `None`, until `other` has ended).
    pub(crate) fn add_fence(&self, other: std::sync::Arc<Shard>, count: Option<u64>) {
        self.fences.lock().push((other, count));
        self.has_fences.store(true, Ordering::SeqCst);
    }

    /// True while a fence still holds. Fences that are satisfied are dropped.
    pub(crate) fn fenced(&self) -> bool {
        if !self.has_fences.load(Ordering::Acquire) {
            return false;
        }
        let mut fences = self.fences.lock();
        // A reservation that was taken back lowers `reserved` below the recorded count.
        fences.retain(|(other, count)| match count {
            Some(count) => {
                let c = &other.counters;
                c.done.load(Ordering::SeqCst) < (*count).min(c.reserved())
            }
            None => !other.finished.load(Ordering::SeqCst),
        });
        if fences.is_empty() {
            self.has_fences.store(false, Ordering::Release);
            false
        } else {
            true
        }
    }

    /// Wakes every parked producer (shutdown).
    pub(crate) fn release_blocked(&self) {
        let _guard = self.space_lock.lock();
        self.space.notify_all();
    }
}
