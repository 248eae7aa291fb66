//! The adapter boundary of the net event bus.
//!
//! An adapter receives batches of events from the bus (one shard at a time, in order) and
//! makes them durable, forwards them, or discards them; it also pages stored events back
//! for consumers. This crate is the whole contract a third-party adapter needs:
//!
//! - [`Adapter`]: the trait, with its contract written on it;
//! - [`Batch`], [`BatchEvent`], [`StoredEvent`], [`ShardPollResult`]: the types it speaks;
//! - [`AdapterError`]: the error classification the bus acts on, and [`InvalidSetting`], the
//!   one shape every adapter's configuration check reports a bad setting in;
//! - [`StreamLayout`]: the shard count producers and consumers of a stream agree on, which
//!   adapters record in their backend;
//! - [`NoopAdapter`] and [`MemoryAdapter`]: the two reference adapters;
//! - [`redact_url`]: the one way every backend hides the secrets of a URL in messages;
//! - [`payload`]: the one rule saying which payloads are JSON documents, shared by the
//!   validated ingest path, the filter evaluator and adapters that embed payloads in JSON;
//! - `conformance` (feature `conformance`): the checks every adapter must pass, and the
//!   `conformance_suite!` macro that turns them into one test per property.
//!
//! This crate knows no backend. Its default build starts no runtime and depends on neither
//! tokio nor any broker client; only the `conformance` feature, meant for the
//! dev-dependencies of adapter crates, brings in tokio to run the checks.

mod adapter;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
mod layout;
mod memory;
mod noop;
pub mod payload;
mod redact;
mod setting;
mod types;

pub use adapter::Adapter;
pub use error::{AdapterError, AdapterErrorKind, AdapterResult};
pub use layout::{LayoutWrite, StreamLayout};
pub use memory::{MemoryAdapter, MemoryAdapterConfig, MemoryFault};
pub use noop::NoopAdapter;
pub use redact::redact_url;
pub use setting::InvalidSetting;
pub use types::{dedup_id, Batch, BatchEvent, ShardPollResult, StoredEvent, MAX_PAGE};

/// Re-exported so adapter authors use the same `async_trait` as the trait itself.
pub use async_trait::async_trait;
