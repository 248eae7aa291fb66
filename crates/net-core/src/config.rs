//! [`EventBusConfig`], its builder, and the settings it is made of.

use crate::error::ConfigError;
use crate::scaling::ScalingPolicy;
use async_trait::async_trait;
use bytes::Bytes;
use net_adapter::{Adapter, MemoryAdapter, MemoryAdapterConfig, NoopAdapter};
use parking_lot::Mutex;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// When a shard's batch closes.
///
/// Start from [`BatchConfig::default`] and use the setters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchConfig {
    /// A batch closes as soon as it holds this many events.
    pub max_events: usize,
    /// ... or this many milliseconds after its first event was ingested, whichever comes
    /// first. `0` dispatches whatever is queued without waiting for more.
    pub max_delay_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: 1024,
            max_delay_ms: 5,
        }
    }
}

impl BatchConfig {
    /// Sets [`BatchConfig::max_events`].
    pub fn max_events(mut self, n: usize) -> Self {
        self.max_events = n;
        self
    }

    /// Sets [`BatchConfig::max_delay_ms`].
    pub fn max_delay_ms(mut self, ms: u64) -> Self {
        self.max_delay_ms = ms;
        self
    }

    pub(crate) fn max_delay(&self) -> Duration {
        Duration::from_millis(self.max_delay_ms)
    }
}

/// What `ingest` does when the shard's ring is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackpressureMode {
    /// Wait for room (a short spin, then parking). The one mode in which `ingest` may wait;
    /// do not use it from the only thread of a current-thread runtime that also runs the
    /// bus's workers.
    Block,
    /// Evict the oldest queued event of the shard (counted in `events_dropped`) and accept
    /// the new one.
    DropOldest,
    /// Reject the new event with `IngestionError::Backpressure` (the default: the producer
    /// learns at once and nothing accepted is lost).
    #[default]
    DropNewest,
}

/// Keeps a random sample of ingested events; the others are rejected with
/// `IngestionError::Sampled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplingPolicy {
    keep_one_in: u32,
}

impl SamplingPolicy {
    /// Keeps on average one event in `n` (`n == 1` keeps everything). `n == 0` is rejected
    /// when the config is built.
    pub fn keep_one_in(n: u32) -> Self {
        Self { keep_one_in: n }
    }

    /// The configured `n`.
    pub fn rate(&self) -> u32 {
        self.keep_one_in
    }
}

/// How the batch worker retries a batch after a retryable adapter error.
///
/// Start from [`RetryPolicy::default`] (or [`RetryPolicy::for_duration`]) and use the
/// setters:
///
/// ```
/// use net_core::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::default()
///     .max_retries(3)
///     .initial_backoff(Duration::from_millis(1))
///     .max_backoff(Duration::from_millis(20))
///     .attempt_timeout(Duration::from_secs(1))
///     .max_elapsed(Some(Duration::from_secs(5)));
/// assert_eq!(policy.max_retries, 3);
/// assert_eq!(policy.max_elapsed, Some(Duration::from_secs(5)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt before the batch is dropped.
    pub max_retries: u32,
    /// Backoff before the first retry; doubled on each retry (with jitter).
    pub initial_backoff: Duration,
    /// Upper bound of one backoff.
    pub max_backoff: Duration,
    /// Bound on one `on_batch` call; a call that takes longer counts as a transient error.
    pub attempt_timeout: Duration,
    /// A time budget per batch, counted from its first attempt: no retry starts once it has
    /// passed. `None` (the default) leaves only `max_retries`; with both, the first budget
    /// to run out ends the retries. [`RetryPolicy::for_duration`] sets up a policy bounded
    /// by time alone, which rides out an outage of known length whatever the backoff.
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 10,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(30),
            max_elapsed: None,
        }
    }
}

impl RetryPolicy {
    /// The default backoff and attempt timeout, retrying a batch for `window` after its
    /// first attempt however many attempts that takes.
    ///
    /// ```
    /// use net_core::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// let policy = RetryPolicy::for_duration(Duration::from_secs(120));
    /// assert_eq!(policy.max_elapsed, Some(Duration::from_secs(120)));
    /// assert_eq!(policy.max_retries, u32::MAX);
    /// ```
    pub fn for_duration(window: Duration) -> Self {
        Self {
            max_retries: u32::MAX,
            max_elapsed: Some(window),
            ..Self::default()
        }
    }

    /// Sets [`RetryPolicy::max_retries`].
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Sets [`RetryPolicy::initial_backoff`].
    pub fn initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// Sets [`RetryPolicy::max_backoff`].
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// Sets [`RetryPolicy::attempt_timeout`].
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Sets [`RetryPolicy::max_elapsed`].
    pub fn max_elapsed(mut self, budget: Option<Duration>) -> Self {
        self.max_elapsed = budget;
        self
    }
}

/// Why a batch was dropped, as reported to a [`DropObserver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The adapter returned a non-retryable error.
    AdapterRejected,
    /// The retry budget ran out on retryable errors.
    RetriesExhausted,
    /// Shutdown's deadline passed before the events reached the adapter.
    ShutdownDeadline,
}

/// A report of events that were accepted but will never reach the adapter.
#[derive(Clone, Debug)]
pub struct DroppedEvents {
    /// The shard they belonged to.
    pub shard_id: u16,
    /// How many events.
    pub count: u64,
    /// Sequence number of the first dropped event, when known (dropped batches).
    pub sequence_start: Option<u64>,
    /// Why.
    pub reason: DropReason,
    /// The adapter's error, when there was one.
    pub error: Option<String>,
    /// The payloads of the dropped events, oldest first, as far as the bus still held them:
    /// every event of a dropped batch, and for a lossy shutdown the events still queued
    /// (events an aborted worker held are only counted). A producer can keep or replay them.
    pub payloads: Vec<Bytes>,
}

/// Called for every dropped batch (and for what a lossy shutdown leaves behind). Events
/// evicted by `DropOldest` are only counted (`events_evicted`), not reported one by one.
/// Runs on the batch worker: keep it short.
pub type DropObserver = Arc<dyn Fn(&DroppedEvents) + Send + Sync>;

/// Builds the adapter a bus dispatches to. `net-sdk`'s `AdapterConfig` implements it for
/// every shipped backend; [`AdapterInstance`] wraps an adapter value.
#[async_trait]
pub trait AdapterFactory: Send + Sync + fmt::Debug {
    /// Builds the adapter (without calling `init`: the bus does that).
    async fn build(&self) -> Result<Box<dyn Adapter>, ConfigError>;
}

/// The default factory: a [`NoopAdapter`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopFactory;

#[async_trait]
impl AdapterFactory for NoopFactory {
    async fn build(&self) -> Result<Box<dyn Adapter>, ConfigError> {
        Ok(Box::new(NoopAdapter::new()))
    }
}

#[async_trait]
impl AdapterFactory for MemoryAdapterConfig {
    async fn build(&self) -> Result<Box<dyn Adapter>, ConfigError> {
        Ok(Box::new(MemoryAdapter::with_config(self.clone())))
    }
}

/// Hands one already-built adapter to a bus. Wrap an `Arc<YourAdapter>` to keep a handle.
pub struct AdapterInstance {
    name: String,
    adapter: Mutex<Option<Box<dyn Adapter>>>,
}

impl AdapterInstance {
    /// Wraps `adapter`. It can be given to one bus only.
    pub fn new(adapter: impl Adapter + 'static) -> Self {
        Self {
            name: adapter.name().to_owned(),
            adapter: Mutex::new(Some(Box::new(adapter))),
        }
    }
}

impl fmt::Debug for AdapterInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdapterInstance")
            .field("adapter", &self.name)
            .finish()
    }
}

#[async_trait]
impl AdapterFactory for AdapterInstance {
    async fn build(&self) -> Result<Box<dyn Adapter>, ConfigError> {
        self.adapter.lock().take().ok_or_else(|| {
            ConfigError::invalid(
                "adapter",
                "this adapter instance was already given to a bus",
            )
        })
    }
}

/// Everything an [`crate::EventBus`] is built from. Build it with
/// [`EventBusConfig::builder`], which validates it.
#[derive(Clone)]
#[non_exhaustive]
pub struct EventBusConfig {
    /// Number of shards (rings and batch workers), at least 1.
    pub shards: u16,
    /// Slots per shard ring; a power of two, at least 2.
    pub ring_capacity: usize,
    /// When batches close.
    pub batch: BatchConfig,
    /// What ingest does on a full ring.
    pub backpressure: BackpressureMode,
    /// Builds the adapter.
    pub adapter: Arc<dyn AdapterFactory>,
    /// With a policy, a monitor adds and retires shards on its own (see
    /// [`crate::EventBus::suggest_scaling`]).
    pub scaling: Option<ScalingPolicy>,
    /// Where the producer nonce is kept across restarts (`None`: a fresh random nonce per
    /// bus). See the crate documentation on dedup ids.
    pub producer_nonce_path: Option<PathBuf>,
    /// Optional sampling of ingested events.
    pub sampling: Option<SamplingPolicy>,
    /// Retries of failed batches.
    pub retry: RetryPolicy,
    /// How long shutdown may take to drain before it drops what is left.
    pub shutdown_timeout: Duration,
    /// Largest accepted payload in bytes; larger ones get `IngestionError::TooLarge`.
    pub max_event_bytes: usize,
    /// Called for every drop of accepted events.
    pub on_drop: Option<DropObserver>,
    /// Whether [`crate::EventBus::new`] records the shard count in the backend, or compares it
    /// with the one recorded there and refuses to start on a mismatch (see
    /// [`net_adapter::StreamLayout`]). On by default.
    pub check_layout: bool,
}

impl fmt::Debug for EventBusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBusConfig")
            .field("shards", &self.shards)
            .field("ring_capacity", &self.ring_capacity)
            .field("batch", &self.batch)
            .field("backpressure", &self.backpressure)
            .field("adapter", &self.adapter)
            .field("scaling", &self.scaling)
            .field("producer_nonce_path", &self.producer_nonce_path)
            .field("sampling", &self.sampling)
            .field("retry", &self.retry)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("on_drop", &self.on_drop.as_ref().map(|_| "<observer>"))
            .field("check_layout", &self.check_layout)
            .finish()
    }
}

impl Default for EventBusConfig {
    /// A single-process bus: 16 shards of 4096 slots, `DropNewest`, the no-op adapter.
    fn default() -> Self {
        Self {
            shards: 16,
            ring_capacity: 4096,
            batch: BatchConfig::default(),
            backpressure: BackpressureMode::default(),
            adapter: Arc::new(NoopFactory),
            scaling: None,
            producer_nonce_path: None,
            sampling: None,
            retry: RetryPolicy::default(),
            shutdown_timeout: Duration::from_secs(30),
            max_event_bytes: 1 << 20,
            on_drop: None,
            check_layout: true,
        }
    }
}

impl EventBusConfig {
    /// The most slots one shard's ring may have (about 1 GB of slots); larger sizes are
    /// refused by [`EventBusConfig::validate`] before anything is allocated.
    pub const MAX_RING_CAPACITY: usize = 1 << 24;

    /// Starts a builder from the defaults.
    pub fn builder() -> EventBusConfigBuilder {
        EventBusConfigBuilder {
            config: EventBusConfig::default(),
        }
    }

    /// Checks every setting; [`crate::EventBus::new`] calls it too.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.shards == 0 {
            return Err(ConfigError::invalid("shards", "must be at least 1"));
        }
        if self.ring_capacity < 2 || !self.ring_capacity.is_power_of_two() {
            return Err(ConfigError::invalid(
                "ring_capacity",
                format!("{} is not a power of two >= 2", self.ring_capacity),
            ));
        }
        // Rings are allocated whole when a shard starts: refuse a size that would abort.
        if self.ring_capacity > Self::MAX_RING_CAPACITY {
            return Err(ConfigError::invalid(
                "ring_capacity",
                format!(
                    "{} is more than the {} slots a ring may have",
                    self.ring_capacity,
                    Self::MAX_RING_CAPACITY
                ),
            ));
        }
        if self.batch.max_events == 0 {
            return Err(ConfigError::invalid(
                "batch.max_events",
                "must be at least 1",
            ));
        }
        if self.batch.max_delay_ms > 3_600_000 {
            return Err(ConfigError::invalid(
                "batch.max_delay_ms",
                "must be at most one hour",
            ));
        }
        if let Some(s) = self.sampling {
            if s.keep_one_in == 0 {
                return Err(ConfigError::invalid(
                    "sampling",
                    "keep_one_in must be at least 1",
                ));
            }
        }
        if self.retry.initial_backoff.is_zero()
            || self.retry.max_backoff < self.retry.initial_backoff
        {
            return Err(ConfigError::invalid(
                "retry",
                "initial_backoff must be non-zero and at most max_backoff",
            ));
        }
        if self.retry.attempt_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "retry.attempt_timeout",
                "must be non-zero",
            ));
        }
        if self.retry.max_elapsed.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::invalid(
                "retry.max_elapsed",
                "must be non-zero when set",
            ));
        }
        if self.shutdown_timeout.is_zero() {
            return Err(ConfigError::invalid("shutdown_timeout", "must be non-zero"));
        }
        if let Some(policy) = &self.scaling {
            policy
                .validate()
                .map_err(|reason| ConfigError::invalid("scaling", reason))?;
            if self.shards > policy.max_shards || self.shards < policy.min_shards {
                return Err(ConfigError::invalid(
                    "shards",
                    "must lie within the scaling policy's min_shards..=max_shards",
                ));
            }
        }
        if usize::from(self.shards) > crate::routing::SLOTS {
            return Err(ConfigError::invalid(
                "shards",
                format!("at most {} shards can be active", crate::routing::SLOTS),
            ));
        }
        if self.max_event_bytes == 0 {
            return Err(ConfigError::invalid(
                "max_event_bytes",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Builder of [`EventBusConfig`].
#[derive(Debug, Clone)]
pub struct EventBusConfigBuilder {
    config: EventBusConfig,
}

impl EventBusConfigBuilder {
    /// Number of shards.
    pub fn shards(mut self, n: u16) -> Self {
        self.config.shards = n;
        self
    }

    /// Slots per shard ring (power of two).
    pub fn ring_capacity(mut self, n: usize) -> Self {
        self.config.ring_capacity = n;
        self
    }

    /// Batch closing rules.
    pub fn batch(mut self, batch: BatchConfig) -> Self {
        self.config.batch = batch;
        self
    }

    /// Full-ring behaviour.
    pub fn backpressure(mut self, mode: BackpressureMode) -> Self {
        self.config.backpressure = mode;
        self
    }

    /// The adapter (an `AdapterConfig` from net-sdk, a [`MemoryAdapterConfig`], an
    /// [`AdapterInstance`], or any [`AdapterFactory`]).
    pub fn adapter(mut self, factory: impl AdapterFactory + 'static) -> Self {
        self.config.adapter = Arc::new(factory);
        self
    }

    /// Uses an already-built adapter value.
    pub fn adapter_instance(self, adapter: impl Adapter + 'static) -> Self {
        self.adapter(AdapterInstance::new(adapter))
    }

    /// Lets a monitor scale the shards by `policy`.
    pub fn scaling(mut self, policy: ScalingPolicy) -> Self {
        self.config.scaling = Some(policy);
        self
    }

    /// Persists the producer nonce at `path`.
    pub fn producer_nonce_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.producer_nonce_path = Some(path.into());
        self
    }

    /// Samples ingested events.
    pub fn sampling(mut self, policy: SamplingPolicy) -> Self {
        self.config.sampling = Some(policy);
        self
    }

    /// Retry policy for failed batches.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.config.retry = retry;
        self
    }

    /// Shutdown drain deadline.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// Largest accepted payload in bytes.
    pub fn max_event_bytes(mut self, n: usize) -> Self {
        self.config.max_event_bytes = n;
        self
    }

    /// Observer of dropped events.
    pub fn on_drop(mut self, observer: impl Fn(&DroppedEvents) + Send + Sync + 'static) -> Self {
        self.config.on_drop = Some(Arc::new(observer));
        self
    }

    /// Whether the bus records its shard count in the backend and refuses to start when
    /// another one is recorded there (default `true`). Turn it off only for a bus that
    /// deliberately reads a subset of a stream's shards.
    pub fn check_layout(mut self, check: bool) -> Self {
        self.config.check_layout = check;
        self
    }

    /// Validates and returns the config.
    pub fn build(self) -> Result<EventBusConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejects(b: EventBusConfigBuilder, field: &str) {
        match b.build() {
            Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected {field} to be rejected, got {other:?}"),
        }
    }

    #[test]
    fn zero_and_odd_values_are_rejected() {
        let b = EventBusConfig::builder;
        rejects(b().shards(0), "shards");
        rejects(b().ring_capacity(0), "ring_capacity");
        rejects(b().ring_capacity(1000), "ring_capacity");
        rejects(
            b().ring_capacity(EventBusConfig::MAX_RING_CAPACITY * 2),
            "ring_capacity",
        );
        rejects(b().ring_capacity(1 << 40), "ring_capacity");
        rejects(b().ring_capacity(usize::MAX / 2 + 1), "ring_capacity");
        assert!(b()
            .ring_capacity(EventBusConfig::MAX_RING_CAPACITY)
            .build()
            .is_ok());
        rejects(
            b().batch(BatchConfig::default().max_events(0)),
            "batch.max_events",
        );
        rejects(b().sampling(SamplingPolicy::keep_one_in(0)), "sampling");
        rejects(b().shutdown_timeout(Duration::ZERO), "shutdown_timeout");
        rejects(b().max_event_bytes(0), "max_event_bytes");
        let retry = RetryPolicy {
            initial_backoff: Duration::ZERO,
            ..RetryPolicy::default()
        };
        rejects(b().retry(retry), "retry");
        assert!(b().build().is_ok());
    }
}
