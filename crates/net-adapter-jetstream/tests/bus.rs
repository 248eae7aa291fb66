//! `JetStreamAdapter` behind a real `net_core::EventBus`: a kill -9 of nats-server in the
//! middle of a 200,000-event ingest loses and duplicates nothing, and reading 100,000 events
//! back through `poll` costs a handful of requests per page, not one per event.

mod support;

use bytes::Bytes;
use net_adapter::{conformance, Adapter, Batch, StoredEvent, MAX_PAGE};
use net_adapter_jetstream::{JetStreamAdapter, JetStreamAdapterConfig};
use net_core::{
    BackpressureMode, BatchConfig, ConsumeRequest, EventBus, EventBusConfig, RawEvent, RetryPolicy,
};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::NatsServer;

/// The `(p, i)` of a stored payload `{"p":..,"i":..}`.
fn key(event: &StoredEvent) -> (u64, u64) {
    let value: serde_json::Value = serde_json::from_slice(&event.raw).expect("JSON payload");
    (
        value["p"].as_u64().expect("p field"),
        value["i"].as_u64().expect("i field"),
    )
}

/// Every event of `shard`, read page by page with the largest pages. A retryable error (a
/// server still recovering its streams after a restart answers slowly) is retried, as a
/// consumer would, for up to 30 s.
async fn read_shard(adapter: &JetStreamAdapter, shard: u16) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = match adapter.poll_shard(shard, cursor.as_deref(), MAX_PAGE).await {
            Ok(page) => page,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => panic!("poll_shard: {e:?}"),
        };
        out.extend(page.events);
        cursor = Some(page.cursor);
        if !page.has_more {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_mid_ingest_and_restart_stores_every_accepted_event_once() {
    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 50_000;
    const SHARDS: u16 = 8;
    let Some(mut server) = NatsServer::start_private("kill_nine_mid_ingest") else {
        return;
    };
    let config = JetStreamAdapterConfig::new(server.url(), support::unique_name("fault"))
        .request_timeout(Duration::from_secs(2));
    let adapter = Arc::new(JetStreamAdapter::connect(config.clone()).await.unwrap());
    let bus_config = EventBusConfig::builder()
        .shards(SHARDS)
        .ring_capacity(8192)
        .batch(BatchConfig::default().max_events(1000).max_delay_ms(5))
        .backpressure(BackpressureMode::Block)
        .retry(
            RetryPolicy::default()
                .max_retries(10_000)
                .initial_backoff(Duration::from_millis(20))
                .max_backoff(Duration::from_millis(300))
                .attempt_timeout(Duration::from_secs(5)),
        )
        .adapter_instance(adapter.clone())
        .build()
        .unwrap();
    let bus = Arc::new(EventBus::new(bus_config).await.unwrap());
    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let bus = bus.clone();
            let accepted = accepted.clone();
            std::thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    let body = format!(r#"{{"p":{p},"i":{i},"pad":"0123456789abcdef0123456789"}}"#);
                    bus.ingest_raw(RawEvent::from_bytes(Bytes::from(body)))
                        .expect("Block mode accepts every event");
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Kill the server once a good part of the events went through, while the rest is on the
    // way, and bring it back on the same store directory.
    let total = PRODUCERS * PER_PRODUCER;
    while bus.stats().snapshot().events_dispatched < total / 4 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ingest stalled before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_kill = bus.stats().snapshot();
    server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart();
    let restarted = Instant::now();

    tokio::task::spawn_blocking(move || {
        for producer in producers {
            producer.join().expect("producer thread");
        }
    })
    .await
    .unwrap();
    bus.flush().await.expect("flush after the restart");
    bus.shutdown_via_ref().await.expect("shutdown");
    let stats = bus.stats().snapshot();
    let counts = adapter.request_counts();
    println!(
        "killed at {} of {total} dispatched; ingest took {:?} ({:?} after the restart); \
         {} publishes, {} dropped by the server as duplicates; retried batches {}",
        at_kill.events_dispatched,
        started.elapsed(),
        restarted.elapsed(),
        counts.published,
        counts.duplicates,
        stats.batches_retried
    );
    assert_eq!(accepted.load(Ordering::Relaxed), total);
    assert_eq!(stats.events_ingested, total, "{stats:?}");
    assert_eq!(
        stats.events_dispatched + stats.events_dropped,
        stats.events_ingested,
        "stats invariant: {stats:?}"
    );
    assert_eq!(stats.events_dropped, 0, "{stats:?}");
    assert!(
        stats.batches_retried > 0,
        "the kill made no batch retry: {stats:?}"
    );

    // Read everything back through a fresh connection.
    let reader = JetStreamAdapter::connect(config).await.unwrap();
    let mut seen = HashSet::with_capacity(total as usize);
    let mut dedup_ids = HashSet::with_capacity(total as usize);
    let mut stored = 0u64;
    for shard in 0..SHARDS {
        for event in read_shard(&reader, shard).await {
            stored += 1;
            let k = key(&event);
            assert!(seen.insert(k), "event {k:?} stored twice");
            let id = event.dedup_id.clone().expect("dedup id");
            assert!(dedup_ids.insert(id.clone()), "dedup id {id} stored twice");
        }
    }
    assert_eq!(stored, total, "every accepted event stored exactly once");
    for p in 0..PRODUCERS {
        for i in 0..PER_PRODUCER {
            assert!(
                seen.contains(&(p, i)),
                "event {p}/{i} was accepted but not stored"
            );
        }
    }
    reader.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_100k_events_through_poll_costs_a_few_requests_per_page() {
    const SHARDS: u16 = 4;
    const PER_SHARD: u64 = 25_000;
    const BATCH: u64 = 2_500;
    let Some(server) = NatsServer::start("read_100k") else {
        return;
    };
    let config = JetStreamAdapterConfig::new(server.url(), support::unique_name("read"))
        .request_timeout(Duration::from_secs(10));
    let adapter = Arc::new(JetStreamAdapter::connect(config).await.unwrap());
    let writers: Vec<_> = (0..SHARDS)
        .map(|shard| {
            let adapter = adapter.clone();
            tokio::spawn(async move {
                for start in (0..PER_SHARD).step_by(BATCH as usize) {
                    let payloads =
                        (start..start + BATCH).map(|i| format!(r#"{{"p":{shard},"i":{i}}}"#));
                    let batch = Batch {
                        process_nonce: 7,
                        ..conformance::batch(shard, start, payloads)
                    };
                    adapter.on_batch(Arc::new(batch)).await.expect("on_batch");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let total = u64::from(SHARDS) * PER_SHARD;

    // Straight from the adapter: pages of MAX_PAGE, shard after shard.
    let before = adapter.request_counts();
    let started = Instant::now();
    let mut read = 0u64;
    for shard in 0..SHARDS {
        read += read_shard(&adapter, shard).await.len() as u64;
    }
    let direct_time = started.elapsed();
    let after = adapter.request_counts();
    assert_eq!(read, total);
    let pages = after.pages - before.pages;
    let fetches = after.fetches - before.fetches;
    // The background deletions of the last pages may still be on their way.
    let requests = after.api_requests() - before.api_requests();
    let per_shard_pages = PER_SHARD.div_ceil(MAX_PAGE as u64);
    assert!(
        pages <= u64::from(SHARDS) * per_shard_pages,
        "{pages} pages"
    );
    // A pull consumer page is one stream info, one consumer creation, one fetch and one
    // deletion; a batched direct get page (servers 2.11+) is one stream info and one request
    // per 1,000 messages.
    let batched = adapter
        .client()
        .is_some_and(|client| client.is_server_compatible(2, 11, 0));
    let (fetches_per_page, requests_per_page) = if batched {
        (
            MAX_PAGE.div_ceil(1_000) as u64,
            1 + MAX_PAGE.div_ceil(1_000) as u64,
        )
    } else {
        (1, 4)
    };
    assert!(
        fetches <= fetches_per_page * pages,
        "{fetches} fetches for {pages} pages"
    );
    assert!(
        requests <= requests_per_page * pages,
        "{requests} requests for {pages} pages"
    );

    // Through the bus's poll, merged over the shards.
    let bus = EventBus::new(
        EventBusConfig::builder()
            .shards(SHARDS)
            .adapter_instance(adapter.clone())
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let before = adapter.request_counts();
    let started = Instant::now();
    let mut seen = HashSet::with_capacity(total as usize);
    let mut cursor: Option<String> = None;
    let mut polls = 0u64;
    loop {
        let mut request = ConsumeRequest::new(10_000);
        if let Some(cursor) = cursor.take() {
            request = request.from(cursor);
        }
        let page = bus.poll(request).await.expect("bus.poll");
        polls += 1;
        for event in &page.events {
            assert!(seen.insert(key(event)), "{:?} polled twice", key(event));
        }
        cursor = Some(page.cursor);
        if !page.has_more {
            break;
        }
    }
    let bus_time = started.elapsed();
    let after = adapter.request_counts();
    assert_eq!(seen.len() as u64, total);
    let fetches = after.fetches - before.fetches;
    let requests = after.api_requests() - before.api_requests();
    println!(
        "read {total} events ({}): poll_shard {pages} pages in {direct_time:?} ({:.0} events/s); \
         bus.poll {polls} polls, {fetches} fetches, {requests} requests in {bus_time:?} \
         ({:.0} events/s)",
        if batched {
            "batched direct get"
        } else {
            "pull consumer"
        },
        total as f64 / direct_time.as_secs_f64(),
        total as f64 / bus_time.as_secs_f64(),
    );
    assert!(
        fetches <= polls * u64::from(SHARDS) * fetches_per_page,
        "{fetches} fetches for {polls} polls of {SHARDS} shards"
    );
    assert!(
        requests * 100 <= total,
        "{requests} requests to read {total} events: more than one per 100 events"
    );
    bus.shutdown().await.unwrap();
}
