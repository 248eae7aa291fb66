//! `AdapterConfig::redis(..)` end to end: a bus built from the facade writes to a private
//! redis-server (or `REDIS_URL`) and polls the events back through `RedisStreamDedup`; bad
//! settings and a wrong password fail at `EventBus::new` with a clear error.
#![cfg(feature = "redis")]

use net_sdk::{
    AdapterConfig, ConfigError, ConsumeRequest, Event, EventBus, EventBusConfig,
    RedisAdapterConfig, RedisStreamDedup, WriteMode,
};
use net_testkit::{RedisOptions, RedisServer};
use std::time::{SystemTime, UNIX_EPOCH};

fn prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("net-sdk-{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_on_redis_round_trips_events() {
    let Some(server) = RedisServer::any("a_bus_on_redis_round_trips_events") else {
        return;
    };
    for mode in [WriteMode::Script, WriteMode::Transaction] {
        let config = EventBusConfig::builder()
            .shards(4)
            .adapter(AdapterConfig::redis(
                RedisAdapterConfig::new(server.url(), prefix()).write_mode(mode),
            ))
            .build()
            .expect("config");
        let bus = EventBus::new(config).await.expect("bus");
        assert_eq!(bus.adapter_name(), "redis");
        for i in 0..1_000 {
            bus.ingest(Event::new(serde_json::json!({ "i": i })))
                .expect("ingest");
        }
        bus.flush().await.expect("flush");
        let mut dedup = RedisStreamDedup::new();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut request = ConsumeRequest::new(128);
            if let Some(cursor) = cursor.take() {
                request = request.from(cursor);
            }
            let page = bus.poll(request).await.expect("poll");
            for event in dedup.filter(page.events) {
                seen.push(event.json().expect("json")["i"].as_u64().expect("i"));
            }
            if !page.has_more {
                break;
            }
            cursor = Some(page.cursor);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..1_000).collect::<Vec<u64>>(), "{mode:?}");
        assert_eq!(dedup.dropped(), 0);
        bus.shutdown().await.expect("shutdown");
    }
}

#[tokio::test]
async fn bad_settings_and_a_wrong_password_fail_at_construction() {
    let config = EventBusConfig::builder()
        .adapter(AdapterConfig::redis(
            RedisAdapterConfig::new("redis://127.0.0.1:1", "x").max_len(0),
        ))
        .build()
        .expect("config");
    match EventBus::new(config).await {
        Err(ConfigError::Invalid { reason, .. }) => assert!(reason.contains("max_len"), "{reason}"),
        other => panic!("expected an invalid setting, got {:?}", other.err()),
    }

    let options = RedisOptions {
        password: Some("the-right-one".to_owned()),
        ..RedisOptions::default()
    };
    let Some(server) = RedisServer::private(
        "bad_settings_and_a_wrong_password_fail_at_construction",
        options,
    ) else {
        return;
    };
    let wrong = server.url().replace("the-right-one", "not-the-password");
    let config = EventBusConfig::builder()
        .adapter(AdapterConfig::redis(RedisAdapterConfig::new(wrong, "x")))
        .build()
        .expect("config");
    let Err(err) = EventBus::new(config).await else {
        panic!("a wrong password must fail at EventBus::new");
    };
    let text = format!("{err} {err:?}");
    assert!(
        matches!(err, ConfigError::Adapter(ref e) if e.is_fatal()),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");
}
