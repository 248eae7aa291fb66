//! [`RedisAdapterConfig`]: where the adapter connects, how it names its keys and how it
//! writes; [`ConfigError`] for settings it cannot work with; URL redaction.

use net_adapter::InvalidSetting;
use std::fmt;
use std::time::Duration;
use thiserror::Error;

/// How `on_batch` writes a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteMode {
    /// One Lua script per batch (`EVALSHA`, loaded again after `NOSCRIPT`): it appends every
    /// event and records the batch key `(nonce, shard, sequence_start)` with a TTL, in one
    /// atomic step, and skips a batch whose key is already recorded. A retry after a write
    /// whose reply was lost stores nothing twice. The default.
    #[default]
    Script,
    /// One `MULTI`/`EXEC` transaction of `XADD`s per batch. Atomic, but a retry after a
    /// timed-out `EXEC` that did run stores the batch again; the copies carry the same
    /// dedup ids, so consumers can drop them (see `net_sdk::RedisStreamDedup`).
    Transaction,
}

/// Settings of a [`crate::RedisAdapter`].
///
/// `stream_name` is the key prefix: shard `n` is stored in the stream
/// `{stream_name}:shard:{n}`. Build one with [`RedisAdapterConfig::new`] and the setters, or
/// with a struct literal ending in `..Default::default()`.
///
/// `Debug` and `Display` show the URL with its password replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisAdapterConfig {
    /// `redis://[user[:password]@]host[:port][/db]` (or `rediss://`, `redis+unix://`).
    pub url: String,
    /// The key prefix of the shard streams.
    pub stream_name: String,
    /// Approximate retention per shard stream (`XADD ... MAXLEN ~ n`); `None` keeps
    /// everything.
    pub max_len: Option<usize>,
    /// The consumer group used by [`crate::RedisAdapter::group_consumer`]; `None` disables
    /// consumer groups.
    pub consumer_group: Option<String>,
    /// Bound on every command, connection set-up included. A command that takes longer
    /// fails with a retryable error (its effect may still happen on the server).
    pub command_timeout: Duration,
    /// How batches are written.
    pub write_mode: WriteMode,
    /// How long the script write path remembers a written batch. Retries of the same batch
    /// within this window are skipped; it must outlast the bus's whole retry budget.
    pub dedup_ttl: Duration,
    /// The stream that entries a consumer group cannot decode are copied to before they are
    /// acknowledged; `None` only reports them.
    pub dead_letter_stream: Option<String>,
}

impl Default for RedisAdapterConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            stream_name: "net".to_owned(),
            max_len: None,
            consumer_group: None,
            command_timeout: Duration::from_secs(5),
            write_mode: WriteMode::Script,
            dedup_ttl: Duration::from_secs(15 * 60),
            dead_letter_stream: None,
        }
    }
}

impl RedisAdapterConfig {
    /// Settings for the server at `url`, storing shards under the prefix `stream_name`, with
    /// the defaults for everything else: no retention limit, no consumer group, a 5 s command
    /// timeout, the script write path and a 15 min dedup window.
    pub fn new(url: impl Into<String>, stream_name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream_name: stream_name.into(),
            ..Self::default()
        }
    }

    /// Keeps about `n` entries per shard stream (`MAXLEN ~ n`).
    pub fn max_len(mut self, n: usize) -> Self {
        self.max_len = Some(n);
        self
    }

    /// Enables consumer groups under the group name `group`.
    pub fn consumer_group(mut self, group: impl Into<String>) -> Self {
        self.consumer_group = Some(group.into());
        self
    }

    /// Sets the bound on every command.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Chooses how batches are written.
    pub fn write_mode(mut self, mode: WriteMode) -> Self {
        self.write_mode = mode;
        self
    }

    /// Sets how long the script write path remembers a written batch.
    pub fn dedup_ttl(mut self, ttl: Duration) -> Self {
        self.dedup_ttl = ttl;
        self
    }

    /// Copies undecodable consumer-group entries to the stream `key` before acknowledging them.
    pub fn dead_letter_stream(mut self, key: impl Into<String>) -> Self {
        self.dead_letter_stream = Some(key.into());
        self
    }

    /// The key of shard `shard_id`'s stream.
    pub fn shard_key(&self, shard_id: u16) -> String {
        format!("{}:shard:{shard_id}", self.stream_name)
    }

    /// The string key that records the stream's layout (its shard count).
    pub fn layout_key(&self) -> String {
        format!("{}:layout", self.stream_name)
    }

    /// The URL with its password (and any `password=` query value) replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Checks every setting that can be checked without a server; the error names the first
    /// one that cannot work.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid =
            |field: &'static str, reason: &str| Err(InvalidSetting::new("redis", field, reason));
        if self.stream_name.is_empty() {
            return invalid("stream_name", "must not be empty");
        }
        if let Some(bad) = self
            .stream_name
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '{' | '}'))
        {
            return invalid(
                "stream_name",
                &format!("must not contain whitespace, control characters or braces ({bad:?})"),
            );
        }
        if self.max_len == Some(0) {
            return invalid(
                "max_len",
                "must be at least 1 (use None to keep everything)",
            );
        }
        if self.command_timeout.is_zero() {
            return invalid("command_timeout", "must be greater than zero");
        }
        if self.dedup_ttl < Duration::from_millis(1) {
            return invalid("dedup_ttl", "must be at least one millisecond");
        }
        if self.consumer_group.as_deref() == Some("") {
            return invalid("consumer_group", "must not be empty (use None to disable)");
        }
        if self.dead_letter_stream.as_deref() == Some("") {
            return invalid(
                "dead_letter_stream",
                "must not be empty (use None to disable)",
            );
        }
        Ok(())
    }
}

impl fmt::Debug for RedisAdapterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAdapterConfig")
            .field("url", &self.redacted_url())
            .field("stream_name", &self.stream_name)
            .field("max_len", &self.max_len)
            .field("consumer_group", &self.consumer_group)
            .field("command_timeout", &self.command_timeout)
            .field("write_mode", &self.write_mode)
            .field("dedup_ttl", &self.dedup_ttl)
            .field("dead_letter_stream", &self.dead_letter_stream)
            .finish()
    }
}

impl fmt::Display for RedisAdapterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "redis streams `{}:shard:*` at {}",
            self.stream_name,
            self.redacted_url()
        )
    }
}

/// A setting the adapter cannot work with.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting has a value outside what the adapter accepts (what
    /// [`RedisAdapterConfig::validate`] reports).
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
    /// The URL cannot be parsed; the message shows it redacted.
    #[error("invalid redis url {url}: {reason}")]
    Url {
        /// The URL with its password replaced by `***`.
        url: String,
        /// Why it was refused.
        reason: String,
    },
}

impl From<ConfigError> for net_adapter::AdapterError {
    fn from(err: ConfigError) -> Self {
        net_adapter::AdapterError::Fatal(format!("redis: {err}"))
    }
}

/// `url` with its secrets hidden: the one function every backend uses, re-exported here so
/// `net_adapter_redis::redact_url` keeps working.
pub use net_adapter::redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_is_the_shared_one() {
        for url in [
            "redis://alice:s3cret@host:6379/0",
            "rediss://s3cret@host",
            "redis+unix:///tmp/r.sock?db=1&password=s3cret",
        ] {
            assert_eq!(redact_url(url), net_adapter::redact_url(url), "{url}");
            assert!(!redact_url(url).contains("s3cret"), "{url}");
        }
    }

    #[test]
    fn debug_and_display_hide_the_password() {
        let config = RedisAdapterConfig::new("redis://bob:hunter2@db:6379", "events");
        for text in [format!("{config:?}"), config.to_string()] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("bob:***@db:6379"), "{text}");
        }
    }

    #[test]
    fn validation() {
        let ok = RedisAdapterConfig::new("redis://h", "ev");
        assert_eq!(ok.validate(), Ok(()));
        let field = |c: RedisAdapterConfig| match c.validate() {
            Err(err) => {
                assert_eq!(err.backend, "redis");
                assert!(
                    err.to_string().starts_with("invalid redis setting `"),
                    "{err}"
                );
                // `RedisAdapter::new` reports the same error.
                assert_eq!(
                    crate::RedisAdapter::new(c).err(),
                    Some(ConfigError::Invalid(err.clone()))
                );
                err.field
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(field(ok.clone().max_len(0)), "max_len");
        assert_eq!(
            field(ok.clone().command_timeout(Duration::ZERO)),
            "command_timeout"
        );
        assert_eq!(field(ok.clone().dedup_ttl(Duration::ZERO)), "dedup_ttl");
        assert_eq!(field(ok.clone().consumer_group("")), "consumer_group");
        assert_eq!(
            field(RedisAdapterConfig::new("redis://h", "")),
            "stream_name"
        );
        assert_eq!(
            field(RedisAdapterConfig::new("redis://h", "a b")),
            "stream_name"
        );
        assert_eq!(
            field(RedisAdapterConfig::new("redis://h", "{x}")),
            "stream_name"
        );
        assert_eq!(ok.shard_key(65535), "ev:shard:65535");
    }
}
