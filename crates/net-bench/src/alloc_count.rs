//! A counting global allocator: the system allocator plus a live-bytes counter.
//!
//! The heap rows need to know how many bytes the bus keeps per queued event. Every
//! allocation goes to [`System`] unchanged; while counting is switched on (see [`Counting`]),
//! the requested sizes of allocations are added to a live-bytes counter and those of
//! deallocations subtracted. Counting is off by default so that the throughput rows do not
//! pay for a shared atomic on every allocation: the only cost then is a relaxed load of a
//! flag that no thread writes.
//!
//! Sizes are the `Layout` sizes the program asked for, not what the allocator rounds them up
//! to, so the figures are a lower bound of the resident memory.
//!
//! This is the only module of the crate with `unsafe` code: implementing [`GlobalAlloc`]
//! requires it. Each unsafe operation forwards to `System` with the arguments the caller
//! handed in, so the caller's guarantees carry over unchanged.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

/// The process's allocator: [`System`] with optional counting.
#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Whether allocations are being counted.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Bytes allocated minus bytes freed while counting was on.
static LIVE: AtomicI64 = AtomicI64::new(0);

/// The system allocator, counting live bytes while [`ENABLED`] is set.
struct CountingAlloc;

impl CountingAlloc {
    /// Adds `delta` bytes to the live counter when counting is on.
    #[inline]
    fn record(delta: i64) {
        if ENABLED.load(Relaxed) {
            LIVE.fetch_add(delta, Relaxed);
        }
    }
}

/// A `usize` size as a signed delta (sizes above `i64::MAX` cannot be allocated anyway).
#[inline]
fn signed(size: usize) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

// SAFETY: every method forwards to `System`, which upholds the `GlobalAlloc` contract, with
// the caller's own pointer and layout arguments; the bookkeeping around the calls touches
// only atomics and never allocates, so it cannot re-enter the allocator.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller guarantees `layout` has a non-zero size, as `System` requires.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            Self::record(signed(layout.size()));
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`: the caller guarantees a non-zero size.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            Self::record(signed(layout.size()));
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` came from this allocator with `layout`, and
        // every pointer this allocator hands out came from `System` with the same layout.
        unsafe { System.dealloc(ptr, layout) };
        Self::record(-signed(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `ptr` is live with `layout` (allocated by `System`,
        // see `dealloc`) and that `new_size` is non-zero and does not overflow when rounded.
        let new_ptr = unsafe { System.realloc(ptr, layout, new_size) };
        if !new_ptr.is_null() {
            Self::record(signed(new_size) - signed(layout.size()));
        }
        new_ptr
    }
}

/// While alive, allocations of every thread are counted; dropping it stops counting.
///
/// Only one should exist at a time: the counter is process-wide.
#[derive(Debug)]
pub(crate) struct Counting {
    /// The live-bytes counter when counting started.
    start: i64,
}

impl Counting {
    /// Switches counting on.
    pub(crate) fn start() -> Self {
        let start = LIVE.load(Relaxed);
        ENABLED.store(true, Relaxed);
        Self { start }
    }

    /// Bytes allocated minus bytes freed since [`Counting::start`], by every thread.
    ///
    /// Memory allocated before counting started and freed since then makes this smaller, so
    /// measure around work that allocates what it frees.
    pub(crate) fn live_bytes(&self) -> i64 {
        LIVE.load(Relaxed) - self.start
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        ENABLED.store(false, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::{Counting, LIVE};
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::{Mutex, MutexGuard, PoisonError};

    /// Serialises the tests that switch counting on (the counter is process-wide).
    static COUNTER_IN_USE: Mutex<()> = Mutex::new(());

    /// Takes the counter for one test.
    fn exclusive() -> MutexGuard<'static, ()> {
        COUNTER_IN_USE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The blocks the tests allocate are this large, so that what other tests of the crate
    /// allocate on their threads meanwhile (well under a megabyte each) stays within
    /// [`NOISE`].
    const BLOCK: usize = 64 * 1024 * 1024;

    /// The most that other tests' allocations may add or take while one of these counts.
    const NOISE: i64 = 4 * 1024 * 1024;

    /// Runs `work` while counting and checks that the live bytes it leaves behind are
    /// `expected`, give or take [`NOISE`]; returns what `work` returned.
    fn check<T>(work: impl FnOnce() -> T, expected: i64) -> T {
        let counting = Counting::start();
        let kept = work();
        let live = counting.live_bytes();
        drop(counting);
        assert!(
            (expected - NOISE..=expected + NOISE).contains(&live),
            "expected about {expected} live bytes, counted {live}"
        );
        kept
    }

    #[test]
    fn alloc_and_dealloc_are_counted() {
        let _counter = exclusive();
        let block = check(|| vec![1u8; BLOCK], BLOCK as i64);
        check(move || drop(block), -(BLOCK as i64));
    }

    #[test]
    fn zeroed_allocations_are_counted() {
        let _counter = exclusive();
        let block = check(|| vec![0u8; BLOCK], BLOCK as i64);
        assert_eq!((block[0], block[BLOCK - 1]), (0, 0));
    }

    #[test]
    fn realloc_counts_the_difference() {
        let _counter = exclusive();
        let mut block = vec![7u8; BLOCK];
        let mut block = check(
            move || {
                block.reserve_exact(BLOCK);
                block
            },
            BLOCK as i64,
        );
        assert_eq!((block.len(), block[0], block[BLOCK - 1]), (BLOCK, 7, 7));
        check(
            move || {
                block.truncate(16);
                block.shrink_to_fit();
                block
            },
            16 - 2 * BLOCK as i64,
        );
    }

    #[test]
    fn nothing_is_counted_while_off() {
        let _counter = exclusive();
        let before = LIVE.load(Relaxed);
        drop(vec![3u8; BLOCK]);
        assert_eq!(LIVE.load(Relaxed), before);
    }
}
