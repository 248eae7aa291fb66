//! `AdapterConfig::log(dir)` end to end: a bus built from the facade stores events in a local
//! directory, shuts down, and a second bus on the same directory reads every one of them back;
//! a directory another bus holds, and absurd settings, fail in `EventBus::new`.
#![cfg(feature = "log")]

use net_sdk::{
    AdapterConfig, ConfigError, ConsumeRequest, Event, EventBus, EventBusConfig, FsyncPolicy,
    LogAdapterConfig, Retention,
};
use std::collections::BTreeSet;
use std::path::Path;

async fn bus_on(adapter: AdapterConfig) -> Result<EventBus, ConfigError> {
    let config = EventBusConfig::builder()
        .shards(4)
        .adapter(adapter)
        .build()
        .expect("config");
    EventBus::new(config).await
}

/// Every `i` field the bus holds, read from the start with polls of `page` events.
async fn read_all(bus: &EventBus, page: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let mut request = ConsumeRequest::new(page);
        if let Some(c) = cursor.take() {
            request = request.from(c);
        }
        let response = bus.poll(request).await.expect("poll");
        for event in &response.events {
            let value: serde_json::Value = serde_json::from_slice(&event.raw).expect("json");
            seen.push(value["i"].as_u64().expect("an i field"));
        }
        if !response.has_more && response.events.is_empty() {
            return seen;
        }
        cursor = Some(response.cursor);
    }
}

async fn store(dir: &Path, adapter: AdapterConfig, range: std::ops::Range<u64>) {
    let bus = bus_on(adapter).await.expect("bus on the log");
    assert_eq!(bus.adapter_name(), "log");
    for i in range {
        bus.ingest(Event::new(serde_json::json!({ "i": i })))
            .expect("ingest");
    }
    bus.flush().await.expect("flush");
    bus.shutdown().await.expect("shutdown");
    assert!(dir.join("MANIFEST").is_file(), "no manifest in {dir:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_on_the_log_reads_everything_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path(), AdapterConfig::log(dir.path()), 0..5_000).await;
    // The second life uses the full configuration form and a different sync policy.
    let config = LogAdapterConfig::new(dir.path())
        .segment_bytes(64 * 1024)
        .fsync(FsyncPolicy::Never)
        .retention(Retention::unlimited());
    store(dir.path(), AdapterConfig::log_with(config), 5_000..12_000).await;

    let bus = bus_on(AdapterConfig::log(dir.path()))
        .await
        .expect("reopen");
    let seen = read_all(&bus, 700).await;
    bus.shutdown().await.expect("shutdown");
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(seen.len(), 12_000, "duplicates or losses");
    assert_eq!(unique, (0..12_000).collect::<BTreeSet<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_in_use_and_bad_settings_fail_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = bus_on(AdapterConfig::log(dir.path())).await.expect("first");
    let err = bus_on(AdapterConfig::log(dir.path()))
        .await
        .expect_err("a second bus on a held directory");
    assert!(matches!(err, ConfigError::Adapter(_)), "{err:?}");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    first.shutdown().await.expect("shutdown");
    // Released: a new bus may take it.
    let again = bus_on(AdapterConfig::log(dir.path()))
        .await
        .expect("after release");
    again.shutdown().await.expect("shutdown");

    let bad = LogAdapterConfig::new(dir.path().join("other")).segment_bytes(1);
    let err = bus_on(AdapterConfig::log_with(bad))
        .await
        .expect_err("1-byte segments");
    assert!(
        matches!(&err, ConfigError::Invalid { reason, .. } if reason.contains("segment_bytes")),
        "{err:?}"
    );
}
