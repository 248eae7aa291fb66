//! The error an adapter returns, and how the bus classifies it.

use std::fmt;
use thiserror::Error;

/// Result alias for adapter operations.
pub type AdapterResult<T> = Result<T, AdapterError>;

/// What went wrong inside an adapter.
///
/// The bus decides what to do from [`AdapterError::is_retryable`] and
/// [`AdapterError::is_fatal`]: retryable errors make it retry the same batch with backoff;
/// any other error drops the batch at once (counted, never silent). Messages carry context
/// (adapter, operation, shard) and must never contain secrets such as passwords in URLs.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// A temporary failure (timeout, I/O hiccup): retry the same call later.
    #[error("transient adapter error: {0}")]
    Transient(String),
    /// A permanent failure: retrying cannot help.
    #[error("fatal adapter error: {0}")]
    Fatal(String),
    /// The backend is full or slow; retry later.
    #[error("adapter backpressure: backend is full")]
    Backpressure,
    /// The connection to the backend is broken; retryable once it comes back.
    #[error("adapter connection error: {0}")]
    Connection(String),
    /// The adapter was shut down; it accepts nothing more.
    #[error("adapter is shut down")]
    Shutdown,
    /// An event or stored entry could not be (de)serialized.
    #[error("adapter serialization error: {0}")]
    Serialization(#[from] serde_json::Error),
    /// An event is larger than the backend can store once the adapter has framed it. Not
    /// retryable: the adapter refuses it before writing any event of the batch.
    #[error(
        "{what}: a stored event would take {size} bytes, over the backend's limit of {max} bytes"
    )]
    TooLarge {
        /// The backend, operation and position (shard, event index).
        what: String,
        /// Bytes the event would take as stored.
        size: usize,
        /// The backend's limit, as the backend reported it.
        max: usize,
    },
    /// A cursor handed to `poll_shard` is not one this adapter produced (garbage, from the
    /// future, or for another shard). Neither retryable nor fatal: the caller must fix it.
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
}

/// The class of an [`AdapterError`], without its message: what stats count, what the mesh
/// sends a peer, what a caller matches on to decide what to do.
///
/// Matching on the kind rather than on the error's variants keeps working when a variant
/// gains fields (such as a source error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AdapterErrorKind {
    /// [`AdapterError::Transient`].
    Transient,
    /// [`AdapterError::Fatal`].
    Fatal,
    /// [`AdapterError::Backpressure`].
    Backpressure,
    /// [`AdapterError::Connection`].
    Connection,
    /// [`AdapterError::Shutdown`].
    Shutdown,
    /// [`AdapterError::Serialization`].
    Serialization,
    /// [`AdapterError::TooLarge`].
    TooLarge,
    /// [`AdapterError::InvalidCursor`].
    InvalidCursor,
}

impl AdapterErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [AdapterErrorKind] = &[
        AdapterErrorKind::Transient,
        AdapterErrorKind::Fatal,
        AdapterErrorKind::Backpressure,
        AdapterErrorKind::Connection,
        AdapterErrorKind::Shutdown,
        AdapterErrorKind::Serialization,
        AdapterErrorKind::TooLarge,
        AdapterErrorKind::InvalidCursor,
    ];

    /// A short stable name, for stats and logs ("transient", "too_large", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterErrorKind::Transient => "transient",
            AdapterErrorKind::Fatal => "fatal",
            AdapterErrorKind::Backpressure => "backpressure",
            AdapterErrorKind::Connection => "connection",
            AdapterErrorKind::Shutdown => "shutdown",
            AdapterErrorKind::Serialization => "serialization",
            AdapterErrorKind::TooLarge => "too_large",
            AdapterErrorKind::InvalidCursor => "invalid_cursor",
        }
    }

    /// True for `Transient`, `Backpressure` and `Connection`: the same call may succeed later.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            AdapterErrorKind::Transient
                | AdapterErrorKind::Backpressure
                | AdapterErrorKind::Connection
        )
    }

    /// True for `Fatal`, `Serialization`, `TooLarge` and `Shutdown`: retrying cannot succeed.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            AdapterErrorKind::Fatal
                | AdapterErrorKind::Serialization
                | AdapterErrorKind::TooLarge
                | AdapterErrorKind::Shutdown
        )
    }
}

impl fmt::Display for AdapterErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with the stable name ([`AdapterErrorKind::as_str`]), as `kind()` returned before
/// it had a type of its own.
impl PartialEq<&str> for AdapterErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl AdapterError {
    /// True for `Transient`, `Backpressure` and `Connection`: the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// True for `Fatal`, `Serialization`, `TooLarge` and `Shutdown`: retrying cannot succeed.
    pub fn is_fatal(&self) -> bool {
        self.kind().is_fatal()
    }

    /// The class of the error (its name for stats and logs is `kind().as_str()`).
    pub fn kind(&self) -> AdapterErrorKind {
        match self {
            AdapterError::Transient(_) => AdapterErrorKind::Transient,
            AdapterError::Fatal(_) => AdapterErrorKind::Fatal,
            AdapterError::Backpressure => AdapterErrorKind::Backpressure,
            AdapterError::Connection(_) => AdapterErrorKind::Connection,
            AdapterError::Shutdown => AdapterErrorKind::Shutdown,
            AdapterError::Serialization(_) => AdapterErrorKind::Serialization,
            AdapterError::TooLarge { .. } => AdapterErrorKind::TooLarge,
            AdapterError::InvalidCursor(_) => AdapterErrorKind::InvalidCursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(e: AdapterError, retryable: bool, fatal: bool) {
        assert_eq!(e.is_retryable(), retryable, "{e:?}");
        assert_eq!(e.is_fatal(), fatal, "{e:?}");
        assert_eq!(e.kind().is_retryable(), retryable, "{e:?}");
        assert_eq!(e.kind().is_fatal(), fatal, "{e:?}");
    }

    #[test]
    fn kinds_have_distinct_stable_names() {
        let names: Vec<&str> = AdapterErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "transient",
                "fatal",
                "backpressure",
                "connection",
                "shutdown",
                "serialization",
                "too_large",
                "invalid_cursor"
            ]
        );
        assert_eq!(
            AdapterError::Connection("c".into()).kind(),
            AdapterErrorKind::Connection
        );
        assert_eq!(AdapterErrorKind::TooLarge.to_string(), "too_large");
        assert_eq!(AdapterError::Shutdown.kind(), "shutdown");
    }

    #[test]
    fn classification() {
        check(AdapterError::Transient("t".into()), true, false);
        check(AdapterError::Backpressure, true, false);
        check(AdapterError::Connection("c".into()), true, false);
        check(AdapterError::Fatal("f".into()), false, true);
        check(AdapterError::Shutdown, false, true);
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        check(AdapterError::Serialization(json), false, true);
        check(AdapterError::InvalidCursor("x".into()), false, false);
        let too_large = AdapterError::TooLarge {
            what: "jetstream: publishing event 0 of shard 1".into(),
            size: 1_048_600,
            max: 1_048_576,
        };
        assert_eq!(
            too_large.to_string(),
            "jetstream: publishing event 0 of shard 1: a stored event would take 1048600 bytes, \
             over the backend's limit of 1048576 bytes"
        );
        assert_eq!(too_large.kind(), "too_large");
        check(too_large, false, true);
    }
}
