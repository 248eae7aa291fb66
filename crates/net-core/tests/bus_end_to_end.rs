//! End-to-end acceptance of the bus on the memory adapter: many producers, exact paging,
//! ordering, retries, shutdown, and the producer nonce.

mod common;

use common::{assert_balanced, poll_all, ScriptedAdapter, Step};
use net_core::net_adapter::{MemoryAdapter, MemoryAdapterConfig};
use net_core::{
    BackpressureMode, BatchConfig, ConfigError, ConsumeRequest, ConsumerError, Event, EventBus,
    EventBusConfig, IngestionError, Ordering, RawEvent,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

fn payload(producer: u64, i: u64) -> String {
    format!(r#"{{"p":{producer},"i":{i},"pad":"0123456789abcdef0123456789abcdef0123456789"}}"#)
}

fn parse(raw: &[u8]) -> (u64, u64) {
    let v: serde_json::Value = serde_json::from_slice(raw).expect("stored payload is JSON");
    (v["p"].as_u64().unwrap(), v["i"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_producers_a_million_events_each_polled_exactly_once() {
    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 250_000;
    let config = EventBusConfig::builder()
        .shards(16)
        .ring_capacity(4096)
        .batch(BatchConfig::default().max_events(512).max_delay_ms(2))
        .backpressure(BackpressureMode::Block)
        .adapter(MemoryAdapterConfig::default())
        .build()
        .unwrap();
    let bus = Arc::new(EventBus::new(config).await.unwrap());
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    let body = payload(p, i);
                    if i % 4 == 0 {
                        bus.ingest(Event::from_str(&body).unwrap()).unwrap();
                    } else {
                        bus.ingest_raw(RawEvent::from_bytes(body)).unwrap();
                    }
                }
            })
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        for p in producers {
            p.join().unwrap();
        }
    })
    .await
    .unwrap();
    bus.flush().await.unwrap();
    let total = PRODUCERS * PER_PRODUCER;
    assert_eq!(bus.stats().snapshot().events_dispatched, total);

    let events = poll_all(&bus, 7_777, Ordering::Sequence, None).await;
    assert_eq!(events.len() as u64, total);
    let mut seen = HashSet::with_capacity(events.len());
    // Per shard, one producer's events must appear in the order it ingested them.
    let mut last: HashMap<(u16, u64), u64> = HashMap::new();
    for e in &events {
        let (p, i) = parse(&e.raw);
        assert!(seen.insert((p, i)), "event {p}/{i} polled twice");
        if let Some(prev) = last.insert((e.shard_id, p), i) {
            assert!(
                prev < i,
                "shard {} reordered producer {p}: {prev} then {i}",
                e.shard_id
            );
        }
    }
    assert_eq!(seen.len() as u64, total);

    let by_time = poll_all(&bus, 5_000, Ordering::Timestamp, None).await;
    assert_eq!(by_time.len() as u64, total);
    let unique: HashSet<_> = by_time.iter().map(|e| parse(&e.raw)).collect();
    assert_eq!(unique.len() as u64, total);

    bus.shutdown_via_ref().await.unwrap();
    assert_balanced(bus.stats());
}

#[tokio::test]
async fn a_retried_batch_keeps_its_identity_and_is_stored_once() {
    let adapter = ScriptedAdapter::new(vec![Step::TransientAfterWrite, Step::Ok]);
    let config = EventBusConfig::builder()
        .shards(1)
        .batch(BatchConfig::default().max_events(10).max_delay_ms(1))
        .adapter_instance(adapter.clone())
        .build()
        .unwrap();
    let bus = EventBus::new(config).await.unwrap();
    for i in 0..30 {
        bus.ingest_raw(RawEvent::from_bytes(payload(0, i))).unwrap();
    }
    bus.flush().await.unwrap();
    let calls = adapter.calls.lock().clone();
    assert!(
        calls.len() >= 2 && calls.len().is_multiple_of(2),
        "{calls:?}"
    );
    for pair in calls.chunks(2) {
        assert_eq!(pair[0], pair[1], "a retry changed the batch identity");
        assert_eq!(pair[0].0, bus.process_nonce());
    }
    let stored = poll_all(&bus, 100, Ordering::Sequence, None).await;
    assert_eq!(stored.len(), 30, "retries after a write must not duplicate");
    let stats = bus.stats().snapshot();
    assert_eq!(stats.batches_retried as usize, calls.len() / 2);
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn hostile_cursors_and_limits_are_typed_errors() {
    let memory = Arc::new(MemoryAdapter::new());
    let config = EventBusConfig::builder()
        .shards(2)
        .adapter_instance(memory.clone())
        .build()
        .unwrap();
    let bus = EventBus::new(config).await.unwrap();
    for i in 0..50 {
        bus.ingest_raw(RawEvent::from_bytes(payload(0, i))).unwrap();
    }
    bus.flush().await.unwrap();
    let page = bus.poll(ConsumeRequest::new(20)).await.unwrap();
    let valid = page.cursor.clone();

    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let blob = engine.decode(&valid).unwrap();
    let mut future_version = blob.clone();
    future_version[0] = 2;
    let mut bad = vec![
        "!!!not base64!!!".to_owned(),
        "AAAA".to_owned(),
        engine.encode([0u8; 3]),
        engine.encode(&future_version),
        engine.encode(&blob[..blob.len() - 1]),
        "a".repeat(4_000_000),
    ];
    for cut in 1..valid.len() {
        bad.push(valid[..cut].to_owned());
    }
    for cursor in bad {
        match bus.poll(ConsumeRequest::new(10).from(cursor.clone())).await {
            Err(ConsumerError::InvalidCursor(_)) => {}
            // A truncated string can still decode to a shorter valid cursor only if the
            // checksum matches, which must not happen.
            other => panic!("cursor {:.40}... gave {other:?}", cursor),
        }
    }

    // A cursor from a bus with more shards names a shard this bus does not have.
    let wide = EventBus::new(
        EventBusConfig::builder()
            .shards(8)
            .adapter(MemoryAdapterConfig::default())
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    for i in 0..64 {
        wide.ingest_raw(RawEvent::from_bytes(payload(1, i)))
            .unwrap();
    }
    wide.flush().await.unwrap();
    let wide_cursor = wide.poll(ConsumeRequest::new(64)).await.unwrap().cursor;
    assert!(matches!(
        bus.poll(ConsumeRequest::new(10).from(wide_cursor.clone()))
            .await,
        Err(ConsumerError::InvalidCursor(_))
    ));
    // A cursor from the future: positions beyond what this bus's adapter holds.
    let small = EventBus::new(
        EventBusConfig::builder()
            .shards(8)
            .adapter(MemoryAdapterConfig::default())
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    small
        .ingest_raw(RawEvent::from_bytes(payload(2, 0)))
        .unwrap();
    small.flush().await.unwrap();
    assert!(matches!(
        small.poll(ConsumeRequest::new(10).from(wide_cursor)).await,
        Err(ConsumerError::InvalidCursor(_))
    ));
    assert!(matches!(
        bus.poll(ConsumeRequest::new(10).shards(vec![5])).await,
        Err(ConsumerError::UnknownShard(5))
    ));

    // limit 0 returns nothing, keeps the position, and tells the truth about waiting data.
    let zero = bus
        .poll(ConsumeRequest::new(0).from(valid.clone()))
        .await
        .unwrap();
    assert!(zero.events.is_empty());
    assert!(zero.has_more);
    let after_zero = bus
        .poll(ConsumeRequest::new(100).from(zero.cursor))
        .await
        .unwrap();
    assert_eq!(after_zero.events.len(), 30);
    // usize::MAX is clamped, not overflowed.
    let all = bus.poll(ConsumeRequest::new(usize::MAX)).await.unwrap();
    assert_eq!(all.events.len(), 50);
    assert!(!all.has_more);

    assert!(RawEvent::from_bytes_validated(&b"{\"a\":"[..]).is_err());
    wide.shutdown().await.unwrap();
    small.shutdown().await.unwrap();
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn filters_skip_but_still_advance_the_cursor() {
    let bus = EventBus::new(
        EventBusConfig::builder()
            .shards(3)
            .adapter(MemoryAdapterConfig::default())
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    for i in 0..300u64 {
        bus.ingest(Event::new(
            serde_json::json!({"i": i, "kind": if i % 3 == 0 { "a" } else { "b" }}),
        ))
        .unwrap();
    }
    bus.flush().await.unwrap();
    let filter = net_core::Filter::parse(r#"{"kind": "a"}"#).unwrap();
    let got = poll_all(&bus, 7, Ordering::Sequence, Some(filter)).await;
    let mut ids: Vec<u64> = got
        .iter()
        .map(|e| e.json().unwrap()["i"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..300).filter(|i| i % 3 == 0).collect::<Vec<_>>());

    // A filter that matches nothing still walks the whole log and ends.
    let none = net_core::Filter::parse(r#"{"kind": "zzz"}"#).unwrap();
    assert!(poll_all(&bus, 10, Ordering::Sequence, Some(none))
        .await
        .is_empty());
    assert!(net_core::Filter::parse(r#"{"kind": {"$regex": "a"}}"#).is_err());
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn stale_cursor_reports_a_gap_and_resumes_at_the_earliest_event() {
    let memory = Arc::new(MemoryAdapter::with_config(
        MemoryAdapterConfig::default().max_events_per_shard(10),
    ));
    let bus = EventBus::new(
        EventBusConfig::builder()
            .shards(1)
            .adapter_instance(memory.clone())
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    for i in 0..5 {
        bus.ingest_raw(RawEvent::from_bytes(payload(0, i))).unwrap();
    }
    bus.flush().await.unwrap();
    let first = bus.poll(ConsumeRequest::new(2)).await.unwrap();
    assert_eq!(first.events.len(), 2);
    for i in 5..40 {
        bus.ingest_raw(RawEvent::from_bytes(payload(0, i))).unwrap();
    }
    bus.flush().await.unwrap();
    let next = bus
        .poll(ConsumeRequest::new(100).from(first.cursor))
        .await
        .unwrap();
    assert_eq!(next.gaps.len(), 1, "{next:?}");
    let got: Vec<u64> = next.events.iter().map(|e| parse(&e.raw).1).collect();
    assert_eq!(got, (30..40).collect::<Vec<_>>());
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_bus_reports_the_health_its_adapter_reports() {
    let adapter = ScriptedAdapter::new(vec![Step::Ok]);
    let bus = EventBus::new(
        EventBusConfig::builder()
            .shards(1)
            .adapter_instance(adapter.clone())
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(bus.is_healthy().await);
    adapter.set_healthy(false);
    assert!(!bus.is_healthy().await);
    // An unhealthy backend does not stop ingest; the bus only reports what the adapter says.
    bus.ingest_raw(RawEvent::from_bytes(payload(0, 0))).unwrap();
    adapter.set_healthy(true);
    assert!(bus.is_healthy().await);
    bus.flush().await.unwrap();
    assert_eq!(poll_all(&bus, 10, Ordering::Sequence, None).await.len(), 1);
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_is_idempotent_and_refuses_new_events() {
    let bus = EventBus::new(EventBusConfig::default()).await.unwrap();
    bus.ingest_raw(RawEvent::from_bytes(payload(0, 0))).unwrap();
    bus.shutdown_via_ref().await.unwrap();
    bus.shutdown_via_ref().await.unwrap();
    assert!(matches!(
        bus.ingest_raw(RawEvent::from_bytes(payload(0, 1))),
        Err(IngestionError::ShuttingDown)
    ));
    assert!(matches!(
        bus.ingest(Event::new(serde_json::json!({}))),
        Err(IngestionError::ShuttingDown)
    ));
    assert_balanced(bus.stats());
    assert_eq!(bus.stats().snapshot().events_ingested, 1);
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_bus_drains_and_ends_its_tasks() {
    let adapter = ScriptedAdapter::new(vec![Step::Slow(2)]);
    let bus = EventBus::new(
        EventBusConfig::builder()
            .shards(4)
            .batch(BatchConfig::default().max_events(16).max_delay_ms(50))
            .adapter_instance(adapter.clone())
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    for i in 0..500 {
        bus.ingest_raw(RawEvent::from_bytes(payload(0, i))).unwrap();
    }
    drop(bus);
    // The workers and the background shutdown hold the only other references.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while Arc::strong_count(&adapter) > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "bus tasks still alive after drop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        adapter.memory.total_len(),
        500,
        "dropping the bus lost events"
    );
}

#[tokio::test]
async fn producer_nonce_survives_restarts_without_reusing_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("producer.nonce");
    let memory = Arc::new(MemoryAdapter::new());
    let mut nonces = Vec::new();
    for life in 0..2u64 {
        let bus = EventBus::new(
            EventBusConfig::builder()
                .shards(2)
                .producer_nonce_path(&path)
                .adapter_instance(memory.clone())
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
        nonces.push(bus.process_nonce());
        for i in 0..10 {
            bus.ingest_raw(RawEvent::from_bytes(payload(life, i)))
                .unwrap();
        }
        // Flush only: shutting down would close the shared adapter.
        bus.flush().await.unwrap();
        std::mem::forget(bus);
    }
    assert_eq!(nonces[0], nonces[1]);
    // The second life's events were not mistaken for retries of the first life's.
    assert_eq!(memory.total_len(), 20);

    std::fs::write(&path, "definitely not a nonce file").unwrap();
    let err = EventBus::new(
        EventBusConfig::builder()
            .producer_nonce_path(&path)
            .build()
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ConfigError::NonceFile { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_is_dispatched_without_waiting_for_max_delay() {
    // With a ten-minute max_delay, only the max_events rule can close these batches: if a
    // producer failed to wake the worker once a batch's worth was queued, nothing would
    // arrive before the deadline below.
    let adapter = ScriptedAdapter::new(vec![Step::Ok]);
    let bus = EventBus::new(
        EventBusConfig::builder()
            .shards(2)
            .batch(BatchConfig::default().max_events(8).max_delay_ms(600_000))
            .adapter_instance(adapter.clone())
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for round in 0..5u64 {
        let before = adapter.memory.total_len();
        // The first event wakes the idle worker, which then starts filling a batch; the
        // pause lets it take that event and go back to sleep until the batch is full.
        bus.ingest_raw(RawEvent::from_bytes_with_hash(payload(round, 0), 0))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        for i in 1..8 {
            bus.ingest_raw(RawEvent::from_bytes_with_hash(payload(round, i), 0))
                .unwrap();
        }
        while adapter.memory.total_len() < before + 8 {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: a full batch waited for max_delay"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    bus.shutdown().await.unwrap();
}

/// Stores shard 0's batches at once and never answers for shard 1.
struct HangsOnShardOne(MemoryAdapter);

#[net_core::net_adapter::async_trait]
impl net_core::net_adapter::Adapter for HangsOnShardOne {
    async fn on_batch(
        &self,
        batch: Arc<net_core::net_adapter::Batch>,
    ) -> Result<(), net_core::net_adapter::AdapterError> {
        if batch.shard_id == 1 {
            std::future::pending::<()>().await;
        }
        self.0.on_batch(batch).await
    }
    async fn poll_shard(
        &self,
        shard: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<net_core::net_adapter::ShardPollResult, net_core::net_adapter::AdapterError> {
        self.0.poll_shard(shard, cursor, limit).await
    }
    async fn flush(&self) -> Result<(), net_core::net_adapter::AdapterError> {
        Ok(())
    }
    async fn shutdown(&self) -> Result<(), net_core::net_adapter::AdapterError> {
        Ok(())
    }
    fn name(&self) -> &str {
        "hangs-on-shard-one"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_deadline_drops_only_what_is_stuck_and_counts_it() {
    // One worker finishes before the deadline and one is stuck in the adapter: shutdown must
    // abort the stuck one, count its events dropped, and not touch the finished one again.
    let adapter = Arc::new(HangsOnShardOne(MemoryAdapter::new()));
    let bus = EventBus::new(
        EventBusConfig::builder()
            .shards(2)
            .batch(BatchConfig::default().max_events(4).max_delay_ms(1))
            .retry(net_core::RetryPolicy::default().attempt_timeout(Duration::from_secs(3600)))
            .shutdown_timeout(Duration::from_millis(300))
            .adapter_instance(adapter.clone())
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    // Routing slots alternate between the shards, so hashes 0 and 1 land on shards 0 and 1.
    for i in 0..20u64 {
        bus.ingest_raw(RawEvent::from_bytes_with_hash(payload(0, i), i % 2))
            .unwrap();
    }
    bus.shutdown_via_ref().await.unwrap();
    let s = bus.stats().snapshot();
    assert!(s.shutdown_was_lossy);
    assert_eq!(s.events_dispatched, 10, "{s:?}");
    assert_eq!(s.events_dropped, 10, "{s:?}");
    assert_balanced(bus.stats());
    assert_eq!(adapter.0.total_len(), 10);
}
