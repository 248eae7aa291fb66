//! Heap rows: bytes of heap the bus holds per queued event, beside a bare `ArrayQueue`
//! holding the same events.
//!
//! With allocation counting on (see [`crate::alloc_count`]), a bus is built whose adapter
//! never finishes a batch until it is released, and every ring is filled: each shard's worker
//! holds one batch in the adapter and its ring is full behind it. The live heap then is the
//! bus's own structures (rings, batch buffers, tasks, counters) plus the queued payloads.
//! Divided by the number of queued events and less the payload size, that is the overhead
//! per queued event. The bare queue gets the same treatment with the same payloads and the
//! same total number of slots.
//!
//! Rings are allocated whole when the bus starts, so a half-empty bus costs more per queued
//! event than these figures; they are the cost at capacity.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use net_adapter::{async_trait, Adapter, AdapterError, Batch, ShardPollResult};
use net_core::{BackpressureMode, EventBus, EventBusConfig, RawEvent};
use std::sync::Arc;
use tokio::sync::watch;

use crate::alloc_count::Counting;
use crate::plan::{payload, Plan, Summary, PAYLOAD_BYTES};
use crate::report::{Row, Unit};
use crate::throughput::SHARDS;

/// An adapter whose `on_batch` waits until the gate opens, so batches pile up in the bus.
#[derive(Debug)]
struct Gate {
    /// Becomes `true` when batches may complete.
    open: watch::Receiver<bool>,
}

#[async_trait]
impl Adapter for Gate {
    async fn on_batch(&self, _batch: Arc<Batch>) -> Result<(), AdapterError> {
        let mut open = self.open.clone();
        // A dropped sender also lets the batch through: nothing could open the gate anymore.
        let _ = open.wait_for(|open| *open).await;
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
        "gate"
    }
}

/// SplitMix64: spreads consecutive integers over the whole `u64` range (routing hashes).
fn spread(index: u64) -> u64 {
    let mut z = index.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fresh event with its own payload allocation, routed by `index`.
fn fresh_event(index: u64) -> RawEvent {
    RawEvent::from_bytes_with_hash(Bytes::from(payload(0, index as usize)), spread(index))
}

/// Live heap bytes per queued event, payload included, of a bus with full rings.
async fn bus_bytes_per_event(ring: usize) -> Result<f64> {
    let (open_tx, open_rx) = watch::channel(false);
    let counting = Counting::start();
    let config = EventBusConfig::builder()
        .shards(SHARDS)
        .ring_capacity(ring)
        .backpressure(BackpressureMode::DropNewest)
        .adapter_instance(Gate { open: open_rx })
        .build()?;
    let bus = EventBus::new(config).await?;
    let slots = usize::from(SHARDS) * ring;
    // Twice the slots fills every ring with near certainty; the workers take one batch each
    // meanwhile, so fill again once they have (a batch closes within `max_delay`).
    let mut index = 0u64;
    for _ in 0..2 {
        for _ in 0..2 * slots {
            let _ = bus.ingest_raw(fresh_event(index));
            index += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let live = counting.live_bytes();
    let stats = bus.stats().snapshot();
    drop(counting);
    let queued = stats.events_ingested - stats.events_dispatched - stats.events_dropped;
    let _ = open_tx.send(true);
    bus.shutdown().await?;
    if queued < slots as u64 {
        bail!("only {queued} of {slots} slots were filled");
    }
    Ok(live as f64 / queued as f64)
}

/// Live heap bytes per queued event, payload included, of one full `ArrayQueue` with as many
/// slots as the bus's rings together.
fn bare_bytes_per_event(ring: usize) -> Result<f64> {
    let slots = usize::from(SHARDS) * ring;
    let counting = Counting::start();
    let queue = ArrayQueue::new(slots);
    let mut index = 0u64;
    while queue.push(fresh_event(index)).is_ok() {
        index += 1;
    }
    let live = counting.live_bytes();
    drop(counting);
    let queued = queue.len();
    drop(queue);
    if queued != slots {
        bail!("the queue took {queued} of {slots} events");
    }
    Ok(live as f64 / queued as f64)
}

/// The heap rows: overhead beyond the payload per queued event, bus and bare queue.
pub(crate) async fn rows(plan: &Plan) -> Result<Vec<Row>> {
    eprintln!("  heap per queued event");
    let ring = plan.heap_ring;
    let mut bus = Vec::with_capacity(plan.repeats);
    let mut bare = Vec::with_capacity(plan.repeats);
    for _ in 0..plan.repeats {
        bus.push(bus_bytes_per_event(ring).await? - PAYLOAD_BYTES as f64);
        bare.push(bare_bytes_per_event(ring)? - PAYLOAD_BYTES as f64);
    }
    let bare_name = "heap overhead per queued event, bare ArrayQueue";
    let context = "no repeat was measured";
    Ok(vec![
        Row::new(
            "heap overhead per queued event, bus",
            Unit::BytesPerEvent,
            Summary::of(bus).context(context)?,
        )
        .baseline(bare_name)
        .note(format!(
            "{SHARDS} shards of {ring} slots filled behind a stalled adapter; bus start-up \
             allocations included, the {PAYLOAD_BYTES}-byte payloads excluded"
        )),
        Row::new(
            bare_name,
            Unit::BytesPerEvent,
            Summary::of(bare).context(context)?,
        )
        .note(format!(
            "one queue of {} slots holding the same events",
            usize::from(SHARDS) * ring
        )),
    ])
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn spread_reaches_every_shard_evenly() {
        let mut counts = [0u32; 16];
        for index in 0..16_000u64 {
            counts[(spread(index) % 16) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
