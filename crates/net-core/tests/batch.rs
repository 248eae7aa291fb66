//! `ingest_raw_batch` and `ingest_batch`: each event of a batch is accepted or refused as the
//! single call would treat it, the refusals name their positions, and what was accepted comes
//! back in order.

mod common;

use common::{assert_balanced, poll_all, ScriptedAdapter, Step};
use net_core::net_adapter::MemoryAdapterConfig;
use net_core::{
    AdapterInstance, BackpressureMode, Event, EventBus, EventBusConfig, IngestionError, Ordering,
    RawEvent,
};
use std::collections::HashMap;

fn raw(i: usize) -> RawEvent {
    RawEvent::from_bytes(format!(r#"{{"i":{i}}}"#))
}

#[tokio::test]
async fn every_accepted_event_of_a_batch_comes_back_in_order() {
    let config = EventBusConfig::builder()
        .shards(4)
        .max_event_bytes(64)
        .adapter(MemoryAdapterConfig::default())
        .build()
        .unwrap();
    let bus = EventBus::new(config).await.unwrap();
    let mut events: Vec<RawEvent> = (0..1000).map(raw).collect();
    // Two events too large for the bus, at known positions.
    events[10] = RawEvent::from_bytes(vec![b' '; 65]);
    events[999] = RawEvent::from_bytes(vec![b' '; 100]);
    let outcome = bus.ingest_raw_batch(events);
    assert_eq!(outcome.accepted, 998);
    let positions: Vec<usize> = outcome.refused.iter().map(|(i, _)| *i).collect();
    assert_eq!(positions, [10, 999]);
    assert!(outcome
        .refused
        .iter()
        .all(|(_, e)| matches!(e, IngestionError::TooLarge { .. })));
    let typed = bus.ingest_batch((1000..1010).map(|i| Event::new(serde_json::json!({ "i": i }))));
    assert!(typed.all_accepted());
    assert_eq!(typed.accepted, 10);
    bus.flush().await.unwrap();
    let stored = poll_all(&bus, 333, Ordering::Sequence, None).await;
    // Per shard, the events keep their batch order.
    let mut last_per_shard: HashMap<u16, u64> = HashMap::new();
    let mut seen = Vec::new();
    for event in &stored {
        let value: serde_json::Value = serde_json::from_slice(&event.raw).unwrap();
        let i = value["i"].as_u64().unwrap();
        if let Some(prev) = last_per_shard.insert(event.shard_id, i) {
            assert!(prev < i, "shard {} went from {prev} to {i}", event.shard_id);
        }
        seen.push(i);
    }
    seen.sort_unstable();
    let want: Vec<u64> = (0..1010).filter(|&i| i != 10 && i != 999).collect();
    assert_eq!(seen, want);
    let stats = bus.stats().snapshot();
    assert_eq!(stats.events_ingested, 1008);
    assert_eq!(
        bus.stats()
            .rejected
            .too_large
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    bus.shutdown_via_ref().await.unwrap();
    assert_balanced(bus.stats());
}

#[tokio::test]
async fn a_full_ring_refuses_part_of_a_batch_and_accepts_the_rest() {
    // One shard of two slots whose adapter holds the first batch: the worker takes one batch,
    // the ring holds two more, and DropNewest refuses the others.
    let adapter = ScriptedAdapter::new(vec![Step::Gated, Step::Ok]);
    let config = EventBusConfig::builder()
        .shards(1)
        .ring_capacity(2)
        .backpressure(BackpressureMode::DropNewest)
        .adapter(AdapterInstance::new(adapter.clone()))
        .build()
        .unwrap();
    let bus = EventBus::new(config).await.unwrap();
    assert!(bus.ingest_raw(raw(0)).is_ok());
    // Let the worker take the first event into its (gated) batch.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let outcome = bus.ingest_raw_batch((1..10).map(raw));
    assert_eq!(outcome.accepted, 2, "{outcome:?}");
    assert_eq!(outcome.refused.len(), 7);
    assert!(outcome
        .refused
        .iter()
        .enumerate()
        .all(|(k, (i, e))| *i == k + 2 && matches!(e, IngestionError::Backpressure)));
    adapter.open_gate();
    bus.flush().await.unwrap();
    let stored = poll_all(&bus, 100, Ordering::Sequence, None).await;
    let got: Vec<&[u8]> = stored.iter().map(|e| e.raw.as_ref()).collect();
    assert_eq!(got, [&b"{\"i\":0}"[..], b"{\"i\":1}", b"{\"i\":2}"]);
    bus.shutdown_via_ref().await.unwrap();
    assert_balanced(bus.stats());
}

#[tokio::test]
async fn after_shutdown_every_event_of_a_batch_is_refused() {
    let config = EventBusConfig::builder()
        .adapter(MemoryAdapterConfig::default())
        .build()
        .unwrap();
    let bus = EventBus::new(config).await.unwrap();
    bus.shutdown_via_ref().await.unwrap();
    let outcome = bus.ingest_raw_batch((0..5).map(raw));
    assert_eq!(outcome.accepted, 0);
    assert_eq!(outcome.refused.len(), 5);
    assert!(outcome
        .refused
        .iter()
        .all(|(_, e)| matches!(e, IngestionError::ShuttingDown)));
    let empty = bus.ingest_raw_batch(Vec::new());
    assert!(empty.all_accepted() && empty.accepted == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_racing_resizes_keep_every_event_once() {
    let config = EventBusConfig::builder()
        .shards(2)
        .ring_capacity(256)
        .backpressure(BackpressureMode::Block)
        .adapter(MemoryAdapterConfig::default())
        .build()
        .unwrap();
    let bus = std::sync::Arc::new(EventBus::new(config).await.unwrap());
    const KEYS: usize = 16;
    const BATCHES: usize = 200;
    const PER_BATCH: usize = 64;
    let producer = {
        let bus = bus.clone();
        std::thread::spawn(move || {
            let mut accepted = 0;
            for b in 0..BATCHES {
                let events = (0..PER_BATCH).map(|i| {
                    let n = b * PER_BATCH + i;
                    let key = n % KEYS;
                    RawEvent::with_key(format!(r#"{{"k":{key},"n":{n}}}"#), key.to_string())
                });
                let outcome = bus.ingest_raw_batch(events);
                assert!(outcome.all_accepted(), "{outcome:?}");
                accepted += outcome.accepted;
            }
            accepted
        })
    };
    for _ in 0..5 {
        let added = bus.add_shards(2).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        bus.remove_shards(vec![added[0]]).await.unwrap();
    }
    let accepted = tokio::task::spawn_blocking(move || producer.join().unwrap())
        .await
        .unwrap();
    assert_eq!(accepted, BATCHES * PER_BATCH);
    bus.flush().await.unwrap();
    let stored = poll_all(&bus, 1000, Ordering::Sequence, None).await;
    assert_eq!(stored.len(), BATCHES * PER_BATCH);
    let mut all: Vec<u64> = stored
        .iter()
        .map(|event| {
            let v: serde_json::Value = serde_json::from_slice(&event.raw).unwrap();
            v["n"].as_u64().unwrap()
        })
        .collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        all.len(),
        BATCHES * PER_BATCH,
        "an event was lost or stored twice"
    );
    bus.shutdown_via_ref().await.unwrap();
    assert_balanced(bus.stats());
}
