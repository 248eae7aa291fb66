//! The Redis Streams adapter of the net event bus.
//!
//! [`RedisAdapter`] stores each shard of the bus in one Redis stream and reads it back with
//! exact, exclusive cursors. It depends on `net-adapter` alone (not on the bus) and passes
//! the adapter conformance kit against a real `redis-server`.
//!
//! # Layout
//!
//! Shard `n` is the stream `{stream_name}:shard:{n}`. Every event is one entry with two
//! fields, readable with any Redis client:
//!
//! - `d`: `{"r":<payload>,"t":<insertion timestamp, ns since the epoch>,"s":<shard>}`
//!   (a payload that is not JSON is stored as `"b":"<base64>"` instead of `"r"`);
//! - `dedup_id`: `{nonce:x}:{shard}:{sequence_start}:{index}`, stable across retries.
//!
//! # Writes
//!
//! A batch is written atomically, `MAXLEN ~ max_len` applied when configured, under the
//! command timeout. [`WriteMode::Script`] (the default) runs one Lua script that also records
//! the batch key `(nonce, shard, sequence_start)` for `dedup_ttl` and skips a batch already
//! recorded, so a retry after a timeout whose write did happen stores nothing twice.
//! [`WriteMode::Transaction`] is a plain `MULTI`/`EXEC` of `XADD`s; its retries can store
//! copies, which consumers drop by dedup id.
//!
//! # Reads and cursors
//!
//! A cursor, and the `id` of every returned event, is a stream entry id; `0-0` is the start
//! of a shard that has no entries. Pages are read with `XRANGE` from `(cursor` with
//! `COUNT limit + 1`, so `has_more` is exact. A cursor that is not an entry id, or lies past
//! the last id the stream ever generated, is [`AdapterError::InvalidCursor`]; one whose
//! position retention removed gives an empty page and a cursor just before the first
//! retained entry. Corrupt entries are skipped and the cursor moves past them; an entry that
//! claims another (or an impossible) shard id stops the page right before it, and the next
//! poll fails with [`AdapterError::Fatal`] naming that entry.
//!
//! # Errors
//!
//! Failures are classified by error kind and server code (see the `error` module's rules):
//! I/O problems, timeouts, cluster redirects and passing server states are retryable;
//! authentication, `WRONGTYPE`, `NOPERM` and other server refusals are fatal. Messages never
//! contain the URL's password. A lost connection is replaced on the next call, so the
//! adapter survives a server restart without restarting the process.
//!
//! # Consumer groups
//!
//! With `consumer_group` set, [`RedisAdapter::group_consumer`] gives [`GroupConsumer`]s for
//! at-least-once consumption (`XREADGROUP`, batch `XACK`, `XAUTOCLAIM` of idle entries).
//!
//! ```no_run
//! use net_adapter::Adapter;
//! use net_adapter_redis::{RedisAdapter, RedisAdapterConfig};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = RedisAdapterConfig::new("redis://127.0.0.1:6379", "orders").max_len(1_000_000);
//! let mut adapter = RedisAdapter::new(config)?;
//! adapter.init().await?;
//! let page = adapter.poll_shard(0, None, 100).await?;
//! println!("{} events, resume from {}", page.events.len(), page.cursor);
//! # Ok(())
//! # }
//! ```

mod adapter;
mod config;
mod entry;
mod error;
mod group;
mod id;
mod inner;
mod link;

pub use adapter::RedisAdapter;
pub use config::{redact_url, ConfigError, RedisAdapterConfig, WriteMode};
pub use group::{GroupConsumer, GroupRead, RejectedEntry};
pub use net_adapter::AdapterError;
