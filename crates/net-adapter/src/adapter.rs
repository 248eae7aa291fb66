//! The [`Adapter`] trait and its contract.

use crate::{AdapterError, Batch, LayoutWrite, ShardPollResult, StreamLayout};
use async_trait::async_trait;
use std::sync::Arc;

/// The persistence and transport plug-in of the event bus.
///
/// The bus batches events per shard and hands each batch to [`Adapter::on_batch`]; consumers
/// read them back through [`Adapter::poll_shard`]. Every implementation must hold to this
/// contract (the conformance kit checks it):
///
/// 1. Append in received order within a shard.
/// 2. Never block indefinitely: return [`AdapterError::Backpressure`] when full.
/// 3. Fail fast: non-retryable failures return [`AdapterError::Fatal`].
/// 4. Idempotent under retry: a batch delivered again (same `process_nonce`, `shard_id`,
///    `sequence_start`) after any outcome does not duplicate what a consumer sees.
/// 5. Per-shard FIFO.
/// 6. After [`Adapter::shutdown`], `on_batch` and `poll_shard` return
///    [`AdapterError::Shutdown`].
/// 7. Pages: cursors are exclusive, pages never overlap or skip, `has_more` is truthful, any
///    `limit` is safe, and a cursor the adapter never produced is
///    [`AdapterError::InvalidCursor`] (never a panic, never a silent restart from zero).
///    The `id` of a returned [`crate::StoredEvent`] is itself a valid cursor meaning
///    "right after this event"; the bus relies on this to resume exactly where a page
///    truncated by its merge stopped.
/// 8. Corrupt stored entries are skipped and the cursor still advances past them.
/// 9. A cursor whose position retention already trimmed gives an empty page and a cursor
///    moved to just before the earliest retained entry, not an error.
/// 10. Calls for different shards may run concurrently, and polls may run while writing.
///
/// The bus calls `on_batch` with at most one batch in flight per shard.
#[async_trait]
pub trait Adapter: Send + Sync {
    /// Prepares the adapter (connects, creates streams). Called once by the bus before the
    /// first batch; calling it again must be harmless.
    async fn init(&mut self) -> Result<(), AdapterError> {
        Ok(())
    }

    /// Stores (or forwards) every event of `batch`, atomically: all or nothing.
    ///
    /// The batch arrives behind an `Arc` so the bus can retry the very same value without
    /// copying it.
    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError>;

    /// Returns up to `limit` events of `shard_id` stored after `cursor` (`None` = from the
    /// earliest retained event).
    async fn poll_shard(
        &self,
        shard_id: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError>;

    /// Barrier: returns once everything accepted by `on_batch` so far is durable.
    async fn flush(&self) -> Result<(), AdapterError>;

    /// Drains and stops. Afterwards `on_batch` and `poll_shard` return
    /// [`AdapterError::Shutdown`]. Calling it twice is harmless.
    async fn shutdown(&self) -> Result<(), AdapterError>;

    /// A short name for logs and errors ("memory", "redis", ...).
    fn name(&self) -> &str;

    /// A cheap liveness check of the backend.
    async fn is_healthy(&self) -> bool {
        true
    }

    /// Records `layout` in the backend as `write` says and returns the layout recorded there
    /// afterwards: with [`LayoutWrite::IfAbsent`], the one an earlier bus recorded if there is
    /// one (the bus refuses to start when it differs from its own), else `layout`.
    ///
    /// An adapter that keeps no layout returns `Ok(None)` (the default); one that does must
    /// make `IfAbsent` atomic, so that of two buses opening a new stream at once exactly one
    /// layout wins and both are told which.
    async fn record_layout(
        &self,
        _layout: StreamLayout,
        _write: LayoutWrite,
    ) -> Result<Option<StreamLayout>, AdapterError> {
        Ok(None)
    }
}

/// Lets a caller keep a handle on an adapter it gives to the bus (`Arc<MyAdapter>`).
///
/// `init` is forwarded only while the `Arc` is unique; otherwise the owner of the other
/// handles is responsible for having initialised the adapter.
#[async_trait]
impl<A: Adapter + ?Sized> Adapter for Arc<A> {
    async fn init(&mut self) -> Result<(), AdapterError> {
        match Arc::get_mut(self) {
            Some(inner) => inner.init().await,
            None => Ok(()),
        }
    }

    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        (**self).on_batch(batch).await
    }

    async fn poll_shard(
        &self,
        shard_id: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        (**self).poll_shard(shard_id, cursor, limit).await
    }

    async fn flush(&self) -> Result<(), AdapterError> {
        (**self).flush().await
    }

    async fn shutdown(&self) -> Result<(), AdapterError> {
        (**self).shutdown().await
    }

    fn name(&self) -> &str {
        (**self).name()
    }

    async fn is_healthy(&self) -> bool {
        (**self).is_healthy().await
    }

    async fn record_layout(
        &self,
        layout: StreamLayout,
        write: LayoutWrite,
    ) -> Result<Option<StreamLayout>, AdapterError> {
        (**self).record_layout(layout, write).await
    }
}
