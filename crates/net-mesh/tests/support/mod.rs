//! Helpers shared by the integration tests: nodes on loopback.

#![allow(dead_code)]

use net_adapter::{Adapter, MemoryAdapter};
use net_mesh::{EntityKeypair, NetAdapter, NetAdapterConfig, ShardRange};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Settings suited to tests: short timeouts, loopback listener.
pub(crate) fn test_config() -> NetAdapterConfig {
    let mut c = NetAdapterConfig::default().listen("127.0.0.1:0");
    c.request_timeout = Duration::from_secs(2);
    c.storage_timeout = Duration::from_secs(3);
    c.handshake_timeout = Duration::from_secs(3);
    c.reconnect_min = Duration::from_millis(20);
    c.reconnect_max = Duration::from_millis(200);
    c
}

/// A started storage node keeping every shard in `memory`.
pub(crate) async fn storage_node(memory: Arc<MemoryAdapter>) -> NetAdapter {
    let config = test_config()
        .keypair(EntityKeypair::generate().unwrap())
        .stores(ShardRange::ALL)
        .tag("memory")
        .storage(memory as Arc<dyn Adapter>);
    let node = NetAdapter::new(config).unwrap();
    node.start().await.unwrap();
    node
}

/// A started node that stores nothing and dials `peer`.
pub(crate) async fn client_node(peer: SocketAddr) -> NetAdapter {
    let config = test_config().peer(peer.to_string());
    let node = NetAdapter::new(config).unwrap();
    node.start().await.unwrap();
    node
}

/// A storage node and a client connected to it, with the client seeing the storage.
pub(crate) async fn pair() -> (NetAdapter, NetAdapter, Arc<MemoryAdapter>) {
    let memory = Arc::new(MemoryAdapter::new());
    let storage = storage_node(memory.clone()).await;
    let client = client_node(storage.local_addr().unwrap()).await;
    assert!(
        client.wait_for_coverage(0, 1, Duration::from_secs(5)).await,
        "client never saw the storage node"
    );
    (client, storage, memory)
}

pub(crate) mod journal;
pub(crate) mod process;
