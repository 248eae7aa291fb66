//! Counters of a running node, shared by its tasks and read by [`crate::NetAdapter::stats`].

use std::sync::atomic::AtomicU64;

/// Counters of a node, read by [`crate::NetAdapter::stats`].
#[derive(Default)]
pub(crate) struct Counters {
    /// Batches stored for peers, after dedup.
    pub(crate) stored_batches: AtomicU64,
    /// Batches acknowledged as duplicates without storing.
    pub(crate) duplicate_batches: AtomicU64,
    /// Sessions established since start.
    pub(crate) sessions_established: AtomicU64,
    /// Bytes read from and written to sockets.
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Peers' batches this node's storage failed to store (answered with an error).
    pub(crate) storage_errors: AtomicU64,
    /// Attempts to store a batch repeated after a retryable storage error.
    pub(crate) storage_retries: AtomicU64,
}
