//! [`NoopAdapter`]: accepts and discards everything.

use crate::{Adapter, AdapterError, Batch, ShardPollResult};
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Discards every batch. Polls return empty pages.
///
/// The default adapter: useful for benchmarks and for trying the API.
#[derive(Debug, Default)]
pub struct NoopAdapter {
    shut_down: AtomicBool,
}

impl NoopAdapter {
    /// A new no-op adapter.
    pub fn new() -> Self {
        Self::default()
    }

    fn check_open(&self) -> Result<(), AdapterError> {
        if self.shut_down.load(Ordering::Acquire) {
            Err(AdapterError::Shutdown)
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Adapter for NoopAdapter {
    async fn on_batch(&self, _batch: Arc<Batch>) -> Result<(), AdapterError> {
        self.check_open()
    }

    async fn poll_shard(
        &self,
        _shard_id: u16,
        cursor: Option<&str>,
        _limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        self.check_open()?;
        Ok(ShardPollResult {
            events: Vec::new(),
            cursor: cursor.unwrap_or("0").to_owned(),
            has_more: false,
        })
    }

    async fn flush(&self) -> Result<(), AdapterError> {
        self.check_open()
    }

    async fn shutdown(&self) -> Result<(), AdapterError> {
        self.shut_down.store(true, Ordering::Release);
        Ok(())
    }

    fn name(&self) -> &str {
        "noop"
    }
}
