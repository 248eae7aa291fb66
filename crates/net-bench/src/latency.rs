//! Latency rows: how long events wait between `ingest_raw` and the adapter, at a fixed
//! offered load.
//!
//! One producer thread offers events at a steady rate, pacing itself with a busy wait on
//! [`Instant`] (event `i` is due at `start + i / rate`; a producer that falls behind sends
//! at once until it catches up). A probe adapter takes the wall clock once per batch and
//! records, for every event of the batch, that time minus the event's `insertion_ts` (both
//! nanoseconds since the Unix epoch) into a [`Histogram`].
//!
//! The bus runs with its default batching (`max_events` 1024, `max_delay` 5 ms), so the
//! wait is mostly the batch window; the bound the bus should stay under is `max_delay` plus
//! one millisecond. After the producer stops, the run waits out two batch windows before
//! `flush()`, so the last events are not hurried out by the flush.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use net_adapter::{async_trait, Adapter, AdapterError, Batch, ShardPollResult};
use net_core::{BatchConfig, EventBus};

use crate::histogram::Histogram;
use crate::plan::{raw_pool, Plan, Summary};
use crate::report::{Row, Unit};
use crate::throughput::bus_config;

/// Nanoseconds since the Unix epoch, the clock of `insertion_ts`.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// An adapter that records how old each event is when its batch arrives, and keeps nothing.
#[derive(Debug, Default)]
struct LatencyProbe {
    /// Ages of the events, in nanoseconds.
    ages: Mutex<Histogram>,
}

#[async_trait]
impl Adapter for LatencyProbe {
    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        let now = now_ns();
        let mut ages = self.ages.lock().unwrap_or_else(PoisonError::into_inner);
        for event in &batch.events {
            ages.record(now.saturating_sub(event.insertion_ts));
        }
        Ok(())
    }

    async fn poll_shard(
        &self,
        _shard_id: u16,
        cursor: Option<&str>,
        _limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        Ok(ShardPollResult {
            events: Vec::new(),
            cursor: cursor.unwrap_or("0").to_owned(),
            has_more: false,
        })
    }

    async fn flush(&self) -> Result<(), AdapterError> {
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), AdapterError> {
        Ok(())
    }

    fn name(&self) -> &str {
        "latency-probe"
    }
}

/// The percentiles reported, with their row suffixes.
const QUANTILES: [(f64, &str); 3] = [(0.5, "p50"), (0.99, "p99"), (0.999, "p999")];

/// One measured window: the percentiles and the rate the producer actually reached.
struct Window {
    /// Latency at each of [`QUANTILES`], in nanoseconds.
    quantiles: [f64; 3],
    /// Events per second the producer reached.
    achieved: f64,
}

/// Offers `plan.latency_rate` events/s for `plan.latency_ms` to a fresh bus and reads the
/// probe's histogram; records what went wrong in `problems`.
async fn window(plan: &Plan, batch: BatchConfig, problems: &mut Vec<String>) -> Result<Window> {
    let probe = Arc::new(LatencyProbe::default());
    let bus = EventBus::new(
        bus_config()
            .batch(batch)
            .adapter_instance(probe.clone())
            .build()?,
    )
    .await?;
    let events = plan.latency_rate * plan.latency_ms / 1000;
    let pool = raw_pool(0);
    let rate = u128::from(plan.latency_rate.max(1));
    let elapsed = thread::scope(|scope| {
        scope
            .spawn(|| {
                let start = Instant::now();
                for (index, event) in pool.iter().cycle().take(events as usize).enumerate() {
                    let offset = index as u128 * 1_000_000_000 / rate;
                    let due = start + Duration::from_nanos(offset as u64);
                    while Instant::now() < due {
                        std::hint::spin_loop();
                    }
                    if bus.ingest_raw(event.clone()).is_err() {
                        break;
                    }
                }
                start.elapsed()
            })
            .join()
    })
    .map_err(|_| anyhow::anyhow!("the producer thread panicked"))?;
    tokio::time::sleep(2 * Duration::from_millis(batch.max_delay_ms) + Duration::from_millis(5))
        .await;
    bus.flush().await?;
    bus.shutdown().await?;
    let ages = probe
        .ages
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if ages.len() != events {
        problems.push(format!("the adapter saw {} of {events} events", ages.len()));
    }
    let achieved = events as f64 / elapsed.as_secs_f64().max(1e-9);
    if achieved < 0.95 * plan.latency_rate as f64 {
        problems.push(format!(
            "the producer reached only {achieved:.0} of {} events/s",
            plan.latency_rate
        ));
    }
    let mut quantiles = [0.0; 3];
    for (slot, (q, _)) in quantiles.iter_mut().zip(QUANTILES) {
        *slot = ages.quantile(q).context("the adapter saw no event")? as f64;
    }
    Ok(Window {
        quantiles,
        achieved,
    })
}

/// The latency rows (p50, p99, p999) and the bound they are compared with.
pub(crate) async fn rows(plan: &Plan) -> Result<Vec<Row>> {
    eprintln!(
        "  latency at {} events/s for {} ms",
        plan.latency_rate, plan.latency_ms
    );
    let batch = BatchConfig::default();
    let mut problems = Vec::new();
    let mut windows = Vec::with_capacity(plan.repeats);
    for _ in 0..plan.repeats {
        windows.push(window(plan, batch, &mut problems).await?);
    }
    problems.dedup();
    let achieved = Summary::of(windows.iter().map(|w| w.achieved).collect())
        .context("no window was measured")?;
    let bound = "latency bound (max_delay + 1 ms)".to_owned();
    let mut rows = Vec::new();
    for (index, (_, suffix)) in QUANTILES.iter().enumerate() {
        let summary = Summary::of(windows.iter().map(|w| w.quantiles[index]).collect())
            .context("no window was measured")?;
        rows.push(
            Row::new(
                format!("ingest-to-adapter latency {suffix}"),
                Unit::Nanos,
                summary,
            )
            .baseline(bound.clone())
            .note(format!(
                "{} events/s offered ({:.0} reached, median) for {} ms, default batching",
                plan.latency_rate, achieved.median, plan.latency_ms
            ))
            .problems(problems.clone()),
        );
    }
    let limit = (batch.max_delay_ms + 1) as f64 * 1e6;
    rows.push(
        Row::new(bound, Unit::Nanos, Summary::fixed(limit)).note(format!(
            "configured, not measured: max_delay is {} ms",
            batch.max_delay_ms
        )),
    );
    Ok(rows)
}
