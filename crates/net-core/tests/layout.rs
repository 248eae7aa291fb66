//! The stream layout: the first bus records its shard count in the backend, a bus with another
//! count refuses to start, and a bus that adds shards records the grown count.

use net_core::net_adapter::{Adapter, LayoutWrite, MemoryAdapter, StreamLayout};
use net_core::{AdapterInstance, ConfigError, EventBus, EventBusConfig};
use std::sync::Arc;

async fn open(
    adapter: &Arc<MemoryAdapter>,
    shards: u16,
    check: bool,
) -> Result<EventBus, ConfigError> {
    let config = EventBusConfig::builder()
        .shards(shards)
        .adapter(AdapterInstance::new(adapter.clone()))
        .check_layout(check)
        .build()?;
    EventBus::new(config).await
}

async fn recorded(adapter: &MemoryAdapter) -> u16 {
    // An `IfAbsent` write never changes a recorded layout, so it reads it.
    adapter
        .record_layout(StreamLayout::new(1), LayoutWrite::IfAbsent)
        .await
        .unwrap()
        .unwrap()
        .shards
}

#[tokio::test]
async fn a_bus_with_another_shard_count_is_refused() {
    let adapter = Arc::new(MemoryAdapter::new());
    let first = open(&adapter, 4, true).await.unwrap();
    assert_eq!(recorded(&adapter).await, 4);
    let same = open(&adapter, 4, true).await.unwrap();
    match open(&adapter, 8, true).await {
        Err(ConfigError::LayoutMismatch {
            adapter: name,
            recorded,
            configured,
        }) => {
            assert_eq!((name.as_str(), recorded, configured), ("memory", 4, 8));
        }
        other => panic!("a bus with 8 shards on a 4-shard stream: {other:?}"),
    }
    let message = open(&adapter, 2, true).await.unwrap_err().to_string();
    assert!(
        message.contains("created with 4 shards") && message.contains("configured with 2"),
        "{message}"
    );
    // Opting out reads a subset on purpose and records nothing.
    let subset = open(&adapter, 2, false).await.unwrap();
    assert_eq!(recorded(&adapter).await, 4);
    // The buses share one adapter, which the first shutdown stops; the others find it
    // stopped already.
    first.shutdown().await.unwrap();
    let _ = same.shutdown().await;
    let _ = subset.shutdown().await;
}

#[tokio::test]
async fn adding_shards_records_the_grown_count() {
    let adapter = Arc::new(MemoryAdapter::new());
    let bus = open(&adapter, 3, true).await.unwrap();
    let added = bus.add_shards(2).await.unwrap();
    assert_eq!(added, [3, 4]);
    assert_eq!(recorded(&adapter).await, 5);
    assert!(matches!(
        open(&adapter, 3, true).await,
        Err(ConfigError::LayoutMismatch {
            recorded: 5,
            configured: 3,
            ..
        })
    ));
    let reader = open(&adapter, 5, true).await.unwrap();
    // Retiring shards keeps their ids (they are never reused), so the count stays.
    bus.remove_shards(vec![1]).await.unwrap();
    assert_eq!(recorded(&adapter).await, 5);
    bus.shutdown().await.unwrap();
    let _ = reader.shutdown().await;
}
