//! The adapter conformance kit against `NetAdapter`: a client node that stores nothing,
//! talking over loopback to a storage node that keeps every shard in a `MemoryAdapter`.
//!
//! The hooks act on the storage node's `MemoryAdapter`, so every failure the kit injects
//! happens on the far side of the mesh and travels back as a reply:
//!
//! - `inject_corrupt`, `trim`: on the stored log itself;
//! - `fail_next_batch_permanently`: the storage rejects the batch as fatal;
//! - `fail_next_batch_after_write`: the storage writes, then fails retryably;
//! - `time_out_next_batch_after_write`: the storage writes and never answers; the client's
//!   request times out.

mod support;

use net_adapter::conformance::{Capabilities, Fixture, HookResult};
use net_adapter::{async_trait, Adapter, MemoryAdapter, MemoryFault};
use net_mesh::NetAdapter;
use std::sync::Arc;

struct MeshFixture {
    client: Arc<NetAdapter>,
    storage: NetAdapter,
    memory: Arc<MemoryAdapter>,
}

#[async_trait]
impl Fixture for MeshFixture {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.client.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default().persists_dedup_ids(true)
    }

    async fn inject_corrupt(&self, shard_id: u16) -> HookResult {
        self.memory.inject_corrupt(shard_id);
        Ok(())
    }

    async fn trim(&self, shard_id: u16, keep: usize) -> HookResult {
        self.memory.trim(shard_id, keep);
        Ok(())
    }

    async fn fail_next_batch_permanently(&self, shard_id: u16) -> HookResult {
        self.memory.inject_fault(shard_id, MemoryFault::Fatal);
        Ok(())
    }

    async fn fail_next_batch_after_write(&self, shard_id: u16) -> HookResult {
        self.memory
            .inject_fault(shard_id, MemoryFault::TransientAfterWrite);
        Ok(())
    }

    async fn time_out_next_batch_after_write(&self, shard_id: u16) -> HookResult {
        self.memory
            .inject_fault(shard_id, MemoryFault::StallAfterWrite);
        Ok(())
    }

    async fn cleanup(&self) -> Result<(), String> {
        self.client.shutdown().await.map_err(|e| e.to_string())?;
        self.storage.shutdown().await.map_err(|e| e.to_string())
    }
}

async fn fixture() -> MeshFixture {
    let (client, storage, memory) = support::pair().await;
    MeshFixture {
        client: Arc::new(client),
        storage,
        memory,
    }
}

net_adapter::conformance_suite!(fixture);
