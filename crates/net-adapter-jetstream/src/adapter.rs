//! [`JetStreamAdapter`]: the [`Adapter`] implementation.
//!
//! Writes: a batch is encoded into one buffer (one allocation per batch for the payloads),
//! then every event is published with `Nats-Msg-Id` set to its dedup id, all of them before
//! any ack is awaited, and the whole call is bounded by `request_timeout`. Room for the acks
//! is taken from one semaphore for the whole run before publishing starts, so two batches can
//! never each hold half of the room and wait for the other.
//!
//! Reads: a page starts with a stream info (bounds of the stream, for stale and invalid
//! cursors). Then, on the pull consumer path, an ephemeral pull consumer is created at
//! `cursor + 1` and the whole page comes in one fetch; the consumer is deleted in the
//! background afterwards (and expires on its own if that fails). On the batched direct get
//! path (servers 2.11 and later, small pages by default) each request returns up to 1,000
//! messages with no consumer at all. Both feed the same [`PageBuilder`], which decodes records,
//! moves the cursor past corrupt ones and stops before a dangerous one.
//!
//! Streams are created on first use of a shard, once, even when several batches of that
//! shard race (a `OnceCell` per shard); a creation that fails leaves the cell empty so a later
//! call tries again.

use crate::config::{redact_url, JetStreamAdapterConfig, ReadPath};
use crate::durable::{DurableConsumer, DurableConsumerConfig};
use crate::{cursor, layout, record, stream_layout};
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::context::{
    CreateStreamErrorKind, PublishAckFuture, PublishError, PublishErrorKind, RequestErrorKind,
};
use async_nats::jetstream::response::Response;
use async_nats::jetstream::stream::Info;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{HeaderMap, Subject};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use net_adapter::{
    Adapter, AdapterError, Batch, LayoutWrite, ShardPollResult, StoredEvent, StreamLayout, MAX_PAGE,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, RwLock, Semaphore};

/// How long an ephemeral read consumer lives on the server when the adapter could not delete
/// it (a crash, a lost connection).
const READ_CONSUMER_TTL: Duration = Duration::from_secs(30);

/// The error code the server gives when a stream name is taken by a stream with another
/// configuration.
const STREAM_NAME_IN_USE: ErrorCode = ErrorCode(10058);

/// A failure the next [`Adapter::on_batch`] of one shard simulates after writing (a test hook).
///
/// Set with [`JetStreamAdapter::inject_fault`]. The batch is really published and acknowledged
/// by the server; the adapter then reports the failure through its own error classification,
/// as if the acks had been lost, so a retry exercises the server's dedup window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JetStreamFault {
    /// Report the connection as broken after every message was stored.
    AckLostAfterWrite,
    /// Report the acks as timed out after every message was stored.
    AckTimeoutAfterWrite,
}

/// Counts of what the adapter asked the server for, since it was created.
///
/// Useful for monitoring, and for checking that reads cost a few requests per page rather
/// than one per event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestCounts {
    /// Messages published (every attempt, retries included).
    pub published: u64,
    /// Publishes the server acknowledged as duplicates (dropped by its dedup window).
    pub duplicates: u64,
    /// Stream info requests.
    pub stream_infos: u64,
    /// Streams the adapter created.
    pub streams_created: u64,
    /// Pull consumers created (one per page read, plus durable consumers).
    pub consumers_created: u64,
    /// Read consumers deleted after their page (in the background).
    pub consumers_deleted: u64,
    /// Pull requests (fetches) sent: one per page read.
    pub fetches: u64,
    /// Pages answered by `poll_shard`.
    pub pages: u64,
    /// Stored messages skipped because they could not be decoded.
    pub corrupt_skipped: u64,
}

impl RequestCounts {
    /// Every request other than publishes: stream infos and creations, consumer creations and
    /// deletions, and fetches. A page read costs four of them.
    pub fn api_requests(&self) -> u64 {
        self.stream_infos
            + self.streams_created
            + self.consumers_created
            + self.consumers_deleted
            + self.fetches
    }
}

/// The live counters behind [`RequestCounts`].
#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    duplicates: AtomicU64,
    stream_infos: AtomicU64,
    streams_created: AtomicU64,
    consumers_created: AtomicU64,
    consumers_deleted: Arc<AtomicU64>,
    fetches: AtomicU64,
    pages: AtomicU64,
    corrupt_skipped: AtomicU64,
}

/// Adds `n` to a counter.
fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The connection, made by `init`.
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
}

/// A shard's stream, known to exist with the right configuration.
#[derive(Debug)]
struct ShardStream {
    /// The stream's name.
    name: String,
    /// Where the adapter publishes.
    subject: Subject,
}

/// The single-flight cell of one shard's stream.
type ShardCell = Arc<OnceCell<Arc<ShardStream>>>;

/// Stores events in NATS JetStream, one stream per shard.
///
/// See the crate documentation for the layout, the stored record, dedup and the read path.
/// Create it with [`JetStreamAdapter::new`] and hand it to the bus (which calls `init`), or
/// connect it yourself with [`JetStreamAdapter::connect`].
pub struct JetStreamAdapter {
    config: JetStreamAdapterConfig,
    conn: Option<Conn>,
    shards: Mutex<HashMap<u16, ShardCell>>,
    /// Room for publishes awaiting their ack.
    acks: Arc<Semaphore>,
    /// Held for reading by every call, for writing by `shutdown` while it drains.
    gate: RwLock<()>,
    closed: AtomicBool,
    counters: Counters,
    faults: Mutex<HashMap<u16, JetStreamFault>>,
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
            shards: Mutex::new(HashMap::new()),
            acks: Arc::new(Semaphore::new(room)),
            gate: RwLock::new(()),
            closed: AtomicBool::new(false),
            counters: Counters::default(),
            faults: Mutex::new(HashMap::new()),
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
        let c = &self.counters;
        let r = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RequestCounts {
            published: r(&c.published),
            duplicates: r(&c.duplicates),
            stream_infos: r(&c.stream_infos),
            streams_created: r(&c.streams_created),
            consumers_created: r(&c.consumers_created),
            consumers_deleted: r(&c.consumers_deleted),
            fetches: r(&c.fetches),
            pages: r(&c.pages),
            corrupt_skipped: r(&c.corrupt_skipped),
        }
    }

    /// Makes the next `on_batch` of `shard_id` fail as `fault` describes after it has stored
    /// the batch (a test hook; see [`JetStreamFault`]).
    pub fn inject_fault(&self, shard_id: u16, fault: JetStreamFault) {
        self.faults.lock().insert(shard_id, fault);
    }

    /// Creates (or checks) the stream of `shard_id` now instead of on its first batch.
    ///
    /// Fails with `Fatal` when a stream of that name exists with settings the adapter cannot
    /// use; the error lists them.
    pub async fn provision(&self, shard_id: u16) -> Result<(), AdapterError> {
        let _open = self.enter().await?;
        let conn = self.conn()?;
        self.shard_stream(conn, shard_id).await.map(|_| ())
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
        let stream = self.shard_stream(conn, shard_id).await?;
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

    /// The stream of `shard_id`, created and checked on first use (single-flight).
    async fn shard_stream(
        &self,
        conn: &Conn,
        shard_id: u16,
    ) -> Result<Arc<ShardStream>, AdapterError> {
        let cell = self.shards.lock().entry(shard_id).or_default().clone();
        cell.get_or_try_init(|| self.create_stream(conn, shard_id))
            .await
            .cloned()
    }

    /// Forgets that `shard_id`'s stream exists, so the next batch creates it again.
    fn forget_stream(&self, shard_id: u16) {
        self.shards.lock().remove(&shard_id);
    }

    /// Finds or creates the stream of `shard_id` and checks its configuration.
    async fn create_stream(
        &self,
        conn: &Conn,
        shard_id: u16,
    ) -> Result<Arc<ShardStream>, AdapterError> {
        let want = layout::stream_config(&self.config, shard_id);
        let name = want.name.clone();
        let subject = Subject::from(want.subjects[0].as_str());
        let check = |info: &Info, what: &str| -> Result<(), AdapterError> {
            let problems = layout::mismatches(&want, &info.config);
            if problems.is_empty() {
                Ok(())
            } else {
                Err(AdapterError::Fatal(format!(
                    "jetstream: stream {name} {what} has settings the adapter cannot use: {}",
                    problems.join("; ")
                )))
            }
        };
        if let Some(info) = self.stream_info(conn, &name).await? {
            check(&info, "already exists but")?;
            return Ok(Arc::new(ShardStream { name, subject }));
        }
        let created = conn.js.create_stream(want.clone()).await;
        bump(&self.counters.streams_created, 1);
        match created {
            Ok(stream) => {
                // A server older than the client ignores settings it does not know; the
                // configuration it reports is what it will apply.
                check(stream.cached_info(), "was created but")?;
                tracing::info!(stream = %name, shard = shard_id, "jetstream: created stream");
                Ok(Arc::new(ShardStream { name, subject }))
            }
            Err(err) => match err.kind() {
                CreateStreamErrorKind::JetStream(api) if api.error_code() == STREAM_NAME_IN_USE => {
                    // Someone else created it in the meantime, with other settings.
                    match self.stream_info(conn, &name).await? {
                        Some(info) => {
                            check(&info, "already exists but")?;
                            Ok(Arc::new(ShardStream { name, subject }))
                        }
                        None => Err(AdapterError::Transient(format!(
                            "jetstream: stream {name} was reported in use, then not found"
                        ))),
                    }
                }
                CreateStreamErrorKind::TimedOut => Err(AdapterError::Transient(format!(
                    "jetstream: creating stream {name} timed out"
                ))),
                CreateStreamErrorKind::JetStreamUnavailable => Err(AdapterError::Transient(
                    format!("jetstream: creating stream {name}: jetstream is not available"),
                )),
                _ => {
                    let cause = chain(&err);
                    tracing::error!(stream = %name, cause = %cause, "jetstream: cannot create stream");
                    Err(AdapterError::Fatal(format!(
                        "jetstream: cannot create stream {name}: {cause}"
                    )))
                }
            },
        }
    }

    /// The info of stream `name`, or `None` when it does not exist.
    async fn stream_info(&self, conn: &Conn, name: &str) -> Result<Option<Info>, AdapterError> {
        bump(&self.counters.stream_infos, 1);
        let response: Response<Info> = conn
            .js
            .request(format!("STREAM.INFO.{name}"), &serde_json::json!({}))
            .await
            .map_err(|err| {
                let what = format!("jetstream: stream info of {name}");
                match err.kind() {
                    RequestErrorKind::TimedOut => {
                        AdapterError::Transient(format!("{what} timed out"))
                    }
                    RequestErrorKind::NoResponders => AdapterError::Transient(format!(
                        "{what}: jetstream is not available (not enabled, or starting)"
                    )),
                    RequestErrorKind::InvalidSubject => {
                        AdapterError::Fatal(format!("{what}: {}", chain(&err)))
                    }
                    _ => AdapterError::Connection(format!("{what}: {}", chain(&err))),
                }
            })?;
        match response {
            Response::Ok(info) => Ok(Some(info)),
            Response::Err { error } if error.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                Ok(None)
            }
            Response::Err { error } => Err(AdapterError::Fatal(format!(
                "jetstream: stream info of {name}: {error}"
            ))),
        }
    }

    /// Publishes every event of `batch` and awaits every ack.
    async fn write(&self, conn: &Conn, batch: &Batch) -> Result<(), AdapterError> {
        let stream = self.shard_stream(conn, batch.shard_id).await?;
        let mut buffer = Vec::with_capacity(
            batch
                .events
                .iter()
                .map(|e| e.raw.len() + 48)
                .fold(0usize, usize::saturating_add),
        );
        let mut ends = Vec::with_capacity(batch.len());
        for event in &batch.events {
            record::encode(&event.raw, event.insertion_ts, batch.shard_id, &mut buffer);
            ends.push(buffer.len());
        }
        self.check_sizes(conn, batch, &ends, &stream)?;
        let payloads = Bytes::from(buffer);
        let run = self.config.max_pending_acks.max(1);
        let mut start = 0;
        let mut duplicates = 0u64;
        while start < batch.len() {
            let end = (start + run).min(batch.len());
            let permits = u32::try_from(end - start).unwrap_or(u32::MAX);
            let _room = self.acks.acquire_many(permits).await.map_err(|_| {
                AdapterError::Fatal("jetstream: the publish semaphore was closed".into())
            })?;
            let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(end - start);
            for index in start..end {
                let from = if index == 0 { 0 } else { ends[index - 1] };
                let mut headers = HeaderMap::new();
                headers.insert(NATS_MESSAGE_ID, batch.dedup_id(index));
                let ack = conn
                    .js
                    .publish_with_headers(
                        stream.subject.clone(),
                        headers,
                        payloads.slice(from..ends[index]),
                    )
                    .await;
                bump(&self.counters.published, 1);
                acks.push(ack.map_err(|err| self.publish_failed(batch, &stream, index, err))?);
            }
            for (offset, ack) in acks.into_iter().enumerate() {
                match ack.await {
                    Ok(ack) => {
                        if ack.stream != stream.name {
                            return Err(AdapterError::Fatal(format!(
                                "jetstream: event {} of shard {} was stored in stream {} \
                                 instead of {}",
                                start + offset,
                                batch.shard_id,
                                ack.stream,
                                stream.name
                            )));
                        }
                        duplicates += u64::from(ack.duplicate);
                    }
                    Err(err) => {
                        let missing = err.kind() == PublishErrorKind::StreamNotFound;
                        let error = self.publish_failed(batch, &stream, start + offset, err);
                        return Err(if missing {
                            self.confirm_missing(conn, batch.shard_id, &stream, error)
                                .await
                        } else {
                            error
                        });
                    }
                }
            }
            start = end;
        }
        bump(&self.counters.duplicates, duplicates);
        if duplicates > 0 {
            tracing::debug!(
                shard = batch.shard_id,
                sequence_start = batch.sequence_start,
                duplicates,
                "jetstream: the server dropped redelivered events"
            );
        }
        Ok(())
    }

    /// Refuses the whole batch, before anything is published, when one of its records (with
    /// its header block) exceeds the `max_payload` the server announced on connect. The bus
    /// accepts events up to its own `max_event_bytes`, which knows nothing of the server;
    /// without this check the events before the oversized one would be stored while the
    /// batch is reported dropped.
    fn check_sizes(
        &self,
        conn: &Conn,
        batch: &Batch,
        ends: &[usize],
        stream: &ShardStream,
    ) -> Result<(), AdapterError> {
        let max = conn.client.max_payload();
        let mut from = 0;
        for (index, &end) in ends.iter().enumerate() {
            let record_len = end - from;
            from = end;
            if record::message_size(record_len, record::MAX_MSG_ID_LEN) <= max {
                continue;
            }
            let size = record::message_size(record_len, batch.dedup_id(index).len());
            if size > max {
                let what = format!(
                    "jetstream: publishing event {index} of shard {} (sequence_start {}) to {}",
                    batch.shard_id, batch.sequence_start, stream.name
                );
                tracing::error!(
                    size,
                    max_payload = max,
                    "{what}: over the server's max_payload"
                );
                return Err(AdapterError::TooLarge { what, size, max });
            }
        }
        Ok(())
    }

    /// Classifies a failed publish of event `index` of `batch`.
    fn publish_failed(
        &self,
        batch: &Batch,
        stream: &ShardStream,
        index: usize,
        err: PublishError,
    ) -> AdapterError {
        let what = format!(
            "jetstream: publishing event {index} of shard {} (sequence_start {}) to {}",
            batch.shard_id, batch.sequence_start, stream.name
        );
        classify_publish(err.kind(), &what, &chain(&err))
    }

    /// Turns a "stream not found" into `Fatal` only when the stream is really gone; the same
    /// answer during a server restart (no responders yet) is transient.
    async fn confirm_missing(
        &self,
        conn: &Conn,
        shard_id: u16,
        stream: &ShardStream,
        error: AdapterError,
    ) -> AdapterError {
        match self.stream_info(conn, &stream.name).await {
            Ok(None) => {
                self.forget_stream(shard_id);
                tracing::error!(
                    stream = %stream.name,
                    "jetstream: the stream of shard {shard_id} no longer exists; the next batch \
                     creates it again"
                );
                error
            }
            Ok(Some(_)) | Err(_) => AdapterError::Transient(format!(
                "jetstream: no responder for stream {} (the server may be restarting)",
                stream.name
            )),
        }
    }

    /// Reads one page of `shard_id`.
    async fn read_page(
        &self,
        conn: &Conn,
        shard_id: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        let after = cursor.map(cursor::parse).transpose()?;
        let name = self.config.stream_for(shard_id);
        let Some(info) = self.stream_info(conn, &name).await? else {
            // Nothing was ever written to this shard: only the start position exists.
            return match after {
                None | Some(0) => Ok(page(Vec::new(), 0, false)),
                Some(sequence) => Err(AdapterError::InvalidCursor(format!(
                    "jetstream: cursor {sequence} is beyond the end of empty shard {shard_id}"
                ))),
            };
        };
        let state = &info.state;
        let last = state.last_sequence;
        // With no message, the server reports first = last + 1: the same arithmetic holds.
        let before_first = state.first_sequence.saturating_sub(1).min(last);
        let after = after.unwrap_or(before_first);
        if after > last {
            return Err(AdapterError::InvalidCursor(format!(
                "jetstream: cursor {after} is beyond the last sequence {last} of shard {shard_id}"
            )));
        }
        if after < before_first {
            // Stale: retention removed the position. Move to just before the earliest message.
            return Ok(page(Vec::new(), before_first, state.messages > 0));
        }
        let budget = limit.min(MAX_PAGE);
        if budget == 0 || after == last {
            return Ok(page(Vec::new(), after, after < last));
        }
        let batched = conn.client.is_server_compatible(2, 11, 0);
        match self.config.read_path {
            ReadPath::Auto if batched && budget <= DIRECT_AUTO_MAX => {
                self.direct_page(conn, shard_id, &name, after, last, budget)
                    .await
            }
            ReadPath::BatchDirectGet if batched => {
                self.direct_page(conn, shard_id, &name, after, last, budget)
                    .await
            }
            ReadPath::BatchDirectGet => Err(AdapterError::Fatal(format!(
                "jetstream: read path BatchDirectGet needs nats-server 2.11 or later; the server \
                 is {}",
                conn.client.server_info().version
            ))),
            ReadPath::Auto | ReadPath::PullConsumer => {
                self.consumer_page(conn, shard_id, &name, after, last, budget)
                    .await
            }
        }
    }

    /// Reads one page through an ephemeral pull consumer starting at `after + 1`: one
    /// consumer creation and one fetch for the whole page, then a background deletion.
    async fn consumer_page(
        &self,
        conn: &Conn,
        shard_id: u16,
        name: &str,
        after: u64,
        last: u64,
        budget: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        let stream = conn
            .js
            .get_stream_no_info(name)
            .await
            .map_err(|err| AdapterError::Fatal(format!("jetstream: stream {name}: {err}")))?;
        bump(&self.counters.consumers_created, 1);
        let consumer: PullConsumer = stream
            .create_consumer(pull::Config {
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after.saturating_add(1),
                },
                ack_policy: AckPolicy::None,
                inactive_threshold: READ_CONSUMER_TTL,
                memory_storage: true,
                num_replicas: 1,
                ..pull::Config::default()
            })
            .await
            .map_err(|err| {
                AdapterError::Transient(format!(
                    "jetstream: creating a read consumer on {name}: {}",
                    chain(&err)
                ))
            })?;
        let consumer_name = consumer.cached_info().name.clone();
        let result = self
            .fetch_page(&consumer, shard_id, name, after, last, budget)
            .await;
        // The consumer is of no further use; deleting it must not delay the page.
        let deleted = self.counters.consumers_deleted.clone();
        tokio::spawn(async move {
            bump(&deleted, 1);
            if let Err(err) = stream.delete_consumer(&consumer_name).await {
                tracing::debug!(consumer = %consumer_name, error = %err,
                    "jetstream: could not delete a read consumer; it expires on its own");
            }
        });
        result
    }

    /// Fetches up to `budget` messages from `consumer` (positioned right after `after`) in one
    /// pull request and decodes them.
    async fn fetch_page(
        &self,
        consumer: &PullConsumer,
        shard_id: u16,
        name: &str,
        after: u64,
        last: u64,
        budget: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        bump(&self.counters.fetches, 1);
        let mut messages = consumer
            .fetch()
            .max_messages(budget)
            .messages()
            .await
            .map_err(|err| {
                AdapterError::Transient(format!("jetstream: fetching from {name}: {}", chain(&err)))
            })?;
        let mut page = PageBuilder::new(self, shard_id, name, after, budget, last);
        while let Some(message) = messages.next().await {
            let message = message.map_err(|err| {
                AdapterError::Transient(format!("jetstream: reading from {name}: {err}"))
            })?;
            let info = message.info().map_err(|err| {
                AdapterError::Fatal(format!(
                    "jetstream: a message from {name} has no delivery metadata: {err}"
                ))
            })?;
            let (sequence, left) = (info.stream_sequence, info.pending);
            if let Some(stop) =
                page.push(sequence, left, &message.payload, message.headers.as_ref())
            {
                return stop;
            }
            if page.seen == budget {
                break;
            }
        }
        Ok(page.finish(last))
    }

    /// Reads one page with batched direct gets (servers 2.11 and later): one request per
    /// [`DIRECT_BATCH_MAX`] messages, answered by the stream itself, with no consumer.
    async fn direct_page(
        &self,
        conn: &Conn,
        shard_id: u16,
        name: &str,
        after: u64,
        last: u64,
        budget: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        let mut page = PageBuilder::new(self, shard_id, name, after, budget, last);
        let subject = format!("$JS.API.DIRECT.GET.{name}");
        while page.seen < budget {
            let want = (budget - page.seen).min(DIRECT_BATCH_MAX);
            let start = page.position.saturating_add(1);
            let inbox = conn.client.new_inbox();
            let mut replies = conn.client.subscribe(inbox.clone()).await.map_err(|err| {
                AdapterError::Connection(format!("jetstream: direct get on {name}: {err}"))
            })?;
            let request = serde_json::to_vec(&serde_json::json!({ "seq": start, "batch": want }))?;
            bump(&self.counters.fetches, 1);
            conn.client
                .publish_with_reply(subject.clone(), inbox, request.into())
                .await
                .map_err(|err| {
                    AdapterError::Connection(format!("jetstream: direct get on {name}: {err}"))
                })?;
            let mut got = 0usize;
            while let Some(message) = replies.next().await {
                let sequence = header_u64(&message, "Nats-Sequence");
                let Some(sequence) = sequence else {
                    // A control message: the end of the batch, or nothing (left) to send.
                    match message.status.map(u16::from) {
                        None | Some(204) | Some(404) => break,
                        Some(status) => {
                            return Err(AdapterError::Transient(format!(
                                "jetstream: direct get on {name} answered {status} {}",
                                message.description.as_deref().unwrap_or("")
                            )))
                        }
                    }
                };
                let Some(left) = header_u64(&message, "Nats-Num-Pending") else {
                    return Err(AdapterError::Fatal(format!(
                        "jetstream: the server answered a batched direct get on {name} without \
                         Nats-Num-Pending; it does not support batched reads"
                    )));
                };
                if let Some(stop) =
                    page.push(sequence, left, &message.payload, message.headers.as_ref())
                {
                    return stop;
                }
                got += 1;
                if got == want {
                    break;
                }
            }
            if got < want || page.pending == Some(0) {
                break;
            }
        }
        Ok(page.finish(last))
    }
}

/// The most messages one batched direct get returns (a server limit).
const DIRECT_BATCH_MAX: usize = 1_000;

/// The largest page `ReadPath::Auto` reads with a batched direct get. Measured on nats-server
/// 2.15: a direct get answers a page of 1 to 10 messages in half the time of a pull consumer
/// (one request instead of a creation and a fetch), the two are even at about 50 to 100, and
/// beyond that the consumer streams messages two to three times faster.
const DIRECT_AUTO_MAX: usize = 64;

/// A header of `message` parsed as a number.
fn header_u64(message: &async_nats::Message, name: &str) -> Option<u64> {
    message
        .headers
        .as_ref()?
        .get(name)?
        .as_str()
        .trim()
        .parse()
        .ok()
}

/// Builds one page from messages in stream order, whichever way they were read.
struct PageBuilder<'a> {
    counters: &'a Counters,
    shard_id: u16,
    name: &'a str,
    /// The page's cursor on entry.
    after: u64,
    /// The sequence of the last message looked at.
    position: u64,
    /// Messages the server says remain after `position`.
    pending: Option<u64>,
    /// Messages looked at, decodable or not.
    seen: usize,
    events: Vec<StoredEvent>,
}

impl<'a> PageBuilder<'a> {
    fn new(
        adapter: &'a JetStreamAdapter,
        shard_id: u16,
        name: &'a str,
        after: u64,
        budget: usize,
        last: u64,
    ) -> Self {
        let room = budget.min(usize::try_from(last.saturating_sub(after)).unwrap_or(budget));
        Self {
            counters: &adapter.counters,
            shard_id,
            name,
            after,
            position: after,
            pending: None,
            seen: 0,
            events: Vec::with_capacity(room),
        }
    }

    /// Takes the message at `sequence` with `left` messages after it. Returns the result of
    /// the whole page when the page must end here (a dangerous record).
    fn push(
        &mut self,
        sequence: u64,
        left: u64,
        payload: &Bytes,
        headers: Option<&HeaderMap>,
    ) -> Option<Result<ShardPollResult, AdapterError>> {
        match record::decode(payload, self.shard_id) {
            record::Decoded::Event { raw, insertion_ts } => self.events.push(StoredEvent {
                id: sequence.to_string(),
                raw,
                insertion_ts,
                shard_id: self.shard_id,
                dedup_id: headers
                    .and_then(|h| h.get(NATS_MESSAGE_ID))
                    .map(|v| v.as_str().to_owned()),
            }),
            record::Decoded::Corrupt(reason) => {
                bump(&self.counters.corrupt_skipped, 1);
                tracing::warn!(stream = %self.name, sequence, %reason,
                    "jetstream: skipping a corrupt record");
            }
            record::Decoded::Dangerous(reason) => {
                if self.position == self.after {
                    // Nothing before it in this page: report it, at exactly this sequence.
                    return Some(Err(AdapterError::Fatal(format!(
                        "jetstream: stream {} sequence {sequence}: {reason}",
                        self.name
                    ))));
                }
                // Hand out what came before it; the next poll starts at it and fails there.
                let events = std::mem::take(&mut self.events);
                return Some(Ok(page(events, self.position, true)));
            }
        }
        self.position = sequence;
        self.pending = Some(left);
        self.seen += 1;
        None
    }

    /// The page, once no more messages are wanted or available.
    fn finish(mut self, last: u64) -> ShardPollResult {
        let has_more = match self.pending {
            Some(left) => left > 0,
            // Nothing after `after` although it is below `last`: those messages were deleted.
            None => {
                self.position = self.position.max(last);
                false
            }
        };
        page(self.events, self.position, has_more)
    }
}

/// Marks the classification of a publish that found no stream.
const STREAM_MISSING: &str = "no stream captures the subject";

/// How a failed publish is reported.
///
/// Timeouts, a broken connection and a full ack window are transient: the write may or may
/// not have happened, and the retry is deduplicated by the server. A missing stream, a
/// wrong-last-sequence or wrong-last-id answer, an oversized message and anything else the
/// server refuses are fatal, with the cause logged.
pub(crate) fn classify_publish(kind: PublishErrorKind, what: &str, cause: &str) -> AdapterError {
    match kind {
        PublishErrorKind::TimedOut => AdapterError::Transient(format!("{what}: ack timed out")),
        PublishErrorKind::BrokenPipe => {
            AdapterError::Transient(format!("{what}: connection lost before the ack"))
        }
        PublishErrorKind::MaxAckPending => {
            AdapterError::Transient(format!("{what}: too many publishes await their ack"))
        }
        PublishErrorKind::StreamNotFound => {
            AdapterError::Fatal(format!("{what}: {STREAM_MISSING}"))
        }
        PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::Other => {
            tracing::error!(%cause, "{what}: rejected");
            AdapterError::Fatal(format!("{what}: rejected: {cause}"))
        }
    }
}

/// An error and its sources, joined with `: `.
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// A page with `cursor` = `position`.
fn page(events: Vec<StoredEvent>, position: u64, has_more: bool) -> ShardPollResult {
    ShardPollResult {
        events,
        cursor: position.to_string(),
        has_more,
    }
}

/// Connects to the server of `config` within its connect timeout and checks that JetStream is
/// enabled.
async fn open(config: &JetStreamAdapterConfig) -> Result<Conn, AdapterError> {
    let url = redact_url(&config.url);
    let options = async_nats::ConnectOptions::new()
        .name("net-adapter-jetstream")
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64).saturating_mul(100).min(2_000))
        })
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("jetstream: connected"),
                async_nats::Event::Disconnected => tracing::warn!("jetstream: disconnected"),
                other => tracing::debug!(event = %other, "jetstream: connection event"),
            }
        });
    let started = Instant::now();
    let client =
        match tokio::time::timeout(config.connect_timeout, options.connect(config.url.as_str()))
            .await
        {
            Err(_) => {
                return Err(AdapterError::Connection(format!(
                    "jetstream: could not connect to {url} within {:?}",
                    config.connect_timeout
                )))
            }
            Ok(Err(err)) => {
                use async_nats::ConnectErrorKind as Kind;
                let text = format!("jetstream: connecting to {url}: {}", chain(&err));
                return Err(match err.kind() {
                    Kind::ServerParse
                    | Kind::Authentication
                    | Kind::AuthorizationViolation
                    | Kind::Tls => AdapterError::Fatal(text),
                    _ => AdapterError::Connection(text),
                });
            }
            Ok(Ok(client)) => client,
        };
    let js = jetstream::ContextBuilder::new()
        .timeout(config.request_timeout)
        // The adapter bounds in-flight publishes itself; this only has to never block.
        .max_ack_inflight(config.max_pending_acks.saturating_mul(2))
        // Acks of calls that timed out are waited for in the background; give up on them as
        // soon as the adapter itself would, so a server outage does not pin the ack window.
        .ack_timeout(config.request_timeout)
        .backpressure_on_inflight(false)
        .build(client.clone());
    let remaining = config
        .connect_timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(100));
    // A light account info request: it proves JetStream is enabled for this account. (The
    // typed account info of async-nats expects fields that 2.9 servers do not send.)
    let empty = serde_json::json!({});
    let probe = js.request::<_, _, Response<serde_json::Value>>("INFO", &empty);
    match tokio::time::timeout(remaining, probe).await {
        Err(_) => {
            return Err(AdapterError::Connection(format!(
                "jetstream: {url} did not answer a jetstream request within the connect timeout"
            )))
        }
        Ok(Err(err)) => {
            return Err(match err.kind() {
                RequestErrorKind::NoResponders => {
                    AdapterError::Fatal(format!("jetstream: {url} does not have jetstream enabled"))
                }
                RequestErrorKind::TimedOut => AdapterError::Connection(format!(
                    "jetstream: {url} did not answer a jetstream request in time"
                )),
                _ => AdapterError::Connection(format!("jetstream: {url}: {}", chain(&err))),
            });
        }
        Ok(Ok(Response::Err { error })) => {
            return Err(AdapterError::Fatal(format!(
                "jetstream: {url} refused jetstream requests: {error}"
            )))
        }
        Ok(Ok(Response::Ok(_))) => {}
    }
    let server = client.server_info();
    tracing::info!(server = %url, version = %server.version, "jetstream: connected");
    Ok(Conn { client, js })
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
        let written = match tokio::time::timeout(timeout, self.write(conn, &batch)).await {
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
        let fault = self.faults.lock().remove(&batch.shard_id);
        if let Some(fault) = fault {
            let kind = match fault {
                JetStreamFault::AckLostAfterWrite => PublishErrorKind::BrokenPipe,
                JetStreamFault::AckTimeoutAfterWrite => PublishErrorKind::TimedOut,
            };
            let what = format!("jetstream: injected fault on shard {}", batch.shard_id);
            return Err(classify_publish(kind, &what, "injected"));
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
        let result = tokio::time::timeout(timeout, self.read_page(conn, shard_id, cursor, limit))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: PublishErrorKind, retryable: bool) {
        let error = classify_publish(kind, "publishing", "cause");
        assert_eq!(error.is_retryable(), retryable, "{kind:?}: {error}");
        assert_eq!(error.is_fatal(), !retryable, "{kind:?}: {error}");
    }

    #[test]
    fn publish_errors_are_classified() {
        check(PublishErrorKind::TimedOut, true);
        check(PublishErrorKind::BrokenPipe, true);
        check(PublishErrorKind::MaxAckPending, true);
        check(PublishErrorKind::StreamNotFound, false);
        check(PublishErrorKind::WrongLastMessageId, false);
        check(PublishErrorKind::WrongLastSequence, false);
        check(PublishErrorKind::MaxPayloadExceeded, false);
        check(PublishErrorKind::Other, false);
    }

    #[test]
    fn pages_carry_their_position() {
        let p = page(Vec::new(), u64::MAX, false);
        assert_eq!(p.cursor, "18446744073709551615");
        assert!(!p.has_more);
    }
}
