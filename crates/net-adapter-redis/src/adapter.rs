//! [`RedisAdapter`]: the [`Adapter`] implementation on Redis Streams.

use net_adapter::{
    async_trait, Adapter, AdapterError, Batch, LayoutWrite, ShardPollResult, StoredEvent,
    StreamLayout, MAX_PAGE,
};
use redis::{Client, ErrorKind, ServerErrorKind, Value};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::{ConfigError, RedisAdapterConfig, WriteMode};
use crate::entry::{decode, encode_d, encode_dedup_id, parse_entries, Decoded};
use crate::error::Secrets;
use crate::group::GroupConsumer;
use crate::id::StreamId;
use crate::inner::{link_error, Inner};
use crate::link::Link;

/// The write script: appends a batch unless its batch key says it is already stored.
///
/// `KEYS[1]` is the shard stream, `KEYS[2]` the batch key; `ARGV[1]` the batch key's TTL in
/// milliseconds, `ARGV[2]` the `MAXLEN ~` bound (0: none), then per event its `d` field and
/// its dedup id. Everything that can fail is checked before the first write, so the script
/// either writes the whole batch and its key or nothing.
const WRITE_SCRIPT: &str = r"
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'stream' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE key ' .. KEYS[1] .. ' holds a ' .. kind .. ', not a stream')
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local written = 0
for i = 3, #ARGV, 2 do
  if ARGV[2] ~= '0' then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[i], 'dedup_id', ARGV[i + 1])
  else
    redis.call('XADD', KEYS[1], '*', 'd', ARGV[i], 'dedup_id', ARGV[i + 1])
  end
  written = written + 1
end
redis.call('SET', KEYS[2], written, 'PX', ARGV[1])
return written
";

/// The longest piece of a bad cursor an error message quotes.
const QUOTED_CURSOR: usize = 48;

/// The Redis Streams adapter.
///
/// Shard `n` is the stream `{stream_name}:shard:{n}`; every event is one entry with the
/// fields `d` (`{"r":<payload>,"t":<ns>,"s":<shard>}`) and `dedup_id`. See the crate
/// documentation for writes, reads, cursors, errors and consumer groups.
///
/// Creating the adapter does not connect; [`Adapter::init`] (which the bus calls) checks
/// the server, and every call connects again by itself after the connection was lost.
#[derive(Clone)]
pub struct RedisAdapter {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAdapter")
            .field("config", &self.inner.config)
            .field("shut_down", &self.inner.shut_down.load(Ordering::Relaxed))
            .finish()
    }
}

impl fmt::Display for RedisAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis adapter on {}", self.inner.config)
    }
}

/// A cursor for messages: quoted, and cut when long.
fn quote(cursor: &str) -> String {
    if cursor.chars().count() <= QUOTED_CURSOR {
        format!("{cursor:?}")
    } else {
        let head: String = cursor.chars().take(QUOTED_CURSOR).collect();
        format!("{head:?}... ({} bytes)", cursor.len())
    }
}

impl RedisAdapter {
    /// An adapter with `config`. Checks the settings and parses the URL; does not connect.
    pub fn new(config: RedisAdapterConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let secrets = Secrets::of_url(&config.url);
        let client = Client::open(config.url.as_str()).map_err(|err| ConfigError::Url {
            url: config.redacted_url(),
            reason: secrets.scrub(err.to_string()),
        })?;
        let timeout = config.command_timeout;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Link::new(client.clone(), timeout),
                reader: Link::new(client, timeout),
                script: redis::Script::new(WRITE_SCRIPT),
                secrets,
                config,
                shut_down: AtomicBool::new(false),
                gate: tokio::sync::RwLock::new(()),
                initialised: AtomicBool::new(false),
            }),
        })
    }

    /// The settings the adapter was built with.
    pub fn config(&self) -> &RedisAdapterConfig {
        &self.inner.config
    }

    /// The key of shard `shard_id`'s stream.
    pub fn shard_key(&self, shard_id: u16) -> String {
        self.inner.config.shard_key(shard_id)
    }

    /// A consumer named `consumer` in the configured consumer group.
    ///
    /// Fails with [`AdapterError::Fatal`] when no `consumer_group` is configured or the name
    /// is empty.
    pub fn group_consumer(
        &self,
        consumer: impl Into<String>,
    ) -> Result<GroupConsumer, AdapterError> {
        let consumer = consumer.into();
        let Some(group) = self.inner.config.consumer_group.clone() else {
            return Err(AdapterError::Fatal(
                "redis: no consumer group is configured (set `consumer_group`)".to_owned(),
            ));
        };
        if consumer.is_empty() {
            return Err(AdapterError::Fatal(
                "redis: a consumer name must not be empty".to_owned(),
            ));
        }
        Ok(GroupConsumer::new(self.inner.clone(), group, consumer))
    }
}

impl Inner {
    /// The arguments of the write script after its name: keys, TTL, bound, then the events.
    fn script_call(&self, name: &str, first: &str, batch: &Batch) -> redis::Cmd {
        let shard = batch.shard_id;
        let stream = self.config.shard_key(shard);
        // The batch key hashes to the stream's cluster slot (the stream key is its hash tag).
        let batch_key = format!(
            "{{{stream}}}:batch:{:x}:{}",
            batch.process_nonce, batch.sequence_start
        );
        let mut cmd = redis::cmd(name);
        cmd.arg(first)
            .arg(2)
            .arg(&stream)
            .arg(&batch_key)
            .arg(u64::try_from(self.config.dedup_ttl.as_millis()).unwrap_or(u64::MAX))
            .arg(self.config.max_len.unwrap_or(0));
        let mut d = Vec::with_capacity(256);
        let mut dedup = String::with_capacity(48);
        for (index, event) in batch.events.iter().enumerate() {
            encode_d(&mut d, &event.raw, event.insertion_ts, shard);
            encode_dedup_id(
                &mut dedup,
                batch.process_nonce,
                shard,
                batch.sequence_start,
                index,
            );
            cmd.arg(d.as_slice()).arg(dedup.as_str());
        }
        cmd
    }

    /// Writes `batch` with the script; sends the script's source when the server lost it
    /// (after a restart), all within one command timeout.
    async fn write_script(&self, batch: &Batch) -> Result<(), AdapterError> {
        let evalsha = self.script_call("EVALSHA", self.script.get_hash(), batch);
        let written = self
            .writer
            .run(|mut con| async move {
                match evalsha.query_async::<i64>(&mut con).await {
                    Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        tracing::debug!("redis: write script not cached on the server; sending it");
                        let eval = self.script_call("EVAL", WRITE_SCRIPT, batch);
                        eval.query_async::<i64>(&mut con).await
                    }
                    other => other,
                }
            })
            .await
            .map_err(|err| {
                link_error(
                    &self.ctx("write", Some(batch.shard_id)),
                    err,
                    self.config.command_timeout,
                )
            })?;
        if written == 0 {
            tracing::debug!(
                shard = batch.shard_id,
                sequence_start = batch.sequence_start,
                "redis: batch already stored; the retry wrote nothing"
            );
        }
        Ok(())
    }

    /// Writes `batch` as one `MULTI`/`EXEC` of `XADD`s.
    async fn write_transaction(&self, batch: &Batch) -> Result<(), AdapterError> {
        let shard = batch.shard_id;
        let stream = self.config.shard_key(shard);
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut d = Vec::with_capacity(256);
        let mut dedup = String::with_capacity(48);
        for (index, event) in batch.events.iter().enumerate() {
            encode_d(&mut d, &event.raw, event.insertion_ts, shard);
            encode_dedup_id(
                &mut dedup,
                batch.process_nonce,
                shard,
                batch.sequence_start,
                index,
            );
            let cmd = pipe.cmd("XADD").arg(&stream);
            if let Some(max_len) = self.config.max_len {
                cmd.arg("MAXLEN").arg("~").arg(max_len);
            }
            cmd.arg("*")
                .arg("d")
                .arg(d.as_slice())
                .arg("dedup_id")
                .arg(dedup.as_str())
                .ignore();
        }
        self.query_pipe::<()>(&self.writer, &pipe, "write", Some(shard))
            .await
    }

    /// The last id the stream of `shard` ever generated (`0-0` when it does not exist).
    async fn last_generated(&self, shard: u16, key: &str) -> Result<StreamId, AdapterError> {
        let exists: i64 = self
            .query(
                &self.reader,
                redis::cmd("EXISTS").arg(key),
                "poll",
                Some(shard),
            )
            .await?;
        if exists == 0 {
            return Ok(StreamId::ZERO);
        }
        let info: Value = self
            .query(
                &self.reader,
                redis::cmd("XINFO").arg("STREAM").arg(key),
                "poll",
                Some(shard),
            )
            .await?;
        let pairs: Vec<(Value, Value)> = match info {
            Value::Array(flat) => {
                let mut flat = flat.into_iter();
                std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect()
            }
            Value::Map(map) => map,
            _ => Vec::new(),
        };
        let text = |v: &Value| match v {
            Value::BulkString(b) => std::str::from_utf8(b).ok().map(str::to_owned),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some("last-generated-id"))
            .and_then(|(_, v)| text(v))
            .and_then(|t| StreamId::parse(&t))
            .ok_or_else(|| {
                self.ctx("poll", Some(shard))
                    .fatal("XINFO STREAM did not report a last-generated-id")
            })
    }

    async fn poll(
        &self,
        shard: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        let ctx = self.ctx("poll", Some(shard));
        let after = match cursor {
            None => None,
            Some(text) => Some(StreamId::parse(text).ok_or_else(|| {
                AdapterError::InvalidCursor(format!(
                    "redis: cursor {} for shard {shard} is not a stream entry id",
                    quote(text)
                ))
            })?),
        };
        let limit = limit.min(MAX_PAGE);
        let key = self.config.shard_key(shard);
        let mut pipe = redis::pipe();
        let page_start = match after {
            None => Some("-".to_owned()),
            Some(StreamId::MAX) => None,
            Some(id) => Some(format!("({id}")),
        };
        if let Some(start) = &page_start {
            pipe.cmd("XRANGE")
                .arg(&key)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(limit + 1);
        }
        pipe.cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1);
        pipe.cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let mut replies: Vec<Value> = self
            .query_pipe(&self.reader, &pipe, "poll", Some(shard))
            .await?;
        let parse = |value: Value| parse_entries(value).map_err(|why| ctx.fatal(why));
        let last = parse(replies.pop().unwrap_or(Value::Nil))?
            .first()
            .map(|e| e.id);
        let first = parse(replies.pop().unwrap_or(Value::Nil))?
            .first()
            .map(|e| e.id);
        let page = parse(replies.pop().unwrap_or(Value::Nil))?;

        let start = match after {
            None => first.map_or(StreamId::ZERO, StreamId::predecessor),
            Some(id) => {
                let beyond = match last {
                    Some(last) => id > last,
                    None => id != StreamId::ZERO,
                };
                if beyond {
                    let generated = self.last_generated(shard, &key).await?;
                    if id > generated {
                        return Err(AdapterError::InvalidCursor(format!(
                            "redis: cursor {id} is beyond the last entry id {generated} shard \
                             {shard} ever had"
                        )));
                    }
                    // Nothing is retained after the cursor. Entries between it and the last
                    // generated id were trimmed or deleted: move past them.
                    return Ok(ShardPollResult {
                        events: Vec::new(),
                        cursor: generated.to_string(),
                        has_more: false,
                    });
                }
                if let Some(first) = first {
                    let before_first = first.predecessor();
                    if id != StreamId::ZERO && id < before_first {
                        // Stale: retention removed the cursor's position.
                        return Ok(ShardPollResult {
                            events: Vec::new(),
                            cursor: before_first.to_string(),
                            has_more: true,
                        });
                    }
                }
                id
            }
        };

        let has_more = page.len() > limit;
        let mut position = start;
        let mut events: Vec<StoredEvent> = Vec::with_capacity(page.len().min(limit));
        for (seen, entry) in page.into_iter().take(limit).enumerate() {
            match decode(entry, shard) {
                Decoded::Event(event) => {
                    position = StreamId::parse(&event.id).unwrap_or(position);
                    events.push(event);
                }
                Decoded::Corrupt { id, reason, .. } => {
                    tracing::warn!(shard, entry = %id, "redis: skipping a corrupt entry: {reason}");
                    position = id;
                }
                Decoded::WrongShard { id, claimed, .. } => {
                    if seen == 0 {
                        return Err(ctx.fatal(format!(
                            "entry {id} of stream {key} claims shard {claimed}; the stream \
                             holds shard {shard} only, so reading past it would mis-route \
                             events"
                        )));
                    }
                    // Hand out what comes before it; the next call stops at it.
                    return Ok(ShardPollResult {
                        events,
                        cursor: position.to_string(),
                        has_more: true,
                    });
                }
            }
        }
        Ok(ShardPollResult {
            events,
            cursor: position.to_string(),
            has_more,
        })
    }
}

#[async_trait]
impl Adapter for RedisAdapter {
    /// Checks the server with a `PING` on the writing connection. Fails only on what
    /// retrying cannot fix (a wrong password, a bad database index); an unreachable server
    /// is logged, and the adapter connects once it is back. A second call does nothing.
    async fn init(&mut self) -> Result<(), AdapterError> {
        let inner = &self.inner;
        if inner.initialised.load(Ordering::Acquire) {
            tracing::debug!("redis: init called again; already initialised, nothing to do");
            return Ok(());
        }
        let _gate = inner.enter().await?;
        match inner
            .query::<String>(&inner.writer, &redis::cmd("PING"), "connect", None)
            .await
        {
            Ok(_) => {}
            Err(err) if err.is_retryable() => {
                tracing::warn!("{err}; the adapter will connect when the server is reachable");
            }
            Err(err) => return Err(err),
        }
        inner.initialised.store(true, Ordering::Release);
        Ok(())
    }

    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        let inner = &self.inner;
        let _gate = inner.enter().await?;
        if batch.events.is_empty() {
            return Ok(());
        }
        match inner.config.write_mode {
            WriteMode::Script => inner.write_script(&batch).await,
            WriteMode::Transaction => inner.write_transaction(&batch).await,
        }
    }

    async fn poll_shard(
        &self,
        shard_id: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        let _gate = self.inner.enter().await?;
        self.inner.poll(shard_id, cursor, limit).await
    }

    /// Every acknowledged write was already applied by the server, so this only checks that
    /// the adapter is open. How durable an applied write is depends on the server's
    /// persistence settings (`appendfsync always` makes it durable before the reply).
    async fn flush(&self) -> Result<(), AdapterError> {
        let _gate = self.inner.enter().await?;
        Ok(())
    }

    /// Stops accepting calls, then waits (at most one command timeout) for the calls in
    /// flight. Calling it again is harmless.
    async fn shutdown(&self) -> Result<(), AdapterError> {
        let inner = &self.inner;
        if inner.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if tokio::time::timeout(inner.config.command_timeout, inner.gate.write())
            .await
            .is_err()
        {
            tracing::warn!("redis: shutdown did not wait longer for calls still in flight");
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "redis"
    }

    /// `PING` on the pooled writing connection, bounded by the command timeout.
    async fn is_healthy(&self) -> bool {
        let inner = &self.inner;
        let Ok(_gate) = inner.enter().await else {
            return false;
        };
        inner
            .query::<String>(&inner.writer, &redis::cmd("PING"), "health check", None)
            .await
            .is_ok_and(|reply| reply == "PONG")
    }

    /// Keeps the layout in the string key `{stream_name}:layout`: `SET .. NX` records it if
    /// absent (atomic on the server), then `GET` reads what won.
    async fn record_layout(
        &self,
        layout: StreamLayout,
        write: LayoutWrite,
    ) -> Result<Option<StreamLayout>, AdapterError> {
        let inner = &self.inner;
        let _gate = inner.enter().await?;
        let key = inner.config.layout_key();
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(layout.encode());
        if write == LayoutWrite::IfAbsent {
            set.arg("NX");
        }
        let written: Option<String> = inner
            .query(&inner.writer, &set, "record layout", None)
            .await?;
        if written.is_some() {
            return Ok(Some(layout));
        }
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let recorded: Option<Vec<u8>> = inner
            .query(&inner.writer, &get, "read layout", None)
            .await?;
        match recorded {
            Some(bytes) => StreamLayout::decode(&bytes, &format!("redis key {key}")).map(Some),
            None => Err(AdapterError::Transient(format!(
                "redis: layout key {key} was there for SET NX, then gone for GET"
            ))),
        }
    }
}
