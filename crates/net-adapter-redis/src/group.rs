//! [`GroupConsumer`]: at-least-once consumption through a Redis consumer group.
//!
//! A consumer reads new entries of a shard with `XREADGROUP` ([`GroupConsumer::read`]),
//! processes them and acknowledges them in one `XACK` per call ([`GroupConsumer::ack`]). An
//! entry read but never acknowledged (its consumer died) stays pending in the group; any
//! consumer takes it over once it has been idle long enough ([`GroupConsumer::claim_idle`],
//! `XAUTOCLAIM`), and a restarted consumer can read its own pending entries again
//! ([`GroupConsumer::pending`]).
//!
//! Every entry is decoded on its own. One that cannot be decoded (corrupt, claiming another
//! shard, or deleted from the stream while pending) is not handed out: it is copied to the
//! dead-letter stream when one is configured, acknowledged in the same transaction, and
//! returned in [`GroupRead::rejected`], so it cannot come back and stall the group.
//!
//! The group is created on a shard's stream the first time a consumer touches that shard,
//! starting from the stream's first entry (`XGROUP CREATE ... 0 MKSTREAM`).

use net_adapter::{AdapterError, StoredEvent};
use parking_lot::Mutex;
use redis::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::entry::{decode, parse_entries, Decoded, RawEntry};
use crate::id::StreamId;
use crate::inner::{link_error, Inner};

/// What one read from a consumer group returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupRead {
    /// The events to process, in stream order; acknowledge them with [`GroupConsumer::ack`]
    /// once processed. Their `id` is the entry id.
    pub events: Vec<StoredEvent>,
    /// Entries that could not be decoded. They are already acknowledged (and copied to the
    /// dead-letter stream when one is configured).
    pub rejected: Vec<RejectedEntry>,
}

/// An entry a consumer group read but could not hand out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedEntry {
    /// The entry id.
    pub id: String,
    /// The shard whose stream held it.
    pub shard_id: u16,
    /// Why it was rejected.
    pub reason: String,
}

/// One named consumer of the configured consumer group. Build it with
/// [`crate::RedisAdapter::group_consumer`]; it shares the adapter's connections and
/// shutdown.
pub struct GroupConsumer {
    inner: Arc<Inner>,
    group: String,
    consumer: String,
    /// Shards whose stream already has the group.
    ready: Mutex<HashSet<u16>>,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .finish()
    }
}

/// The entries of the first stream of an `XREADGROUP` reply.
fn first_stream(reply: Value) -> Value {
    match reply {
        Value::Array(mut streams) if !streams.is_empty() => match streams.swap_remove(0) {
            Value::Array(mut pair) if pair.len() == 2 => pair.pop().unwrap_or(Value::Nil),
            _ => Value::Nil,
        },
        Value::Map(mut streams) if !streams.is_empty() => streams.swap_remove(0).1,
        _ => Value::Nil,
    }
}

impl GroupConsumer {
    pub(crate) fn new(inner: Arc<Inner>, group: String, consumer: String) -> Self {
        Self {
            inner,
            group,
            consumer,
            ready: Mutex::new(HashSet::new()),
        }
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.consumer
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Creates the group on `shard`'s stream unless it exists.
    async fn ensure_group(&self, shard: u16, key: &str) -> Result<(), AdapterError> {
        if self.ready.lock().contains(&shard) {
            return Ok(());
        }
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(key)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM");
        let created = self
            .inner
            .reader
            .run(|mut con| async move { cmd.query_async::<()>(&mut con).await })
            .await;
        match created {
            Ok(()) => {}
            Err(crate::link::LinkError::Redis(err)) if err.code() == Some("BUSYGROUP") => {}
            Err(err) => {
                return Err(link_error(
                    &self.inner.ctx("create group", Some(shard)),
                    err,
                    self.inner.config.command_timeout,
                ))
            }
        }
        self.ready.lock().insert(shard);
        Ok(())
    }

    /// Reads up to `count` entries of `shard` that no consumer of the group has read yet.
    pub async fn read(&self, shard_id: u16, count: usize) -> Result<GroupRead, AdapterError> {
        self.read_from(shard_id, count, ">").await
    }

    /// Reads up to `count` of this consumer's own pending entries of `shard` (read before,
    /// not acknowledged), as after a restart under the same name.
    pub async fn pending(&self, shard_id: u16, count: usize) -> Result<GroupRead, AdapterError> {
        self.read_from(shard_id, count, "0").await
    }

    async fn read_from(
        &self,
        shard: u16,
        count: usize,
        from: &str,
    ) -> Result<GroupRead, AdapterError> {
        let _gate = self.inner.enter().await?;
        let key = self.inner.config.shard_key(shard);
        self.ensure_group(shard, &key).await?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count.clamp(1, net_adapter::MAX_PAGE))
            .arg("STREAMS")
            .arg(&key)
            .arg(from);
        let reply: Value = self
            .inner
            .query(&self.inner.reader, &cmd, "group read", Some(shard))
            .await?;
        let entries = parse_entries(first_stream(reply))
            .map_err(|why| self.inner.ctx("group read", Some(shard)).fatal(why))?;
        self.settle(shard, &key, entries, Vec::new()).await
    }

    /// Takes over up to `count` entries of `shard` that have been pending (with any consumer
    /// of the group) for at least `min_idle`, and returns them like [`GroupConsumer::read`].
    pub async fn claim_idle(
        &self,
        shard_id: u16,
        min_idle: Duration,
        count: usize,
    ) -> Result<GroupRead, AdapterError> {
        let shard = shard_id;
        let _gate = self.inner.enter().await?;
        let key = self.inner.config.shard_key(shard);
        self.ensure_group(shard, &key).await?;
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&key)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
            .arg("0-0")
            .arg("COUNT")
            .arg(count.clamp(1, net_adapter::MAX_PAGE));
        let reply: Value = self
            .inner
            .query(&self.inner.reader, &cmd, "claim", Some(shard))
            .await?;
        let ctx = self.inner.ctx("claim", Some(shard));
        let mut parts = match reply {
            Value::Array(parts) if parts.len() >= 2 => parts.into_iter(),
            other => return Err(ctx.fatal(format!("unexpected XAUTOCLAIM reply {other:?}"))),
        };
        let _next = parts.next();
        let entries =
            parse_entries(parts.next().unwrap_or(Value::Nil)).map_err(|why| ctx.fatal(why))?;
        // Since Redis 7, entries deleted while pending come back as a list of ids.
        let deleted = match parts.next() {
            Some(Value::Array(ids)) => ids
                .into_iter()
                .filter_map(|id| match id {
                    Value::BulkString(bytes) => StreamId::parse_bytes(&bytes),
                    Value::SimpleString(text) => StreamId::parse(&text),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        self.settle(shard, &key, entries, deleted).await
    }

    /// Decodes `entries`; rejects (dead-letters and acknowledges) those that cannot be handed
    /// out, along with the `deleted` ids.
    async fn settle(
        &self,
        shard: u16,
        key: &str,
        entries: Vec<RawEntry>,
        deleted: Vec<StreamId>,
    ) -> Result<GroupRead, AdapterError> {
        let mut read = GroupRead::default();
        let mut dead = Vec::new();
        for id in deleted {
            dead.push((id, "the entry was deleted from the stream".to_owned(), None));
        }
        for entry in entries {
            match decode(entry, shard) {
                Decoded::Event(event) => read.events.push(event),
                Decoded::Corrupt { id, reason, fields } => {
                    dead.push((id, reason.to_owned(), fields));
                }
                Decoded::WrongShard {
                    id,
                    claimed,
                    fields,
                } => dead.push((
                    id,
                    format!("the entry claims shard {claimed}, not {shard}"),
                    Some(fields),
                )),
            }
        }
        if dead.is_empty() {
            return Ok(read);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some(dead_letter) = &self.inner.config.dead_letter_stream {
            for (id, reason, fields) in &dead {
                let cmd = pipe.cmd("XADD").arg(dead_letter).arg("*");
                cmd.arg("stream")
                    .arg(key)
                    .arg("id")
                    .arg(id.to_string())
                    .arg("group")
                    .arg(&self.group)
                    .arg("reason")
                    .arg(reason);
                for (field, value) in fields.iter().flatten() {
                    cmd.arg(field.as_slice()).arg(value.as_slice());
                }
                cmd.ignore();
            }
        }
        let xack = pipe.cmd("XACK").arg(key).arg(&self.group);
        for (id, _, _) in &dead {
            xack.arg(id.to_string());
        }
        xack.ignore();
        self.inner
            .query_pipe::<()>(&self.inner.reader, &pipe, "reject", Some(shard))
            .await?;
        for (id, reason, _) in dead {
            tracing::warn!(shard, entry = %id, group = %self.group, "redis: rejected an entry: {reason}");
            read.rejected.push(RejectedEntry {
                id: id.to_string(),
                shard_id: shard,
                reason,
            });
        }
        Ok(read)
    }

    /// Acknowledges the entries `ids` of `shard` in one `XACK`; returns how many were
    /// pending. An id that is not an entry id is rejected before anything is sent.
    pub async fn ack<S: AsRef<str>>(&self, shard_id: u16, ids: &[S]) -> Result<u64, AdapterError> {
        let _gate = self.inner.enter().await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let key = self.inner.config.shard_key(shard_id);
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&key).arg(&self.group);
        for id in ids {
            let id = id.as_ref();
            if StreamId::parse(id).is_none() {
                return Err(AdapterError::InvalidCursor(format!(
                    "redis: cannot acknowledge {id:?} on shard {shard_id}: not an entry id"
                )));
            }
            cmd.arg(id);
        }
        self.inner
            .query(&self.inner.reader, &cmd, "ack", Some(shard_id))
            .await
    }
}
