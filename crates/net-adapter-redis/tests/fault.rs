//! Redis killed with SIGKILL and restarted on the same port while four producers ingest
//! 200 000 events through a bus on the Redis adapter.
//!
//! The server runs with AOF and `appendfsync always`, so every write it acknowledged
//! survives the kill. After recovery and shutdown, every accepted event must be in Redis
//! exactly once (by dedup id, and by payload), the bus's stats must balance, and all of it
//! without restarting the process or rebuilding the adapter.

mod support;

use net_adapter::Adapter;
use net_adapter_redis::{RedisAdapter, RedisAdapterConfig};
use net_core::{BackpressureMode, BatchConfig, EventBus, EventBusConfig, RawEvent, RetryPolicy};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Options, Redis};

const PRODUCERS: u64 = 4;
const PER_PRODUCER: u64 = 50_000;
const SHARDS: u16 = 8;

/// Every entry of every shard stream, read with a plain client: `(dedup id, payload)`.
async fn stored(redis: &Redis, adapter: &RedisAdapter) -> Vec<(String, serde_json::Value)> {
    let mut con = redis.client().await;
    let mut out = Vec::new();
    for shard in 0..SHARDS {
        let key = adapter.shard_key(shard);
        let mut start = "-".to_owned();
        loop {
            let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(&key)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut con)
                .await
                .expect("xrange");
            let Some((last, _)) = page.last() else { break };
            start = format!("({last}");
            for (_, fields) in page {
                let field = |name: &str| {
                    fields
                        .iter()
                        .find(|(f, _)| f == name)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_else(|| panic!("entry without `{name}`"))
                };
                let d: serde_json::Value = serde_json::from_str(&field("d")).expect("d is JSON");
                assert_eq!(d["s"], u64::from(shard), "entry on the wrong shard");
                out.push((field("dedup_id"), d["r"].clone()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_mid_ingest_loses_and_duplicates_nothing() {
    let Some(mut redis) = Redis::private(
        "sigkill_and_restart_mid_ingest",
        Options {
            aof: true,
            ..Options::default()
        },
    ) else {
        return;
    };
    let adapter = RedisAdapter::new(
        RedisAdapterConfig::new(redis.url(), "fault").command_timeout(Duration::from_secs(2)),
    )
    .expect("config");
    let config = EventBusConfig::builder()
        .shards(SHARDS)
        .ring_capacity(8192)
        .batch(BatchConfig::default().max_events(256).max_delay_ms(2))
        .backpressure(BackpressureMode::Block)
        .retry(
            RetryPolicy::default()
                .max_retries(10_000)
                .initial_backoff(Duration::from_millis(5))
                .max_backoff(Duration::from_millis(100))
                .attempt_timeout(Duration::from_secs(5)),
        )
        .adapter_instance(adapter.clone())
        .build()
        .expect("bus config");
    let bus = Arc::new(EventBus::new(config).await.expect("bus"));
    let total = PRODUCERS * PER_PRODUCER;

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    let body = format!(r#"{{"p":{p},"i":{i}}}"#);
                    bus.ingest_raw(RawEvent::from_bytes(body)).expect("ingest");
                }
            })
        })
        .collect();

    // Kill the server once a third of the events reached Redis, then bring it back.
    let started = Instant::now();
    while bus.stats().snapshot().events_dispatched < total / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "ingest stalled before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_kill = bus.stats().snapshot();
    redis.kill();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !adapter.is_healthy().await,
        "the killed server looks healthy"
    );
    redis.restart();
    let healthy_after = Instant::now();
    while !adapter.is_healthy().await {
        assert!(
            healthy_after.elapsed() < Duration::from_secs(30),
            "the adapter did not reconnect to the restarted server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    tokio::task::spawn_blocking(move || {
        for producer in producers {
            producer.join().expect("producer");
        }
    })
    .await
    .expect("join producers");
    bus.flush().await.expect("flush");
    bus.shutdown_via_ref().await.expect("shutdown");

    let stats = bus.stats().snapshot();
    assert!(
        at_kill.events_dispatched < total,
        "the kill came after ingest finished"
    );
    assert!(
        stats.batches_retried > 0,
        "no batch was retried: the kill did not hit a write ({stats:?})"
    );
    assert_eq!(stats.events_ingested, total, "{stats:?}");
    assert_eq!(
        stats.events_dispatched + stats.events_dropped,
        stats.events_ingested,
        "stats invariant broken: {stats:?}"
    );
    assert_eq!(stats.events_dropped, 0, "events were dropped: {stats:?}");

    let entries = stored(&redis, &adapter).await;
    let mut ids = HashSet::with_capacity(entries.len());
    let mut payloads = HashSet::with_capacity(entries.len());
    for (id, payload) in &entries {
        assert!(ids.insert(id.clone()), "dedup id {id} stored twice");
        let key = (
            payload["p"].as_u64().unwrap(),
            payload["i"].as_u64().unwrap(),
        );
        assert!(payloads.insert(key), "event {key:?} stored twice");
    }
    assert_eq!(
        entries.len() as u64,
        stats.events_dispatched,
        "Redis holds {} entries, the bus dispatched {}",
        entries.len(),
        stats.events_dispatched
    );
    for p in 0..PRODUCERS {
        for i in 0..PER_PRODUCER {
            assert!(payloads.contains(&(p, i)), "event {p}/{i} is missing");
        }
    }
    eprintln!(
        "fault test: {} events, {} batches retried, killed at {} dispatched",
        entries.len(),
        stats.batches_retried,
        at_kill.events_dispatched
    );
}
