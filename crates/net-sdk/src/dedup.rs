//! [`Dedup`]: a bounded seen-set of dedup ids that drops events a consumer already received.

use lru::LruCache;
use net_adapter::StoredEvent;
use std::num::NonZeroUsize;

/// Drops copies of events a consumer has already seen, by dedup id.
///
/// Delivery is at least once: a batch retried after a lost acknowledgement, a consumer that
/// restarts from an older cursor, or a backend without native dedup can hand the same logical
/// event out twice. Every event the bus stores carries a dedup id that is the same on every
/// delivery of that event, so remembering the recent ids is enough to drop the copies.
///
/// The set keeps the most recently seen ids, up to its capacity, and forgets the least
/// recently seen first (an id seen again counts as recent again). Events without a dedup id
/// always pass. Works with every adapter; [`crate::EventStream`] uses one internally.
///
/// # Sizing
///
/// A copy is only recognised while its original's id is still remembered, so the capacity
/// must cover every event that can arrive between an original and its copy:
///
/// > capacity ≥ peak events per second × out-of-order tolerance in seconds
///
/// where the tolerance is the longest time between an event and its redelivered copy (for a
/// retried batch: the bus's longest retry delay plus the adapter's timeout). For example,
/// 20 000 events/s with copies at most 2 s apart needs at least 40 000. The default, 4096,
/// suits a few thousand events per second with sub-second retries. Each remembered id costs
/// about 100 bytes.
///
/// ```
/// use net_sdk::Dedup;
///
/// let mut dedup = Dedup::with_capacity(40_000);
/// assert!(dedup.is_new("1f:0:0:0"));
/// assert!(!dedup.is_new("1f:0:0:0"));
/// assert_eq!(dedup.dropped(), 1);
/// ```
#[derive(Debug)]
pub struct Dedup {
    seen: LruCache<String, ()>,
    dropped: u64,
}

impl Dedup {
    /// The capacity of [`Dedup::new`].
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// A filter remembering the last [`Dedup::DEFAULT_CAPACITY`] ids.
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// A filter remembering the last `capacity` ids (at least one; see the sizing rule).
    ///
    /// Memory is taken as ids arrive, never up front, so a large capacity costs nothing
    /// until that many ids were seen.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut seen = LruCache::unbounded();
        seen.resize(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN));
        Self { seen, dropped: 0 }
    }

    /// How many ids the filter remembers at most.
    pub fn capacity(&self) -> usize {
        self.seen.cap().get()
    }

    /// How many ids it remembers now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when it remembers no id.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// How many copies it has dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// True the first time `dedup_id` is seen (within the remembered window); false, and
    /// counted as dropped, for a copy. Either way the id becomes the most recent.
    pub fn is_new(&mut self, dedup_id: &str) -> bool {
        if self.seen.get(dedup_id).is_some() {
            self.dropped += 1;
            false
        } else {
            self.seen.put(dedup_id.to_owned(), ());
            true
        }
    }

    /// True when `event` should be processed: it has no dedup id, or its id is new.
    pub fn accept(&mut self, event: &StoredEvent) -> bool {
        event.dedup_id.as_deref().is_none_or(|id| self.is_new(id))
    }

    /// Keeps the events of `events` that [`Dedup::accept`] accepts, in order.
    pub fn filter(&mut self, mut events: Vec<StoredEvent>) -> Vec<StoredEvent> {
        events.retain(|event| self.accept(event));
        events
    }

    /// Forgets every id (the dropped count stays).
    pub fn clear(&mut self) {
        self.seen.clear();
    }
}

impl Default for Dedup {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Dedup;
    use bytes::Bytes;
    use net_adapter::StoredEvent;

    fn event(id: &str, dedup: Option<&str>) -> StoredEvent {
        StoredEvent {
            id: id.to_owned(),
            raw: Bytes::from_static(b"{}"),
            insertion_ts: 0,
            shard_id: 0,
            dedup_id: dedup.map(str::to_owned),
        }
    }

    /// Feeds `ids` through a filter of `capacity` and compares which were new.
    fn check(capacity: usize, ids: &[&str], expected: &[bool]) {
        let mut dedup = Dedup::with_capacity(capacity);
        let got: Vec<bool> = ids.iter().map(|id| dedup.is_new(id)).collect();
        assert_eq!(got, expected, "capacity {capacity}, ids {ids:?}");
        let dropped = expected.iter().filter(|new| !**new).count() as u64;
        assert_eq!(dedup.dropped(), dropped);
        assert!(dedup.len() <= dedup.capacity());
    }

    #[test]
    fn copies_within_the_window_are_dropped() {
        check(
            4,
            &["a", "b", "a", "c", "b"],
            &[true, true, false, true, false],
        );
        // Beyond the capacity the oldest id is forgotten, and its copy passes.
        check(2, &["a", "b", "c", "a"], &[true, true, true, true]);
        // Seeing an id again makes it recent, so it outlives ids seen once after it.
        check(
            2,
            &["a", "b", "a", "c", "a", "b"],
            &[true, true, false, true, false, true],
        );
        check(0, &["a", "a", "b", "a"], &[true, false, true, true]);
    }

    #[test]
    fn a_huge_capacity_allocates_nothing_up_front() {
        // Allocating room for these up front would abort the process.
        for capacity in [usize::MAX / 2, usize::MAX] {
            let mut dedup = Dedup::with_capacity(capacity);
            assert_eq!(dedup.capacity(), capacity);
            assert!(dedup.is_new("a"));
            assert!(!dedup.is_new("a"));
        }
        check(usize::MAX / 2, &["a", "b", "a"], &[true, true, false]);
    }

    #[test]
    fn defaults_and_events() {
        let mut dedup = Dedup::default();
        assert_eq!(dedup.capacity(), 4096);
        assert!(dedup.is_empty());
        let events = vec![
            event("1-0", Some("n:0:0:0")),
            event("1-1", Some("n:0:0:1")),
            event("2-0", Some("n:0:0:0")),
            event("2-1", None),
            event("2-2", None),
        ];
        let kept: Vec<String> = dedup.filter(events).into_iter().map(|e| e.id).collect();
        assert_eq!(kept, ["1-0", "1-1", "2-1", "2-2"]);
        assert_eq!(dedup.dropped(), 1);
        dedup.clear();
        assert!(dedup.accept(&event("3-0", Some("n:0:0:0"))));
    }
}
