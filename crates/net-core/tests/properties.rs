//! Property tests of the bus: the stats invariant under random schedules and failure
//! patterns, and exact cursor resumption under random limits, shard counts and filters.

mod common;

use common::{assert_balanced, poll_all, ScriptedAdapter, Step};
use net_core::net_adapter::MemoryAdapterConfig;
use net_core::{
    BackpressureMode, BatchConfig, Event, EventBus, EventBusConfig, Filter, IngestionError,
    Ordering, RawEvent, RetryPolicy,
};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn mode() -> impl Strategy<Value = BackpressureMode> {
    prop_oneof![
        Just(BackpressureMode::Block),
        Just(BackpressureMode::DropOldest),
        Just(BackpressureMode::DropNewest),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Ok),
        2 => Just(Step::Transient),
        1 => Just(Step::TransientAfterWrite),
        1 => Just(Step::Fatal),
        2 => (1u64..4).prop_map(Step::Slow),
    ]
}

#[derive(Debug, Clone)]
struct Schedule {
    mode: BackpressureMode,
    script: Vec<Step>,
    shards: u16,
    ring: usize,
    max_events: usize,
    max_retries: u32,
    producers: usize,
    events_per_producer: u64,
    flush_every: u64,
    shutdown_timeout_ms: u64,
    concurrent_shutdown: bool,
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (
        mode(),
        prop::collection::vec(step(), 1..8),
        1u16..5,
        prop::sample::select(vec![2usize, 4, 16, 64]),
        1usize..40,
        0u32..3,
        1usize..4,
        0u64..400,
        prop::sample::select(vec![0u64, 37, 150]),
        prop::sample::select(vec![50u64, 5_000]),
        any::<bool>(),
    )
        .prop_map(
            |(mode, script, shards, ring, max_events, max_retries, producers, n, flush, st, cs)| {
                Schedule {
                    mode,
                    script,
                    shards,
                    ring,
                    max_events,
                    max_retries,
                    producers,
                    events_per_producer: n,
                    flush_every: flush,
                    shutdown_timeout_ms: st,
                    concurrent_shutdown: cs,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// After shutdown: dispatched + dropped == ingested, and ingested + rejected == offered,
    /// for every backpressure mode and adapter behaviour; the adapter holds exactly what was
    /// dispatched (retries after a write are deduplicated).
    #[test]
    fn stats_balance_after_shutdown(s in schedule()) {
        let rt = runtime();
        rt.block_on(async {
            let adapter = ScriptedAdapter::new(s.script.clone());
            let config = EventBusConfig::builder()
                .shards(s.shards)
                .ring_capacity(s.ring)
                .batch(BatchConfig::default().max_events(s.max_events).max_delay_ms(1))
                .backpressure(s.mode)
                .retry(RetryPolicy::default()
                    .max_retries(s.max_retries)
                    .initial_backoff(Duration::from_millis(1))
                    .max_backoff(Duration::from_millis(2))
                    .attempt_timeout(Duration::from_secs(5)))
                .shutdown_timeout(Duration::from_millis(s.shutdown_timeout_ms))
                .adapter_instance(adapter.clone())
                .build()
                .unwrap();
            let bus = Arc::new(EventBus::new(config).await.unwrap());
            let producers: Vec<_> = (0..s.producers)
                .map(|p| {
                    let bus = bus.clone();
                    let n = s.events_per_producer;
                    std::thread::spawn(move || {
                        let mut accepted = 0u64;
                        let mut rejected = 0u64;
                        for i in 0..n {
                            let r = if i % 5 == 0 {
                                bus.ingest(Event::new(serde_json::json!({"p": p, "i": i})))
                            } else {
                                bus.ingest_raw(RawEvent::from_bytes(format!(r#"{{"p":{p},"i":{i}}}"#)))
                            };
                            match r {
                                Ok(()) => accepted += 1,
                                Err(IngestionError::Backpressure | IngestionError::ShuttingDown) => rejected += 1,
                                Err(e) => panic!("unexpected ingest error {e:?}"),
                            }
                        }
                        (accepted, rejected)
                    })
                })
                .collect();
            if s.flush_every > 0 {
                // Flushes racing the producers must neither hang nor break the accounting.
                for _ in 0..3 {
                    bus.flush().await.ok();
                }
            }
            if s.concurrent_shutdown {
                // Shutdown racing the producers must strand nothing.
                bus.shutdown_via_ref().await.ok();
            }
            let (accepted, rejected) = tokio::task::spawn_blocking(move || {
                producers.into_iter().map(|p| p.join().unwrap()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
            })
            .await
            .unwrap();
            bus.shutdown_via_ref().await.ok();
            let stats = bus.stats().snapshot();
            assert_balanced(bus.stats());
            assert_eq!(stats.events_ingested, accepted);
            assert_eq!(stats.events_rejected, rejected);
            if s.mode != BackpressureMode::DropNewest && !s.concurrent_shutdown {
                assert_eq!(rejected, 0);
            }
            // A write whose success the adapter did not report may be stored yet counted
            // dropped; nothing is ever stored twice.
            let stored = adapter.memory.total_len() as u64;
            assert!(stored >= stats.events_dispatched && stored <= stats.events_ingested);
            if !s.script.contains(&Step::TransientAfterWrite) {
                assert_eq!(stored, stats.events_dispatched);
            }
            if !s.script.iter().any(|st| matches!(st, Step::Fatal | Step::Transient | Step::TransientAfterWrite))
                && s.mode != BackpressureMode::DropOldest
                && !stats.shutdown_was_lossy
            {
                assert_eq!(stats.events_dropped, 0);
            }
        });
    }

    /// Paging with any limit, shard count, filter and ordering yields every matching event
    /// exactly once.
    #[test]
    fn cursor_resumes_without_loss_or_duplication(
        shards in 1u16..6,
        events in 0u64..300,
        limit in 1usize..40,
        threshold in 0u64..12,
        filter_kind in 0u8..4,
        by_time in any::<bool>(),
    ) {
        let rt = runtime();
        rt.block_on(async {
            let bus = EventBus::new(
                EventBusConfig::builder()
                    .shards(shards)
                    .batch(BatchConfig::default().max_events(16).max_delay_ms(1))
                    .adapter(MemoryAdapterConfig::default())
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
            for i in 0..events {
                bus.ingest(Event::new(serde_json::json!({"i": i, "k": i % 10, "tag": if i % 2 == 0 { "even" } else { "odd" }})))
                    .unwrap();
            }
            bus.flush().await.unwrap();
            let (filter, keep): (Option<Filter>, Box<dyn Fn(u64) -> bool>) = match filter_kind {
                0 => (None, Box::new(|_| true)),
                1 => (
                    Some(Filter::parse(&format!(r#"{{"k": {{"$lt": {threshold}}}}}"#)).unwrap()),
                    Box::new(move |i| i % 10 < threshold),
                ),
                2 => (
                    Some(Filter::parse(&format!(r#"{{"$or": [{{"tag": "even"}}, {{"k": {{"$gte": {threshold}}}}}]}}"#)).unwrap()),
                    Box::new(move |i| i % 2 == 0 || i % 10 >= threshold),
                ),
                _ => (
                    Some(Filter::parse(r#"{"$not": {"tag": "even"}}"#).unwrap()),
                    Box::new(|i| i % 2 == 1),
                ),
            };
            let ordering = if by_time { Ordering::Timestamp } else { Ordering::Sequence };
            let got = poll_all(&bus, limit, ordering, filter).await;
            let ids: Vec<u64> = got.iter().map(|e| e.json().unwrap()["i"].as_u64().unwrap()).collect();
            let unique: BTreeSet<u64> = ids.iter().copied().collect();
            assert_eq!(unique.len(), ids.len(), "an event was returned twice");
            let expected: BTreeSet<u64> = (0..events).filter(|&i| keep(i)).collect();
            assert_eq!(unique, expected);
            bus.shutdown().await.unwrap();
        });
    }
}
