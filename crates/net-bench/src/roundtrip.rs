//! The round trip of the adapter rows: events written from one producer thread through the
//! bus, then read back through the bus's `poll` or straight from the adapter with
//! `poll_shard`. Shared by the memory, Redis and JetStream rows so that each of them writes and
//! reads the same way.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use net_adapter::Adapter;
use net_core::{ConsumeRequest, EventBus};

use crate::plan::raw_pool;
use crate::throughput::SHARDS;

/// Ingests `events` events of the raw pool through `bus` from one producer thread, timed from
/// the first ingest until `flush()` returned. Returns the time and, when the bus did not
/// dispatch every event or dropped any, what went wrong.
pub(crate) async fn write(bus: &EventBus, events: u64) -> Result<(Duration, Option<String>)> {
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
    let elapsed = started.elapsed();
    let stats = bus.stats().snapshot();
    let problem = (stats.events_dispatched != events || stats.events_dropped != 0).then(|| {
        format!(
            "dispatched {} and dropped {} of {events} events",
            stats.events_dispatched, stats.events_dropped
        )
    });
    Ok((elapsed, problem))
}

/// Events asked for per page, through the bus and straight from an adapter alike.
pub(crate) const PAGE: usize = net_adapter::MAX_PAGE;

/// Pages after which a read-back that still reports more data is called broken.
const MAX_PAGES: usize = 1_000_000;

/// Reads everything back through the bus; returns how many events came back.
pub(crate) async fn through_bus(bus: &EventBus) -> Result<u64> {
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

/// Reads everything back from `adapter` itself, shard after shard; returns how many events
/// came back.
pub(crate) async fn direct(adapter: &dyn Adapter) -> Result<u64> {
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
