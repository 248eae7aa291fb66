//! The adapter conformance kit against the durable log, with every hook done on the real
//! files: `inject_corrupt` appends a damaged frame to the real segment file, `trim` moves the
//! shard's `START`, and the three write faults go through the log's fault switch (feature
//! `test-hooks`), which writes and syncs the batch for real before failing or stalling.

use net_adapter::conformance::{Capabilities, Fixture, HookError, HookResult};
use net_adapter::{async_trait, Adapter};
use net_adapter_log::{LogAdapter, LogAdapterConfig, LogFault};
use std::sync::Arc;

/// One fresh log in its own temporary directory.
struct LogFixture {
    adapter: Arc<LogAdapter>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> LogFixture {
    let dir = tempfile::Builder::new()
        .prefix(&net_adapter::conformance::unique_namespace())
        .tempdir()
        .expect("temporary directory");
    // Small segments, so the kit's reads cross segment boundaries.
    let config = LogAdapterConfig::new(dir.path()).segment_bytes(4096);
    let adapter = LogAdapter::open(config).expect("open the log");
    LogFixture {
        adapter: Arc::new(adapter),
        _dir: dir,
    }
}

fn failed(e: impl std::fmt::Display) -> HookError {
    HookError::Failed(e.to_string())
}

#[async_trait]
impl Fixture for LogFixture {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.adapter.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .persists_dedup_ids(true)
            .records_layout(true)
    }

    async fn inject_corrupt(&self, shard_id: u16) -> HookResult {
        let adapter = self.adapter.clone();
        tokio::task::spawn_blocking(move || adapter.inject_corrupt(shard_id))
            .await
            .map_err(failed)?
            .map(|_| ())
            .map_err(failed)
    }

    async fn trim(&self, shard_id: u16, keep: usize) -> HookResult {
        let adapter = self.adapter.clone();
        tokio::task::spawn_blocking(move || adapter.trim(shard_id, keep as u64))
            .await
            .map_err(failed)?
            .map_err(failed)
    }

    async fn fail_next_batch_permanently(&self, shard_id: u16) -> HookResult {
        self.adapter.inject_fault(shard_id, LogFault::Fatal);
        Ok(())
    }

    async fn fail_next_batch_after_write(&self, shard_id: u16) -> HookResult {
        self.adapter
            .inject_fault(shard_id, LogFault::TransientAfterWrite);
        Ok(())
    }

    async fn time_out_next_batch_after_write(&self, shard_id: u16) -> HookResult {
        self.adapter
            .inject_fault(shard_id, LogFault::StallAfterWrite);
        Ok(())
    }
}

net_adapter::conformance_suite!(fixture);
