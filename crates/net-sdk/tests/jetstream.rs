//! `AdapterConfig::jetstream(..)` end to end: a bus built from the facade writes to a private
//! nats-server and polls the events back; bad settings and an unreachable server fail at
//! `EventBus::new` with a clear error.
#![cfg(feature = "jetstream")]

use net_sdk::{AdapterConfig, ConfigError, ConsumeRequest, Event, EventBus, EventBusConfig};
use net_sdk::{AdapterError, JetStreamAdapterConfig};
use net_testkit::NatsServer;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_on_jetstream_stores_and_polls_back() {
    let Some(server) = NatsServer::start_private("a_bus_on_jetstream_stores_and_polls_back") else {
        return;
    };
    let config = EventBusConfig::builder()
        .shards(4)
        .adapter(AdapterConfig::jetstream(JetStreamAdapterConfig::new(
            server.url(),
            "sdk",
        )))
        .build()
        .unwrap();
    let bus = EventBus::new(config).await.unwrap();
    assert_eq!(bus.adapter_name(), "jetstream");
    for i in 0..1_000 {
        bus.ingest(Event::new(serde_json::json!({ "i": i })))
            .unwrap();
    }
    bus.flush().await.unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = ConsumeRequest::new(300);
        if let Some(c) = cursor.take() {
            request = request.from(c);
        }
        let page = bus.poll(request).await.unwrap();
        seen.extend(
            page.events
                .iter()
                .map(|e| e.json().unwrap()["i"].as_u64().unwrap()),
        );
        cursor = Some(page.cursor);
        if !page.has_more {
            break;
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..1_000).collect::<Vec<_>>());
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_settings_and_unreachable_servers_fail_at_new() {
    let invalid = JetStreamAdapterConfig::new("nats://127.0.0.1:1", "has.dot");
    let config = EventBusConfig::builder()
        .adapter(AdapterConfig::jetstream(invalid))
        .build()
        .unwrap();
    match EventBus::new(config).await {
        Err(ConfigError::Adapter(AdapterError::Fatal(text))) => {
            assert!(text.contains("stream_name"), "{text}")
        }
        other => panic!("expected a fatal setting error, got {:?}", other.err()),
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let unreachable = JetStreamAdapterConfig::new(format!("nats://127.0.0.1:{port}"), "x")
        .connect_timeout(Duration::from_millis(500));
    let config = EventBusConfig::builder()
        .adapter(AdapterConfig::jetstream(unreachable))
        .build()
        .unwrap();
    let started = Instant::now();
    match EventBus::new(config).await {
        Err(ConfigError::Adapter(AdapterError::Connection(_))) => {}
        other => panic!("expected a connection error, got {:?}", other.err()),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}
