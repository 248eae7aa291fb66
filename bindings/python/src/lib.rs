//! `netbus`: the net event bus from Python (the native part of the `net-bus` wheel).
//!
//! This crate is glue only: it converts Python values to the types of `net-sdk` and back, and
//! decides on which thread and with or without the interpreter lock each call runs. What the
//! bus does (routing, batching, backpressure, dispatch, cursors, dedup) lives in `net-sdk`.
//!
//! How it is put together:
//!
//! - **One runtime per process.** A multi-thread tokio runtime is built on first use and kept in
//!   a `OnceLock` for the life of the process ([`runtime`]). Every bus, flush, poll, shutdown and
//!   stream of the process runs on it; the same runtime drives the asyncio awaitables (through
//!   `pyo3-async-runtimes`).
//! - **A Python `EventBus` holds an `Arc<net_sdk::EventBus>`.** Streams hold a clone, so a
//!   stream keeps working after the `EventBus` object is gone.
//! - **The interpreter lock is released whenever Rust waits or works on a batch:** `flush`,
//!   `poll`, `shutdown`, the batch ingests, and the single-event ingests when the bus was built
//!   with `backpressure="block"` (the one mode in which an ingest may wait for room). Other
//!   Python threads run meanwhile. Single-event ingests in the dropping modes never wait, so
//!   they keep the lock: releasing and taking it back would cost more than the ingest.
//! - **The `*_async` methods return asyncio awaitables** that complete from the runtime's
//!   threads; the event loop never waits on Rust.
//! - **Shutdown is explicit**: `shutdown()`, `shutdown_async()`, or leaving a `with` block.
//!   When the Python object is collected without it, the Rust bus is dropped inside the
//!   runtime, and its `Drop` refuses new events and drains in the background: nothing in
//!   `__del__` waits.
//! - **Batches cross the language boundary once.** `ingest_raw_batch` copies every payload
//!   into Rust (one copy each) with the lock held, then releases the lock for a single
//!   `ingest_raw_batch` of the core. It never raises for a refused event: it returns a
//!   `BatchResult` with the accepted count and each refused position with its exception.
//! - **`ingest(obj)` serializes the Python value straight to JSON bytes** (dicts with string
//!   keys, lists, tuples, strings, ints, finite floats, booleans, `None`), as
//!   `json.dumps(obj, separators=(",", ":"))` would, and ingests them as one raw event. A value
//!   that is not JSON raises `SerializationError` before it reaches the bus.
//! - **Streams** wrap `net_sdk::EventStream` (cursor persistence and dedup). The stream lives
//!   in a task of the runtime that hands out one event per request, so the cursor is saved
//!   exactly when the Rust stream saves it: after every event of a page was handed to Python.
//! - **Errors** are Python exceptions mirroring the Rust enums (see [`errors`]).

mod adapters;
mod bus;
mod convert;
mod errors;
mod event;
mod stream;

use pyo3::prelude::*;
use std::sync::OnceLock;
use tokio::runtime::Runtime;

/// The process's tokio runtime, built on first use.
pub(crate) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("netbus")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("netbus: cannot start the tokio runtime: {e}"));
        runtime
    })
}

/// Hands the runtime to `pyo3-async-runtimes`, so the awaitables run on it too.
fn share_runtime() {
    // Fails only when it was already set, which is what is wanted.
    let _ = pyo3_async_runtimes::tokio::init_with_runtime(runtime());
}

/// The `netbus._netbus` extension module.
#[pymodule]
fn _netbus(m: &Bound<'_, PyModule>) -> PyResult<()> {
    share_runtime();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("MAX_POLL_LIMIT", net_sdk::MAX_POLL_LIMIT)?;
    bus::register(m)?;
    adapters::register(m)?;
    event::register(m)?;
    stream::register(m)?;
    errors::register(m)?;
    Ok(())
}
