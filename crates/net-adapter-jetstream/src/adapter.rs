//! [`JetStreamAdapter`]: the [`Adapter`] implementation.
//!
//! This file holds the adapter's state and its lifecycle (init, the shutdown gate, flush,
//! shutdown); the work is done elsewhere: `connection` connects and classifies failures,
//! `shard_stream` creates each shard's stream once, `write` publishes a batch, `read` reads a
//! page, `stream_layout` keeps the layout record and `counters` counts the requests.

use crate::config::JetStreamAdapterConfig;
use crate::connection::{chain, open, Conn};
use crate::counters::{bump, Counters, RequestCounts};
use crate::durable::{DurableConsumer, DurableConsumerConfig};
#[cfg(feature = "test-hooks")]
use crate::fault::{Faults, JetStreamFault};
use crate::read::Reader;
use crate::shard_stream::ShardStreams;
use crate::stream_layout;
use crate::write::Writer;
use async_trait::async_trait;
use net_adapter::{Adapter, AdapterError, Batch, LayoutWrite, ShardPollResult, StreamLayout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{RwLock, Semaphore};

/// Stores events in NATS JetStream, one stream per shard.
///
/// See the crate documentation for the layout, the stored record, dedup and the read path.
/// Create it with [`JetStreamAdapter::new`] and hand it to the bus (which calls `init`), or
/// connect it yourself with [`JetStreamAdapter::connect`].
pub struct JetStreamAdapter {
    config: JetStreamAdapterConfig,
    conn: Option<Conn>,
    streams: ShardStreams,
    /// Room for publishes awaiting their ack.
    acks: Arc<Semaphore>,
    /// Held for reading by every call, for writing by `shutdown` while it drains.
    gate: RwLock<()>,
    closed: AtomicBool,
    counters: Counters,
    #[cfg(feature = "test-hooks")]
    faults: Faults,
}

impl std::fmt::Debug for JetStreamAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamAdapter")
            .field("config", &self.config)
            .field("connected", &self.conn.is_some())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl JetStreamAdapter {
    /// An adapter for `config`, not yet connected: `init` (called by the bus) connects it.
    pub fn new(config: JetStreamAdapterConfig) -> Self {
        let room = config.max_pending_acks.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            config,
            conn: None,
            streams: ShardStreams::default(),
            acks: Arc::new(Semaphore::new(room)),
            gate: RwLock::new(()),
            closed: AtomicBool::new(false),
            counters: Counters::default(),
            #[cfg(feature = "test-hooks")]
            faults: Faults::default(),
        }
    }

    /// Builds the adapter and connects it (`new` followed by `init`).
    pub async fn connect(config: JetStreamAdapterConfig) -> Result<Self, AdapterError> {
        let mut adapter = Self::new(config);
        adapter.init().await?;
        Ok(adapter)
    }

    /// The configuration the adapter was built with.
    pub fn config(&self) -> &JetStreamAdapterConfig {
        &self.config
    }

    /// The underlying NATS client, once connected (for tooling and tests; the adapter keeps
    /// using it).
    pub fn client(&self) -> Option<async_nats::Client> {
        self.conn.as_ref().map(|conn| conn.client.clone())
    }

    /// What the adapter asked the server for so far.
    pub fn request_counts(&self) -> RequestCounts {
        self.counters.snapshot()
    }

    /// Makes the next `on_batch` of `shard_id` fail as `fault` describes after it has stored
    /// the batch (a test hook, feature `test-hooks`; see [`JetStreamFault`]).
    #[cfg(feature = "test-hooks")]
    pub fn inject_fault(&self, shard_id: u16, fault: JetStreamFault) {
        self.faults.arm(shard_id, fault);
    }

    /// Creates (or checks) the stream of `shard_id` now instead of on its first batch.
    ///
    /// Fails with `Fatal` when a stream of that name exists with settings the adapter cannot
    /// use; the error lists them.
    pub async fn provision(&self, shard_id: u16) -> Result<(), AdapterError> {
        let _open = self.enter().await?;
        let conn = self.conn()?;
        self.streams
            .get(conn, &self.config, &self.counters, shard_id)
            .await
            .map(|_| ())
    }

    /// A durable pull consumer (explicit acks) on `shard_id`'s stream, created if missing:
    /// several processes that open the same `name` share its messages, each delivered to one
    /// of them until acknowledged.
    pub async fn durable_consumer(
        &self,
        shard_id: u16,
        config: DurableConsumerConfig,
    ) -> Result<DurableConsumer, AdapterError> {
        let _open = self.enter().await?;
        let conn = self.conn()?;
        let stream = self
            .streams
            .get(conn, &self.config, &self.counters, shard_id)
            .await?;
        bump(&self.counters.consumers_created, 1);
        DurableConsumer::open(
            conn.clone(),
            &stream.name,
            shard_id,
            config,
            self.config.deliver_policy,
            self.config.request_timeout,
        )
        .await
    }

    /// The connection, or an error when `init` has not run.
    fn conn(&self) -> Result<&Conn, AdapterError> {
        self.conn.as_ref().ok_or_else(|| {
            AdapterError::Fatal("jetstream: the adapter was used before init".to_owned())
        })
    }

    /// Admits one call: fails with `Shutdown` once `shutdown` has begun; otherwise returns a
    /// guard that `shutdown` waits for.
    async fn enter(&self) -> Result<tokio::sync::RwLockReadGuard<'_, ()>, AdapterError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AdapterError::Shutdown);
        }
        let guard = self.gate.read().await;
        if self.closed.load(Ordering::Acquire) {
            return Err(AdapterError::Shutdown);
        }
        Ok(guard)
    }

    /// The batch writer over `conn`.
    fn writer<'a>(&'a self, conn: &'a Conn) -> Writer<'a> {
        Writer {
            conn,
            config: &self.config,
            streams: &self.streams,
            counters: &self.counters,
            acks: &self.acks,
        }
    }

    /// The page reader over `conn`.
    fn reader<'a>(&'a self, conn: &'a Conn) -> Reader<'a> {
        Reader {
            conn,
            config: &self.config,
            counters: &self.counters,
        }
    }
}

#[async_trait]
impl Adapter for JetStreamAdapter {
    async fn init(&mut self) -> Result<(), AdapterError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AdapterError::Shutdown);
        }
        if self.conn.is_some() {
            tracing::debug!("jetstream: init called again; already connected");
            return Ok(());
        }
        self.config.validate()?;
        self.conn = Some(open(&self.config).await?);
        Ok(())
    }

    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        let _open = self.enter().await?;
        let conn = self.conn()?;
        if batch.events.is_empty() {
            return Ok(());
        }
        let timeout = self.config.request_timeout;
        let written = match tokio::time::timeout(timeout, self.writer(conn).write(&batch)).await {
            Ok(result) => result,
            Err(_) => Err(AdapterError::Transient(format!(
                "jetstream: on_batch of shard {} (sequence_start {}, {} events) timed out after \
                 {timeout:?}",
                batch.shard_id,
                batch.sequence_start,
                batch.len()
            ))),
        };
        written?;
        #[cfg(feature = "test-hooks")]
        if let Some(error) = self.faults.take(batch.shard_id) {
            return Err(error);
        }
        Ok(())
    }

    async fn poll_shard(
        &self,
        shard_id: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        let _open = self.enter().await?;
        let conn = self.conn()?;
        let timeout = self.config.request_timeout;
        let result = tokio::time::timeout(
            timeout,
            self.reader(conn).read_page(shard_id, cursor, limit),
        )
        .await
        .unwrap_or_else(|_| {
            Err(AdapterError::Transient(format!(
                "jetstream: poll of shard {shard_id} timed out after {timeout:?}"
            )))
        });
        if result.is_ok() {
            bump(&self.counters.pages, 1);
        }
        result
    }

    async fn flush(&self) -> Result<(), AdapterError> {
        let _open = self.enter().await?;
        let conn = self.conn()?;
        // Every accepted batch was acknowledged by the server already; this only pushes out
        // what the client still buffers (acks of durable consumers, for instance).
        match tokio::time::timeout(self.config.request_timeout, conn.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(AdapterError::Connection(format!(
                "jetstream: flush: {}",
                chain(&err)
            ))),
            Err(_) => Err(AdapterError::Transient(format!(
                "jetstream: flush did not finish within {:?}",
                self.config.request_timeout
            ))),
        }
    }

    async fn shutdown(&self) -> Result<(), AdapterError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let started = Instant::now();
        let limit = self.config.drain_timeout;
        // Wait for the calls in progress, within the drain timeout.
        let drained = tokio::time::timeout(limit, self.gate.write()).await;
        let Some(conn) = self.conn.as_ref() else {
            return Ok(());
        };
        let remaining = limit.saturating_sub(started.elapsed());
        let flushed = tokio::time::timeout(remaining, conn.client.flush()).await;
        if let Err(err) = conn.client.drain().await {
            tracing::debug!(error = %err, "jetstream: drain request failed");
        }
        match (drained, flushed) {
            (Ok(_), Ok(Ok(()))) => Ok(()),
            (Err(_), _) => Err(AdapterError::Transient(format!(
                "jetstream: shutdown did not drain within {limit:?}: calls were still in progress"
            ))),
            (_, Ok(Err(err))) => Err(AdapterError::Connection(format!(
                "jetstream: shutdown could not flush the connection: {}",
                chain(&err)
            ))),
            (_, Err(_)) => Err(AdapterError::Transient(format!(
                "jetstream: shutdown could not flush the connection within {limit:?}"
            ))),
        }
    }

    fn name(&self) -> &str {
        "jetstream"
    }

    async fn is_healthy(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
            && self.conn.as_ref().is_some_and(|conn| {
                conn.client.connection_state() == async_nats::connection::State::Connected
            })
    }

    /// Keeps the layout in its own stream, `{stream_name}_layout` (see `stream_layout`).
    async fn record_layout(
        &self,
        layout: StreamLayout,
        write: LayoutWrite,
    ) -> Result<Option<StreamLayout>, AdapterError> {
        let _gate = self.enter().await?;
        let conn = self.conn()?;
        stream_layout::record(conn, &self.config, layout, write)
            .await
            .map(Some)
    }
}
