//! `netbus.EventBus`: the bus itself.

use crate::adapters::adapter_config;
use crate::convert::{json_bytes, raw_event};
use crate::errors;
use crate::event::{BatchResult, Page};
use crate::runtime;
use crate::stream::{EventStream, StreamSettings};
use net_sdk::{
    AdapterConfig, BackpressureMode, BatchConfig, ConsumeRequest, EventBusConfig, Filter, Ordering,
    RawEvent, StatsSnapshot,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Adds the class to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEventBus>()
}

/// An event bus. Build it with keyword settings; shut it down with `shutdown()` (or a `with`
/// block).
#[pyclass(frozen, module = "netbus", name = "EventBus")]
pub(crate) struct PyEventBus {
    /// Always `Some` until the object is dropped (see `Drop`).
    bus: Option<Arc<net_sdk::EventBus>>,
    /// `backpressure="block"`: single-event ingests may wait, so they release the lock.
    blocking: bool,
}

impl Drop for PyEventBus {
    fn drop(&mut self) {
        // Dropped inside the runtime, the last handle's `Drop` starts a background drain;
        // nothing here waits.
        if let Some(bus) = self.bus.take() {
            let _entered = runtime().enter();
            drop(bus);
        }
    }
}

impl PyEventBus {
    fn bus(&self) -> &Arc<net_sdk::EventBus> {
        self.bus
            .as_ref()
            .unwrap_or_else(|| unreachable!("the bus is only taken when the object is dropped"))
    }
}

/// `backpressure=` as a mode.
fn backpressure_mode(name: &str) -> PyResult<BackpressureMode> {
    match name {
        "block" => Ok(BackpressureMode::Block),
        "drop_oldest" => Ok(BackpressureMode::DropOldest),
        "drop_newest" => Ok(BackpressureMode::DropNewest),
        other => Err(PyValueError::new_err(format!(
            "backpressure must be \"block\", \"drop_oldest\" or \"drop_newest\", not {other:?}"
        ))),
    }
}

/// `ordering=` as an ordering.
pub(crate) fn ordering(name: &str) -> PyResult<Ordering> {
    match name {
        "sequence" => Ok(Ordering::Sequence),
        "timestamp" => Ok(Ordering::Timestamp),
        other => Err(PyValueError::new_err(format!(
            "ordering must be \"sequence\" or \"timestamp\", not {other:?}"
        ))),
    }
}

/// `filter=` as a filter: JSON text, or a dict/list that is serialized first.
pub(crate) fn filter(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Filter>> {
    let Some(value) = value else {
        return Ok(None);
    };
    if value.is_none() {
        return Ok(None);
    }
    let text = if let Ok(text) = value.cast::<PyString>() {
        text.to_cow()?.into_owned()
    } else {
        let bytes = json_bytes(value)
            .map_err(|e| errors::InvalidFilterError::new_err(format!("invalid filter: {e}")))?;
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Filter::parse(&text)
        .map(Some)
        .map_err(|e| errors::InvalidFilterError::new_err(format!("invalid filter: {e}")))
}

/// The request of a `poll` call.
fn request(
    limit: usize,
    cursor: Option<String>,
    filter_value: Option<&Bound<'_, PyAny>>,
    ordering_name: &str,
) -> PyResult<ConsumeRequest> {
    let mut request = ConsumeRequest::new(limit).ordering(ordering(ordering_name)?);
    if let Some(cursor) = cursor {
        request = request.from(cursor);
    }
    if let Some(filter) = filter(filter_value)? {
        request = request.filter(filter);
    }
    Ok(request)
}

/// Runs `future` on the runtime with the interpreter lock released.
fn wait<T: Send>(py: Python<'_>, future: impl std::future::Future<Output = T> + Send) -> T {
    py.detach(|| runtime().block_on(future))
}

/// The stats as a dict: every counter of `EventBusStats`, rejections and adapter errors by
/// kind in nested dicts.
fn stats_dict<'py>(py: Python<'py>, bus: &net_sdk::EventBus) -> PyResult<Bound<'py, PyDict>> {
    let stats = bus.stats();
    let snapshot: StatsSnapshot = stats.snapshot();
    let c = |counter: &std::sync::atomic::AtomicU64| counter.load(Relaxed);
    let dict = PyDict::new(py);
    dict.set_item("events_ingested", snapshot.events_ingested)?;
    dict.set_item("events_dropped", snapshot.events_dropped)?;
    dict.set_item("events_dispatched", snapshot.events_dispatched)?;
    dict.set_item("batches_dispatched", snapshot.batches_dispatched)?;
    dict.set_item("batches_retried", snapshot.batches_retried)?;
    dict.set_item("batches_dropped", snapshot.batches_dropped)?;
    dict.set_item("events_evicted", snapshot.events_evicted)?;
    dict.set_item("events_rejected", snapshot.events_rejected)?;
    dict.set_item("shutdown_was_lossy", snapshot.shutdown_was_lossy)?;
    dict.set_item("shards_added", c(&stats.shards_added))?;
    dict.set_item("shards_removed", c(&stats.shards_removed))?;
    dict.set_item("active_shards", snapshot.active_shards)?;
    dict.set_item("shard_depths", snapshot.shard_depths)?;
    let r = &stats.rejected;
    let rejected = PyDict::new(py);
    rejected.set_item("backpressure", c(&r.backpressure))?;
    rejected.set_item("sampled", c(&r.sampled))?;
    rejected.set_item("unrouted", c(&r.unrouted))?;
    rejected.set_item("shutting_down", c(&r.shutting_down))?;
    rejected.set_item("serialization", c(&r.serialization))?;
    rejected.set_item("too_large", c(&r.too_large))?;
    dict.set_item("rejected", rejected)?;
    let a = &stats.adapter_errors;
    let adapter_errors = PyDict::new(py);
    adapter_errors.set_item("transient", c(&a.transient))?;
    adapter_errors.set_item("fatal", c(&a.fatal))?;
    adapter_errors.set_item("backpressure", c(&a.backpressure))?;
    adapter_errors.set_item("connection", c(&a.connection))?;
    adapter_errors.set_item("shutdown", c(&a.shutdown))?;
    adapter_errors.set_item("serialization", c(&a.serialization))?;
    adapter_errors.set_item("too_large", c(&a.too_large))?;
    adapter_errors.set_item("other", c(&a.other))?;
    dict.set_item("adapter_errors", adapter_errors)?;
    Ok(dict)
}

#[pymethods]
impl PyEventBus {
    #[new]
    #[pyo3(signature = (
        *,
        shards = 16,
        ring_capacity = 4096,
        backpressure = "drop_newest",
        max_events = 1024,
        max_delay_ms = 5,
        adapter = None,
        max_event_bytes = None,
        shutdown_timeout_ms = None,
        producer_nonce_path = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        shards: u16,
        ring_capacity: usize,
        backpressure: &str,
        max_events: usize,
        max_delay_ms: u64,
        adapter: Option<&Bound<'_, PyAny>>,
        max_event_bytes: Option<usize>,
        shutdown_timeout_ms: Option<u64>,
        producer_nonce_path: Option<PathBuf>,
    ) -> PyResult<Self> {
        let mode = backpressure_mode(backpressure)?;
        let adapter = match adapter {
            Some(adapter) if !adapter.is_none() => adapter_config(adapter)?,
            _ => AdapterConfig::memory(),
        };
        let mut builder = EventBusConfig::builder()
            .shards(shards)
            .ring_capacity(ring_capacity)
            .backpressure(mode)
            .batch(
                BatchConfig::default()
                    .max_events(max_events)
                    .max_delay_ms(max_delay_ms),
            )
            .adapter(adapter);
        if let Some(n) = max_event_bytes {
            builder = builder.max_event_bytes(n);
        }
        if let Some(ms) = shutdown_timeout_ms {
            builder = builder.shutdown_timeout(Duration::from_millis(ms));
        }
        if let Some(path) = producer_nonce_path {
            builder = builder.producer_nonce_path(path);
        }
        let config = builder.build().map_err(errors::config)?;
        let bus = wait(py, net_sdk::EventBus::new(config)).map_err(errors::config)?;
        Ok(Self {
            bus: Some(Arc::new(bus)),
            blocking: mode == BackpressureMode::Block,
        })
    }

    /// Serializes `event` (a JSON-compatible value) and ingests it.
    fn ingest(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<()> {
        let raw = RawEvent::from_bytes(json_bytes(event)?);
        self.ingest_one(py, raw)
    }

    /// Ingests a payload as it is (`bytes`, `bytearray`, or `str` as UTF-8).
    fn ingest_raw(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<()> {
        let raw = raw_event(event)?;
        self.ingest_one(py, raw)
    }

    /// Ingests every payload of `events` in one call; refused events are reported, not raised.
    fn ingest_raw_batch(&self, py: Python<'_>, events: &Bound<'_, PyAny>) -> PyResult<BatchResult> {
        let mut raws = Vec::with_capacity(events.len().unwrap_or(0));
        for event in events.try_iter()? {
            raws.push(raw_event(&event?)?);
        }
        let bus = self.bus().clone();
        let outcome = py.detach(move || bus.ingest_raw_batch(raws));
        let refused = outcome
            .refused
            .into_iter()
            .map(|(index, e)| (index, errors::ingestion(e)))
            .collect();
        BatchResult::new(py, outcome.accepted, refused)
    }

    /// Serializes and ingests every value of `events` in one call; refused events (including
    /// values that are not JSON) are reported, not raised.
    fn ingest_batch(&self, py: Python<'_>, events: &Bound<'_, PyAny>) -> PyResult<BatchResult> {
        let mut raws = Vec::with_capacity(events.len().unwrap_or(0));
        // Positions in `events` of the payloads in `raws`, and the values that are not JSON.
        let mut positions = Vec::with_capacity(raws.capacity());
        let mut refused = Vec::new();
        for (index, event) in events.try_iter()?.enumerate() {
            match json_bytes(&event?) {
                Ok(bytes) => {
                    raws.push(RawEvent::from_bytes(bytes));
                    positions.push(index);
                }
                Err(e) => refused.push((index, e)),
            }
        }
        let bus = self.bus().clone();
        let outcome = py.detach(move || bus.ingest_raw_batch(raws));
        refused.extend(
            outcome
                .refused
                .into_iter()
                .map(|(i, e)| (positions[i], errors::ingestion(e))),
        );
        refused.sort_by_key(|(index, _)| *index);
        BatchResult::new(py, outcome.accepted, refused)
    }

    /// Returns once every event accepted before the call reached the adapter (or was dropped
    /// and counted) and the adapter flushed.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let bus = self.bus().clone();
        wait(py, async move { bus.flush().await }).map_err(errors::adapter)
    }

    /// Reads a page of events.
    #[pyo3(signature = (limit = 100, cursor = None, filter = None, ordering = "sequence"))]
    fn poll(
        &self,
        py: Python<'_>,
        limit: usize,
        cursor: Option<String>,
        filter: Option<&Bound<'_, PyAny>>,
        ordering: &str,
    ) -> PyResult<Page> {
        let request = request(limit, cursor, filter, ordering)?;
        let bus = self.bus().clone();
        let response =
            wait(py, async move { bus.poll(request).await }).map_err(errors::consumer)?;
        Page::from_response(py, response)
    }

    /// Stops accepting events, drains every ring to the adapter and shuts it down. Calling it
    /// again is harmless.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        let bus = self.bus().clone();
        wait(py, async move { bus.shutdown_via_ref().await }).map_err(errors::adapter)
    }

    /// Every counter of the bus.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, self.bus())
    }

    /// The number of shards.
    #[getter]
    fn shards(&self) -> u16 {
        self.bus().shard_count()
    }

    /// The adapter's name (`memory`, `log`, `redis`, ...).
    #[getter]
    fn adapter_name(&self) -> String {
        self.bus().adapter_name().to_owned()
    }

    /// `poll` as an awaitable.
    #[pyo3(signature = (limit = 100, cursor = None, filter = None, ordering = "sequence"))]
    fn poll_async<'py>(
        &self,
        py: Python<'py>,
        limit: usize,
        cursor: Option<String>,
        filter: Option<&Bound<'_, PyAny>>,
        ordering: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request = request(limit, cursor, filter, ordering)?;
        let bus = self.bus().clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let response = bus.poll(request).await.map_err(errors::consumer)?;
            Python::attach(|py| Page::from_response(py, response))
        })
    }

    /// `flush` as an awaitable.
    fn flush_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let bus = self.bus().clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            bus.flush().await.map_err(errors::adapter)
        })
    }

    /// `shutdown` as an awaitable.
    fn shutdown_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let bus = self.bus().clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            bus.shutdown_via_ref().await.map_err(errors::adapter)
        })
    }

    /// An async iterator over the bus's events, with dedup, resuming from `cursor_file` (when
    /// given) and saving its cursor there once every event of a page was handed out.
    #[pyo3(signature = (
        *,
        cursor_file = None,
        follow = false,
        page_size = 256,
        filter = None,
        ordering = "sequence",
        from_start = false,
        max_events = None,
        dedup_capacity = None,
        min_backoff_ms = None,
        max_backoff_ms = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        py: Python<'_>,
        cursor_file: Option<PathBuf>,
        follow: bool,
        page_size: usize,
        filter: Option<&Bound<'_, PyAny>>,
        ordering: &str,
        from_start: bool,
        max_events: Option<u64>,
        dedup_capacity: Option<usize>,
        min_backoff_ms: Option<u64>,
        max_backoff_ms: Option<u64>,
    ) -> PyResult<EventStream> {
        let settings = StreamSettings {
            cursor_file,
            follow,
            page_size,
            filter: self::filter(filter)?,
            ordering: self::ordering(ordering)?,
            from_start,
            max_events,
            dedup_capacity,
            min_backoff: min_backoff_ms.map(Duration::from_millis),
            max_backoff: max_backoff_ms.map(Duration::from_millis),
        };
        EventStream::start(py, self.bus().clone(), settings)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.shutdown(py)?;
        Ok(false)
    }

    fn __aenter__<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(slf) })
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc: &Bound<'_, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.shutdown_async(py)
    }

    fn __repr__(&self) -> String {
        let bus = self.bus();
        format!(
            "EventBus(shards={}, adapter={:?})",
            bus.shard_count(),
            bus.adapter_name()
        )
    }
}

impl PyEventBus {
    fn ingest_one(&self, py: Python<'_>, raw: RawEvent) -> PyResult<()> {
        let bus = self.bus();
        let result = if self.blocking {
            py.detach(|| bus.ingest_raw(raw))
        } else {
            bus.ingest_raw(raw)
        };
        result.map_err(errors::ingestion)
    }
}
