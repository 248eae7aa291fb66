//! Shard scaling under load: nothing lost or duplicated, per-key order across resizes, the
//! errors, and the monitor.

mod common;

use common::{assert_balanced, poll_all, ScriptedAdapter, Step};
use net_core::net_adapter::{
    async_trait, Adapter, AdapterError, Batch, MemoryAdapter, ShardPollResult,
};
use net_core::{
    BackpressureMode, BatchConfig, ConsumeRequest, EventBus, EventBusConfig, Ordering, RawEvent,
    ScalingDecision, ScalingError, ScalingPolicy,
};
use parking_lot::Mutex;
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn keyed(producer: u64, key: u64, seq: u64) -> RawEvent {
    RawEvent::with_key(
        format!(r#"{{"p":{producer},"k":{key},"s":{seq}}}"#),
        format!("{producer}/{key}"),
    )
}

fn parse(raw: &[u8]) -> (u64, u64, u64) {
    let v: serde_json::Value = serde_json::from_slice(raw).unwrap();
    (
        v["p"].as_u64().unwrap(),
        v["k"].as_u64().unwrap(),
        v["s"].as_u64().unwrap(),
    )
}

/// Checks, at dispatch time, that every key's events arrive in ingest order.
struct OrderChecking {
    memory: MemoryAdapter,
    last: Mutex<HashMap<(u64, u64), u64>>,
    violations: Mutex<Vec<String>>,
}

#[async_trait]
impl Adapter for OrderChecking {
    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        {
            let mut last = self.last.lock();
            for e in &batch.events {
                let (p, k, s) = parse(&e.raw);
                if let Some(prev) = last.insert((p, k), s) {
                    if prev >= s {
                        self.violations.lock().push(format!(
                            "key {p}/{k}: {s} dispatched after {prev} (shard {})",
                            batch.shard_id
                        ));
                    }
                }
            }
        }
        self.memory.on_batch(batch).await
    }
    async fn poll_shard(
        &self,
        shard: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        self.memory.poll_shard(shard, cursor, limit).await
    }
    async fn flush(&self) -> Result<(), AdapterError> {
        self.memory.flush().await
    }
    async fn shutdown(&self) -> Result<(), AdapterError> {
        self.memory.shutdown().await
    }
    fn name(&self) -> &str {
        "order-checking"
    }
}

#[derive(Clone, Debug)]
enum Op {
    Add(u16),
    Remove(usize),
    Flush,
    Poll(usize),
    Pause(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u16..3).prop_map(Op::Add),
        3 => (0usize..8).prop_map(Op::Remove),
        1 => Just(Op::Flush),
        2 => (1usize..500).prop_map(Op::Poll),
        2 => (0u64..3).prop_map(Op::Pause),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Four producers ingest while shards are added, removed, flushed and polled at random:
    /// every accepted event is polled exactly once, each key's events reach the adapter in
    /// order, and the stats balance after shutdown.
    #[test]
    fn resizes_under_load_lose_and_duplicate_nothing(
        start in 1u16..5,
        ops in prop::collection::vec(op(), 1..12),
        per_producer in 200u64..2_000,
        ring in prop::sample::select(vec![8usize, 64, 1024]),
        mode in prop_oneof![Just(BackpressureMode::Block), Just(BackpressureMode::DropNewest)],
    ) {
        let rt = runtime();
        rt.block_on(async {
            let adapter = Arc::new(OrderChecking {
                memory: MemoryAdapter::new(),
                last: Mutex::new(HashMap::new()),
                violations: Mutex::new(Vec::new()),
            });
            let bus = Arc::new(
                EventBus::new(
                    EventBusConfig::builder()
                        .shards(start)
                        .ring_capacity(ring)
                        .batch(BatchConfig::default().max_events(32).max_delay_ms(1))
                        .backpressure(mode)
                        .adapter_instance(adapter.clone())
                        .build()
                        .unwrap(),
                )
                .await
                .unwrap(),
            );
            let producers: Vec<_> = (0..4u64)
                .map(|p| {
                    let bus = bus.clone();
                    std::thread::spawn(move || {
                        let mut accepted = BTreeSet::new();
                        let mut next = [0u64; 8];
                        for i in 0..per_producer {
                            let key = i % 8;
                            let seq = next[key as usize];
                            match bus.ingest_raw(keyed(p, key, seq)) {
                                Ok(()) => {
                                    accepted.insert((p, key, seq));
                                    next[key as usize] += 1;
                                }
                                Err(net_core::IngestionError::Backpressure) => {}
                                Err(e) => panic!("ingest failed: {e}"),
                            }
                        }
                        accepted
                    })
                })
                .collect();
            let mut polled = Vec::new();
            let mut cursor: Option<String> = None;
            for op in ops {
                match op {
                    Op::Add(n) => {
                        bus.add_shards(n).await.unwrap();
                    }
                    Op::Remove(pick) => {
                        let active = bus.active_shards();
                        if active.len() > 1 {
                            let id = active[pick % active.len()];
                            bus.remove_shards(vec![id]).await.unwrap();
                            prop_assert!(!bus.active_shards().contains(&id));
                        }
                    }
                    Op::Flush => bus.flush().await.unwrap(),
                    Op::Poll(limit) => {
                        let mut request = ConsumeRequest::new(limit);
                        if let Some(c) = cursor.take() {
                            request = request.from(c);
                        }
                        let page = bus.poll(request).await.unwrap();
                        polled.extend(page.events.iter().map(|e| parse(&e.raw)));
                        cursor = Some(page.cursor);
                    }
                    Op::Pause(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                }
            }
            let accepted: BTreeSet<(u64, u64, u64)> = tokio::task::spawn_blocking(move || {
                producers.into_iter().flat_map(|p| p.join().unwrap()).collect()
            })
            .await
            .unwrap();
            bus.flush().await.unwrap();
            loop {
                let mut request = ConsumeRequest::new(1_000);
                if let Some(c) = cursor.take() {
                    request = request.from(c);
                }
                let page = bus.poll(request).await.unwrap();
                polled.extend(page.events.iter().map(|e| parse(&e.raw)));
                cursor = Some(page.cursor);
                if !page.has_more {
                    break;
                }
            }
            let unique: BTreeSet<_> = polled.iter().copied().collect();
            prop_assert_eq!(unique.len(), polled.len(), "an event was polled twice");
            prop_assert_eq!(&unique, &accepted);
            let violations = adapter.violations.lock().clone();
            prop_assert!(violations.is_empty(), "{:?}", &violations[..violations.len().min(5)]);
            bus.shutdown_via_ref().await.unwrap();
            assert_balanced(bus.stats());
            prop_assert_eq!(bus.stats().snapshot().events_ingested, accepted.len() as u64);
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_stay_in_order_for_a_timestamp_reader_across_resizes() {
    let bus = Arc::new(
        EventBus::new(
            EventBusConfig::builder()
                .shards(2)
                .ring_capacity(256)
                .batch(BatchConfig::default().max_events(16).max_delay_ms(1))
                .backpressure(BackpressureMode::Block)
                .adapter(net_core::net_adapter::MemoryAdapterConfig::default())
                .build()
                .unwrap(),
        )
        .await
        .unwrap(),
    );
    let producer = {
        let bus = bus.clone();
        std::thread::spawn(move || {
            for i in 0..40_000u64 {
                bus.ingest_raw(keyed(0, i % 16, i / 16)).unwrap();
            }
        })
    };
    for round in 0..6 {
        let added = bus.add_shards(2).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let victim = if round % 2 == 0 {
            added[0]
        } else {
            bus.active_shards()[0]
        };
        bus.remove_shards(vec![victim]).await.unwrap();
    }
    tokio::task::spawn_blocking(move || producer.join().unwrap())
        .await
        .unwrap();
    bus.flush().await.unwrap();
    let events = poll_all(&bus, 777, Ordering::Timestamp, None).await;
    assert_eq!(events.len(), 40_000);
    let mut last: HashMap<u64, u64> = HashMap::new();
    for e in &events {
        let (_, k, s) = parse(&e.raw);
        if let Some(prev) = last.insert(k, s) {
            assert!(prev < s, "key {k}: {s} read after {prev}");
        }
    }
    bus.shutdown_via_ref().await.unwrap();
}

#[tokio::test]
async fn scaling_errors_are_typed_and_retired_shards_stay_readable() {
    let bus = EventBus::new(
        EventBusConfig::builder()
            .shards(2)
            .adapter(net_core::net_adapter::MemoryAdapterConfig::default())
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    for i in 0..200 {
        bus.ingest_raw(keyed(0, i % 20, i)).unwrap();
    }
    assert_eq!(bus.add_shards(0).await, Err(ScalingError::ZeroCount));
    let added = bus.add_shards(2).await.unwrap();
    assert_eq!(added, vec![2, 3]);
    assert_eq!(
        bus.remove_shards(vec![9]).await,
        Err(ScalingError::UnknownShard(9))
    );
    bus.remove_shards(vec![0, 2]).await.unwrap();
    assert_eq!(
        bus.remove_shards(vec![0]).await,
        Err(ScalingError::UnknownShard(0))
    );
    assert_eq!(
        bus.remove_shards(vec![1, 3]).await,
        Err(ScalingError::BelowMinimum { min: 1 })
    );
    assert_eq!(bus.active_shards(), vec![1, 3]);
    // Ids are never reused.
    assert_eq!(bus.add_shards(1).await.unwrap(), vec![4]);
    for i in 200..400 {
        bus.ingest_raw(keyed(0, i % 20, i)).unwrap();
    }
    bus.flush().await.unwrap();
    // Events queued on the retired shard 0 are still delivered.
    let events = poll_all(&bus, 64, Ordering::Sequence, None).await;
    assert_eq!(events.len(), 400);
    assert!(events.iter().any(|e| e.shard_id == 0));
    bus.shutdown_via_ref().await.unwrap();
    assert_eq!(bus.add_shards(1).await, Err(ScalingError::ShuttingDown));
    assert_eq!(
        bus.remove_shards(vec![1]).await,
        Err(ScalingError::ShuttingDown)
    );

    let capped = EventBus::new(
        EventBusConfig::builder()
            .shards(2)
            .scaling(
                ScalingPolicy::default()
                    .min_shards(2)
                    .max_shards(3)
                    .check_interval(Duration::from_secs(3600)),
            )
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        capped.add_shards(2).await,
        Err(ScalingError::AboveMaximum { max: 3 })
    );
    assert_eq!(
        capped.remove_shards(vec![0]).await,
        Err(ScalingError::BelowMinimum { min: 2 })
    );
    capped.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_adapter_makes_the_monitor_scale_up_then_down() {
    let cooldown = Duration::from_millis(300);
    let policy = ScalingPolicy::default()
        .target_fill_ratio(0.5)
        .min_shards(2)
        .max_shards(6)
        .cooldown(cooldown)
        .scale_down_delay(Duration::from_millis(500))
        .check_interval(Duration::from_millis(50));
    let adapter = ScriptedAdapter::new(vec![Step::Slow(20)]);
    let bus = Arc::new(
        EventBus::new(
            EventBusConfig::builder()
                .shards(2)
                .ring_capacity(64)
                .batch(BatchConfig::default().max_events(16).max_delay_ms(1))
                .backpressure(BackpressureMode::DropNewest)
                .scaling(policy)
                .adapter_instance(adapter.clone())
                .build()
                .unwrap(),
        )
        .await
        .unwrap(),
    );
    // Without a monitor decision yet, the rule already sees the pressure.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let bus = bus.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = bus.ingest_raw(keyed(0, i % 64, i));
                i += 1;
                if i.is_multiple_of(64) {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        })
    };
    let mut timeline: Vec<(Instant, usize)> = vec![(Instant::now(), 2)];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut saw_suggestion = false;
    while timeline.iter().map(|t| t.1).max() < Some(4) {
        assert!(
            Instant::now() < deadline,
            "the monitor never scaled up: {timeline:?}"
        );
        if !saw_suggestion {
            saw_suggestion = matches!(bus.suggest_scaling().await, ScalingDecision::ScaleUp(_));
        }
        let n = bus.active_shards().len();
        if n != timeline.last().unwrap().1 {
            timeline.push((Instant::now(), n));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::task::spawn_blocking(move || producer.join().unwrap())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while bus.active_shards().len() > 2 {
        assert!(
            Instant::now() < deadline,
            "the monitor never scaled back down: {timeline:?}"
        );
        let n = bus.active_shards().len();
        if n != timeline.last().unwrap().1 {
            timeline.push((Instant::now(), n));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    timeline.push((Instant::now(), bus.active_shards().len()));
    assert!(
        saw_suggestion,
        "suggest_scaling never proposed ScaleUp under pressure"
    );
    for pair in timeline.windows(2) {
        assert!((2..=6).contains(&pair[1].1), "left min/max: {timeline:?}");
        if pair[0].1 != pair[1].1 && pair[0].0 != timeline[0].0 {
            // Sampling adds lateness to the first change, so allow half the cool-down.
            assert!(
                pair[1].0 - pair[0].0 >= cooldown / 2,
                "changes closer than the cool-down: {timeline:?}"
            );
        }
    }
    bus.shutdown_via_ref().await.unwrap();
    assert_balanced(bus.stats());
}

/// A bus of one shard whose worker holds its first batch until `open_gate()`, so that its
/// ring fills and stays full; batches close at `max_events` with no delay.
async fn gated_one_shard_bus(
    ring: usize,
    max_events: usize,
    backpressure: BackpressureMode,
) -> (Arc<EventBus>, Arc<ScriptedAdapter>) {
    let adapter = ScriptedAdapter::new(vec![Step::Gated]);
    let bus = EventBus::new(
        EventBusConfig::builder()
            .shards(1)
            .ring_capacity(ring)
            .batch(
                BatchConfig::default()
                    .max_events(max_events)
                    .max_delay_ms(0),
            )
            .backpressure(backpressure)
            .adapter_instance(adapter.clone())
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    (Arc::new(bus), adapter)
}

/// A resize must not record a donor's hand-off count while a producer that reserved on the
/// donor with the old table is still pushing (its reservation not yet matched by a push).
/// Here the producer is held in its push by a full ring (`Block`), and `add_shards` may only
/// finish after that push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resize_waits_for_a_producer_still_pushing_onto_a_donor() {
    let (bus, adapter) = gated_one_shard_bus(4, 2, BackpressureMode::Block).await;
    // The producer fills the ring while the worker waits at the gate, then blocks in a push.
    const EVENTS: u64 = 100;
    let pushed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let producer = {
        let (bus, pushed) = (bus.clone(), pushed.clone());
        std::thread::spawn(move || {
            for seq in 0..EVENTS {
                bus.ingest_raw(keyed(0, seq, seq)).unwrap();
                pushed.store(seq + 1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stuck_at = pushed.load(std::sync::atomic::Ordering::SeqCst);
    assert!(stuck_at < EVENTS, "the ring never filled up");
    let resize = tokio::spawn({
        let bus = bus.clone();
        async move {
            let added = bus.add_shards(1).await;
            (added, Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !resize.is_finished(),
        "add_shards returned while a producer was still pushing onto the donor"
    );
    let opened = Instant::now();
    adapter.open_gate();
    let (added, finished) = resize.await.unwrap();
    assert_eq!(added, Ok(vec![1]));
    assert!(finished >= opened);
    producer.join().unwrap();
    bus.flush().await.unwrap();
    let stats = bus.stats().snapshot();
    assert_eq!(stats.events_ingested, EVENTS);
    assert_eq!(stats.events_dispatched, EVENTS);
}

/// What the owner's `Drop` saw: whether the resize finished, and the second ingest.
type DropOutcome = Arc<Mutex<Option<(bool, Result<(), net_core::IngestionError>)>>>;

/// A payload whose owner, when it is dropped on the producer's thread, has the bus resized
/// and then ingests another event: user code running inside `ingest_raw`.
struct ResizeAndIngestOnDrop {
    bus: Arc<EventBus>,
    runtime: tokio::runtime::Handle,
    outcome: DropOutcome,
}

impl AsRef<[u8]> for ResizeAndIngestOnDrop {
    fn as_ref(&self) -> &[u8] {
        br#"{"owner":true}"#
    }
}

impl Drop for ResizeAndIngestOnDrop {
    fn drop(&mut self) {
        let bus = &self.bus;
        let resized = self
            .runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), bus.add_shards(1)).await
            })
            .is_ok_and(|added| added.is_ok());
        let again = self.bus.ingest_raw(keyed(9, 9, 9));
        *self.outcome.lock() = Some((resized, again));
    }
}

/// A refused payload is dropped only after its reservation was returned, so its `Drop` may
/// resize the bus; and an ingest from inside that `Drop`, made while the outer call still
/// holds the table from before the resize, routes with the new table instead of giving up as
/// `Unrouted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_dropped_inside_ingest_may_resize_and_ingest_again() {
    let (bus, _adapter) = gated_one_shard_bus(2, 1, BackpressureMode::DropNewest).await;
    let outcome: DropOutcome = Arc::new(Mutex::new(None));
    let producer = {
        let (bus, outcome) = (bus.clone(), outcome.clone());
        let runtime = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            // Fill the ring while the worker waits at the gate with its first batch.
            let mut seq = 0;
            let deadline = Instant::now() + Duration::from_secs(10);
            while bus.ingest_raw(keyed(0, seq, seq)).is_ok() {
                seq += 1;
                assert!(Instant::now() < deadline, "the ring never filled up");
                std::thread::sleep(Duration::from_millis(2));
            }
            let owner = ResizeAndIngestOnDrop {
                bus: bus.clone(),
                runtime,
                outcome,
            };
            let refused = bus.ingest_raw(RawEvent::from_bytes(bytes::Bytes::from_owner(owner)));
            assert!(matches!(
                refused,
                Err(net_core::IngestionError::Backpressure)
            ));
        })
    };
    tokio::task::spawn_blocking(move || producer.join().unwrap())
        .await
        .unwrap();
    let (resized, again) = outcome.lock().take().expect("the payload was dropped");
    assert!(
        resized,
        "add_shards did not finish inside the payload's Drop"
    );
    assert!(
        !matches!(again, Err(net_core::IngestionError::Unrouted)),
        "{again:?}"
    );
}

/// Holds every batch of a shard other than 0 for `delay` before storing it, and passes the
/// rest to a [`ScriptedAdapter`].
struct SlowNewShards {
    scripted: Arc<ScriptedAdapter>,
    delay: Duration,
}

#[async_trait]
impl Adapter for SlowNewShards {
    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        if batch.shard_id != 0 {
            tokio::time::sleep(self.delay).await;
        }
        self.scripted.on_batch(batch).await
    }
    async fn poll_shard(
        &self,
        shard: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        self.scripted.poll_shard(shard, cursor, limit).await
    }
    async fn flush(&self) -> Result<(), AdapterError> {
        self.scripted.flush().await
    }
    async fn shutdown(&self) -> Result<(), AdapterError> {
        self.scripted.shutdown().await
    }
    fn name(&self) -> &str {
        "slow-new-shards"
    }
}

/// `flush` is a barrier for events on a shard that `add_shards` has published but not yet
/// finished setting up. The resize is held between publishing its table and returning by a
/// producer blocked in a push onto the donor (a full ring behind a gated worker); an event
/// routed to the new shard in that window is accepted, and a `flush` called afterwards must
/// not return before that event reached the adapter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_an_event_on_a_shard_still_being_added() {
    let scripted = ScriptedAdapter::new(vec![Step::Gated]);
    let adapter = Arc::new(SlowNewShards {
        scripted: scripted.clone(),
        delay: Duration::from_millis(300),
    });
    let bus = Arc::new(
        EventBus::new(
            EventBusConfig::builder()
                .shards(1)
                .ring_capacity(4)
                .batch(BatchConfig::default().max_events(2).max_delay_ms(0))
                .backpressure(BackpressureMode::Block)
                .adapter_instance(adapter)
                .build()
                .unwrap(),
        )
        .await
        .unwrap(),
    );
    const EVENTS: u64 = 20;
    let pushed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let producer = {
        let (bus, pushed) = (bus.clone(), pushed.clone());
        std::thread::spawn(move || {
            for seq in 0..EVENTS {
                bus.ingest_raw(keyed(0, seq, seq)).unwrap();
                pushed.store(seq + 1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        pushed.load(std::sync::atomic::Ordering::SeqCst) < EVENTS,
        "the ring never filled up"
    );
    let resize = tokio::spawn({
        let bus = bus.clone();
        async move { bus.add_shards(1).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !resize.is_finished(),
        "add_shards returned while a producer was still pushing onto the donor"
    );
    // The new shard takes the highest slots, so this hash routes to it once the new table is
    // published. (Checked below: the event is read back from shard 1.)
    let payload: &[u8] = br#"{"new_shard":true}"#;
    let ingest = tokio::task::spawn_blocking({
        let bus = bus.clone();
        move || bus.ingest_raw(RawEvent::from_bytes_with_hash(payload, u64::MAX))
    });
    let accepted = tokio::time::timeout(Duration::from_secs(5), ingest)
        .await
        .expect("the event did not go to the new shard: its ingest blocked on the full donor")
        .unwrap();
    assert!(accepted.is_ok(), "{accepted:?}");
    let flush = tokio::spawn({
        let bus = bus.clone();
        async move { bus.flush().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    scripted.open_gate();
    tokio::time::timeout(Duration::from_secs(10), flush)
        .await
        .expect("flush hung")
        .unwrap()
        .unwrap();
    let stored = scripted.memory.poll_shard(1, None, 10).await.unwrap();
    assert!(
        stored.events.iter().any(|e| e.raw == payload),
        "flush returned before an event accepted earlier on the new shard reached the adapter"
    );
    assert_eq!(resize.await.unwrap(), Ok(vec![1]));
    producer.join().unwrap();
    bus.shutdown_via_ref().await.unwrap();
    assert_balanced(bus.stats());
    assert_eq!(bus.stats().snapshot().events_ingested, EVENTS + 1);
}
