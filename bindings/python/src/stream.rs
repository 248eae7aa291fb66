//! `netbus.EventStream`: `net_sdk::EventStream` as a Python async iterator.
//!
//! The Rust stream borrows its bus, so it lives inside a task of the runtime that owns a
//! handle on the bus. Python asks the task for one event at a time; the task polls the Rust
//! stream once per request and answers. Nothing is read ahead of what Python asked for, so the
//! cursor is saved exactly when the Rust stream saves it. An awaitable that is cancelled
//! while the task waits for a page leaves the stream where it was: the page lands in the
//! stream's buffer, and an event fetched for a request that went away is kept for the next.

use crate::errors;
use crate::event::Event;
use crate::runtime;
use futures_util::StreamExt;
use net_sdk::{
    CursorStore, EventBus, FileCursor, Filter, MemoryCursor, Ordering, StoredEvent, StreamError,
    StreamOptions,
};
use pyo3::exceptions::{PyRuntimeError, PyStopAsyncIteration, PyStopIteration};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Adds the class to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<EventStream>()
}

/// The settings of `EventBus.stream(...)`.
pub(crate) struct StreamSettings {
    pub(crate) cursor_file: Option<PathBuf>,
    pub(crate) follow: bool,
    pub(crate) page_size: usize,
    pub(crate) filter: Option<Filter>,
    pub(crate) ordering: Ordering,
    pub(crate) from_start: bool,
    pub(crate) max_events: Option<u64>,
    pub(crate) dedup_capacity: Option<usize>,
    pub(crate) min_backoff: Option<Duration>,
    pub(crate) max_backoff: Option<Duration>,
}

impl StreamSettings {
    fn options(&self) -> StreamOptions {
        let mut options = StreamOptions::default()
            .follow(self.follow)
            .page_size(self.page_size)
            .ordering(self.ordering)
            .from_start(self.from_start);
        if let Some(filter) = &self.filter {
            options = options.filter(filter.clone());
        }
        if let Some(n) = self.max_events {
            options = options.max_events(n);
        }
        if let Some(n) = self.dedup_capacity {
            options = options.dedup_capacity(n);
        }
        if self.min_backoff.is_some() || self.max_backoff.is_some() {
            let min = self.min_backoff.unwrap_or(Duration::from_millis(10));
            let max = self.max_backoff.unwrap_or(Duration::from_secs(1)).max(min);
            options = options.backoff(min, max);
        }
        options
    }
}

type Item = Option<Result<StoredEvent, StreamError>>;

/// A request to the task that owns the Rust stream.
enum Request {
    /// The next event (`None`: the stream ended).
    Next(oneshot::Sender<Item>),
    /// Save the cursor if every fetched event was handed out.
    Commit(oneshot::Sender<Result<bool, StreamError>>),
}

/// The cursor store of a stream: a file, or memory when no file was given.
enum Store {
    File(FileCursor),
    Memory(MemoryCursor),
}

impl CursorStore for Store {
    fn load(&mut self) -> std::io::Result<Option<String>> {
        match self {
            Store::File(s) => s.load(),
            Store::Memory(s) => s.load(),
        }
    }

    fn save(&mut self, cursor: &str) -> std::io::Result<()> {
        match self {
            Store::File(s) => s.save(cursor),
            Store::Memory(s) => s.save(cursor),
        }
    }
}

/// Owns the Rust stream and answers requests until every sender is gone.
async fn serve(
    bus: Arc<EventBus>,
    options: StreamOptions,
    store: Store,
    started: oneshot::Sender<Result<(), StreamError>>,
    mut requests: mpsc::Receiver<Request>,
) {
    let mut stream = match net_sdk::EventStream::new(&bus, options, store) {
        Ok(stream) => {
            let _ = started.send(Ok(()));
            stream
        }
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    // An item fetched for a request whose awaitable was cancelled.
    let mut kept: Option<Item> = None;
    while let Some(request) = requests.recv().await {
        match request {
            Request::Next(mut reply) => {
                let item = match kept.take() {
                    Some(item) => item,
                    None => {
                        tokio::select! {
                            item = stream.next() => item,
                            () = reply.closed() => continue,
                        }
                    }
                };
                if let Err(item) = reply.send(item) {
                    kept = Some(item);
                }
            }
            Request::Commit(reply) => {
                let _ = reply.send(stream.commit());
            }
        }
    }
}

/// Events of a bus, one at a time, without copies (by dedup id), resuming from a saved
/// cursor. Use it with `async for`; `for` works too, blocking with the lock released.
#[pyclass(frozen, module = "netbus")]
pub(crate) struct EventStream {
    requests: mpsc::Sender<Request>,
}

impl EventStream {
    /// Starts the task of a stream over `bus`; a cursor file that cannot be read raises here.
    pub(crate) fn start(
        py: Python<'_>,
        bus: Arc<EventBus>,
        settings: StreamSettings,
    ) -> PyResult<Self> {
        let store = match &settings.cursor_file {
            Some(path) => Store::File(FileCursor::new(path.clone())),
            None => Store::Memory(MemoryCursor::default()),
        };
        let (requests, receiver) = mpsc::channel(1);
        let (started, ready) = oneshot::channel();
        runtime().spawn(serve(bus, settings.options(), store, started, receiver));
        py.detach(|| ready.blocking_recv())
            .map_err(|_| PyRuntimeError::new_err("the stream task stopped before it started"))?
            .map_err(errors::stream)?;
        Ok(Self { requests })
    }

    fn request_next(&self) -> oneshot::Receiver<Item> {
        let (reply, answer) = oneshot::channel();
        let requests = self.requests.clone();
        // The channel holds one request; a second concurrent `__anext__` waits its turn.
        runtime().spawn(async move {
            let _ = requests.send(Request::Next(reply)).await;
        });
        answer
    }
}

/// The Python result of a stream step: an event, the end (`None`), or the error.
fn answer(item: Result<Item, oneshot::error::RecvError>) -> PyResult<Option<Event>> {
    match item {
        Ok(Some(Ok(event))) => Ok(Some(Event::new(event))),
        Ok(Some(Err(e))) => Err(errors::stream(e)),
        Ok(None) | Err(_) => Ok(None),
    }
}

#[pymethods]
impl EventStream {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let answer_rx = self.request_next();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            match answer(answer_rx.await)? {
                Some(event) => Ok(event),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Event> {
        let answer_rx = self.request_next();
        match answer(py.detach(|| answer_rx.blocking_recv()))? {
            Some(event) => Ok(event),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    /// Saves the cursor now if every fetched event was handed out (an awaitable of whether
    /// the store holds the current position). The stream also saves it on its own before it
    /// fetches the next page and when it ends.
    fn commit<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let requests = self.requests.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let (reply, answer) = oneshot::channel();
            if requests.send(Request::Commit(reply)).await.is_err() {
                return Ok(false);
            }
            match answer.await {
                Ok(result) => result.map_err(errors::stream),
                Err(_) => Ok(false),
            }
        })
    }
}
