//! [`prometheus_text`]: the counters of a bus in the Prometheus text exposition format.
//!
//! Every metric is prefixed `net_`. Counters end in `_total` and only grow; gauges may move
//! both ways.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `net_events_ingested_total` | counter | events accepted into a ring (`ingest` returned `Ok`), including those still queued |
//! | `net_events_dispatched_total` | counter | events in batches the adapter accepted |
//! | `net_events_dropped_total` | counter | accepted events that will never reach the adapter (evicted, in a dropped batch, or left behind by a shutdown deadline) |
//! | `net_events_evicted_total` | counter | of the dropped events, those evicted by `BackpressureMode::DropOldest` |
//! | `net_events_rejected_total{reason}` | counter | `ingest` calls refused, by reason: `backpressure`, `sampled`, `unrouted`, `shutting_down`, `serialization`, `too_large` |
//! | `net_batches_dispatched_total` | counter | batches the adapter accepted |
//! | `net_batches_retried_total` | counter | retries of batches after retryable adapter errors |
//! | `net_batches_dropped_total` | counter | batches given up (adapter rejection, retries exhausted, shutdown deadline) |
//! | `net_adapter_errors_total{kind}` | counter | errors the adapter returned to the batch workers, by kind: `transient`, `fatal`, `backpressure`, `connection`, `shutdown`, `serialization`, `too_large`, `other` |
//! | `net_shards_added_total` / `net_shards_removed_total` | counter | shards added and retired by scaling |
//! | `net_active_shards` | gauge | shards receiving events now |
//! | `net_shard_depth{shard}` | gauge | events queued or in flight in one shard (retired shards included) |
//! | `net_events_in_flight` | gauge | the sum of the shard depths |
//! | `net_shutdown_lossy` | gauge | 1 when a shutdown hit its deadline and dropped events, else 0 |
//!
//! While the bus runs, `ingested - dispatched - dropped` is what is queued or in flight; after
//! `shutdown()` it is zero.

use net_core::EventBusStats;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Renders the counters of a bus in the Prometheus text format (version 0.0.4), ready to be
/// served on a `/metrics` endpoint. Reading the counters is lock-free except for the shard
/// list, which is read-locked briefly; call it at scrape time, not per event.
///
/// The module documentation lists every metric and its meaning.
///
/// ```
/// use net_sdk::{prometheus_text, EventBus, EventBusConfig, Event};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = EventBus::new(EventBusConfig::builder().shards(2).build()?).await?;
/// bus.ingest(Event::new(serde_json::json!({"n": 1})))?;
/// bus.flush().await?;
/// let text = prometheus_text(bus.stats());
/// assert!(text.contains("net_events_ingested_total 1\n"));
/// assert!(text.contains("net_shard_depth{shard=\"1\"} 0\n"));
/// bus.shutdown().await?;
/// # Ok(())
/// # }
/// ```
pub fn prometheus_text(stats: &EventBusStats) -> String {
    let snapshot = stats.snapshot();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        // Writing into a String cannot fail.
        let _ = writeln!(out, "# HELP net_{name} {help}");
        let _ = writeln!(out, "# TYPE net_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "net_{name}{labels} {value}");
        }
    };
    let counter = "counter";
    let gauge = "gauge";
    metric(
        "events_ingested_total",
        counter,
        "Events accepted into a shard ring, including those still queued.",
        &[("", snapshot.events_ingested)],
    );
    metric(
        "events_dispatched_total",
        counter,
        "Events in batches the adapter accepted.",
        &[("", snapshot.events_dispatched)],
    );
    metric(
        "events_dropped_total",
        counter,
        "Accepted events that will never reach the adapter.",
        &[("", snapshot.events_dropped)],
    );
    metric(
        "events_evicted_total",
        counter,
        "Dropped events that DropOldest evicted from a full ring.",
        &[("", snapshot.events_evicted)],
    );
    let r = &stats.rejected;
    metric(
        "events_rejected_total",
        counter,
        "Ingest calls refused, by reason.",
        &[
            ("{reason=\"backpressure\"}", load(&r.backpressure)),
            ("{reason=\"sampled\"}", load(&r.sampled)),
            ("{reason=\"unrouted\"}", load(&r.unrouted)),
            ("{reason=\"shutting_down\"}", load(&r.shutting_down)),
            ("{reason=\"serialization\"}", load(&r.serialization)),
            ("{reason=\"too_large\"}", load(&r.too_large)),
        ],
    );
    metric(
        "batches_dispatched_total",
        counter,
        "Batches the adapter accepted.",
        &[("", snapshot.batches_dispatched)],
    );
    metric(
        "batches_retried_total",
        counter,
        "Retries of batches after retryable adapter errors.",
        &[("", snapshot.batches_retried)],
    );
    metric(
        "batches_dropped_total",
        counter,
        "Batches given up after a non-retryable error, exhausted retries or a shutdown deadline.",
        &[("", snapshot.batches_dropped)],
    );
    let e = &stats.adapter_errors;
    metric(
        "adapter_errors_total",
        counter,
        "Errors the adapter returned to the batch workers, by kind.",
        &[
            ("{kind=\"transient\"}", load(&e.transient)),
            ("{kind=\"fatal\"}", load(&e.fatal)),
            ("{kind=\"backpressure\"}", load(&e.backpressure)),
            ("{kind=\"connection\"}", load(&e.connection)),
            ("{kind=\"shutdown\"}", load(&e.shutdown)),
            ("{kind=\"serialization\"}", load(&e.serialization)),
            ("{kind=\"too_large\"}", load(&e.too_large)),
            ("{kind=\"other\"}", load(&e.other)),
        ],
    );
    metric(
        "shards_added_total",
        counter,
        "Shards added by scaling.",
        &[("", load(&stats.shards_added))],
    );
    metric(
        "shards_removed_total",
        counter,
        "Shards retired by scaling.",
        &[("", load(&stats.shards_removed))],
    );
    metric(
        "active_shards",
        gauge,
        "Shards receiving events.",
        &[("", snapshot.active_shards as u64)],
    );
    let labels: Vec<String> = (0..snapshot.shard_depths.len())
        .map(|shard| format!("{{shard=\"{shard}\"}}"))
        .collect();
    let depths: Vec<(&str, u64)> = labels
        .iter()
        .map(String::as_str)
        .zip(snapshot.shard_depths.iter().copied())
        .collect();
    metric(
        "shard_depth",
        gauge,
        "Events queued or in flight in one shard.",
        &depths,
    );
    metric(
        "events_in_flight",
        gauge,
        "Events queued or in flight over all shards.",
        &[("", snapshot.shard_depths.iter().sum())],
    );
    metric(
        "shutdown_lossy",
        gauge,
        "1 when a shutdown hit its deadline and dropped events.",
        &[("", u64::from(snapshot.shutdown_was_lossy))],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::prometheus_text;
    use net_core::{BackpressureMode, Event, EventBus, EventBusConfig};

    /// Every sample line is `name{labels} value` with a HELP and TYPE line before its family.
    fn parse(text: &str) -> Vec<(String, u64)> {
        let mut samples = Vec::new();
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().unwrap().to_owned();
                assert!(matches!(parts.next(), Some("counter" | "gauge")), "{line}");
                typed.insert(name);
            } else if !line.starts_with("# HELP ") {
                let (name, value) = line.rsplit_once(' ').expect("a sample line");
                let family = name.split('{').next().unwrap();
                assert!(typed.contains(family), "{family} has no TYPE line");
                samples.push((name.to_owned(), value.parse().expect("an integer")));
            }
        }
        samples
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exposes_every_counter() {
        let config = EventBusConfig::builder()
            .shards(3)
            .ring_capacity(2)
            .backpressure(BackpressureMode::DropNewest)
            .build()
            .unwrap();
        let bus = EventBus::new(config).await.unwrap();
        for n in 0..5 {
            let _ = bus.ingest(Event::new(serde_json::json!({ "n": n })));
        }
        bus.flush().await.unwrap();
        let samples = parse(&prometheus_text(bus.stats()));
        let get = |name: &str| {
            samples
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} missing"))
                .1
        };
        let snapshot = bus.stats().snapshot();
        assert_eq!(get("net_events_ingested_total"), snapshot.events_ingested);
        assert_eq!(get("net_events_dispatched_total"), snapshot.events_ingested);
        assert_eq!(
            get("net_events_rejected_total{reason=\"backpressure\"}"),
            5 - snapshot.events_ingested
        );
        assert_eq!(get("net_active_shards"), 3);
        for shard in 0..3 {
            assert_eq!(get(&format!("net_shard_depth{{shard=\"{shard}\"}}")), 0);
        }
        assert_eq!(get("net_shutdown_lossy"), 0);
        assert_eq!(get("net_adapter_errors_total{kind=\"fatal\"}"), 0);
        assert_eq!(get("net_adapter_errors_total{kind=\"too_large\"}"), 0);
        bus.shutdown().await.unwrap();
    }
}
