//! The NATS JetStream adapter of the net event bus.
//!
//! [`JetStreamAdapter`] stores the batches of every shard in a JetStream stream of its own and
//! pages them back for consumers. It depends on `net-adapter` (the trait) and the async-nats
//! client, never on the bus itself.
//!
//! # Layout
//!
//! Shard `i` lives in stream `{stream_name}_shard_{i}` (file storage, limits retention, direct
//! get allowed, replicas and max messages / bytes / age as configured), which captures subject
//! `{stream_name}.shard.{i}` (or the configured [`subjects`](JetStreamAdapterConfig::subjects)).
//! The stream is created on the first batch of its shard, once, even when several batches race;
//! its configuration is read back and compared with what was asked for, and an existing stream
//! with settings the adapter cannot use is a `Fatal` error naming them.
//!
//! # Records and dedup
//!
//! Each event is one message whose body is `{"r":<raw>,"t":<ts ns>,"s":<shard>}` and whose
//! `Nats-Msg-Id` header is the event's dedup id. The server drops a message whose id it has
//! seen within the stream's `duplicate_window`, so a retried batch (same nonce, shard and
//! sequence_start) is stored once. A batch is published in full before any ack is awaited, and
//! the whole call is bounded by `request_timeout`.
//!
//! # Reads
//!
//! `StoredEvent::id` is the stream sequence, and a cursor is the sequence of the last message
//! read. A page costs a fixed number of requests whatever its size, never one per event: a
//! stream info, then either an ephemeral pull consumer starting at `cursor + 1` and one fetch
//! of the page, or (servers 2.11 and later, small pages) one batched direct get; see
//! [`ReadPath`]. Corrupt records are skipped and the cursor moves past them; a record with
//! `"r": null` or a shard id out of range stops the read with `Fatal` at exactly that
//! sequence, after handing out the events before it. A cursor past the end is
//! `InvalidCursor`; a cursor that retention already passed gives an empty page whose cursor is
//! just before the earliest message.
//!
//! For consumer-group reading with acks, see [`DurableConsumer`].
//!
//! # Example
//!
//! ```no_run
//! use net_adapter::Adapter;
//! use net_adapter_jetstream::{JetStreamAdapter, JetStreamAdapterConfig};
//!
//! # async fn run() -> Result<(), net_adapter::AdapterError> {
//! let config = JetStreamAdapterConfig::new("nats://127.0.0.1:4222", "events")
//!     .max_messages(10_000_000);
//! let adapter = JetStreamAdapter::connect(config).await?;
//! let page = adapter.poll_shard(0, None, 100).await?;
//! println!("{} event(s), resume from {}", page.events.len(), page.cursor);
//! adapter.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod adapter;
mod config;
mod connection;
mod counters;
mod cursor;
mod durable;
#[cfg(feature = "test-hooks")]
mod fault;
mod read;
mod record;
mod shard_stream;
mod stream_layout;
mod write;

pub use adapter::JetStreamAdapter;
pub use config::{redact_url, DeliverPolicy, JetStreamAdapterConfig, ReadPath, SHARD_PLACEHOLDER};
pub use counters::RequestCounts;
pub use durable::{Delivery, DurableConsumer, DurableConsumerConfig, DurableState, RecordError};
#[cfg(feature = "test-hooks")]
pub use fault::JetStreamFault;
