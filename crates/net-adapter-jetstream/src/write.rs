//! Writing a batch: every event is published with `Nats-Msg-Id` set to its dedup id, all of
//! them before any ack is awaited.
//!
//! A batch is encoded into one buffer (one allocation per batch for the payloads) and checked
//! against the server's `max_payload` before anything is published. Room for the acks is taken
//! from one semaphore for a whole run of publishes before the run starts, so two batches can
//! never each hold half of the room and wait for the other. The caller bounds the whole call
//! by `request_timeout`.

use crate::config::JetStreamAdapterConfig;
use crate::connection::{chain, classify_publish, Conn};
use crate::counters::{bump, Counters};
use crate::record;
use crate::shard_stream::{stream_info, ShardStream, ShardStreams};
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use net_adapter::{AdapterError, Batch};
use tokio::sync::Semaphore;

/// What writing a batch needs of the adapter.
pub(crate) struct Writer<'a> {
    pub(crate) conn: &'a Conn,
    pub(crate) config: &'a JetStreamAdapterConfig,
    pub(crate) streams: &'a ShardStreams,
    pub(crate) counters: &'a Counters,
    /// Room for publishes awaiting their ack, shared by every batch of the adapter.
    pub(crate) acks: &'a Semaphore,
}

impl Writer<'_> {
    /// Publishes every event of `batch` and awaits every ack.
    pub(crate) async fn write(&self, batch: &Batch) -> Result<(), AdapterError> {
        let conn = self.conn;
        let stream = self
            .streams
            .get(conn, self.config, self.counters, batch.shard_id)
            .await?;
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
        match stream_info(conn, self.counters, &stream.name).await {
            Ok(None) => {
                self.streams.forget(shard_id);
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
}
