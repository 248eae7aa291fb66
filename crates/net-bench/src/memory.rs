//! MemoryAdapter rows: events written through the bus into a [`MemoryAdapter`], then read
//! back with `poll`, beside reading the same adapter shard by shard without the bus.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use net_adapter::{Adapter, MemoryAdapter, MemoryAdapterConfig};
use net_core::{ConsumeRequest, EventBus};

use crate::plan::{raw_pool, Plan, Summary, PAYLOAD_BYTES};
use crate::report::{Row, Unit};
use crate::throughput::{bus_config, row_name, SHARDS};

/// Events asked for per page, by the bus's `poll` and by the direct adapter reads.
const PAGE: usize = 10_000;

/// Upper bound on pages read in one pass, so a paging bug ends the run instead of hanging.
const MAX_PAGES: usize = 1_000_000;

/// The three timings of one repeat.
struct Pass {
    /// Ingest of every event until `flush()` returned.
    write: Duration,
    /// Reading every event back through `bus.poll`.
    poll: Duration,
    /// Reading every event back with `poll_shard`, shard after shard.
    direct: Duration,
}

/// Reads everything back through the bus; returns how many events came back.
async fn poll_all(bus: &EventBus) -> Result<u64> {
    let mut cursor: Option<String> = None;
    let mut read = 0u64;
    for _ in 0..MAX_PAGES {
        let mut request = ConsumeRequest::new(PAGE);
        if let Some(cursor) = cursor.take() {
            request = request.from(cursor);
        }
        let page = bus.poll(request).await?;
        read += page.events.len() as u64;
        if !page.has_more {
            return Ok(read);
        }
        cursor = Some(page.cursor);
    }
    bail!("bus.poll still had more after {MAX_PAGES} pages")
}

/// Reads everything back from the adapter itself, shard after shard.
async fn poll_direct(adapter: &MemoryAdapter) -> Result<u64> {
    let mut read = 0u64;
    for shard in 0..SHARDS {
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = adapter.poll_shard(shard, cursor.as_deref(), PAGE).await?;
            read += page.events.len() as u64;
            if !page.has_more {
                break;
            }
            pages += 1;
            if pages > MAX_PAGES {
                bail!("poll_shard of shard {shard} still had more after {MAX_PAGES} pages");
            }
            cursor = Some(page.cursor);
        }
    }
    Ok(read)
}

/// What went wrong in the write and read halves of the repeats.
#[derive(Default)]
struct Problems {
    /// Events not dispatched, or dropped.
    write: Vec<String>,
    /// Events not read back.
    read: Vec<String>,
}

/// One repeat on a fresh bus and adapter; records what went wrong in `problems`.
async fn pass(plan: &Plan, problems: &mut Problems) -> Result<Pass> {
    let events = plan.memory_events;
    let retention = usize::try_from(events).unwrap_or(usize::MAX);
    let adapter = Arc::new(MemoryAdapter::with_config(
        MemoryAdapterConfig::default().max_events_per_shard(retention),
    ));
    let bus = EventBus::new(bus_config().adapter_instance(adapter.clone()).build()?).await?;
    let pool = raw_pool(0);
    let started = thread::scope(|scope| {
        scope
            .spawn(|| {
                let started = Instant::now();
                for event in pool.iter().cycle().take(events as usize) {
                    if bus.ingest_raw(event.clone()).is_err() {
                        break;
                    }
                }
                started
            })
            .join()
    })
    .map_err(|_| anyhow::anyhow!("the producer thread panicked"))?;
    bus.flush().await?;
    let write = started.elapsed();
    let stats = bus.stats().snapshot();
    if stats.events_dispatched != events || stats.events_dropped != 0 {
        problems.write.push(format!(
            "dispatched {} and dropped {} of {events} events",
            stats.events_dispatched, stats.events_dropped
        ));
    }

    let started = Instant::now();
    let read = poll_all(&bus).await?;
    let poll = started.elapsed();
    if read != events {
        problems
            .read
            .push(format!("bus.poll read back {read} of {events} events"));
    }

    let started = Instant::now();
    let read = poll_direct(&adapter).await?;
    let direct = started.elapsed();
    if read != events {
        problems
            .read
            .push(format!("poll_shard read back {read} of {events} events"));
    }
    bus.shutdown().await?;
    Ok(Pass {
        write,
        poll,
        direct,
    })
}

/// The MemoryAdapter rows: write, poll through the bus, and poll the adapter directly.
pub(crate) async fn rows(plan: &Plan) -> Result<Vec<Row>> {
    eprintln!("  MemoryAdapter write and poll back");
    let events = plan.memory_events as f64;
    let mut problems = Problems::default();
    if plan.warm_up {
        pass(plan, &mut problems).await?;
    }
    let mut passes = Vec::with_capacity(plan.repeats);
    for _ in 0..plan.repeats {
        passes.push(pass(plan, &mut problems).await?);
    }
    problems.write.dedup();
    problems.read.dedup();
    let rates = |pick: fn(&Pass) -> Duration| {
        let rates = passes
            .iter()
            .map(|p| events / pick(p).as_secs_f64().max(1e-9))
            .collect();
        Summary::of(rates).context("no repeat was measured")
    };
    let direct = "MemoryAdapter poll_shard, direct";
    Ok(vec![
        Row::new(
            "MemoryAdapter write (ingest_raw + flush)",
            Unit::EventsPerSec,
            rates(|p| p.write)?,
        )
        .baseline(row_name("ingest_raw", 1))
        .payload(PAYLOAD_BYTES)
        .note("1 producer; baseline is the same ingest into the Noop adapter")
        .problems(problems.write),
        Row::new(
            "MemoryAdapter poll back (bus.poll)",
            Unit::EventsPerSec,
            rates(|p| p.poll)?,
        )
        .baseline(direct)
        .payload(PAYLOAD_BYTES)
        .note(format!(
            "pages of up to {PAGE} events, merged across {SHARDS} shards"
        ))
        .problems(problems.read),
        Row::new(direct, Unit::EventsPerSec, rates(|p| p.direct)?)
            .payload(PAYLOAD_BYTES)
            .note(format!(
                "pages of up to {PAGE} events, one shard after another"
            )),
    ])
}
