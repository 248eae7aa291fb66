//! The mesh through the facade (feature `net`): the builder example of the EventBus page,
//! and a bus whose events are stored by a peer node over loopback.

#![cfg(feature = "net")]

use net_sdk::mesh::ShardRange;
use net_sdk::{
    AdapterConfig, BackpressureMode, BatchConfig, ConfigError, ConsumeRequest, EventBus,
    EventBusConfig, NetAdapter, NetAdapterConfig, RawEvent, ScalingPolicy,
};
use std::time::Duration;

#[test]
fn the_builder_example_compiles_verbatim() -> Result<(), ConfigError> {
    let config = EventBusConfig::builder()
        .shards(16)
        .ring_capacity(4096)
        .batch(BatchConfig::default().max_events(1024).max_delay_ms(5))
        .backpressure(BackpressureMode::DropOldest)
        .adapter(
            AdapterConfig::net()
                .listen("0.0.0.0:7777")
                .peer("10.0.0.2:7777"),
        )
        .scaling(ScalingPolicy::default())
        .build()?;
    let _ = config;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_on_the_mesh_stores_on_its_peer_and_polls_back() -> anyhow::Result<()> {
    let storage = NetAdapter::new(
        NetAdapterConfig::default()
            .listen("127.0.0.1:0")
            .stores(ShardRange::ALL),
    )?;
    storage.start().await?;
    let peer = storage.local_addr().expect("bound").to_string();
    let config = EventBusConfig::builder()
        .shards(4)
        .adapter(AdapterConfig::net().peer(&peer))
        .build()?;
    let bus = EventBus::new(config).await?;
    // The bus retries until the dialer has connected.
    for i in 0..100 {
        bus.ingest_raw(RawEvent::from_bytes(format!("{{\"i\":{i}}}")))?;
    }
    bus.flush().await?;
    let mut seen = 0;
    for _ in 0..50 {
        let response = bus.poll(ConsumeRequest::new(1000)).await?;
        seen = response.events.len();
        if seen == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 100);
    bus.shutdown().await?;
    Ok(())
}
