//! [`Property`]: the names of the contract properties the kit checks.

use super::{checks, ConformanceFailure, Fixture, Outcome};
use std::fmt;

/// Defines [`Property`] and its tables from one list, so a name, its check and its
/// requirement cannot drift apart.
macro_rules! properties {
    ($(
        $(#[$doc:meta])*
        $variant:ident => $check:ident, requires: $requires:expr;
    )*) => {
        /// One property of the adapter contract, as the kit names and checks it.
        ///
        /// [`Property::name`] is the name of the check function and of the test that
        /// [`conformance_suite!`](crate::conformance_suite) generates for it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Property {
            $( $(#[$doc])* $variant, )*
        }

        impl Property {
            /// Every property, in the order the kit runs them.
            pub const ALL: &'static [Property] = &[$(Property::$variant),*];

            /// The property's name: the name of its check function and of its test.
            pub fn name(self) -> &'static str {
                match self {
                    $(Property::$variant => stringify!($check),)*
                }
            }

            /// The hook or capability the property needs beyond the trait, if any. Without it
            /// the property is reported as skipped.
            pub fn requires(self) -> Option<&'static str> {
                match self {
                    $(Property::$variant => $requires,)*
                }
            }

            /// Runs this property's check against `fixture`.
            pub async fn check(self, fixture: &dyn Fixture) -> Result<Outcome, ConformanceFailure> {
                match self {
                    $(Property::$variant => checks::$check(fixture).await,)*
                }
            }
        }
    };
}

properties! {
    /// Events of one shard come back in the order their batches were delivered, and in
    /// batch order within each batch.
    OrderWithinShard => order_within_shard, requires: None;
    /// Payload bytes, insertion timestamp and shard id come back exactly as written (for the
    /// largest shard id too), event ids are distinct, and a dedup id, when present, is the
    /// batch's.
    EventsRoundTrip => events_round_trip, requires: None;
    /// Every stored event carries the dedup id of its batch position.
    DedupIdsRoundTrip => dedup_ids_round_trip, requires: Some("capability `persists_dedup_ids`");
    /// Under a flood of batches over several shards, every call returns within the deadline;
    /// a full backend answers with a retryable error such as `Backpressure`, never by hanging.
    NeverBlocksIndefinitely => never_blocks_indefinitely, requires: None;
    /// A failure retrying cannot fix is reported as fatal (not retryable), promptly, and the
    /// batch is stored entirely or not at all.
    FatalErrorsClassified => fatal_errors_classified, requires: Some("hook `fail_next_batch_permanently`");
    /// Delivering a stored batch again (same value, an equal copy, or late after newer
    /// batches) succeeds and does not duplicate what a consumer sees.
    IdempotentRetryAfterOk => idempotent_retry_after_ok, requires: None;
    /// A batch whose write happened but whose call failed with a retryable error is stored
    /// once when retried.
    IdempotentRetryAfterError => idempotent_retry_after_error, requires: Some("hook `fail_next_batch_after_write`");
    /// A batch whose `on_batch` future was dropped after one, two or three polls is stored
    /// once when delivered again.
    IdempotentRetryAfterCancel => idempotent_retry_after_cancel, requires: None;
    /// A batch whose write happened but whose call timed out (or never completed and was
    /// dropped) is stored once when retried.
    IdempotentRetryAfterTimeout => idempotent_retry_after_timeout, requires: Some("hook `time_out_next_batch_after_write`");
    /// Batches written to several shards at once keep each shard's order, and no event
    /// lands on another shard.
    PerShardFifoUnderConcurrency => per_shard_fifo_under_concurrency, requires: None;
    /// After `shutdown`, `on_batch` returns `Shutdown` (on a used and an unused shard), and a
    /// second `shutdown` is harmless.
    ShutdownRejectsOnBatch => shutdown_rejects_on_batch, requires: None;
    /// After `shutdown`, `poll_shard` returns `Shutdown`, with and without a cursor.
    ShutdownRejectsPollShard => shutdown_rejects_poll_shard, requires: None;
    /// Paging with limits from 1 to past the end yields every event once, in order; no page
    /// exceeds its limit, and reading does not consume.
    PagingNoOverlapNoGap => paging_no_overlap_no_gap, requires: None;
    /// The id of every returned event is a cursor that resumes right after that event, and
    /// ids are stable across reads.
    EventIdResumesAfterEvent => event_id_resumes_after_event, requires: None;
    /// `has_more` is true exactly when entries remain after the returned cursor, including
    /// on an empty shard, on an exact fit and after new writes.
    PagingHasMoreTruthful => paging_has_more_truthful, requires: None;
    /// Limits 0, 1 and `usize::MAX` are safe: 0 returns nothing and moves past nothing,
    /// 1 returns one event, `usize::MAX` neither overflows nor restarts.
    PagingLimits => paging_limits, requires: None;
    /// Garbage, empty, huge and future cursors are rejected with `InvalidCursor`: never a
    /// panic, never a page read from the start.
    HostileCursorsRejected => hostile_cursors_rejected, requires: None;
    /// Corrupt stored entries are skipped and the cursor moves past them, even on a page made
    /// only of corrupt entries and at the end of a shard.
    CorruptEntriesSkipped => corrupt_entries_skipped, requires: Some("hook `inject_corrupt`");
    /// A cursor whose position retention trimmed gives an empty page and a moved cursor, then
    /// the earliest retained events.
    StaleCursorAfterRetention => stale_cursor_after_retention, requires: Some("hook `trim`");
    /// Readers polling while writers append see each shard's events once, in order, with no
    /// gap, and everything in the end.
    ConcurrentBatchesAndPolls => concurrent_batches_and_polls, requires: None;
    /// The first layout recorded wins, also among buses racing to record theirs; later
    /// `IfAbsent` writes are told the recorded one, and `Replace` replaces it.
    LayoutRecordedOnce => layout_recorded_once, requires: Some("capability `records_layout`");
}

impl Property {
    /// The property whose [`name`](Property::name) is `name`.
    pub fn from_name(name: &str) -> Option<Property> {
        Property::ALL.iter().copied().find(|p| p.name() == name)
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
