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
//! - Producers: `reserved += 1` (before the push, taken back if refused), push,
//!   then wake the worker only if it announced that it sleeps (`worker_idle`).
//! - Worker: pops runs of events, `in_worker += n` when it pops them,
//!   `done += n` / `in_worker -= n` once the batch is dispatched or dropped.
//! - Evicting producers: `done += 1` for each event they evict.
//!
//! # Wake-ups
//! The worker sets `worker_idle` (SeqCst) and then re-checks that the queue is empty before
//! it waits; a producer pushes (a SeqCst CAS inside the queue) and then reads `worker_idle`
//! (SeqCst). In the single total order of SeqCst operations one of the two sees the other, so
//! a push is never left unnoticed; `Notify` keeps a permit if the wake comes before the wait.
//! The worker also never waits longer than a short idle period, as a second line of defence.

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
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

pub(crate) struct Shard {
    pub(crate) id: u16,
    pub(crate) queue: ArrayQueue<Slot>,
    worker_idle: CachePadded<AtomicBool>,
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
            worker_idle: CachePadded::new(AtomicBool::new(false)),
            wake: Notify::new(),
            blocked: AtomicUsize::new(0),
            space_lock: Mutex::new(()),
            space: Condvar::new(),
        }
    }

    /// Called by a producer after a successful push.
    #[inline]
    pub(crate) fn wake_worker_if_idle(&self) {
        if self.worker_idle.load(Ordering::SeqCst) && self.worker_idle.swap(false, Ordering::SeqCst)
        {
            self.wake.notify_one();
        }
    }

    /// Wakes the worker unconditionally (flush, shutdown).
    pub(crate) fn wake_worker(&self) {
        self.worker_idle.store(false, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Worker side: sleeps until a producer pushes, `wake_worker` is called, or `max` passes.
    pub(crate) async fn wait_for_events(&self, max: Duration) {
        self.worker_idle.store(true, Ordering::SeqCst);
        if self.queue.is_empty() {
            let _ = tokio::time::timeout(max, self.wake.notified()).await;
        }
        self.worker_idle.store(false, Ordering::SeqCst);
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
            self.wake_worker_if_idle();
            let mut guard = self.space_lock.lock();
            if self.queue.is_full() {
                // Bounded wait: a missed signal costs at most a millisecond.
                self.space.wait_for(&mut guard, Duration::from_millis(1));
            }
        };
        self.blocked.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Wakes every parked producer (shutdown).
    pub(crate) fn release_blocked(&self) {
        let _guard = self.space_lock.lock();
        self.space.notify_all();
    }
}

/// Jump consistent hash (Lamping & Veach): maps `key` to one of `buckets` so that growing
/// from `n` to `n + 1` buckets moves only about `1 / (n + 1)` of the keys.
pub(crate) fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    debug_assert!(buckets > 0);
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn jump_hash_stays_in_range_and_moves_few_keys(key: u64, n in 1u32..1000) {
            let a = jump_hash(key, n);
            prop_assert!(a < n);
            let b = jump_hash(key, n + 1);
            // A key either stays or moves to the new bucket.
            prop_assert!(b == a || b == n);
        }
    }

    #[test]
    fn jump_hash_spreads_keys() {
        let mut counts = [0u32; 16];
        for k in 0..160_000u64 {
            counts[jump_hash(xxhash_rust::xxh3::xxh3_64(&k.to_le_bytes()), 16) as usize] += 1;
        }
        for c in counts {
            assert!((8_000..12_000).contains(&c), "{counts:?}");
        }
    }
}
