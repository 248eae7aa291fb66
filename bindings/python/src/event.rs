//! What polls and batch ingests return: `Event`, `Page` and `BatchResult`.

use net_sdk::{ConsumeResponse, StoredEvent};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyTuple};

/// Adds the classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Event>()?;
    m.add_class::<Page>()?;
    m.add_class::<BatchResult>()?;
    Ok(())
}

/// An event read back from the bus.
#[pyclass(frozen, module = "netbus")]
pub(crate) struct Event {
    inner: StoredEvent,
}

impl Event {
    pub(crate) fn new(inner: StoredEvent) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl Event {
    /// The adapter's position of the event (a stream entry id, a sequence, an offset).
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }

    /// The payload as ingested.
    #[getter]
    fn raw<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.raw)
    }

    /// Ingestion time in nanoseconds since the Unix epoch.
    #[getter]
    fn insertion_ts(&self) -> u64 {
        self.inner.insertion_ts
    }

    /// The shard the event was stored under.
    #[getter]
    fn shard_id(&self) -> u16 {
        self.inner.shard_id
    }

    /// The dedup id written with the event, when the adapter keeps one.
    #[getter]
    fn dedup_id(&self) -> Option<&str> {
        self.inner.dedup_id.as_deref()
    }

    /// The payload parsed as JSON (with the `json` module).
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let loads = LOADS.get_or_try_init(py, || {
            py.import("json")?.getattr("loads").map(Bound::unbind)
        })?;
        loads.bind(py).call1((PyBytes::new(py, &self.inner.raw),))
    }

    fn __repr__(&self) -> String {
        format!(
            "Event(id={:?}, shard_id={}, insertion_ts={}, dedup_id={:?}, raw={} bytes)",
            self.inner.id,
            self.inner.shard_id,
            self.inner.insertion_ts,
            self.inner.dedup_id,
            self.inner.raw.len()
        )
    }
}

/// A page of events returned by `poll`.
#[pyclass(frozen, module = "netbus")]
pub(crate) struct Page {
    /// The events, in the requested ordering.
    #[pyo3(get)]
    events: Py<PyList>,
    /// Pass it back as `cursor=` to resume right after these events.
    #[pyo3(get)]
    cursor: String,
    /// True when more events were waiting at the time of the poll.
    #[pyo3(get)]
    has_more: bool,
}

impl Page {
    /// Converts a response (with the interpreter lock held).
    pub(crate) fn from_response(py: Python<'_>, response: ConsumeResponse) -> PyResult<Self> {
        let events = response
            .events
            .into_iter()
            .map(|event| Py::new(py, Event::new(event)));
        let events = PyList::new(py, events.collect::<PyResult<Vec<_>>>()?)?;
        Ok(Self {
            events: events.unbind(),
            cursor: response.cursor,
            has_more: response.has_more,
        })
    }
}

#[pymethods]
impl Page {
    fn __len__(&self, py: Python<'_>) -> usize {
        self.events.bind(py).len()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Page({} events, cursor={:?}, has_more={})",
            self.events.bind(py).len(),
            self.cursor,
            self.has_more
        )
    }
}

/// What a batch ingest did.
#[pyclass(frozen, module = "netbus")]
pub(crate) struct BatchResult {
    /// Events accepted into a ring.
    #[pyo3(get)]
    accepted: usize,
    /// `(position, exception)` of every refused event, in batch order.
    #[pyo3(get)]
    refused: Py<PyList>,
}

impl BatchResult {
    /// A result from the accepted count and the refused positions with their errors.
    pub(crate) fn new(
        py: Python<'_>,
        accepted: usize,
        refused: Vec<(usize, PyErr)>,
    ) -> PyResult<Self> {
        let refused = refused
            .into_iter()
            .map(|(index, error)| {
                PyTuple::new(
                    py,
                    [
                        index.into_pyobject(py)?.into_any(),
                        error.into_value(py).into_bound(py).into_any(),
                    ],
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Self {
            accepted,
            refused: PyList::new(py, refused)?.unbind(),
        })
    }
}

#[pymethods]
impl BatchResult {
    /// Whether every event of the batch was accepted.
    #[getter]
    fn all_accepted(&self, py: Python<'_>) -> bool {
        self.refused.bind(py).is_empty()
    }

    fn __int__(&self) -> usize {
        self.accepted
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "BatchResult(accepted={}, refused={})",
            self.accepted,
            self.refused.bind(py).len()
        )
    }
}
