//! The exception hierarchy, and the conversions from the Rust error enums.
//!
//! ```text
//! NetError
//! ├── ConfigError                 (ConfigError: settings refused, adapter setup failed)
//! ├── IngestionError              (IngestionError, one subclass per variant)
//! │   ├── BackpressureError, SampledError, UnroutedError, ShuttingDownError,
//! │   └── SerializationError, TooLargeError
//! ├── ConsumerError               (ConsumerError, one subclass per variant but Adapter)
//! │   └── InvalidCursorError, InvalidFilterError, UnknownShardError
//! ├── AdapterError                (AdapterError: the backend failed; `.kind` names the variant)
//! └── CursorStoreError            (StreamError::Cursor: the cursor file could not be used)
//! ```

use net_sdk::StreamError;
use net_sdk::{AdapterError as RustAdapterError, ConfigError as RustConfigError};
use net_sdk::{ConsumerError as RustConsumerError, IngestionError as RustIngestionError};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    netbus,
    NetError,
    PyException,
    "Base of every error raised by netbus."
);
create_exception!(netbus, ConfigError, NetError, "The bus could not be built.");
create_exception!(
    netbus,
    IngestionError,
    NetError,
    "An event was not accepted."
);
create_exception!(
    netbus,
    BackpressureError,
    IngestionError,
    "The shard's ring is full (backpressure=\"drop_newest\")."
);
create_exception!(
    netbus,
    SampledError,
    IngestionError,
    "The sampling policy skipped the event."
);
create_exception!(
    netbus,
    UnroutedError,
    IngestionError,
    "No shard could take the event."
);
create_exception!(
    netbus,
    ShuttingDownError,
    IngestionError,
    "The bus is shutting down and accepts nothing more."
);
create_exception!(
    netbus,
    SerializationError,
    IngestionError,
    "The value is not JSON (or not valid UTF-8 text)."
);
create_exception!(
    netbus,
    TooLargeError,
    IngestionError,
    "The event is larger than max_event_bytes."
);
create_exception!(netbus, ConsumerError, NetError, "A poll was refused.");
create_exception!(
    netbus,
    InvalidCursorError,
    ConsumerError,
    "The cursor is not one this bus produced."
);
create_exception!(
    netbus,
    InvalidFilterError,
    ConsumerError,
    "The filter could not be parsed."
);
create_exception!(
    netbus,
    UnknownShardError,
    ConsumerError,
    "The request names a shard the bus does not have."
);
create_exception!(netbus, AdapterError, NetError, "The backend failed.");
create_exception!(
    netbus,
    CursorStoreError,
    NetError,
    "A stream's cursor could not be loaded or saved."
);

/// Adds the exception types to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("NetError", py.get_type::<NetError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("IngestionError", py.get_type::<IngestionError>())?;
    m.add("BackpressureError", py.get_type::<BackpressureError>())?;
    m.add("SampledError", py.get_type::<SampledError>())?;
    m.add("UnroutedError", py.get_type::<UnroutedError>())?;
    m.add("ShuttingDownError", py.get_type::<ShuttingDownError>())?;
    m.add("SerializationError", py.get_type::<SerializationError>())?;
    m.add("TooLargeError", py.get_type::<TooLargeError>())?;
    m.add("ConsumerError", py.get_type::<ConsumerError>())?;
    m.add("InvalidCursorError", py.get_type::<InvalidCursorError>())?;
    m.add("InvalidFilterError", py.get_type::<InvalidFilterError>())?;
    m.add("UnknownShardError", py.get_type::<UnknownShardError>())?;
    m.add("AdapterError", py.get_type::<AdapterError>())?;
    m.add("CursorStoreError", py.get_type::<CursorStoreError>())?;
    Ok(())
}

/// The exception for a refused ingest.
pub(crate) fn ingestion(e: RustIngestionError) -> PyErr {
    let message = e.to_string();
    match e {
        RustIngestionError::Backpressure => BackpressureError::new_err(message),
        RustIngestionError::Sampled => SampledError::new_err(message),
        RustIngestionError::Unrouted => UnroutedError::new_err(message),
        RustIngestionError::ShuttingDown => ShuttingDownError::new_err(message),
        RustIngestionError::Serialization(_) => SerializationError::new_err(message),
        RustIngestionError::TooLarge { .. } => TooLargeError::new_err(message),
        _ => IngestionError::new_err(message),
    }
}

/// The exception for a failed poll.
pub(crate) fn consumer(e: RustConsumerError) -> PyErr {
    match e {
        RustConsumerError::Adapter(e) => adapter(e),
        RustConsumerError::InvalidCursor(_) => InvalidCursorError::new_err(e.to_string()),
        RustConsumerError::InvalidFilter(_) => InvalidFilterError::new_err(e.to_string()),
        RustConsumerError::UnknownShard(_) => UnknownShardError::new_err(e.to_string()),
        _ => ConsumerError::new_err(e.to_string()),
    }
}

/// The name of an adapter error's variant, as `AdapterError.args[1]` and `.kind` give it.
fn adapter_kind(e: &RustAdapterError) -> &'static str {
    e.kind().as_str()
}

/// The exception for a failed flush, shutdown or backend call: `AdapterError(message, kind)`.
pub(crate) fn adapter(e: RustAdapterError) -> PyErr {
    if let RustAdapterError::InvalidCursor(_) = e {
        return InvalidCursorError::new_err(e.to_string());
    }
    AdapterError::new_err((e.to_string(), adapter_kind(&e)))
}

/// The exception for a bus that could not be built.
pub(crate) fn config(e: RustConfigError) -> PyErr {
    ConfigError::new_err(e.to_string())
}

/// The exception for a failed stream step.
pub(crate) fn stream(e: StreamError) -> PyErr {
    match e {
        StreamError::Consumer(e) => consumer(e),
        StreamError::Cursor(e) => CursorStoreError::new_err(format!("cursor store: {e}")),
        other => NetError::new_err(other.to_string()),
    }
}
