//! net: an event bus that services embed as a library.
//!
//! This is the one crate an application depends on. It re-exports the bus
//! ([`EventBus`], its configuration, events, requests and errors) and the adapter types, and
//! owns [`AdapterConfig`], which names the backend a bus dispatches to.
//!
//! ```
//! use net_sdk::{AdapterConfig, BackpressureMode, BatchConfig, ConsumeRequest, Event, EventBus,
//!               EventBusConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = EventBusConfig::builder()
//!     .shards(4)
//!     .batch(BatchConfig::default().max_events(256).max_delay_ms(2))
//!     .backpressure(BackpressureMode::DropNewest)
//!     .adapter(AdapterConfig::memory())
//!     .build()?;
//! let bus = EventBus::new(config).await?;
//! bus.ingest(Event::new(serde_json::json!({"type": "click", "user": 7})))?;
//! bus.flush().await?;
//! let page = bus.poll(ConsumeRequest::new(100)).await?;
//! assert_eq!(page.events.len(), 1);
//! bus.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod adapter_config;
mod dedup;
mod metrics;
#[cfg(feature = "redis")]
mod redis_dedup;
mod stream;
mod typed;

pub use adapter_config::AdapterConfig;
pub use dedup::Dedup;
pub use metrics::prometheus_text;
pub use net_adapter::{
    Adapter, AdapterError, AdapterResult, Batch, BatchEvent, MemoryAdapter, MemoryAdapterConfig,
    NoopAdapter, ShardPollResult, StoredEvent,
};
#[cfg(feature = "jetstream")]
pub use net_adapter_jetstream::{self as jetstream, DeliverPolicy, JetStreamAdapterConfig};
#[cfg(feature = "log")]
pub use net_adapter_log::{
    self as log, FsyncPolicy, LogAdapter, LogAdapterConfig, LogError, Retention,
};
#[cfg(feature = "redis")]
pub use net_adapter_redis::{self as redis, RedisAdapterConfig, WriteMode};
pub use net_core::{
    AdapterFactory, AdapterInstance, BackpressureMode, BatchConfig, BatchIngest, ConfigError,
    ConsumeRequest, ConsumeResponse, ConsumerError, ConsumerResult, DropObserver, DropReason,
    DroppedEvents, Event, EventBus, EventBusConfig, EventBusConfigBuilder, EventBusStats, Filter,
    FilterError, IngestionError, IngestionResult, Ordering, RawEvent, RetryPolicy, SamplingPolicy,
    ScalingDecision, ScalingError, ScalingPolicy, ShardGap, StatsSnapshot, MAX_POLL_LIMIT,
};
#[cfg(feature = "net")]
pub use net_mesh::{self as mesh, EntityKeypair, NetAdapter, NetAdapterConfig, NodeId};
pub use stream::{CursorStore, EventStream, FileCursor, MemoryCursor, StreamError, StreamOptions};
pub use typed::{DecodeEvent, IngestTyped};

#[cfg(feature = "redis")]
pub use redis_dedup::RedisStreamDedup;

/// The README's code blocks, compiled and run as doctests so the quick start stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
