//! A shard: its bounded ring, the counters producers and its worker share, the worker's
//! wake-up mark, and the hand-off fences of resizes.
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
//! # Who touches what ([`ShardCounters`])
//! - Producers: take a [`Reservation`] (`reserved += 1` under their routing parity) before
//!   they push; the reservation is either marked pushed (`pushed += 1`) or dropped, which takes
//!   it back (`reserved -= 1`). Then they wake the worker only if `reserved` reached the
//!   worker's `wake_at` mark.
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
//! (one event when idle; the rest of a batch while it fills one). It stores the mark, issues a
//! `SeqCst` fence, then reads `reserved`. A producer increments `reserved`, issues a `SeqCst`
//! fence (the one [`Reservation::take`] issues for the state word too), and after its push
//! reads `reserved` of the other parity and the mark. The two fences are ordered one way or
//! the other: either the worker sees the reservation and does not sleep, or the producer sees
//! the mark. With several producers, the one whose fence comes last sees every reservation
//! and the mark, so a due wake-up is never missed, even across the two parities of a resize
//! (the loom model `loom_wake` checks both). A worker filling a batch is woken once per batch
//! rather than once per event. `Notify` keeps a permit if the wake comes before the wait, and
//! the worker never sleeps past its batch deadline or a short idle period.

use crate::sync::{fence, AtomicU64, Ordering as Order};
use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// Per-shard bookkeeping shared by producers and the shard's batch worker.
///
/// - `reserved`: incremented by a producer *before* it pushes (and taken back if the push is
///   refused: see [`Reservation`]), so it bounds every event that is or will be in the ring.
/// - `done`: events that left the bus's hands: dispatched, dropped or evicted.
/// - `in_worker`: events the worker popped and has not finished with.
/// - `reserved_by_parity[v % 2]` / `pushed_by_parity[v % 2]`: reservations and successful
///   pushes of producers that routed with routing version `v`; their difference is the
///   number of those producers still pushing.
///
/// `reserved - done` is the shard's depth. `flush` waits for `done` to catch up with the
/// `reserved` it saw; shutdown waits for `done == reserved`.
///
/// The fields producers touch on every event share one cache line, and the worker's own
/// fields sit on the next one, so a producer's event costs one shared line besides the ring.
#[derive(Debug)]
#[repr(C, align(128))]
pub(crate) struct ShardCounters {
    /// Reservations, split by the parity of the routing version the producer routed with
    /// (see [`ShardCounters::reserved`]).
    pub(crate) reserved_by_parity: [AtomicU64; 2],
    /// Successful pushes, split the same way. `reserved_by_parity[p] - pushed_by_parity[p]`
    /// is the number of producers still between their reservation and the end of their push
    /// under parity `p`; a resize waits for the old parity's difference to reach zero.
    pub(crate) pushed_by_parity: [AtomicU64; 2],
    /// The `reserved` count at which a producer must wake the sleeping worker (`u64::MAX`:
    /// the worker is not waiting).
    pub(crate) wake_at: AtomicU64,
    _producer_line: [u64; 11],
    pub(crate) done: AtomicU64,
    pub(crate) in_worker: AtomicU64,
}

// The fields producers write share the first cache line; the worker's start two lines on, as
// adjacent-line prefetchers fetch lines in pairs. (loom's atomics are larger: no layout there.)
#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(offset_of!(ShardCounters, wake_at) + size_of::<AtomicU64>() <= 64);
    assert!(offset_of!(ShardCounters, done) == 128);
    assert!(offset_of!(ShardCounters, in_worker) + size_of::<AtomicU64>() <= 192);
};

impl Default for ShardCounters {
    fn default() -> Self {
        Self {
            reserved_by_parity: [AtomicU64::new(0), AtomicU64::new(0)],
            pushed_by_parity: [AtomicU64::new(0), AtomicU64::new(0)],
            wake_at: AtomicU64::new(u64::MAX),
            _producer_line: [0; 11],
            done: AtomicU64::new(0),
            in_worker: AtomicU64::new(0),
        }
    }
}

impl ShardCounters {
    /// Worker side: publishes the mark `target` and says whether the worker should sleep
    /// (fewer than `target` reservations so far). A producer whose reservation this misses
    /// sees the mark (see the module documentation).
    pub(crate) fn arm_wake(&self, target: u64) -> bool {
        self.wake_at.store(target, Order::SeqCst);
        fence(Order::SeqCst);
        self.reserved() < target
    }

    /// Worker side: withdraws the mark once awake.
    pub(crate) fn disarm_wake(&self) {
        self.wake_at.store(u64::MAX, Order::SeqCst);
    }

    /// Reservations of both parities: every event that is or will be in the ring, plus the
    /// ones already taken out.
    pub(crate) fn reserved(&self) -> u64 {
        let [a, b] = &self.reserved_by_parity;
        a.load(Order::SeqCst).wrapping_add(b.load(Order::SeqCst))
    }

    /// Producers still pushing under routing parity `parity`.
    pub(crate) fn pushing(&self, parity: usize) -> u64 {
        // Pushed first: a push counted there was reserved earlier, so the difference never
        // underflows below the true number.
        let pushed = self.pushed_by_parity[parity].load(Order::SeqCst);
        self.reserved_by_parity[parity]
            .load(Order::SeqCst)
            .saturating_sub(pushed)
    }

    pub(crate) fn depth(&self) -> u64 {
        let done = self.done.load(Order::Acquire);
        self.reserved().saturating_sub(done)
    }

    /// Events still in the ring: reserved, not yet taken by the worker nor evicted.
    pub(crate) fn queued(&self) -> u64 {
        let taken = self.done.load(Order::Acquire) + self.in_worker.load(Order::Acquire);
        self.reserved().saturating_sub(taken)
    }
}

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

    /// Called by a producer after a successful push: marks the reservation pushed and wakes
    /// the worker if it waits for no more than the reservations so far.
    #[inline]
    pub(crate) fn pushed(&self, reservation: Reservation<'_>) {
        if reservation.pushed() {
            self.wake.notify_one();
        }
    }

    /// Wakes the worker unconditionally (flush, shutdown, a parked producer).
    pub(crate) fn wake_worker(&self) {
        self.counters.disarm_wake();
        self.wake.notify_one();
    }

    /// Worker side: sleeps until at least `need` events are queued beyond those the worker
    /// already took, until `wake_worker` is called, or until `max` passes.
    pub(crate) async fn wait_for_events(&self, need: usize, max: Duration) {
        let c = &self.counters;
        let taken = c.done.load(Order::SeqCst) + c.in_worker.load(Order::SeqCst);
        let target = taken + need.max(1) as u64;
        if c.arm_wake(target) {
            let _ = tokio::time::timeout(max, self.wake.notified()).await;
        }
        c.disarm_wake();
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
                c.done.load(Order::SeqCst) < (*count).min(c.reserved())
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

/// A producer's reservation of one place on a shard, under the parity of the routing version
/// it routed with.
///
/// Every reservation ends as a push ([`Reservation::pushed`]) or is taken back when dropped:
/// a refused push, a stale table, a closing bus, or a panic between the two all take it back
/// by construction, so `flush`, shutdown and resizes never wait for an event that will not
/// come.
#[must_use = "a reservation is taken back as soon as it is dropped"]
#[derive(Debug)]
pub(crate) struct Reservation<'a> {
    counters: &'a ShardCounters,
    parity: usize,
    /// Reservations under `parity`, this one included.
    count: u64,
}

impl<'a> Reservation<'a> {
    /// Counts a reservation on `counters` under `parity` (0 or 1), then issues the `SeqCst`
    /// fence that both the state word's handshake and the wake-up handshake rely on (see the
    /// module documentation and `state`).
    #[inline]
    pub(crate) fn take(counters: &'a ShardCounters, parity: usize) -> Self {
        let count = counters.reserved_by_parity[parity].fetch_add(1, Order::SeqCst) + 1;
        fence(Order::SeqCst);
        Self {
            counters,
            parity,
            count,
        }
    }

    /// The event is in the ring: counts the push and says whether the worker must be woken
    /// (the reservations so far reached its mark, and this producer is the one to take it).
    #[inline]
    pub(crate) fn pushed(self) -> bool {
        let Self {
            counters,
            parity,
            count,
        } = self;
        std::mem::forget(self);
        counters.pushed_by_parity[parity].fetch_add(1, Order::SeqCst);
        // Both loads follow the fence of `take`: the other parity only matters right after a
        // resize, and reading it is cheap, as it shares the cache line just written.
        let reserved =
            count.wrapping_add(counters.reserved_by_parity[parity ^ 1].load(Order::Relaxed));
        reserved >= counters.wake_at.load(Order::Relaxed)
            && counters.wake_at.swap(u64::MAX, Order::SeqCst) != u64::MAX
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.counters.reserved_by_parity[self.parity].fetch_sub(1, Order::SeqCst);
    }
}

#[cfg(all(test, loom))]
mod loom_wake {
    //! The wake-up handshake: a worker that decides to sleep is always woken by a producer
    //! whose reservation reaches its mark, and by one producer only.

    use super::{Reservation, ShardCounters};
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    /// Runs producers (one per parity in `parities`) against a worker waiting for `target`
    /// reservations, and checks that a sleeping worker is woken exactly once.
    fn check(parities: &'static [usize], target: u64) {
        loom::model(move || {
            let counters = Arc::new(ShardCounters::default());
            let wakes = Arc::new(AtomicUsize::new(0));
            let producers: Vec<_> = parities
                .iter()
                .map(|&parity| {
                    let (counters, wakes) = (counters.clone(), wakes.clone());
                    thread::spawn(move || {
                        if Reservation::take(&counters, parity).pushed() {
                            wakes.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            let sleeps = counters.arm_wake(target);
            for producer in producers {
                producer.join().unwrap();
            }
            let wakes = wakes.load(Ordering::Relaxed);
            assert!(wakes <= 1, "the worker was woken {wakes} times");
            if sleeps {
                assert_eq!(wakes, 1, "a due wake-up was missed");
            }
        });
    }

    #[test]
    fn one_producer_wakes_an_idle_worker() {
        check(&[0], 1);
    }

    #[test]
    fn two_producers_of_one_parity_wake_a_worker_waiting_for_both() {
        check(&[0, 0], 2);
    }

    /// Right after a resize, producers of both routing parities feed one shard; each counts
    /// the other parity with a relaxed load.
    #[test]
    fn producers_of_both_parities_wake_a_worker_waiting_for_both() {
        check(&[0, 1], 2);
    }
}
