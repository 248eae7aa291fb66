//! The bus's error types.

use net_adapter::AdapterError;
use std::path::PathBuf;
use thiserror::Error;

/// Result of an ingest call.
pub type IngestionResult<T> = Result<T, IngestionError>;
/// Result of a poll call.
pub type ConsumerResult<T> = Result<T, ConsumerError>;

/// Why an ingest call did not accept the event. A rejected event was never accepted: it is
/// counted only under its rejection reason in the stats.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IngestionError {
    /// The shard's ring is full and the mode is `DropNewest`.
    #[error("backpressure: the shard ring is full")]
    Backpressure,
    /// The sampling policy skipped the event.
    #[error("event skipped by the sampling policy")]
    Sampled,
    /// No shard could take the event (only possible while shards are being changed).
    #[error("no routable shard")]
    Unrouted,
    /// The bus is shutting down and accepts nothing more.
    #[error("the bus is shutting down")]
    ShuttingDown,
    /// The event could not be serialized.
    #[error("event serialization failed: {0}")]
    Serialization(#[from] serde_json::Error),
    /// The event is larger than `EventBusConfig::max_event_bytes`.
    #[error("event of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Size of the rejected payload.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// Why a poll failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// The adapter failed.
    #[error(transparent)]
    Adapter(AdapterError),
    /// The cursor is not one this bus produced (garbage, wrong version, unknown shard, or
    /// rejected by the adapter).
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    /// The filter could not be parsed or compiled.
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    /// The request names a shard the bus does not have.
    #[error("unknown shard {0}")]
    UnknownShard(u16),
}

impl From<AdapterError> for ConsumerError {
    fn from(e: AdapterError) -> Self {
        match e {
            AdapterError::InvalidCursor(reason) => ConsumerError::InvalidCursor(reason),
            other => ConsumerError::Adapter(other),
        }
    }
}

/// Why a bus could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting has a value the bus cannot work with.
    #[error("invalid setting `{field}`: {reason}")]
    Invalid {
        /// The setting's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The producer nonce file could not be read, parsed or written.
    #[error("producer nonce file {path}: {reason}")]
    NonceFile {
        /// The configured path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The adapter could not be built or initialised.
    ///
    /// The adapter's error is part of this message and deliberately not exposed as its
    /// `source()`, so printing the error chain does not repeat it.
    #[error("adapter setup failed: {0}")]
    Adapter(AdapterError),
    /// The backend records another shard count for this stream than the bus is configured
    /// with: a consumer would read a subset of the shards, a producer would scatter keys over
    /// shards the others do not expect.
    #[error(
        "the {adapter} stream was created with {recorded} shards, but this bus is configured \
         with {configured}: use the same shard count as the stream's producers"
    )]
    LayoutMismatch {
        /// The adapter's name.
        adapter: String,
        /// The shard count recorded in the backend.
        recorded: u16,
        /// The shard count of this bus.
        configured: u16,
    },
    /// `EventBus::new` was called outside a tokio runtime.
    #[error("the event bus must be created inside a tokio runtime")]
    NoRuntime,
}

impl From<AdapterError> for ConfigError {
    fn from(e: AdapterError) -> Self {
        ConfigError::Adapter(e)
    }
}

impl ConfigError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_adapter_failure_is_printed_once() {
        let e = ConfigError::from(AdapterError::Fatal("bad stream".into()));
        assert_eq!(
            e.to_string(),
            "adapter setup failed: fatal adapter error: bad stream"
        );
        assert!(e.source().is_none());
    }
}
