//! How a Redis failure becomes an [`AdapterError`] the bus can act on.
//!
//! The class comes from the error's kind and server error code, never from its message:
//!
//! - I/O failures: a dropped or refused connection is `Connection`, anything else (a
//!   response timeout included) is `Transient`; both are retried.
//! - Cluster redirects and server states that pass (`MOVED`, `ASK`, `TRYAGAIN`,
//!   `CLUSTERDOWN`, `MASTERDOWN`, `READONLY`, `LOADING`, `BUSY`, `NOREPLICAS`, `NOSCRIPT`)
//!   are `Transient`; `OOM` is `Backpressure`.
//! - Everything else is `Fatal`: authentication (`WRONGPASS`, `NOAUTH`), `WRONGTYPE`,
//!   `NOPERM`, generic `ERR` replies, bad configuration, replies of an unexpected shape.
//!   Retrying those would only turn a configuration error into a retry storm.
//!
//! Messages name the adapter, the operation and the shard, and pass through
//! [`Secrets::scrub`] so a password can never leak into them.

use net_adapter::AdapterError;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use std::time::Duration;

/// What the bus should do with a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// The connection is gone; retry once it is back.
    Connection,
    /// Retry later.
    Transient,
    /// The server is out of memory; retry later.
    Backpressure,
    /// Retrying cannot help.
    Fatal,
}

/// Server error codes that describe a state which passes.
const TRANSIENT_CODES: &[&str] = &[
    "MOVED",
    "ASK",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "READONLY",
    "LOADING",
    "BUSY",
    "NOREPLICAS",
    "NOSCRIPT",
];

/// The class of one server error code.
pub(crate) fn classify_code(code: &str) -> Class {
    if TRANSIENT_CODES.contains(&code) {
        Class::Transient
    } else if code == "OOM" {
        Class::Backpressure
    } else {
        Class::Fatal
    }
}

/// The server error codes an error carries: its own, or those of the failed commands of a
/// pipeline or transaction.
pub(crate) fn codes(err: &RedisError) -> Vec<String> {
    if let Some(code) = err.code() {
        return vec![code.to_owned()];
    }
    err.clone()
        .into_server_errors()
        .map(|errors| errors.iter().map(|(_, e)| e.code().to_owned()).collect())
        .unwrap_or_default()
}

/// The class of a Redis client error.
pub(crate) fn classify(err: &RedisError) -> Class {
    match err.kind() {
        ErrorKind::Io => {
            if err.is_connection_dropped() || err.is_connection_refusal() {
                Class::Connection
            } else {
                Class::Transient
            }
        }
        // The reply stream is out of step: the connection must be replaced.
        ErrorKind::Parse => Class::Connection,
        ErrorKind::ClusterConnectionNotFound => Class::Transient,
        ErrorKind::Server(ServerErrorKind::ExecAbort) | ErrorKind::Extension => {
            by_codes(&codes(err))
        }
        ErrorKind::Server(kind) => match kind {
            ServerErrorKind::BusyLoading
            | ServerErrorKind::NoScript
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly => Class::Transient,
            _ => by_codes(&codes(err)),
        },
        // Authentication, wrong reply types, bad client configuration and anything this
        // version does not know: retrying cannot fix them.
        _ => Class::Fatal,
    }
}

/// Fatal if any code is fatal (or there is none), else backpressure if any is `OOM`, else
/// transient.
fn by_codes(codes: &[String]) -> Class {
    let classes: Vec<Class> = codes.iter().map(|c| classify_code(c)).collect();
    if classes.is_empty() || classes.contains(&Class::Fatal) {
        Class::Fatal
    } else if classes.contains(&Class::Backpressure) {
        Class::Backpressure
    } else {
        Class::Transient
    }
}

/// Values that must never appear in an error message (the password of the URL).
#[derive(Clone, Default)]
pub(crate) struct Secrets(Vec<String>);

impl Secrets {
    /// The secrets of `url`: its user-info password and `password=`/`pass=` query values.
    pub(crate) fn of_url(url: &str) -> Self {
        let mut secrets = Vec::new();
        let (head, query) = url.split_once('?').unwrap_or((url, ""));
        if let Some((_, rest)) = head.split_once("://") {
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            if let Some((user_info, _)) = authority.rsplit_once('@') {
                let password = user_info.split_once(':').map_or(user_info, |(_, p)| p);
                secrets.push(password.to_owned());
            }
        }
        for pair in query.split('&') {
            if let Some((key, value)) = pair.split_once('=') {
                if key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("pass") {
                    secrets.push(value.to_owned());
                }
            }
        }
        // Very short values would blank out ordinary words; the URL redaction covers them.
        secrets.retain(|s| s.len() >= 3);
        Self(secrets)
    }

    /// `text` with every secret replaced by `***`.
    pub(crate) fn scrub(&self, text: String) -> String {
        self.0.iter().fold(text, |text, secret| {
            if text.contains(secret.as_str()) {
                text.replace(secret.as_str(), "***")
            } else {
                text
            }
        })
    }
}

/// Builds adapter errors for one operation, with context and without secrets.
pub(crate) struct Context<'a> {
    /// What was being done ("write", "poll", "ack", ...).
    pub(crate) operation: &'a str,
    /// The shard, when the operation concerns one.
    pub(crate) shard: Option<u16>,
    /// What to scrub from messages.
    pub(crate) secrets: &'a Secrets,
}

impl Context<'_> {
    fn prefix(&self) -> String {
        match self.shard {
            Some(shard) => format!("redis: {} on shard {shard}", self.operation),
            None => format!("redis: {}", self.operation),
        }
    }

    /// The adapter error for a Redis client error.
    pub(crate) fn redis(&self, err: &RedisError) -> AdapterError {
        let message = self
            .secrets
            .scrub(format!("{}: {}", self.prefix(), describe(err)));
        match classify(err) {
            Class::Connection => AdapterError::Connection(message),
            Class::Transient => AdapterError::Transient(message),
            Class::Backpressure => {
                tracing::warn!("{message}");
                AdapterError::Backpressure
            }
            Class::Fatal => AdapterError::Fatal(message),
        }
    }

    /// The adapter error for a command that did not complete within `timeout`.
    pub(crate) fn timeout(&self, timeout: Duration) -> AdapterError {
        AdapterError::Transient(format!(
            "{}: no reply within the command timeout of {timeout:?} (the command may still \
             take effect on the server)",
            self.prefix()
        ))
    }

    /// A fatal error with `detail`.
    pub(crate) fn fatal(&self, detail: impl std::fmt::Display) -> AdapterError {
        AdapterError::Fatal(self.secrets.scrub(format!("{}: {detail}", self.prefix())))
    }
}

/// A short description: the server's code and message for server errors (the first failed
/// command of a pipeline, with how many others failed), the category and detail otherwise.
fn describe(err: &RedisError) -> String {
    if let Some(errors) = err.clone().into_server_errors() {
        if let Some((index, first)) = errors.first() {
            let mut text = match first.details() {
                Some(details) => format!("{} {details}", first.code()),
                None => first.code().to_owned(),
            };
            if errors.len() > 1 {
                text.push_str(&format!(
                    " (command {index} of the pipeline, and {} more)",
                    errors.len() - 1
                ));
            }
            return text;
        }
    }
    if err.kind() == ErrorKind::Io {
        return err.to_string();
    }
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.category()),
        None => err.category().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> RedisError {
        redis::make_extension_error(code.to_owned(), Some("detail".to_owned()))
    }

    fn check(err: RedisError, expected: Class) {
        assert_eq!(classify(&err), expected, "{err}");
    }

    #[test]
    fn classification_by_code() {
        for code in [
            "MOVED",
            "ASK",
            "TRYAGAIN",
            "CLUSTERDOWN",
            "MASTERDOWN",
            "READONLY",
            "LOADING",
            "BUSY",
            "NOREPLICAS",
        ] {
            check(server(code), Class::Transient);
        }
        for code in [
            "WRONGTYPE",
            "NOPERM",
            "WRONGPASS",
            "NOAUTH",
            "ERR",
            "BUSYGROUP",
        ] {
            check(server(code), Class::Fatal);
        }
        check(server("OOM"), Class::Backpressure);
    }

    #[test]
    fn classification_by_kind() {
        let io = |kind| RedisError::from(std::io::Error::from(kind));
        check(io(std::io::ErrorKind::ConnectionReset), Class::Connection);
        check(io(std::io::ErrorKind::ConnectionRefused), Class::Connection);
        check(io(std::io::ErrorKind::TimedOut), Class::Transient);
        check(
            RedisError::from((ErrorKind::AuthenticationFailed, "auth")),
            Class::Fatal,
        );
        check(
            RedisError::from((ErrorKind::InvalidClientConfig, "config")),
            Class::Fatal,
        );
        check(
            RedisError::from((ErrorKind::UnexpectedReturnType, "type")),
            Class::Fatal,
        );
    }

    #[test]
    fn secrets_are_scrubbed() {
        let secrets = Secrets::of_url("redis://u:hunter2@h:1/0?password=sesame");
        assert_eq!(
            secrets.scrub("x hunter2 y sesame".to_owned()),
            "x *** y ***"
        );
        let ctx = Context {
            operation: "connect",
            shard: None,
            secrets: &secrets,
        };
        let err = ctx.redis(&server("WRONGPASS"));
        assert!(err.is_fatal());
        assert!(!err.to_string().contains("hunter2"));
    }
}
