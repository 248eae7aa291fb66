//! Throughput rows: `ingest_raw` and `ingest` through the bus, beside the same items moved
//! by a bare `ArrayQueue`, `tokio::sync::mpsc` and `flume`, and beside `serde_json::to_vec`.
//!
//! Every row moves pre-built events (see [`crate::plan::raw_pool`]) from producer threads
//! that are released together; the clock starts at the release and stops once the last item
//! has reached its consumer. For the bus the consumer is the Noop adapter and "reached" means
//! `flush()` returned, so events merely queued do not count.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_queue::ArrayQueue;
use net_core::{
    BackpressureMode, Event, EventBus, EventBusConfig, EventBusConfigBuilder, RawEvent,
    StatsSnapshot,
};

use crate::plan::{json_value, raw_pool, Plan, Summary, PAYLOAD_BYTES};
use crate::report::{Row, Unit};

/// Shards of every bus in the throughput rows.
pub(crate) const SHARDS: u16 = 16;

/// Slots per shard ring, and the capacity of every baseline queue and channel: large enough
/// that producers rarely wait, and `Block` mode means a full ring waits instead of dropping.
pub(crate) const RING: usize = 65_536;

/// The configuration every measured bus starts from: 16 shards, big rings, `Block`.
pub(crate) fn bus_config() -> EventBusConfigBuilder {
    EventBusConfig::builder()
        .shards(SHARDS)
        .ring_capacity(RING)
        .backpressure(BackpressureMode::Block)
}

/// The name of the row of `what` with `producers` producer threads.
pub(crate) fn row_name(what: &str, producers: usize) -> String {
    let plural = if producers == 1 { "" } else { "s" };
    format!("{what}, {producers} producer{plural}")
}

/// Runs `consume` on a thread of its own and `produce(index)` on `producers` threads that
/// are released together. Returns the instant of the release and what `consume` returned,
/// once every thread has finished.
fn released<F, C, R>(producers: usize, produce: F, consume: C) -> Result<(Instant, R)>
where
    F: Fn(usize) + Sync,
    C: FnOnce() -> R + Send,
    R: Send,
{
    let barrier = Barrier::new(producers + 1);
    thread::scope(|scope| {
        let consumer = scope.spawn(consume);
        for index in 0..producers {
            let (barrier, produce) = (&barrier, &produce);
            scope.spawn(move || {
                barrier.wait();
                produce(index);
            });
        }
        barrier.wait();
        let start = Instant::now();
        let result = consumer
            .join()
            .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))?;
        Ok((start, result))
    })
}

/// One step of waiting on a full or empty queue: spin briefly, then yield the core.
///
/// On two cores with three busy threads a pure spin can leave the thread it waits for
/// descheduled for a whole time slice; yielding after a short spin avoids that.
#[inline]
fn wait_step(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        thread::yield_now();
    }
}

/// Runs `measure` once untimed when the plan warms up, then `plan.repeats` times, and
/// summarises the events per second.
pub(crate) async fn repeat<F>(plan: &Plan, events: u64, mut measure: F) -> Result<Summary>
where
    F: AsyncFnMut() -> Result<Duration>,
{
    if plan.warm_up {
        measure().await?;
    }
    let mut rates = Vec::with_capacity(plan.repeats);
    for _ in 0..plan.repeats {
        let elapsed = measure().await?;
        rates.push(events as f64 / elapsed.as_secs_f64().max(1e-9));
    }
    Summary::of(rates).context("no repeat was measured")
}

/// Compares the bus's counters before and after `expected` events were ingested and flushed.
fn count_problems(before: &StatsSnapshot, after: &StatsSnapshot, expected: u64) -> Vec<String> {
    let mut problems = Vec::new();
    let ingested = after.events_ingested - before.events_ingested;
    let dispatched = after.events_dispatched - before.events_dispatched;
    let dropped = after.events_dropped - before.events_dropped;
    let rejected = after.events_rejected - before.events_rejected;
    if ingested != expected {
        problems.push(format!("ingested {ingested} of {expected} events"));
    }
    if dispatched != expected {
        problems.push(format!("dispatched {dispatched} of {expected} events"));
    }
    if dropped != 0 {
        problems.push(format!("dropped {dropped} events"));
    }
    if rejected != 0 {
        problems.push(format!("rejected {rejected} events"));
    }
    problems
}

/// `ingest_raw` through a 16-shard bus with the Noop adapter.
async fn bus_raw(plan: &Plan, producers: usize) -> Result<Row> {
    let bus = EventBus::new(bus_config().build()?).await?;
    let pools: Vec<Vec<RawEvent>> = (0..producers).map(raw_pool).collect();
    let per_producer = plan.raw_events / producers as u64;
    let total = per_producer * producers as u64;
    let errors = AtomicU64::new(0);
    let mut problems = Vec::new();
    let summary = repeat(plan, total, async || {
        let before = bus.stats().snapshot();
        let produce = |index: usize| {
            for event in pools[index].iter().cycle().take(per_producer as usize) {
                if bus.ingest_raw(event.clone()).is_err() {
                    errors.fetch_add(1, Relaxed);
                }
            }
        };
        let (start, ()) = released(producers, produce, || ())?;
        bus.flush().await?;
        let elapsed = start.elapsed();
        problems.extend(count_problems(&before, &bus.stats().snapshot(), total));
        Ok(elapsed)
    })
    .await?;
    bus.shutdown().await?;
    let errors = errors.load(Relaxed);
    if errors > 0 {
        problems.push(format!("{errors} ingest calls failed"));
    }
    problems.dedup();
    Ok(Row::new(
        row_name("ingest_raw", producers),
        Unit::EventsPerSec,
        summary,
    )
    .baseline(row_name("ArrayQueue", producers))
    .also_against(row_name("tokio mpsc", producers))
    .also_against(row_name("flume", producers))
    .payload(PAYLOAD_BYTES)
    .problems(problems))
}

/// The same items through one bare `crossbeam_queue::ArrayQueue`, pushed and popped one at
/// a time, to one consumer thread.
async fn array_queue(plan: &Plan, producers: usize) -> Result<Row> {
    let pools: Vec<Vec<RawEvent>> = (0..producers).map(raw_pool).collect();
    let per_producer = plan.raw_events / producers as u64;
    let total = per_producer * producers as u64;
    let mut problems = Vec::new();
    let summary = repeat(plan, total, async || {
        let queue = ArrayQueue::new(RING);
        let produce = |index: usize| {
            for event in pools[index].iter().cycle().take(per_producer as usize) {
                let mut item = event.clone();
                let mut spins = 0;
                while let Err(back) = queue.push(item) {
                    item = back;
                    wait_step(&mut spins);
                }
            }
        };
        let consume = || {
            let mut received = 0u64;
            let mut spins = 0;
            while received < total {
                match queue.pop() {
                    Some(item) => {
                        drop(item);
                        received += 1;
                        spins = 0;
                    }
                    None => wait_step(&mut spins),
                }
            }
            received
        };
        let (start, received) = released(producers, produce, consume)?;
        let elapsed = start.elapsed();
        if received != total {
            problems.push(format!("received {received} of {total} items"));
        }
        Ok(elapsed)
    })
    .await?;
    Ok(Row::new(
        row_name("ArrayQueue", producers),
        Unit::EventsPerSec,
        summary,
    )
    .payload(PAYLOAD_BYTES)
    .problems(problems))
}

/// The same items through a bounded `tokio::sync::mpsc` channel: producer threads use
/// `blocking_send`, the consumer is a task on the runtime awaiting `recv` one item at a time.
async fn tokio_mpsc(plan: &Plan, producers: usize) -> Result<Row> {
    let pools: Vec<Vec<RawEvent>> = (0..producers).map(raw_pool).collect();
    let per_producer = plan.raw_events / producers as u64;
    let total = per_producer * producers as u64;
    let mut problems = Vec::new();
    let summary = repeat(plan, total, async || {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<RawEvent>(RING);
        let consumer = tokio::spawn(async move {
            let mut received = 0u64;
            while received < total {
                match rx.recv().await {
                    Some(item) => {
                        drop(item);
                        received += 1;
                    }
                    None => break,
                }
            }
            received
        });
        let produce = |index: usize| {
            let tx = tx.clone();
            for event in pools[index].iter().cycle().take(per_producer as usize) {
                if tx.blocking_send(event.clone()).is_err() {
                    break;
                }
            }
        };
        let (start, ()) = released(producers, produce, || ())?;
        drop(tx);
        let received = consumer.await?;
        let elapsed = start.elapsed();
        if received != total {
            problems.push(format!("received {received} of {total} items"));
        }
        Ok(elapsed)
    })
    .await?;
    Ok(Row::new(
        row_name("tokio mpsc", producers),
        Unit::EventsPerSec,
        summary,
    )
    .payload(PAYLOAD_BYTES)
    .problems(problems))
}

/// The same items through a bounded `flume` channel to one consumer thread (blocking `send`
/// and `recv`).
async fn flume_channel(plan: &Plan, producers: usize) -> Result<Row> {
    let pools: Vec<Vec<RawEvent>> = (0..producers).map(raw_pool).collect();
    let per_producer = plan.raw_events / producers as u64;
    let total = per_producer * producers as u64;
    let mut problems = Vec::new();
    let summary = repeat(plan, total, async || {
        let (tx, rx) = flume::bounded::<RawEvent>(RING);
        let produce = |index: usize| {
            for event in pools[index].iter().cycle().take(per_producer as usize) {
                if tx.send(event.clone()).is_err() {
                    break;
                }
            }
        };
        let consume = || {
            let mut received = 0u64;
            while received < total {
                match rx.recv() {
                    Ok(item) => {
                        drop(item);
                        received += 1;
                    }
                    Err(_) => break,
                }
            }
            received
        };
        let (start, received) = released(producers, produce, consume)?;
        let elapsed = start.elapsed();
        if received != total {
            problems.push(format!("received {received} of {total} items"));
        }
        Ok(elapsed)
    })
    .await?;
    Ok(
        Row::new(row_name("flume", producers), Unit::EventsPerSec, summary)
            .payload(PAYLOAD_BYTES)
            .problems(problems),
    )
}

/// The JSON values of events `start..end`, built before the clock starts.
fn json_chunk(start: u64, end: u64) -> Vec<serde_json::Value> {
    (start..end).map(json_value).collect()
}

/// The chunks `[start, end)` that split `events` into runs of at most `chunk`.
fn chunks(events: u64, chunk: usize) -> impl Iterator<Item = (u64, u64)> {
    let chunk = chunk.max(1) as u64;
    (0..events.div_ceil(chunk)).map(move |i| (i * chunk, ((i + 1) * chunk).min(events)))
}

/// `ingest(Event)` of `serde_json::Value`s from one producer thread.
///
/// The values are built in chunks outside the clock; each chunk is timed from its first
/// ingest to after `flush()` returns, and the times are added up.
async fn bus_json(plan: &Plan) -> Result<Row> {
    let bus = EventBus::new(bus_config().build()?).await?;
    let mut problems = Vec::new();
    let events = plan.json_events;
    let summary = repeat(plan, events, async || {
        let before = bus.stats().snapshot();
        let mut elapsed = Duration::ZERO;
        let mut failed = 0u64;
        for (start, end) in chunks(events, plan.json_chunk) {
            let values = json_chunk(start, end);
            let (started, chunk_failed) = thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let started = Instant::now();
                        let failed = values
                            .into_iter()
                            .map(|value| bus.ingest(Event::new(value)))
                            .filter(Result::is_err)
                            .count();
                        (started, failed as u64)
                    })
                    .join()
            })
            .map_err(|_| anyhow::anyhow!("the producer thread panicked"))?;
            bus.flush().await?;
            elapsed += started.elapsed();
            failed += chunk_failed;
        }
        problems.extend(count_problems(&before, &bus.stats().snapshot(), events));
        if failed > 0 {
            problems.push(format!("{failed} ingest calls failed"));
        }
        Ok(elapsed)
    })
    .await?;
    bus.shutdown().await?;
    problems.dedup();
    Ok(
        Row::new(row_name("ingest (JSON)", 1), Unit::EventsPerSec, summary)
            .baseline("serde_json::to_vec")
            .note("values built untimed in chunks; each chunk timed from first ingest to flush")
            .problems(problems),
    )
}

/// `serde_json::to_vec` of the same values, each value dropped afterwards as `ingest` drops
/// it: the cost of serializing alone.
async fn to_vec(plan: &Plan) -> Result<Row> {
    let events = plan.json_events;
    let summary = repeat(plan, events, async || {
        let mut elapsed = Duration::ZERO;
        for (start, end) in chunks(events, plan.json_chunk) {
            let values = json_chunk(start, end);
            let started = Instant::now();
            for value in values {
                let bytes = serde_json::to_vec(&value)?;
                drop(value);
                std::hint::black_box(bytes);
            }
            elapsed += started.elapsed();
        }
        Ok(elapsed)
    })
    .await?;
    Ok(Row::new("serde_json::to_vec", Unit::EventsPerSec, summary))
}

/// Every throughput row: the bus and its three baselines for 1 and 2 producers, then JSON.
pub(crate) async fn rows(plan: &Plan) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for producers in [1, 2] {
        eprintln!("  ingest_raw and baselines, {producers} producer(s)");
        rows.push(bus_raw(plan, producers).await?);
        rows.push(array_queue(plan, producers).await?);
        rows.push(tokio_mpsc(plan, producers).await?);
        rows.push(flume_channel(plan, producers).await?);
    }
    eprintln!("  ingest (JSON) and serde_json::to_vec");
    rows.push(bus_json(plan).await?);
    rows.push(to_vec(plan).await?);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::{chunks, row_name};

    #[test]
    fn chunks_cover_every_event_once() {
        let check = |events: u64, chunk: usize, expected: &[(u64, u64)]| {
            assert_eq!(chunks(events, chunk).collect::<Vec<_>>(), expected);
        };
        check(0, 10, &[]);
        check(10, 10, &[(0, 10)]);
        check(25, 10, &[(0, 10), (10, 20), (20, 25)]);
        check(3, 0, &[(0, 1), (1, 2), (2, 3)]);
    }

    #[test]
    fn row_names() {
        assert_eq!(row_name("flume", 1), "flume, 1 producer");
        assert_eq!(row_name("flume", 2), "flume, 2 producers");
    }
}
