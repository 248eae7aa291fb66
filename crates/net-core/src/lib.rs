//! The net event bus.
//!
//! Producers call [`EventBus::ingest`] / [`EventBus::ingest_raw`] (synchronous, non-blocking);
//! the bus spreads events over shards, batches them per shard and hands each batch to an
//! [`Adapter`](net_adapter::Adapter). Consumers [`EventBus::poll`] events back, merged across
//! shards, from an opaque cursor.
//!
//! # Dedup ids
//! Every batch carries `(process_nonce, shard_id, sequence_start)`; event `i` of a batch has
//! the dedup id `"{nonce:x}:{shard}:{sequence_start}:{i}"` (see [`net_adapter::dedup_id`]).
//! A retried batch keeps its triple, so adapters and consumers can drop redelivered copies.
//! With [`EventBusConfig::producer_nonce_path`] the nonce survives restarts and each start
//! claims a fresh range of sequence numbers, so ids never collide across lifetimes.
//!
//! # Timestamps
//! `insertion_ts` is in nanoseconds since the Unix epoch, taken when `ingest` accepts the
//! event, and never decreases within a shard.
//!
//! This crate depends on no broker client: adapters are plugged in through
//! [`AdapterFactory`].

mod batch;
mod bus;
mod clock;
mod config;
mod consume;
mod cursor;
mod error;
mod event;
mod filter;
mod inner;
mod lifecycle;
mod nonce;
mod resize;
mod routing;
mod scaling;
mod shard;
mod state;
mod stats;
mod sync;
mod worker;

pub use batch::BatchIngest;
pub use bus::EventBus;
pub use config::{
    AdapterFactory, AdapterInstance, BackpressureMode, BatchConfig, DropObserver, DropReason,
    DroppedEvents, EventBusConfig, EventBusConfigBuilder, NoopFactory, RetryPolicy, SamplingPolicy,
};
pub use consume::{ConsumeRequest, ConsumeResponse, Ordering, ShardGap, MAX_POLL_LIMIT};
pub use error::{ConfigError, ConsumerError, ConsumerResult, IngestionError, IngestionResult};
pub use event::{Event, RawEvent};
pub use filter::{Filter, FilterError};
pub use scaling::{ScalingDecision, ScalingError, ScalingPolicy};
pub use stats::{AdapterErrorCounts, EventBusStats, RejectionCounts, StatsSnapshot};

pub use net_adapter;
