//! The time budget of `RetryPolicy` (`max_elapsed`) and the payloads a drop report carries.

use net_core::net_adapter::{
    async_trait, Adapter, AdapterError, Batch, MemoryAdapter, ShardPollResult,
};
use net_core::{
    BatchConfig, ConfigError, DropReason, DroppedEvents, EventBus, EventBusConfig, RawEvent,
    RetryPolicy,
};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Refuses every batch with a transient error until `until`, then stores it in memory.
struct DownUntil {
    until: Instant,
    store: MemoryAdapter,
}

#[async_trait]
impl Adapter for DownUntil {
    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        if Instant::now() < self.until {
            return Err(AdapterError::Transient(
                "down-until: connection refused".into(),
            ));
        }
        self.store.on_batch(batch).await
    }
    async fn poll_shard(
        &self,
        shard: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        self.store.poll_shard(shard, cursor, limit).await
    }
    async fn flush(&self) -> Result<(), AdapterError> {
        Ok(())
    }
    async fn shutdown(&self) -> Result<(), AdapterError> {
        Ok(())
    }
    fn name(&self) -> &str {
        "down-until"
    }
}

/// A bus on an adapter that is down for `outage`, retrying by `retry`; the drop reports
/// land in the returned list.
async fn bus(
    outage: Duration,
    retry: RetryPolicy,
) -> (EventBus, Arc<DownUntil>, Arc<Mutex<Vec<DroppedEvents>>>) {
    let adapter = Arc::new(DownUntil {
        until: Instant::now() + outage,
        store: MemoryAdapter::new(),
    });
    let reports: Arc<Mutex<Vec<DroppedEvents>>> = Arc::default();
    let sink = reports.clone();
    let config = EventBusConfig::builder()
        .shards(2)
        .batch(BatchConfig::default().max_events(4).max_delay_ms(1))
        .retry(retry)
        .on_drop(move |report| sink.lock().unwrap().push(report.clone()))
        .adapter_instance(adapter.clone())
        .build()
        .unwrap();
    (EventBus::new(config).await.unwrap(), adapter, reports)
}

fn payload(i: u64) -> String {
    format!(r#"{{"i":{i}}}"#)
}

/// Fast backoff, so a count of retries covers far less time than the outage.
fn quick(max_retries: u32, max_elapsed: Option<Duration>) -> RetryPolicy {
    RetryPolicy::default()
        .max_retries(max_retries)
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(20))
        .attempt_timeout(Duration::from_secs(5))
        .max_elapsed(max_elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_budget_rides_out_an_outage_a_retry_count_does_not() {
    let outage = Duration::from_millis(800);
    // Five quick retries are over long before the adapter is back: everything is dropped.
    let (counted, _, reports) = bus(outage, quick(5, None)).await;
    for i in 0..20 {
        counted
            .ingest_raw(RawEvent::from_bytes(payload(i)))
            .unwrap();
    }
    counted.flush().await.unwrap();
    let s = counted.stats().snapshot();
    assert_eq!(s.events_dropped, 20, "{s:?}");
    assert!(reports
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.reason == DropReason::RetriesExhausted));
    counted.shutdown().await.unwrap();

    // The same backoff with a budget of time outlasts the outage: nothing is dropped.
    let (timed, adapter, reports) =
        bus(outage, quick(u32::MAX, Some(Duration::from_secs(10)))).await;
    for i in 0..20 {
        timed.ingest_raw(RawEvent::from_bytes(payload(i))).unwrap();
    }
    timed.flush().await.unwrap();
    let s = timed.stats().snapshot();
    assert_eq!(s.events_dropped, 0, "{s:?}");
    assert_eq!(s.events_dispatched, 20, "{s:?}");
    assert!(reports.lock().unwrap().is_empty());
    assert_eq!(adapter.store.total_len(), 20);
    timed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_time_budget_drops_the_batch_with_its_payloads() {
    let window = Duration::from_millis(300);
    // Many retries allowed, but the adapter stays down for longer than the window.
    let (bus, _, reports) = bus(Duration::from_secs(3600), quick(u32::MAX, Some(window))).await;
    let started = Instant::now();
    for i in 0..10 {
        bus.ingest_raw(RawEvent::from_bytes(payload(i))).unwrap();
    }
    bus.flush().await.unwrap();
    let took = started.elapsed();
    assert!(took >= window, "gave up after {took:?}, before the window");
    assert!(took < Duration::from_secs(3), "kept retrying for {took:?}");
    assert_eq!(bus.stats().snapshot().events_dropped, 10);
    let reports = reports.lock().unwrap().clone();
    let counted: u64 = reports.iter().map(|r| r.count).sum();
    assert_eq!(counted, 10);
    let mut dropped = HashSet::new();
    for report in &reports {
        assert_eq!(report.reason, DropReason::RetriesExhausted);
        assert_eq!(report.payloads.len() as u64, report.count, "{report:?}");
        for raw in &report.payloads {
            assert!(dropped.insert(raw.clone()), "a payload reported twice");
        }
    }
    let sent: HashSet<bytes::Bytes> = (0..10).map(|i| payload(i).into()).collect();
    assert_eq!(dropped, sent);
    bus.shutdown().await.unwrap();
}

#[test]
fn a_zero_time_budget_is_refused() {
    let err = EventBusConfig::builder()
        .retry(quick(3, Some(Duration::ZERO)))
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("max_elapsed"), "{err}");
}

#[test]
fn for_duration_is_bounded_by_time_alone() {
    let policy = RetryPolicy::for_duration(Duration::from_secs(60));
    assert_eq!(policy.max_elapsed, Some(Duration::from_secs(60)));
    assert_eq!(policy.max_retries, u32::MAX);
    assert!(EventBusConfig::builder().retry(policy).build().is_ok());
}
