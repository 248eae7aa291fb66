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
    ScalingPolicy, StatsSnapshot,
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

/// Whether each round of a group is timed: one untimed warm-up round first when the plan
/// asks for it, then `plan.repeats` timed rounds.
///
/// Every round measures each row of its group once, one after the other, so a burst of
/// load from elsewhere on the machine hits the rows of a group alike and their ratios hold.
pub(crate) fn rounds(plan: &Plan) -> impl Iterator<Item = bool> {
    let warm_up = usize::from(plan.warm_up);
    (0..warm_up + plan.repeats).map(move |round| round >= warm_up)
}

/// The timed measurements of one row and what went wrong in any round.
#[derive(Debug, Default)]
pub(crate) struct Series {
    /// How long each timed round took.
    times: Vec<Duration>,
    /// Problems seen in any round, warm-up included.
    pub(crate) problems: Vec<String>,
}

impl Series {
    /// Keeps `elapsed` when the round is timed.
    pub(crate) fn record(&mut self, timed: bool, elapsed: Duration) {
        if timed {
            self.times.push(elapsed);
        }
    }

    /// The events per second of the timed rounds, each having moved `events` events.
    pub(crate) fn rates(&self, events: u64) -> Result<Summary> {
        let rates = self
            .times
            .iter()
            .map(|time| events as f64 / time.as_secs_f64().max(1e-9))
            .collect();
        Summary::of(rates).context("no round was timed")
    }

    /// The problems, each once, to mark a row invalid with.
    pub(crate) fn take_problems(&mut self) -> Vec<String> {
        let mut problems = std::mem::take(&mut self.problems);
        problems.sort();
        problems.dedup();
        problems
    }
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

/// The items of one producer count: a pool of pre-built events per producer and how many
/// each producer sends per measurement.
struct Load {
    /// One pool per producer thread.
    pools: Vec<Vec<RawEvent>>,
    /// Events each producer sends.
    per_producer: u64,
}

impl Load {
    /// About `events` events split over `producers` producers.
    fn new(producers: usize, events: u64) -> Self {
        Self {
            pools: (0..producers).map(raw_pool).collect(),
            per_producer: events / producers as u64,
        }
    }

    /// Number of producer threads.
    fn producers(&self) -> usize {
        self.pools.len()
    }

    /// Events moved per measurement.
    fn total(&self) -> u64 {
        self.per_producer * self.pools.len() as u64
    }

    /// The events producer `index` sends, in order.
    fn events(&self, index: usize) -> impl Iterator<Item = &RawEvent> {
        self.pools[index]
            .iter()
            .cycle()
            .take(self.per_producer as usize)
    }

    /// Records a problem when a consumer did not get every item.
    fn check_received(&self, received: u64, series: &mut Series) {
        let total = self.total();
        if received != total {
            series
                .problems
                .push(format!("received {received} of {total} items"));
        }
    }
}

/// `ingest_raw` of the load into `bus`, timed until `flush()` returned.
async fn bus_raw_once(bus: &EventBus, load: &Load, series: &mut Series) -> Result<Duration> {
    bus_timed(bus, load, series, |failed, index| {
        for event in load.events(index) {
            if bus.ingest_raw(event.clone()).is_err() {
                failed.fetch_add(1, Relaxed);
            }
        }
    })
    .await
}

/// Events per `ingest_raw_batch` call in the batch rows.
const BATCH_CALL: usize = 1_000;

/// The load through the bus with `ingest_raw_batch`, [`BATCH_CALL`] events per call, as a
/// language binding sends them; then a flush, inside the measurement.
async fn bus_raw_batch_once(bus: &EventBus, load: &Load, series: &mut Series) -> Result<Duration> {
    bus_timed(bus, load, series, |failed, index| {
        let mut events = load.events(index).cloned().peekable();
        while events.peek().is_some() {
            let outcome = bus.ingest_raw_batch(events.by_ref().take(BATCH_CALL));
            failed.fetch_add(outcome.refused.len() as u64, Relaxed);
        }
    })
    .await
}

/// Runs `ingest` for every producer (given the counter of refused events and the producer's
/// index), then flushes `bus`; returns the time until the flush returned, and records in
/// `series` any event refused or not accounted for.
async fn bus_timed(
    bus: &EventBus,
    load: &Load,
    series: &mut Series,
    ingest: impl Fn(&AtomicU64, usize) + Sync,
) -> Result<Duration> {
    let before = bus.stats().snapshot();
    let failed = AtomicU64::new(0);
    let produce = |index: usize| ingest(&failed, index);
    let (start, ()) = released(load.producers(), produce, || ())?;
    bus.flush().await?;
    let elapsed = start.elapsed();
    series.problems.extend(count_problems(
        &before,
        &bus.stats().snapshot(),
        load.total(),
    ));
    let failed = failed.load(Relaxed);
    if failed > 0 {
        series
            .problems
            .push(format!("{failed} events were refused by the bus"));
    }
    Ok(elapsed)
}

/// The load through one bare `crossbeam_queue::ArrayQueue`, pushed and popped one at a
/// time, to one consumer thread.
fn array_queue_once(load: &Load, series: &mut Series) -> Result<Duration> {
    let queue = ArrayQueue::new(RING);
    let total = load.total();
    let produce = |index: usize| {
        for event in load.events(index) {
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
    let (start, received) = released(load.producers(), produce, consume)?;
    let elapsed = start.elapsed();
    load.check_received(received, series);
    Ok(elapsed)
}

/// The load through a bounded `tokio::sync::mpsc` channel: producer threads use
/// `blocking_send`, the consumer is a task on the runtime awaiting `recv` one item at a time.
async fn tokio_mpsc_once(load: &Load, series: &mut Series) -> Result<Duration> {
    let total = load.total();
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
        for event in load.events(index) {
            if tx.blocking_send(event.clone()).is_err() {
                break;
            }
        }
    };
    let (start, ()) = released(load.producers(), produce, || ())?;
    drop(tx);
    let received = consumer.await?;
    let elapsed = start.elapsed();
    load.check_received(received, series);
    Ok(elapsed)
}

/// The load through a bounded `flume` channel to one consumer thread (blocking `send` and
/// `recv`).
fn flume_once(load: &Load, series: &mut Series) -> Result<Duration> {
    let total = load.total();
    let (tx, rx) = flume::bounded::<RawEvent>(RING);
    let produce = |index: usize| {
        for event in load.events(index) {
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
    let (start, received) = released(load.producers(), produce, consume)?;
    let elapsed = start.elapsed();
    load.check_received(received, series);
    Ok(elapsed)
}

/// The `ingest_raw` rows and their three baselines, for 1 and 2 producers.
pub(crate) async fn raw_rows(plan: &Plan) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for producers in [1, 2] {
        eprintln!("  ingest_raw and baselines, {producers} producer(s)");
        let load = Load::new(producers, plan.raw_events);
        let bus = EventBus::new(bus_config().build()?).await?;
        // The same bus with a scaling monitor running but held idle (min = max shards), to
        // show what scaling support costs when it is not scaling.
        let monitored = EventBus::new(
            bus_config()
                .scaling(
                    ScalingPolicy::default()
                        .min_shards(SHARDS)
                        .max_shards(SHARDS)
                        .check_interval(Duration::from_millis(100)),
                )
                .build()?,
        )
        .await?;
        let [mut bus_series, mut queue, mut tokio, mut flume, mut monitored_series, mut batch_series] =
            <[Series; 6]>::default();
        for timed in rounds(plan) {
            let elapsed = bus_raw_once(&bus, &load, &mut bus_series).await?;
            bus_series.record(timed, elapsed);
            let elapsed = bus_raw_batch_once(&bus, &load, &mut batch_series).await?;
            batch_series.record(timed, elapsed);
            let elapsed = bus_raw_once(&monitored, &load, &mut monitored_series).await?;
            monitored_series.record(timed, elapsed);
            let elapsed = array_queue_once(&load, &mut queue)?;
            queue.record(timed, elapsed);
            let elapsed = tokio_mpsc_once(&load, &mut tokio).await?;
            tokio.record(timed, elapsed);
            let elapsed = flume_once(&load, &mut flume)?;
            flume.record(timed, elapsed);
        }
        bus.shutdown().await?;
        monitored.shutdown().await?;
        let total = load.total();
        let name = |what: &str| row_name(what, producers);
        rows.push(
            Row::new(
                name("ingest_raw with an idle scaling monitor"),
                Unit::EventsPerSec,
                monitored_series.rates(total)?,
            )
            .baseline(name("ingest_raw"))
            .note("scaling policy with min = max = 16 shards, checked every 100 ms")
            .payload(PAYLOAD_BYTES)
            .problems(monitored_series.take_problems()),
        );
        rows.push(
            Row::new(
                name("ingest_raw_batch of 1,000"),
                Unit::EventsPerSec,
                batch_series.rates(total)?,
            )
            .baseline(name("ingest_raw"))
            .note("the same events, 1,000 per ingest_raw_batch call")
            .payload(PAYLOAD_BYTES)
            .problems(batch_series.take_problems()),
        );
        rows.push(
            Row::new(
                name("ingest_raw"),
                Unit::EventsPerSec,
                bus_series.rates(total)?,
            )
            .baseline(name("ArrayQueue"))
            .also_against(name("tokio mpsc"))
            .also_against(name("flume"))
            .payload(PAYLOAD_BYTES)
            .problems(bus_series.take_problems()),
        );
        for (what, mut series) in [
            ("ArrayQueue", queue),
            ("tokio mpsc", tokio),
            ("flume", flume),
        ] {
            rows.push(
                Row::new(name(what), Unit::EventsPerSec, series.rates(total)?)
                    .payload(PAYLOAD_BYTES)
                    .problems(series.take_problems()),
            );
        }
    }
    Ok(rows)
}

/// JSON values built (untimed) right before each timed stretch of the JSON rows.
///
/// A service builds each event just before it sends it, so the small blocks that dropping
/// one value frees are soon reused by the next value it builds. Building a whole chunk of
/// values ahead instead leaves the timed loop to free hundreds of thousands of small blocks
/// with no allocation in between, a heap no running service has: glibc then makes the next
/// large allocation (the bus's serialization block) consolidate all of them first. Both rows
/// get the same stretches; timing each one costs two clock reads per stretch, about one
/// nanosecond per value. docs/performance.md shows how the row moves with the stretch.
const JSON_STRETCH: u64 = 32;

/// Runs `timed` over the values `start..end`, built in stretches of [`JSON_STRETCH`]
/// outside the clock; returns the time spent inside `timed` and the sum of its results.
fn json_stretches(
    start: u64,
    end: u64,
    mut timed: impl FnMut(&mut Vec<serde_json::Value>) -> Result<u64>,
) -> Result<(Duration, u64)> {
    let mut values = Vec::with_capacity(JSON_STRETCH as usize);
    let (mut took, mut total) = (Duration::ZERO, 0u64);
    let mut next = start;
    while next < end {
        let stop = (next + JSON_STRETCH).min(end);
        values.extend((next..stop).map(json_value));
        next = stop;
        let started = Instant::now();
        total += timed(&mut values)?;
        took += started.elapsed();
        values.clear();
    }
    Ok((took, total))
}

/// The chunks `[start, end)` that split `events` into runs of at most `chunk`.
fn chunks(events: u64, chunk: usize) -> impl Iterator<Item = (u64, u64)> {
    let chunk = chunk.max(1) as u64;
    (0..events.div_ceil(chunk)).map(move |i| (i * chunk, ((i + 1) * chunk).min(events)))
}

/// `ingest(Event)` of the values `start..end` from one producer thread.
///
/// The values are built outside the clock, on the producer thread itself (as a service builds
/// its events on the thread that ingests them, and as the baseline builds them). The chunk's
/// time is its ingest calls plus the `flush()` after the last one. Returns the time and the
/// number of failed ingest calls.
async fn bus_json_chunk(bus: &EventBus, start: u64, end: u64) -> Result<(Duration, u64)> {
    let (ingested, failed) = thread::scope(|scope| {
        scope
            .spawn(|| {
                json_stretches(start, end, |values| {
                    let failed = values
                        .drain(..)
                        .map(|value| bus.ingest(Event::new(value)))
                        .filter(Result::is_err)
                        .count();
                    Ok(failed as u64)
                })
            })
            .join()
    })
    .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    let started = Instant::now();
    bus.flush().await?;
    Ok((ingested + started.elapsed(), failed))
}

/// `serde_json::to_vec` of the values `start..end`, each value dropped afterwards as `ingest`
/// drops it: the cost of serializing alone. Like the bus row, the chunk is built and
/// serialized on a thread of its own, in the same stretches.
fn to_vec_chunk(start: u64, end: u64) -> Result<Duration> {
    let (took, _) = thread::scope(|scope| {
        scope
            .spawn(|| {
                json_stretches(start, end, |values| {
                    for value in values.drain(..) {
                        let bytes = serde_json::to_vec(&value)?;
                        drop(value);
                        std::hint::black_box(bytes);
                    }
                    Ok(0)
                })
            })
            .join()
    })
    .map_err(|_| anyhow::anyhow!("the serializing thread panicked"))??;
    Ok(took)
}

/// One round of both JSON rows: `(ingest, to_vec)` times over all chunks.
///
/// The two rows take turns chunk by chunk, and which one goes first alternates, so both
/// meet the heap in the same states: how fragmented glibc's heap is moves these rows more
/// than anything in the code, and running one row's chunks after the other's billed that
/// to whichever ran second.
async fn json_round(
    bus: &EventBus,
    plan: &Plan,
    series: &mut Series,
) -> Result<(Duration, Duration)> {
    let events = plan.json_events;
    let before = bus.stats().snapshot();
    let (mut ingest, mut serialize) = (Duration::ZERO, Duration::ZERO);
    let mut failed = 0u64;
    for (index, (start, end)) in chunks(events, plan.json_chunk).enumerate() {
        if index % 2 == 1 {
            serialize += to_vec_chunk(start, end)?;
        }
        let (took, chunk_failed) = bus_json_chunk(bus, start, end).await?;
        ingest += took;
        failed += chunk_failed;
        if index % 2 == 0 {
            serialize += to_vec_chunk(start, end)?;
        }
    }
    series
        .problems
        .extend(count_problems(&before, &bus.stats().snapshot(), events));
    if failed > 0 {
        series
            .problems
            .push(format!("{failed} ingest calls failed"));
    }
    Ok((ingest, serialize))
}

/// The `ingest` (JSON) row and its `serde_json::to_vec` baseline.
pub(crate) async fn json_rows(plan: &Plan) -> Result<Vec<Row>> {
    eprintln!("  ingest (JSON) and serde_json::to_vec");
    let bus = EventBus::new(bus_config().build()?).await?;
    let [mut ingest, mut serialize] = <[Series; 2]>::default();
    for timed in rounds(plan) {
        let (ingest_time, serialize_time) = json_round(&bus, plan, &mut ingest).await?;
        ingest.record(timed, ingest_time);
        serialize.record(timed, serialize_time);
    }
    bus.shutdown().await?;
    let events = plan.json_events;
    Ok(vec![
        Row::new(
            row_name("ingest (JSON)", 1),
            Unit::EventsPerSec,
            ingest.rates(events)?,
        )
        .baseline("serde_json::to_vec")
        .note(format!(
            "values built untimed, {JSON_STRETCH} at a time, right before they are sent; \
             timed: the ingest calls and one flush per chunk"
        ))
        .problems(ingest.take_problems()),
        Row::new(
            "serde_json::to_vec",
            Unit::EventsPerSec,
            serialize.rates(events)?,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::{chunks, json_stretches, row_name, JSON_STRETCH};

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
    fn json_stretches_build_every_value_once_in_short_runs() {
        let mut seen = Vec::new();
        let mut runs = Vec::new();
        let (_, total) = json_stretches(10, 10 + 2 * JSON_STRETCH + 5, |values| {
            runs.push(values.len() as u64);
            seen.extend(values.iter().map(|v| v["seq"].as_u64().unwrap()));
            Ok(values.len() as u64)
        })
        .unwrap();
        assert_eq!(seen, (10..10 + 2 * JSON_STRETCH + 5).collect::<Vec<_>>());
        assert_eq!(runs, [JSON_STRETCH, JSON_STRETCH, 5]);
        assert_eq!(total, 2 * JSON_STRETCH + 5);
        let (took, total) = json_stretches(7, 7, |_| unreachable!()).unwrap();
        assert_eq!((took, total), (std::time::Duration::ZERO, 0));
    }

    #[test]
    fn row_names() {
        assert_eq!(row_name("flume", 1), "flume, 1 producer");
        assert_eq!(row_name("flume", 2), "flume, 2 producers");
    }
}
