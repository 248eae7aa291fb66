//! Reading a page of one shard.
//!
//! A page starts with a stream info (bounds of the stream, for stale and invalid cursors).
//! Then, on the pull consumer path, an ephemeral pull consumer is created at `cursor + 1` and
//! the whole page comes in one fetch; the consumer is deleted in the background afterwards
//! (and expires on its own if that fails). On the batched direct get path (servers 2.11 and
//! later, small pages by default) each request returns up to 1,000 messages with no consumer
//! at all. Both feed the same [`PageBuilder`], which decodes records, moves the cursor past
//! corrupt ones and stops before a dangerous one.

use crate::config::{JetStreamAdapterConfig, ReadPath};
use crate::connection::{chain, Conn};
use crate::counters::{bump, Counters};
use crate::shard_stream::stream_info;
use crate::{cursor, record};
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream;
use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use net_adapter::{AdapterError, ShardPollResult, StoredEvent, MAX_PAGE};
use std::time::Duration;

/// How long an ephemeral read consumer lives on the server when the adapter could not delete
/// it (a crash, a lost connection).
const READ_CONSUMER_TTL: Duration = Duration::from_secs(30);

/// What reading a page needs of the adapter.
pub(crate) struct Reader<'a> {
    pub(crate) conn: &'a Conn,
    pub(crate) config: &'a JetStreamAdapterConfig,
    pub(crate) counters: &'a Counters,
}

impl Reader<'_> {
    /// Reads one page of `shard_id`.
    pub(crate) async fn read_page(
        &self,
        shard_id: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        let conn = self.conn;
        let after = cursor.map(cursor::parse).transpose()?;
        let name = self.config.stream_for(shard_id);
        let Some(info) = stream_info(conn, self.counters, &name).await? else {
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
        let mut page = PageBuilder::new(self.counters, shard_id, name, after, budget, last);
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
        let mut page = PageBuilder::new(self.counters, shard_id, name, after, budget, last);
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
        counters: &'a Counters,
        shard_id: u16,
        name: &'a str,
        after: u64,
        budget: usize,
        last: u64,
    ) -> Self {
        let room = budget.min(usize::try_from(last.saturating_sub(after)).unwrap_or(budget));
        Self {
            counters,
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

/// A page with `cursor` = `position`.
fn page(events: Vec<StoredEvent>, position: u64, has_more: bool) -> ShardPollResult {
    ShardPollResult {
        events,
        cursor: position.to_string(),
        has_more,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_carry_their_position() {
        let p = page(Vec::new(), u64::MAX, false);
        assert_eq!(p.cursor, "18446744073709551615");
        assert!(!p.has_more);
    }
}
