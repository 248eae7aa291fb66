//! The state word: the bus's closing bit and its routing version, in one atomic.
//!
//! # The handshake
//! A producer takes its reservation on a shard (a read-modify-write of the shard's counters,
//! then a `SeqCst` fence; see `shard::Reservation`) *before* it reads the state word. Shutdown
//! and resizes change the state word and issue a `SeqCst` fence *before* they read the
//! shards' counts. The two fences are ordered one way or the other, so either the closer (or
//! resizer) sees the reservation, or the producer sees the new state word:
//! - shutdown sets the closing bit, then waits for every reservation it sees to be finished;
//!   a producer that missed its reservation being seen reads the bit and refuses the event,
//!   so no event is stranded in a ring nobody drains;
//! - a resize publishes the new routing table, bumps the version, then waits for the old
//!   parity's reservations it sees to be pushed; a producer whose table is older than the
//!   version it reads takes its reservation back and routes again.
//!
//! Who writes: shutdown and `Drop` (the closing bit, once), resizes (the version, under the
//! scaling lock). Everyone reads.

use crate::sync::{fence, AtomicU64, Ordering::SeqCst};

/// The closing bit; the other bits are the routing version.
const CLOSING: u64 = 1 << 63;

/// What a producer learns from the state word after taking its reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The producer's table is current: push.
    Route,
    /// A resize published a newer table: take the reservation back and route again.
    Reroute,
    /// The bus is closing: take the reservation back and refuse the event.
    Closing,
}

/// The closing bit and the routing version.
#[derive(Debug)]
pub(crate) struct StateWord(AtomicU64);

impl StateWord {
    pub(crate) fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Producer side, after its reservation: may it push with a table of `version`?
    ///
    /// A resize publishes its table before it bumps the version, so a table one step ahead
    /// of the state word is current already; only an older one must be reloaded.
    #[inline]
    pub(crate) fn admit(&self, version: u64) -> Admission {
        let state = self.0.load(SeqCst);
        if state == version || state.wrapping_add(1) == version {
            Admission::Route
        } else if state & CLOSING != 0 {
            Admission::Closing
        } else {
            Admission::Reroute
        }
    }

    /// True once the bus is closing.
    pub(crate) fn closing(&self) -> bool {
        self.0.load(SeqCst) & CLOSING != 0
    }

    /// Sets the closing bit. Counts read after this see every reservation of a producer that
    /// was admitted.
    pub(crate) fn close(&self) {
        self.0.fetch_or(CLOSING, SeqCst);
        fence(SeqCst);
    }

    /// Bumps the routing version, after the new table was published. Counts read after this
    /// see every reservation of a producer that was admitted with the old table.
    pub(crate) fn bump_version(&self) {
        self.0.fetch_add(1, SeqCst);
        fence(SeqCst);
    }
}

#[cfg(all(test, loom))]
mod loom_state {
    //! The reservation/state-word handshake: an admitted producer's reservation is always
    //! seen by the closer or resizer that changed the state word.

    use super::{Admission, StateWord};
    use crate::shard::{Reservation, ShardCounters};
    use loom::sync::Arc;
    use loom::thread;

    /// Shutdown against one producer: either the producer is refused, or shutdown sees its
    /// reservation (and so waits for its event).
    #[test]
    fn shutdown_sees_every_admitted_reservation() {
        loom::model(|| {
            let state = Arc::new(StateWord::new());
            let counters = Arc::new(ShardCounters::default());
            let producer = {
                let (state, counters) = (state.clone(), counters.clone());
                thread::spawn(move || {
                    let reservation = Reservation::take(&counters, 0);
                    match state.admit(0) {
                        Admission::Route => {
                            reservation.pushed();
                            true
                        }
                        Admission::Closing => false,
                        Admission::Reroute => unreachable!("no resize in this model"),
                    }
                })
            };
            state.close();
            let seen = counters.reserved();
            let admitted = producer.join().unwrap();
            if admitted {
                assert_eq!(
                    seen, 1,
                    "shutdown missed an admitted producer's reservation"
                );
            }
        });
    }

    /// A resize against one producer routing with the old table (version 0, parity 0):
    /// either the producer reroutes, or the resizer sees it reserved under the old parity,
    /// so it waits for its push before it records the donor's hand-off count.
    #[test]
    fn a_resize_sees_every_producer_admitted_with_the_old_table() {
        loom::model(|| {
            let state = Arc::new(StateWord::new());
            let counters = Arc::new(ShardCounters::default());
            let producer = {
                let (state, counters) = (state.clone(), counters.clone());
                thread::spawn(move || {
                    let reservation = Reservation::take(&counters, 0);
                    match state.admit(0) {
                        Admission::Route => {
                            reservation.pushed();
                            true
                        }
                        Admission::Reroute => false,
                        Admission::Closing => unreachable!("no shutdown in this model"),
                    }
                })
            };
            state.bump_version();
            // The resizer waits while `pushing(0)` is non-zero and then records `reserved()`:
            // a reservation it sees is waited for, and then counted.
            let seen = counters.reserved();
            let admitted = producer.join().unwrap();
            if admitted {
                assert_eq!(seen, 1, "the resizer missed a producer on the old table");
            }
        });
    }
}
