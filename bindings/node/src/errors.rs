//! Rust errors as JavaScript errors with a stable code.
//!
//! Every error leaves Rust as a plain `Error` whose message starts with its code, and for
//! adapter failures the adapter's kind in parentheses: `ERR_INVALID_CURSOR: invalid cursor:
//! ...`, `ERR_ADAPTER(connection): ...`. The JavaScript layer (`index.js`) reads that prefix
//! once and rethrows the matching `NetError` subclass with `code` (and `kind`) set and the
//! prefix removed. One encoding serves the synchronous calls and the promises alike: napi-rs
//! rejects promises with its own `Error` type, whose status cannot carry a custom code.

use net_sdk::{AdapterError, ConfigError, ConsumerError, IngestionError, StreamError};
use std::fmt::Display;

/// The codes; `index.js` holds the class of each.
pub(crate) const CONFIG: &str = "ERR_CONFIG";
pub(crate) const INVALID_ARG: &str = "ERR_INVALID_ARG_VALUE";
pub(crate) const BACKPRESSURE: &str = "ERR_BACKPRESSURE";
pub(crate) const SAMPLED: &str = "ERR_SAMPLED";
pub(crate) const UNROUTED: &str = "ERR_UNROUTED";
pub(crate) const SHUTTING_DOWN: &str = "ERR_SHUTTING_DOWN";
pub(crate) const SERIALIZATION: &str = "ERR_SERIALIZATION";
pub(crate) const TOO_LARGE: &str = "ERR_TOO_LARGE";
pub(crate) const INGESTION: &str = "ERR_INGESTION";
pub(crate) const INVALID_CURSOR: &str = "ERR_INVALID_CURSOR";
pub(crate) const INVALID_FILTER: &str = "ERR_INVALID_FILTER";
pub(crate) const UNKNOWN_SHARD: &str = "ERR_UNKNOWN_SHARD";
pub(crate) const CONSUMER: &str = "ERR_CONSUMER";
pub(crate) const ADAPTER: &str = "ERR_ADAPTER";
pub(crate) const CURSOR_STORE: &str = "ERR_CURSOR_STORE";
pub(crate) const STREAM: &str = "ERR_STREAM";

/// An error with `code` and `message`.
pub(crate) fn coded(code: &str, message: impl Display) -> napi::Error {
    napi::Error::from_reason(format!("{code}: {message}"))
}

/// A setting that is not one of the accepted values.
pub(crate) fn invalid_arg(message: impl Display) -> napi::Error {
    coded(INVALID_ARG, message)
}

/// The code of a refused ingest.
pub(crate) fn ingestion_code(e: &IngestionError) -> &'static str {
    match e {
        IngestionError::Backpressure => BACKPRESSURE,
        IngestionError::Sampled => SAMPLED,
        IngestionError::Unrouted => UNROUTED,
        IngestionError::ShuttingDown => SHUTTING_DOWN,
        IngestionError::Serialization(_) => SERIALIZATION,
        IngestionError::TooLarge { .. } => TOO_LARGE,
        _ => INGESTION,
    }
}

/// A refused ingest.
pub(crate) fn ingestion(e: IngestionError) -> napi::Error {
    coded(ingestion_code(&e), e)
}

/// A failed poll.
pub(crate) fn consumer(e: ConsumerError) -> napi::Error {
    let code = match e {
        ConsumerError::Adapter(e) => return adapter(e),
        ConsumerError::InvalidCursor(_) => INVALID_CURSOR,
        ConsumerError::InvalidFilter(_) => INVALID_FILTER,
        ConsumerError::UnknownShard(_) => UNKNOWN_SHARD,
        _ => CONSUMER,
    };
    coded(code, e)
}

/// A failed flush, shutdown or backend call; the adapter's kind goes in parentheses.
pub(crate) fn adapter(e: AdapterError) -> napi::Error {
    if let AdapterError::InvalidCursor(_) = e {
        return coded(INVALID_CURSOR, e);
    }
    napi::Error::from_reason(format!("{ADAPTER}({}): {e}", e.kind().as_str()))
}

/// A bus that could not be built.
pub(crate) fn config(e: ConfigError) -> napi::Error {
    coded(CONFIG, e)
}

/// A failed stream step.
pub(crate) fn stream(e: StreamError) -> napi::Error {
    match e {
        StreamError::Consumer(e) => consumer(e),
        StreamError::Cursor(e) => coded(CURSOR_STORE, format!("cursor store: {e}")),
        other => coded(STREAM, other),
    }
}
