//! The checks, one public `async fn` per [`Property`](super::Property), grouped by what
//! they exercise.
//!
//! Every check takes a fresh fixture, writes batches whose payloads name the shard and the
//! sequence of each event (`s0#5` in evidence), and compares what a consumer would read back
//! with what was written. Checks must run inside a tokio runtime with timers enabled.

mod lifecycle;
mod reads;
mod retries;
mod writes;

pub use lifecycle::{
    layout_recorded_once, never_blocks_indefinitely, shutdown_rejects_on_batch,
    shutdown_rejects_poll_shard,
};
pub use reads::{
    corrupt_entries_skipped, event_id_resumes_after_event, hostile_cursors_rejected,
    paging_has_more_truthful, paging_limits, paging_no_overlap_no_gap,
    stale_cursor_after_retention,
};
pub use retries::{
    fatal_errors_classified, idempotent_retry_after_cancel, idempotent_retry_after_error,
    idempotent_retry_after_ok, idempotent_retry_after_timeout,
};
pub use writes::{
    concurrent_batches_and_polls, dedup_ids_round_trip, events_round_trip, order_within_shard,
    per_shard_fifo_under_concurrency,
};
