//! `net-bus`: the net event bus from Node.js (the native part of the npm package).
//!
//! This crate is glue only: it converts JavaScript values to the types of `net-sdk` and back,
//! and decides where each call runs. What the bus does (routing, batching, backpressure,
//! dispatch, cursors, dedup) lives in `net-sdk`. The package's `index.js` wraps the classes
//! exported here with the public surface (`EventBus`, events with `json()`, error classes).
//!
//! How it is put together:
//!
//! - **One runtime per process**: napi-rs's tokio runtime (its `tokio_rt` feature), a
//!   multi-thread runtime built on first use. Every bus, flush, poll, shutdown and stream runs
//!   on it, and every `async fn` exported here becomes a promise settled from its threads: the
//!   event loop never waits on Rust.
//! - **Ingests are synchronous** and run on the JavaScript thread: they copy the payload once
//!   into Rust and queue it; they wait only under `backpressure: 'block'` with a full ring.
//!   `ingest(object)` is `JSON.stringify` in `index.js` followed by the string ingest, so the
//!   object never crosses the boundary property by property.
//! - **A `NativeEventBus` holds an `Arc<net_sdk::EventBus>`.** Streams and pending promises
//!   hold clones, so `shutdown` (which works through a shared reference) succeeds while they
//!   exist; after it, flushes, polls and new streams are refused with `ERR_SHUTTING_DOWN` and
//!   ingests by the bus itself with the same code.
//! - **A bus collected without `shutdown()`** is dropped inside the runtime, where its `Drop`
//!   refuses new events and drains in the background: nothing in the finalizer waits.
//! - **Streams** wrap `net_sdk::EventStream` in a task that hands out one event per request
//!   (see [`stream`]).
//! - **Errors** carry a stable code in their message's prefix, which `index.js` turns into an
//!   `Error` subclass with `code` set (see [`errors`]).

mod adapters;
mod bus;
mod errors;
mod event;
mod stream;

use napi_derive::napi;

/// The largest `limit` a poll honours.
#[napi]
pub const MAX_POLL_LIMIT: u32 = net_sdk::MAX_POLL_LIMIT as u32;

/// The version of the native part.
#[napi]
pub fn native_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// Does nothing: the cost of a call into Rust, for benchmarks.
#[napi]
pub fn noop() {}
