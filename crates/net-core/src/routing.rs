//! Routing: which shard an event goes to, and how that changes when shards are added or
//! removed.
//!
//! # The slot table
//! An event's 64-bit hash picks one of [`SLOTS`] slots (`hash & (SLOTS - 1)`); the table maps
//! each slot to an active shard id. A lookup is one mask and one load, and a resize moves only
//! the slots it must:
//! - adding a shard takes slots one at a time from the shards holding the most, until the new
//!   shard holds its fair share; keys move only from old shards to the new one;
//! - removing a shard hands its slots, one at a time, to the shards holding the fewest; keys
//!   move only from the removed shard.
//!
//! # Snapshots and versions
//! A [`Routing`] is immutable and published whole (an `ArcSwap`, loaded on every ingest).
//! Every snapshot carries a version, and the bus keeps the current version in an atomic next
//! to its closing flag. A producer counts its reservation on the shard under its snapshot's
//! version parity, *then* reads the version: if its snapshot is older, it takes the
//! reservation back and routes again with the new snapshot. The resizer publishes the
//! snapshot and bumps the version *then* reads the shards' counts. Both steps are SeqCst, so
//! every producer that routed with the old snapshot is either visible to the resizer or
//! routes again.
//!
//! # The hand-off fence
//! A key that moves keeps its order because the shard receiving it waits before its next
//! dispatch:
//! - after `add_shards`, the resizer waits until every reservation on a donor under the old
//!   parity was pushed or taken back, then records the donor's `reserved`; the new shard dispatches
//!   nothing until the donor has finished with that many events. Every event of a moved key
//!   pushed before the key's first event on the new shard lies below that count in the
//!   donor's ring, which is FIFO.
//! - before `remove_shards` publishes, each heir is fenced until the removed shard's worker
//!   has ended, which it does only once everything reserved on it was dispatched or dropped.
//!   The removed shard's own fences are cleared first, so fences point only from newer shards
//!   to older or retired ones and never form a cycle.
//!
//! # Shard ids
//! Ids are indices into an append-only list: a removed shard keeps its id (retired) so that
//! cursors naming it stay valid, and an id is never given to another shard.

use crate::shard::Shard;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// Number of routing slots. A power of two; at most this many shards can be active.
pub(crate) const SLOTS: usize = 4096;

/// One immutable routing state.
pub(crate) struct Routing {
    pub(crate) version: u64,
    /// Slot -> active shard id.
    pub(crate) table: Box<[u16]>,
    /// Every shard ever created, by id (active and retired).
    pub(crate) shards: Box<[Arc<Shard>]>,
}

impl Routing {
    /// The id of the shard `hash` routes to (an index into `shards`).
    #[inline]
    pub(crate) fn route(&self, hash: u64) -> usize {
        usize::from(self.table[(hash as usize) & (SLOTS - 1)])
    }
}

/// The published routing snapshot, shared by the bus (which routes and resizes through it)
/// and its stats (which read the shards from it).
///
/// Its `shards` is the bus's one list of shards: a shard is in it from the moment a resize
/// publishes the table that routes to it, so whoever walks the shards (`flush`, shutdown, the
/// stats) sees every shard an event may have been routed to.
#[derive(Clone)]
pub(crate) struct SharedRouting(Arc<ArcSwap<Routing>>);

impl SharedRouting {
    pub(crate) fn new(routing: Routing) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(routing)))
    }

    /// The current snapshot, cheaply (the hot path).
    #[inline]
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<Routing>> {
        self.0.load()
    }

    /// The current snapshot, as an owned `Arc`.
    pub(crate) fn load_full(&self) -> Arc<Routing> {
        self.0.load_full()
    }

    /// Replaces the snapshot.
    pub(crate) fn store(&self, routing: Routing) {
        self.0.store(Arc::new(routing));
    }

    /// Every shard ever created, by id (active and retired).
    pub(crate) fn shards(&self) -> Box<[Arc<Shard>]> {
        self.0.load().shards.clone()
    }
}

/// A snapshot with no shard and no slot, for stats that belong to no bus.
impl Default for SharedRouting {
    fn default() -> Self {
        Self::new(Routing {
            version: 0,
            table: Box::default(),
            shards: Box::default(),
        })
    }
}

impl std::fmt::Debug for SharedRouting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routing = self.0.load();
        f.debug_struct("SharedRouting")
            .field("version", &routing.version)
            .field("shards", &routing.shards.len())
            .finish()
    }
}

/// The initial table: `n` shards (ids `0..n`) sharing the slots round-robin.
pub(crate) fn initial_table(n: u16) -> Vec<u16> {
    (0..SLOTS)
        .map(|slot| (slot % usize::from(n)) as u16)
        .collect()
}

/// Active shard ids of `table`, with the slots each holds, ascending by id.
pub(crate) fn slot_counts(table: &[u16]) -> Vec<(u16, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for &id in table {
        *counts.entry(id).or_insert(0usize) += 1;
    }
    counts.into_iter().collect()
}

/// Gives `new_id` (not yet in `table`) its fair share of slots, taken one at a time from the
/// shards holding the most. Returns the ids that lost slots.
pub(crate) fn add_shard(table: &mut [u16], new_id: u16) -> Vec<u16> {
    let mut counts = slot_counts(table);
    let share = SLOTS / (counts.len() + 1);
    // Which slots of each donor to hand over: its last ones, so the choice is deterministic.
    let mut donors: Vec<u16> = Vec::new();
    for _ in 0..share {
        // The donor with the most slots (lowest id on ties).
        let Some(donor) = counts
            .iter_mut()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        else {
            break;
        };
        if donor.1 <= 1 {
            break;
        }
        donor.1 -= 1;
        donors.push(donor.0);
    }
    let mut lost = donors.clone();
    lost.sort_unstable();
    lost.dedup();
    for donor in donors {
        if let Some(slot) = table.iter().rposition(|&id| id == donor) {
            table[slot] = new_id;
        }
    }
    lost
}

/// Hands every slot of `old_id` to the remaining shards, one at a time to the one holding
/// the fewest. Returns the ids that gained slots. `table` must hold another shard.
pub(crate) fn remove_shard(table: &mut [u16], old_id: u16) -> Vec<u16> {
    let mut counts: Vec<(u16, usize)> = slot_counts(table)
        .into_iter()
        .filter(|&(id, _)| id != old_id)
        .collect();
    let mut gained = Vec::new();
    for slot in table.iter_mut().filter(|id| **id == old_id) {
        let Some(heir) = counts
            .iter_mut()
            .min_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)))
        else {
            break;
        };
        heir.1 += 1;
        *slot = heir.0;
        gained.push(heir.0);
    }
    gained.sort_unstable();
    gained.dedup();
    gained
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn balanced(table: &[u16]) -> bool {
        let counts = slot_counts(table);
        let min = counts.iter().map(|c| c.1).min().unwrap_or(0);
        let max = counts.iter().map(|c| c.1).max().unwrap_or(0);
        max - min <= 2
    }

    proptest! {
        /// Against a model: resizes keep every slot on an active shard, keep the load
        /// balanced, and move only the slots they must.
        #[test]
        fn resizes_move_only_what_they_must(start in 1u16..20, ops in prop::collection::vec(any::<bool>(), 0..30)) {
            let mut table = initial_table(start);
            let mut active: Vec<u16> = (0..start).collect();
            let mut next_id = start;
            for add in ops {
                let before = table.clone();
                if add || active.len() == 1 {
                    let lost = add_shard(&mut table, next_id);
                    for (slot, (&b, &a)) in before.iter().zip(&table).enumerate() {
                        prop_assert!(a == b || a == next_id, "slot {slot} moved between old shards");
                        if a != b {
                            prop_assert!(lost.contains(&b));
                        }
                    }
                    active.push(next_id);
                    next_id += 1;
                } else {
                    let victim = active.remove(active.len() / 2);
                    let gained = remove_shard(&mut table, victim);
                    for (&b, &a) in before.iter().zip(&table) {
                        prop_assert!(a == b || b == victim, "a slot of a kept shard moved");
                        prop_assert!(a != victim);
                        if a != b {
                            prop_assert!(gained.contains(&a));
                        }
                    }
                }
                let mut ids: Vec<u16> = slot_counts(&table).into_iter().map(|c| c.0).collect();
                ids.sort_unstable();
                let mut expect = active.clone();
                expect.sort_unstable();
                prop_assert_eq!(ids, expect);
                prop_assert!(balanced(&table));
            }
        }
    }

    #[test]
    fn adding_a_seventeenth_shard_moves_a_seventeenth_of_the_keys() {
        let mut table = initial_table(16);
        let before = table.clone();
        add_shard(&mut table, 16);
        let moved = before.iter().zip(&table).filter(|(a, b)| a != b).count();
        assert_eq!(moved, SLOTS / 17);
    }
}
