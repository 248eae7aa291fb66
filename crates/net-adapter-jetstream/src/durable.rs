//! [`DurableConsumer`]: consumer-group style reading of one shard through a durable JetStream
//! pull consumer with explicit acks.
//!
//! The server keeps the consumer's position: every process that opens the same consumer name
//! on the same shard shares its messages, each message goes to one of them at a time, and a
//! message not acknowledged within `ack_wait` is delivered again (to any of them). That is
//! at-least-once delivery; the dedup id on every event lets a consumer drop a redelivery it
//! has already processed.
//!
//! A stored record that cannot be decoded would otherwise be delivered again and again: such a
//! message is terminated (`+TERM`, never redelivered) as soon as it is fetched, and returned as
//! a [`Delivery`] whose [`event`](Delivery::event) is a [`RecordError`], so the caller can log
//! or dead-letter it.

use crate::config::DeliverPolicy;
use crate::connection::{chain, Conn};
use crate::record;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use net_adapter::{AdapterError, StoredEvent, MAX_PAGE};
use std::time::Duration;
use thiserror::Error;

/// Settings of a [`DurableConsumer`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DurableConsumerConfig {
    /// The consumer's name, shared by every process of the group (ASCII letters, digits, `-`
    /// and `_`).
    pub name: String,
    /// Where a newly created consumer starts; `None` takes the adapter's `deliver_policy`.
    /// Ignored when the consumer already exists (the server keeps its position).
    pub deliver_policy: Option<DeliverPolicy>,
    /// How long a fetched message may stay unacknowledged before it is delivered again.
    pub ack_wait: Duration,
    /// Deliveries of one message before the server gives up on it (`None`: no limit).
    pub max_deliver: Option<u32>,
    /// Messages delivered but not yet acknowledged, over all members, before the server pauses
    /// delivery.
    pub max_ack_pending: u32,
}

impl DurableConsumerConfig {
    /// A consumer named `name` with a 30 s ack wait, no delivery limit and at most 10 000
    /// unacknowledged messages.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            deliver_policy: None,
            ack_wait: Duration::from_secs(30),
            max_deliver: None,
            max_ack_pending: 10_000,
        }
    }

    /// Sets where a new consumer starts.
    pub fn deliver_policy(mut self, policy: DeliverPolicy) -> Self {
        self.deliver_policy = Some(policy);
        self
    }

    /// Sets the ack wait.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// Sets the delivery limit.
    pub fn max_deliver(mut self, n: u32) -> Self {
        self.max_deliver = Some(n);
        self
    }

    /// Sets the unacknowledged-message limit.
    pub fn max_ack_pending(mut self, n: u32) -> Self {
        self.max_ack_pending = n;
        self
    }

    /// Checks the settings; the error names the first that cannot work.
    fn validate(&self) -> Result<(), AdapterError> {
        let invalid = |field: &str, reason: String| {
            Err(AdapterError::Fatal(format!(
                "jetstream: invalid durable consumer setting `{field}`: {reason}"
            )))
        };
        if self.name.is_empty()
            || self.name.len() > 200
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return invalid(
                "name",
                format!(
                    "{:?} must be 1 to 200 ASCII letters, digits, '-' or '_'",
                    self.name
                ),
            );
        }
        if self.ack_wait.is_zero() {
            return invalid("ack_wait", "it must be longer than zero".into());
        }
        if self.max_deliver == Some(0) {
            return invalid("max_deliver", "0 would deliver nothing".into());
        }
        if self.max_ack_pending == 0 {
            return invalid("max_ack_pending", "0 would deliver nothing".into());
        }
        Ok(())
    }
}

/// Why a delivered message carries no event.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// The stored record cannot be decoded.
    #[error("corrupt record at sequence {sequence}: {reason}")]
    Corrupt {
        /// The stream sequence of the message.
        sequence: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The stored record decodes to something dangerous to pass on (a null payload, a shard
    /// id out of range or of another shard).
    #[error("dangerous record at sequence {sequence}: {reason}")]
    Dangerous {
        /// The stream sequence of the message.
        sequence: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// One message fetched by a [`DurableConsumer`].
///
/// Acknowledge it once processed ([`ack`](Delivery::ack), or many at once with
/// [`DurableConsumer::ack_all`]); otherwise it is delivered again after the ack wait.
#[derive(Debug)]
pub struct Delivery {
    message: jetstream::Message,
    sequence: u64,
    delivered: i64,
    event: Result<StoredEvent, RecordError>,
}

impl Delivery {
    /// The stream sequence of the message (the same as the event's `id`).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// How many times this message has been delivered, this time included.
    pub fn delivered(&self) -> i64 {
        self.delivered
    }

    /// The event, or why the message holds none (such a message is already terminated).
    pub fn event(&self) -> Result<&StoredEvent, &RecordError> {
        self.event.as_ref()
    }

    /// Takes the event out of the delivery.
    pub fn into_event(self) -> Result<StoredEvent, RecordError> {
        self.event
    }

    /// Acknowledges the message (sent without waiting for the server's confirmation).
    pub async fn ack(&self) -> Result<(), AdapterError> {
        self.reply(AckKind::Ack).await
    }

    /// Acknowledges the message and waits until the server confirms it.
    pub async fn ack_confirmed(&self) -> Result<(), AdapterError> {
        self.message
            .double_ack()
            .await
            .map_err(|err| AdapterError::Transient(format!("jetstream: ack: {err}")))
    }

    /// Asks for the message to be delivered again, after `delay` when given.
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), AdapterError> {
        self.reply(AckKind::Nak(delay)).await
    }

    /// Tells the server the message is still being worked on, resetting its ack wait.
    pub async fn in_progress(&self) -> Result<(), AdapterError> {
        self.reply(AckKind::Progress).await
    }

    /// Sends one acknowledgement of `kind`.
    async fn reply(&self, kind: AckKind) -> Result<(), AdapterError> {
        self.message
            .ack_with(kind)
            .await
            .map_err(|err| AdapterError::Connection(format!("jetstream: ack: {err}")))
    }
}

/// The state of a durable consumer on the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DurableState {
    /// Messages stored after the consumer's position, not yet delivered.
    pub pending: u64,
    /// Messages delivered and awaiting their ack.
    pub ack_pending: usize,
    /// Messages delivered more than once and not yet acknowledged.
    pub redelivered: usize,
}

/// A durable pull consumer with explicit acks on one shard's stream.
///
/// Made by [`JetStreamAdapter::durable_consumer`](crate::JetStreamAdapter::durable_consumer).
#[derive(Debug)]
pub struct DurableConsumer {
    conn: Conn,
    consumer: PullConsumer,
    stream: String,
    shard_id: u16,
    name: String,
    request_timeout: Duration,
}

impl DurableConsumer {
    /// Finds or creates the consumer `config.name` on `stream`.
    pub(crate) async fn open(
        conn: Conn,
        stream: &str,
        shard_id: u16,
        config: DurableConsumerConfig,
        default_policy: DeliverPolicy,
        request_timeout: Duration,
    ) -> Result<Self, AdapterError> {
        config.validate()?;
        let handle = conn
            .js
            .get_stream_no_info(stream)
            .await
            .map_err(|err| AdapterError::Fatal(format!("jetstream: stream {stream}: {err}")))?;
        let wanted = pull::Config {
            durable_name: Some(config.name.clone()),
            deliver_policy: config.deliver_policy.unwrap_or(default_policy).to_nats(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            max_deliver: config.max_deliver.map_or(-1, i64::from),
            max_ack_pending: i64::from(config.max_ack_pending),
            ..pull::Config::default()
        };
        let consumer: PullConsumer = handle
            .get_or_create_consumer(&config.name, wanted)
            .await
            .map_err(|err| {
                AdapterError::Transient(format!(
                    "jetstream: opening durable consumer {} on {stream}: {}",
                    config.name,
                    chain(&err)
                ))
            })?;
        let existing = &consumer.cached_info().config;
        if existing.ack_policy != AckPolicy::Explicit {
            return Err(AdapterError::Fatal(format!(
                "jetstream: consumer {} on {stream} exists with ack policy {:?}; a durable \
                 consumer needs explicit acks",
                config.name, existing.ack_policy
            )));
        }
        Ok(Self {
            conn,
            consumer,
            stream: stream.to_owned(),
            shard_id,
            name: config.name,
            request_timeout,
        })
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shard it reads.
    pub fn shard_id(&self) -> u16 {
        self.shard_id
    }

    /// Fetches up to `max` messages (at most `MAX_PAGE`) in one pull request, waiting up to
    /// `wait` for them to arrive (`Duration::ZERO`: only what is there now).
    ///
    /// Corrupt records are terminated on the server and returned with a [`RecordError`].
    pub async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, AdapterError> {
        let max = max.min(MAX_PAGE);
        if max == 0 {
            return Ok(Vec::new());
        }
        let bound = wait.saturating_add(self.request_timeout);
        match tokio::time::timeout(bound, self.fetch_unbounded(max, wait)).await {
            Ok(result) => result,
            Err(_) => Err(AdapterError::Transient(format!(
                "jetstream: fetch from consumer {} on {} did not finish within {bound:?}",
                self.name, self.stream
            ))),
        }
    }

    /// [`fetch`](Self::fetch) without its overall bound.
    async fn fetch_unbounded(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, AdapterError> {
        let fetched = if wait.is_zero() {
            self.consumer.fetch().max_messages(max).messages().await
        } else {
            self.consumer
                .batch()
                .max_messages(max)
                .expires(wait)
                .messages()
                .await
        };
        let mut messages = fetched.map_err(|err| {
            AdapterError::Transient(format!(
                "jetstream: fetch from consumer {} on {}: {}",
                self.name,
                self.stream,
                chain(&err)
            ))
        })?;
        let mut out = Vec::with_capacity(max);
        while let Some(message) = messages.next().await {
            let message = message.map_err(|err| {
                AdapterError::Transient(format!(
                    "jetstream: reading from consumer {}: {err}",
                    self.name
                ))
            })?;
            let (sequence, delivered) = match message.info() {
                Ok(info) => (info.stream_sequence, info.delivered),
                Err(err) => {
                    return Err(AdapterError::Fatal(format!(
                        "jetstream: a message of consumer {} has no delivery metadata: {err}",
                        self.name
                    )))
                }
            };
            let event = match record::decode(&message.payload, self.shard_id) {
                record::Decoded::Event { raw, insertion_ts } => Ok(StoredEvent {
                    id: sequence.to_string(),
                    raw,
                    insertion_ts,
                    shard_id: self.shard_id,
                    dedup_id: message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(NATS_MESSAGE_ID))
                        .map(|v| v.as_str().to_owned()),
                }),
                record::Decoded::Corrupt(reason) => Err(RecordError::Corrupt { sequence, reason }),
                record::Decoded::Dangerous(reason) => {
                    Err(RecordError::Dangerous { sequence, reason })
                }
            };
            if let Err(problem) = &event {
                tracing::warn!(consumer = %self.name, stream = %self.stream, %problem,
                    "jetstream: terminating a message that holds no event");
                message
                    .ack_with(AckKind::Term)
                    .await
                    .map_err(|err| AdapterError::Connection(format!("jetstream: term: {err}")))?;
            }
            out.push(Delivery {
                message,
                sequence,
                delivered,
                event,
            });
        }
        Ok(out)
    }

    /// Acknowledges every delivery in `deliveries`, then flushes the connection once, so the
    /// acks reach the server before this returns (one round trip for the lot).
    pub async fn ack_all(&self, deliveries: &[Delivery]) -> Result<(), AdapterError> {
        for delivery in deliveries.iter().filter(|d| d.event.is_ok()) {
            delivery.ack().await?;
        }
        match tokio::time::timeout(self.request_timeout, self.conn.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(AdapterError::Connection(format!(
                "jetstream: flushing acks: {}",
                chain(&err)
            ))),
            Err(_) => Err(AdapterError::Transient(
                "jetstream: flushing acks timed out".to_owned(),
            )),
        }
    }

    /// The consumer's state on the server.
    pub async fn state(&mut self) -> Result<DurableState, AdapterError> {
        let info = self.consumer.info().await.map_err(|err| {
            AdapterError::Transient(format!(
                "jetstream: info of consumer {}: {}",
                self.name,
                chain(&err)
            ))
        })?;
        Ok(DurableState {
            pending: info.num_pending,
            ack_pending: info.num_ack_pending,
            redelivered: info.num_redelivered,
        })
    }
}
