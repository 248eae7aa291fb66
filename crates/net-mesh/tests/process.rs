//! Nodes in separate OS processes on 127.0.0.1.
//!
//! The storage nodes run in child processes (see `support/process.rs`) on a journal that
//! survives SIGKILL; the producing node runs a full `EventBus` in this process with
//! `NetAdapter` as its adapter. Events ingested here are stored there and polled back from
//! here, in per-shard order, with cursors that keep working across a restart of the
//! storage process.

mod support;

use net_adapter::{Adapter, StoredEvent};
use net_core::{BackpressureMode, BatchConfig, EventBus, EventBusConfig, RawEvent, RetryPolicy};
use net_mesh::{NetAdapter, NetAdapterConfig};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::journal::Journal;
use support::process::{child_entry, ChildNode};

const SHARDS: u16 = 8;

/// Entry point of the child processes; returns at once in a normal test run.
#[test]
fn child_storage_node() {
    child_entry();
}

fn client(peers: &[&ChildNode]) -> Arc<NetAdapter> {
    let mut config = NetAdapterConfig::default();
    for p in peers {
        config = config.peer(&p.addr);
    }
    config.request_timeout = Duration::from_secs(2);
    config.reconnect_min = Duration::from_millis(20);
    config.reconnect_max = Duration::from_millis(250);
    Arc::new(NetAdapter::new(config).unwrap())
}

async fn bus(adapter: Arc<NetAdapter>) -> Arc<EventBus> {
    let config = EventBusConfig::builder()
        .shards(SHARDS)
        .ring_capacity(8192)
        .batch(BatchConfig::default().max_events(512).max_delay_ms(2))
        .backpressure(BackpressureMode::Block)
        .retry(
            RetryPolicy::default()
                .max_retries(100_000)
                .initial_backoff(Duration::from_millis(5))
                .max_backoff(Duration::from_millis(100))
                .attempt_timeout(Duration::from_secs(5)),
        )
        .adapter_instance(adapter)
        .build()
        .unwrap();
    Arc::new(EventBus::new(config).await.unwrap())
}

async fn wait_covered(client: &NetAdapter) {
    for shard in 0..SHARDS {
        assert!(
            client
                .wait_for_coverage(shard, 1, Duration::from_secs(10))
                .await,
            "no storage node for shard {shard}"
        );
    }
}

/// Polls `shard` from `cursor` until the end, `page` events at a time.
async fn read_shard(
    client: &NetAdapter,
    shard: u16,
    mut cursor: Option<String>,
    page: usize,
    max_events: usize,
) -> (Vec<StoredEvent>, Option<String>) {
    let mut out = Vec::new();
    loop {
        let result = client
            .poll_shard(shard, cursor.as_deref(), page)
            .await
            .unwrap();
        out.extend(result.events);
        cursor = Some(result.cursor);
        if !result.has_more || out.len() >= max_events {
            return (out, cursor);
        }
    }
}

/// Checks per-shard order: within a shard, each producer's events come in ingest order.
fn check_order(shard: u16, events: &[StoredEvent]) {
    let mut last: HashMap<u64, i64> = HashMap::new();
    for e in events {
        let v: serde_json::Value = serde_json::from_slice(&e.raw).unwrap();
        let (p, i) = (v["p"].as_u64().unwrap(), v["i"].as_i64().unwrap());
        let prev = last.insert(p, i).unwrap_or(-1);
        assert!(
            i > prev,
            "shard {shard}: producer {p} event {i} after {prev}"
        );
        assert_eq!(e.shard_id, shard);
    }
}

fn ingest(bus: &EventBus, producer: u64, count: u64) {
    for i in 0..count {
        let body = format!(r#"{{"p":{producer},"i":{i}}}"#);
        bus.ingest_raw(RawEvent::from_bytes(body)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_poll_back_in_order_and_cursors_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = ChildNode::start("child_storage_node", dir.path(), 0, u16::MAX);
    let client = client(&[&storage]);
    client.start().await.unwrap();
    wait_covered(&client).await;
    let bus = bus(client.clone()).await;
    ingest(&bus, 0, 20_000);
    bus.flush().await.unwrap();

    // Read the first part of every shard, remember the cursors.
    let mut first = HashMap::new();
    for shard in 0..SHARDS {
        let (events, cursor) = read_shard(&client, shard, None, 500, 1000).await;
        first.insert(shard, (events, cursor));
    }

    // Restart the storage process; the journal brings the same entries and ids back.
    storage.kill();
    storage.restart();
    wait_covered(&client).await;

    let mut total = 0;
    let mut ids = HashSet::new();
    for shard in 0..SHARDS {
        let (mut events, cursor) = first.remove(&shard).unwrap();
        let (rest, _) = read_shard(&client, shard, cursor, 777, usize::MAX).await;
        events.extend(rest);
        check_order(shard, &events);
        for e in &events {
            assert!(ids.insert(e.dedup_id.clone().unwrap()), "duplicate {e:?}");
        }
        total += events.len();
    }
    assert_eq!(total, 20_000);
    bus.shutdown_via_ref().await.unwrap();
    let stats = bus.stats().snapshot();
    assert_eq!(stats.events_dispatched, 20_000, "{stats:?}");
    storage.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_split_the_shards_between_two_storage_nodes() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut low = ChildNode::start("child_storage_node", d1.path(), 0, SHARDS / 2 - 1);
    let mut high = ChildNode::start("child_storage_node", d2.path(), SHARDS / 2, u16::MAX);
    let client = client(&[&low, &high]);
    client.start().await.unwrap();
    wait_covered(&client).await;
    let bus = bus(client.clone()).await;
    ingest(&bus, 0, 10_000);
    bus.flush().await.unwrap();
    let mut total = 0;
    for shard in 0..SHARDS {
        let (events, _) = read_shard(&client, shard, None, 1000, usize::MAX).await;
        check_order(shard, &events);
        total += events.len();
    }
    assert_eq!(total, 10_000);
    bus.shutdown_via_ref().await.unwrap();
    low.stop();
    high.stop();
    // Each process stored only its own shards.
    let stored = |dir: &std::path::Path| {
        let batches = Journal::read_all(dir);
        let shards: HashSet<u16> = batches.iter().map(|b| b.shard_id).collect();
        let events: usize = batches.iter().map(|b| b.events.len()).sum();
        (shards, events)
    };
    let (s1, n1) = stored(d1.path());
    let (s2, n2) = stored(d2.path());
    assert!(s1.iter().all(|&s| s < SHARDS / 2), "{s1:?}");
    assert!(s2.iter().all(|&s| s >= SHARDS / 2), "{s2:?}");
    assert_eq!(n1 + n2, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_storage_peer_mid_ingest_stores_every_event_once() {
    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 50_000;
    let total = PRODUCERS * PER_PRODUCER;
    let dir = tempfile::tempdir().unwrap();
    let mut storage = ChildNode::start("child_storage_node", dir.path(), 0, u16::MAX);
    let client = client(&[&storage]);
    client.start().await.unwrap();
    wait_covered(&client).await;
    let bus = bus(client.clone()).await;

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let bus = bus.clone();
            std::thread::spawn(move || ingest(&bus, p, PER_PRODUCER))
        })
        .collect();

    let started = Instant::now();
    while bus.stats().snapshot().events_dispatched < total / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ingest stalled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_kill = bus.stats().snapshot();
    storage.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    storage.restart();

    tokio::task::spawn_blocking(move || {
        for p in producers {
            p.join().unwrap();
        }
    })
    .await
    .unwrap();
    bus.flush().await.unwrap();
    bus.shutdown_via_ref().await.unwrap();
    let stats = bus.stats().snapshot();
    assert!(at_kill.events_dispatched < total, "the kill came too late");
    assert_eq!(stats.events_ingested, total, "{stats:?}");
    assert_eq!(
        stats.events_dispatched + stats.events_dropped,
        stats.events_ingested,
        "stats invariant broken: {stats:?}"
    );
    assert_eq!(stats.events_dropped, 0, "{stats:?}");
    assert!(
        stats.batches_retried > 0,
        "the kill hit no batch: {stats:?}"
    );

    // Everything accepted is in the storage node's journal exactly once.
    storage.stop();
    let mut seen = HashSet::with_capacity(total as usize);
    for batch in Journal::read_all(dir.path()) {
        for e in &batch.events {
            let v: serde_json::Value = serde_json::from_slice(&e.raw).unwrap();
            let key = (v["p"].as_u64().unwrap(), v["i"].as_u64().unwrap());
            assert!(seen.insert(key), "event {key:?} stored twice");
        }
    }
    assert_eq!(seen.len() as u64, total);
    eprintln!(
        "mesh fault test: {total} events, {} batches retried, killed at {} dispatched",
        stats.batches_retried, at_kill.events_dispatched
    );
}
