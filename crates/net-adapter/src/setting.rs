//! [`InvalidSetting`]: the one error shape every adapter's configuration check returns.

use crate::AdapterError;
use thiserror::Error;

/// A setting an adapter cannot work with, found by its configuration's `validate()` before
/// anything connects.
///
/// Every shipped adapter reports a bad setting this way, so a caller (a CLI turning it into a
/// usage error, a service refusing a config file) handles all backends alike and can point
/// at the offending field without parsing the message.
///
/// ```
/// use net_adapter::{AdapterError, InvalidSetting};
///
/// let err = InvalidSetting::new("redis", "max_len", "must be at least 1");
/// assert_eq!((err.backend, err.field), ("redis", "max_len"));
/// assert_eq!(err.to_string(), "invalid redis setting `max_len`: must be at least 1");
/// // Where an operation fails on a bad setting, it is a fatal adapter error.
/// assert!(AdapterError::from(err).is_fatal());
/// ```
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("invalid {backend} setting `{field}`: {reason}")]
#[non_exhaustive]
pub struct InvalidSetting {
    /// The adapter whose setting it is ("redis", "jetstream", ...).
    pub backend: &'static str,
    /// The setting's name, as the configuration type spells it.
    pub field: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl InvalidSetting {
    /// The setting `field` of `backend` is unusable for `reason`.
    pub fn new(backend: &'static str, field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            backend,
            field,
            reason: reason.into(),
        }
    }
}

impl From<InvalidSetting> for AdapterError {
    /// A bad setting cannot be fixed by retrying: a fatal error carrying the same message.
    fn from(err: InvalidSetting) -> Self {
        AdapterError::Fatal(err.to_string())
    }
}
