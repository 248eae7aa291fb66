//! `NativeEventBus`: the bus itself, wrapped by the `EventBus` class of `index.js`.

use crate::adapters::{adapter_config, AdapterOptions};
use crate::errors::{self, coded, invalid_arg, SHUTTING_DOWN};
use crate::event::{BatchRecord, PageRecord, Refusal};
use crate::stream::{NativeEventStream, StreamOptions};
use bytes::Bytes;
use napi::bindgen_prelude::{BufferSlice, Either};
use napi_derive::napi;
use net_sdk::{
    AdapterConfig, BackpressureMode, BatchConfig, ConsumeRequest, EventBusConfig, Filter, Ordering,
    RawEvent,
};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::Duration;

/// The settings of `EventBus.create`. Every field is optional.
#[napi(object)]
#[derive(Default)]
pub struct BusOptions {
    /// Number of shards (default 16).
    pub shards: Option<u32>,
    /// Events each shard's ring holds (default 4096).
    pub ring_capacity: Option<u32>,
    /// What an ingest does when its ring is full: `'drop_newest'` (the default: refuse it with
    /// `ERR_BACKPRESSURE`), `'drop_oldest'` (evict the oldest) or `'block'` (wait for room).
    #[napi(ts_type = "'block' | 'drop_newest' | 'drop_oldest'")]
    pub backpressure: Option<String>,
    /// Most events in one batch to the adapter (default 1024).
    pub max_events: Option<u32>,
    /// Longest a batch waits to fill before it is sent (default 5 ms).
    pub max_delay_ms: Option<u32>,
    /// The backend (default `{ type: 'memory' }`).
    pub adapter: Option<AdapterOptions>,
    /// Largest payload accepted; larger ones are refused with `ERR_TOO_LARGE`.
    pub max_event_bytes: Option<u32>,
    /// Longest `shutdown` waits for the drain.
    pub shutdown_timeout_ms: Option<u32>,
    /// A file keeping the producer's nonce across restarts (for dedup ids).
    pub producer_nonce_path: Option<String>,
}

/// The settings of `poll`. Every field is optional.
#[napi(object)]
#[derive(Default)]
pub struct PollOptions {
    /// Most events in the page (default 100).
    pub limit: Option<u32>,
    /// Where to resume: the `cursor` of an earlier page.
    pub cursor: Option<String>,
    /// A filter, as JSON text (the JavaScript layer serializes objects).
    pub filter: Option<String>,
    /// `'sequence'` (the default) or `'timestamp'`.
    #[napi(ts_type = "'sequence' | 'timestamp'")]
    pub ordering: Option<String>,
}

/// Every counter of the bus.
#[napi(object)]
pub struct Stats {
    /// Events accepted into a ring.
    pub events_ingested: i64,
    /// Accepted events that never reached the adapter.
    pub events_dropped: i64,
    /// Events the adapter took.
    pub events_dispatched: i64,
    /// Batches the adapter took.
    pub batches_dispatched: i64,
    /// Batches sent again after a transient failure.
    pub batches_retried: i64,
    /// Batches given up on.
    pub batches_dropped: i64,
    /// Events evicted by `drop_oldest`.
    pub events_evicted: i64,
    /// Events refused at ingest.
    pub events_rejected: i64,
    /// Whether the shutdown lost events.
    pub shutdown_was_lossy: bool,
    /// Shards in service.
    pub active_shards: u32,
    /// Events waiting in each shard's ring.
    pub shard_depths: Vec<i64>,
    /// Refusals by reason.
    pub rejected: RejectedStats,
    /// Adapter failures by kind.
    pub adapter_errors: AdapterErrorStats,
}

/// Refused ingests by reason.
#[napi(object)]
pub struct RejectedStats {
    /// Full ring under `drop_newest`.
    pub backpressure: i64,
    /// Skipped by the sampling policy.
    pub sampled: i64,
    /// No shard could take the event.
    pub unrouted: i64,
    /// The bus was shutting down.
    pub shutting_down: i64,
    /// Not JSON.
    pub serialization: i64,
    /// Larger than `maxEventBytes`.
    pub too_large: i64,
}

/// Adapter failures by kind.
#[napi(object)]
pub struct AdapterErrorStats {
    /// Failures that were retried.
    pub transient: i64,
    /// Failures that were not.
    pub fatal: i64,
    /// The backend pushed back.
    pub backpressure: i64,
    /// The backend could not be reached.
    pub connection: i64,
    /// The backend was shutting down.
    pub shutdown: i64,
    /// A batch could not be encoded.
    pub serialization: i64,
    /// A batch was too large for the backend.
    pub too_large: i64,
    /// Anything else.
    pub other: i64,
}

/// `backpressure` as a mode.
fn backpressure_mode(name: Option<&str>) -> napi::Result<BackpressureMode> {
    match name.unwrap_or("drop_newest") {
        "block" => Ok(BackpressureMode::Block),
        "drop_oldest" => Ok(BackpressureMode::DropOldest),
        "drop_newest" => Ok(BackpressureMode::DropNewest),
        other => Err(invalid_arg(format!(
            "backpressure must be 'block', 'drop_oldest' or 'drop_newest', not {other:?}"
        ))),
    }
}

/// `ordering` as an ordering.
pub(crate) fn ordering(name: Option<&str>) -> napi::Result<Ordering> {
    match name.unwrap_or("sequence") {
        "sequence" => Ok(Ordering::Sequence),
        "timestamp" => Ok(Ordering::Timestamp),
        other => Err(invalid_arg(format!(
            "ordering must be 'sequence' or 'timestamp', not {other:?}"
        ))),
    }
}

/// `filter` (JSON text) as a filter.
pub(crate) fn filter(text: Option<&str>) -> napi::Result<Option<Filter>> {
    text.map(|text| {
        Filter::parse(text)
            .map_err(|e| coded(errors::INVALID_FILTER, format!("invalid filter: {e}")))
    })
    .transpose()
}

/// Builds the bus's configuration from the options.
fn config(options: BusOptions) -> napi::Result<(EventBusConfig, BackpressureMode)> {
    let mode = backpressure_mode(options.backpressure.as_deref())?;
    let adapter = match &options.adapter {
        Some(adapter) => adapter_config(adapter)?,
        None => AdapterConfig::memory(),
    };
    let shards = u16::try_from(options.shards.unwrap_or(16))
        .map_err(|_| invalid_arg("shards must be at most 65535"))?;
    let mut batch = BatchConfig::default();
    if let Some(n) = options.max_events {
        batch = batch.max_events(n as usize);
    }
    batch = batch.max_delay_ms(u64::from(options.max_delay_ms.unwrap_or(5)));
    let mut builder = EventBusConfig::builder()
        .shards(shards)
        .ring_capacity(options.ring_capacity.unwrap_or(4096) as usize)
        .backpressure(mode)
        .batch(batch)
        .adapter(adapter);
    if let Some(n) = options.max_event_bytes {
        builder = builder.max_event_bytes(n as usize);
    }
    if let Some(ms) = options.shutdown_timeout_ms {
        builder = builder.shutdown_timeout(Duration::from_millis(u64::from(ms)));
    }
    if let Some(path) = options.producer_nonce_path {
        builder = builder.producer_nonce_path(path);
    }
    Ok((builder.build().map_err(errors::config)?, mode))
}

/// Builds a bus (the adapter connects first, so this waits; it runs on the addon's runtime).
#[napi]
pub async fn create_bus(options: Option<BusOptions>) -> napi::Result<NativeEventBus> {
    let (config, _mode) = config(options.unwrap_or_default())?;
    let bus = net_sdk::EventBus::new(config)
        .await
        .map_err(errors::config)?;
    Ok(NativeEventBus {
        bus: Some(Arc::new(bus)),
        closed: Arc::new(AtomicBool::new(false)),
        runtime: tokio::runtime::Handle::current(),
    })
}

/// A running bus. Made by `createBus`; `index.js` wraps it as `EventBus`.
#[napi]
pub struct NativeEventBus {
    /// Always `Some` until the object is dropped (see `Drop`).
    bus: Option<Arc<net_sdk::EventBus>>,
    /// Set when `shutdown` was called: later flushes, polls and streams are refused.
    closed: Arc<AtomicBool>,
    /// The runtime the bus was built on, entered when the bus is dropped.
    runtime: tokio::runtime::Handle,
}

impl Drop for NativeEventBus {
    fn drop(&mut self) {
        // Collected without `shutdown()`: dropped inside the runtime, the last handle's `Drop`
        // refuses new events and drains in the background. Nothing here waits. The handle is
        // the one taken at creation: at process exit, finalizers run after napi-rs has
        // released its runtime, and entering a handle still works then (a drain spawned on a
        // stopped runtime is simply not run).
        if let Some(bus) = self.bus.take() {
            let _entered = self.runtime.enter();
            drop(bus);
        }
    }
}

impl NativeEventBus {
    fn bus(&self) -> &Arc<net_sdk::EventBus> {
        self.bus
            .as_ref()
            .unwrap_or_else(|| unreachable!("the bus is only taken when the object is dropped"))
    }

    /// The bus, unless `shutdown` was called.
    fn open_bus(&self) -> napi::Result<Arc<net_sdk::EventBus>> {
        if self.closed.load(SeqCst) {
            return Err(coded(SHUTTING_DOWN, "the bus was shut down"));
        }
        Ok(self.bus().clone())
    }

    fn ingest_one(&self, bytes: Bytes) -> napi::Result<()> {
        self.bus()
            .ingest_raw(RawEvent::from_bytes(bytes))
            .map_err(errors::ingestion)
    }
}

#[napi]
impl NativeEventBus {
    /// Ingests the bytes of a Buffer (copied once).
    #[napi]
    pub fn ingest_raw_buffer(&self, event: BufferSlice<'_>) -> napi::Result<()> {
        self.ingest_one(Bytes::copy_from_slice(&event))
    }

    /// Ingests a string as UTF-8.
    #[napi]
    pub fn ingest_raw_string(&self, event: String) -> napi::Result<()> {
        self.ingest_one(Bytes::from(event))
    }

    /// Ingests every payload in one call; refused events are reported, not thrown.
    #[napi]
    pub fn ingest_raw_batch(
        &self,
        events: Vec<Either<String, BufferSlice<'_>>>,
    ) -> napi::Result<BatchRecord> {
        let raws: Vec<RawEvent> = events
            .into_iter()
            .map(|event| {
                RawEvent::from_bytes(match event {
                    Either::A(text) => Bytes::from(text),
                    Either::B(buffer) => Bytes::copy_from_slice(&buffer),
                })
            })
            .collect();
        let outcome = self.bus().ingest_raw_batch(raws);
        let refused = outcome
            .refused
            .into_iter()
            .map(|(index, e)| Refusal {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                code: errors::ingestion_code(&e).to_owned(),
                message: e.to_string(),
            })
            .collect();
        Ok(BatchRecord {
            accepted: u32::try_from(outcome.accepted).unwrap_or(u32::MAX),
            refused,
        })
    }

    /// Resolves once every event accepted before the call reached the adapter (or was
    /// dropped and counted) and the adapter flushed.
    #[napi]
    pub async fn flush(&self) -> napi::Result<()> {
        let bus = self.open_bus()?;
        bus.flush().await.map_err(errors::adapter)
    }

    /// Reads a page of events.
    #[napi]
    pub async fn poll(&self, options: Option<PollOptions>) -> napi::Result<PageRecord> {
        let options = options.unwrap_or_default();
        let mut request = ConsumeRequest::new(options.limit.unwrap_or(100) as usize)
            .ordering(ordering(options.ordering.as_deref())?);
        if let Some(cursor) = options.cursor {
            request = request.from(cursor);
        }
        if let Some(filter) = filter(options.filter.as_deref())? {
            request = request.filter(filter);
        }
        let bus = self.open_bus()?;
        let response = bus.poll(request).await.map_err(errors::consumer)?;
        Ok(PageRecord::from(response))
    }

    /// Stops accepting events, drains every ring to the adapter and shuts it down. Works
    /// while other handles on the bus exist (streams); calling it again is harmless.
    #[napi]
    pub async fn shutdown(&self) -> napi::Result<()> {
        self.closed.store(true, SeqCst);
        let bus = self.bus().clone();
        bus.shutdown_via_ref().await.map_err(errors::adapter)
    }

    /// Every counter of the bus.
    #[napi]
    pub fn stats(&self) -> Stats {
        let stats = self.bus().stats();
        let s = stats.snapshot();
        let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        let c = |counter: &std::sync::atomic::AtomicU64| n(counter.load(Relaxed));
        let r = &stats.rejected;
        let a = &stats.adapter_errors;
        Stats {
            events_ingested: n(s.events_ingested),
            events_dropped: n(s.events_dropped),
            events_dispatched: n(s.events_dispatched),
            batches_dispatched: n(s.batches_dispatched),
            batches_retried: n(s.batches_retried),
            batches_dropped: n(s.batches_dropped),
            events_evicted: n(s.events_evicted),
            events_rejected: n(s.events_rejected),
            shutdown_was_lossy: s.shutdown_was_lossy,
            active_shards: u32::try_from(s.active_shards).unwrap_or(u32::MAX),
            shard_depths: s.shard_depths.iter().map(|&d| n(d)).collect(),
            rejected: RejectedStats {
                backpressure: c(&r.backpressure),
                sampled: c(&r.sampled),
                unrouted: c(&r.unrouted),
                shutting_down: c(&r.shutting_down),
                serialization: c(&r.serialization),
                too_large: c(&r.too_large),
            },
            adapter_errors: AdapterErrorStats {
                transient: c(&a.transient),
                fatal: c(&a.fatal),
                backpressure: c(&a.backpressure),
                connection: c(&a.connection),
                shutdown: c(&a.shutdown),
                serialization: c(&a.serialization),
                too_large: c(&a.too_large),
                other: c(&a.other),
            },
        }
    }

    /// The number of shards.
    #[napi(getter)]
    pub fn shards(&self) -> u32 {
        u32::from(self.bus().shard_count())
    }

    /// The adapter's name (`memory`, `log`, `redis`, ...).
    #[napi(getter)]
    pub fn adapter_name(&self) -> String {
        self.bus().adapter_name().to_owned()
    }

    /// A stream of the bus's events (see `NativeEventStream`).
    #[napi]
    pub fn stream(&self, options: Option<StreamOptions>) -> napi::Result<NativeEventStream> {
        let bus = self.open_bus()?;
        NativeEventStream::start(bus, options.unwrap_or_default())
    }
}
