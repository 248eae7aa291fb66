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
    assert_eq!(config.shards, 16);
    assert_eq!(config.ring_capacity, 4096);
    assert_eq!(config.batch.max_events, 1024);
    assert_eq!(config.batch.max_delay_ms, 5);
    assert_eq!(config.backpressure, BackpressureMode::DropOldest);
    assert!(config.scaling.is_some(), "the scaling policy was dropped");
    // The adapter the builder was given: the mesh, listening and dialing where it was told.
    let adapter = AdapterConfig::net()
        .listen("0.0.0.0:7777")
        .peer("10.0.0.2:7777");
    let AdapterConfig::Net(mesh) = &adapter else {
        panic!("listen and peer must make a mesh configuration, got {adapter:?}");
    };
    assert_eq!(mesh.listen, Some("0.0.0.0:7777".parse().expect("address")));
    assert_eq!(mesh.peers, vec!["10.0.0.2:7777".parse().expect("address")]);
    assert!(mesh.validate().is_ok());
    let rendered = format!("{:?}", config.adapter);
    assert!(
        rendered.contains("0.0.0.0:7777") && rendered.contains("10.0.0.2:7777"),
        "the bus configuration lost the mesh addresses: {rendered}"
    );
    Ok(())
}

#[test]
fn a_mesh_address_that_does_not_parse_is_refused() {
    let adapter = AdapterConfig::net().listen("not an address");
    let AdapterConfig::Net(mesh) = &adapter else {
        panic!("listen must make a mesh configuration, got {adapter:?}");
    };
    assert_eq!(mesh.listen, None);
    assert!(
        mesh.validate().is_err(),
        "an unparsable listen address was accepted"
    );
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
