//! MemoryAdapter rows: events written through the bus into a [`MemoryAdapter`], then read
//! back with `poll`, beside reading the same adapter shard by shard without the bus.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use net_adapter::{MemoryAdapter, MemoryAdapterConfig};
use net_core::EventBus;

use crate::plan::{Plan, Summary, PAYLOAD_BYTES};
use crate::report::{Row, Unit};
use crate::roundtrip::{self, PAGE};
use crate::throughput::{bus_config, row_name, SHARDS};

/// The three timings of one repeat.
struct Pass {
    /// Ingest of every event until `flush()` returned.
    write: Duration,
    /// Reading every event back through `bus.poll`.
    poll: Duration,
    /// Reading every event back with `poll_shard`, shard after shard.
    direct: Duration,
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
    let (write, problem) = roundtrip::write(&bus, events).await?;
    if let Some(problem) = problem {
        problems.write.push(problem);
    }

    let started = Instant::now();
    let read = roundtrip::through_bus(&bus).await?;
    let poll = started.elapsed();
    if read != events {
        problems
            .read
            .push(format!("bus.poll read back {read} of {events} events"));
    }

    let started = Instant::now();
    let read = roundtrip::direct(&*adapter).await?;
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
