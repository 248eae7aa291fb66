//! Ingests a million events into the in-memory adapter, polls them all back, and prints
//! the counts and rates.
//!
//! `cargo run --release --example quickstart -p net-sdk`

use net_sdk::{
    AdapterConfig, BackpressureMode, BatchConfig, ConsumeRequest, EventBus, EventBusConfig,
    RawEvent,
};
use std::time::Instant;

const EVENTS: u64 = 1_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = EventBusConfig::builder()
        .shards(16)
        .ring_capacity(8192)
        .batch(BatchConfig::default().max_events(1024).max_delay_ms(5))
        .backpressure(BackpressureMode::Block)
        .adapter(AdapterConfig::memory())
        .build()?;
    let bus = EventBus::new(config).await?;

    let start = Instant::now();
    for i in 0..EVENTS {
        let payload = format!(r#"{{"seq":{i},"type":"click","user":{}}}"#, i % 1000);
        bus.ingest_raw(RawEvent::from_bytes(payload))?;
    }
    bus.flush().await?;
    let ingest_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut polled = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let mut request = ConsumeRequest::new(10_000);
        if let Some(c) = cursor.take() {
            request = request.from(c);
        }
        let page = bus.poll(request).await?;
        polled += page.events.len() as u64;
        cursor = Some(page.cursor);
        if !page.has_more {
            break;
        }
    }
    let poll_secs = start.elapsed().as_secs_f64();

    let stats = bus.stats().snapshot();
    bus.shutdown().await?;
    println!(
        "ingested   {:>10} events in {ingest_secs:.3}s ({:.0} events/s)",
        stats.events_ingested,
        EVENTS as f64 / ingest_secs
    );
    println!(
        "dispatched {:>10} events in {} batches",
        stats.events_dispatched, stats.batches_dispatched
    );
    println!("dropped    {:>10} events", stats.events_dropped);
    println!(
        "polled     {polled:>10} events in {poll_secs:.3}s ({:.0} events/s)",
        polled as f64 / poll_secs
    );
    anyhow::ensure!(
        polled == EVENTS,
        "polled {polled} events, expected {EVENTS}"
    );
    Ok(())
}
