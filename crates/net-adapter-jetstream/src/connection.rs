//! The connection to the server: connecting (bounded by the connect timeout, with a probe
//! that JetStream is enabled), and how a failed request is reported.
//!
//! Everything that talks to the server goes through a [`Conn`]: the adapter's writes and
//! reads, the layout record and durable consumers. The classification of a failed publish
//! lives here too, because the batch writer and the layout record share it.

use crate::config::{redact_url, JetStreamAdapterConfig};
use async_nats::jetstream;
use async_nats::jetstream::context::{PublishErrorKind, RequestErrorKind};
use async_nats::jetstream::response::Response;
use net_adapter::AdapterError;
use std::error::Error as StdError;
use std::time::{Duration, Instant};

/// The connection, made by `init`.
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
}

/// Connects to the server of `config` within its connect timeout and checks that JetStream is
/// enabled.
pub(crate) async fn open(config: &JetStreamAdapterConfig) -> Result<Conn, AdapterError> {
    let url = redact_url(&config.url);
    let options = async_nats::ConnectOptions::new()
        .name("net-adapter-jetstream")
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64).saturating_mul(100).min(2_000))
        })
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("jetstream: connected"),
                async_nats::Event::Disconnected => tracing::warn!("jetstream: disconnected"),
                other => tracing::debug!(event = %other, "jetstream: connection event"),
            }
        });
    let started = Instant::now();
    let client =
        match tokio::time::timeout(config.connect_timeout, options.connect(config.url.as_str()))
            .await
        {
            Err(_) => {
                return Err(AdapterError::Connection(format!(
                    "jetstream: could not connect to {url} within {:?}",
                    config.connect_timeout
                )))
            }
            Ok(Err(err)) => {
                use async_nats::ConnectErrorKind as Kind;
                let text = format!("jetstream: connecting to {url}: {}", chain(&err));
                return Err(match err.kind() {
                    Kind::ServerParse
                    | Kind::Authentication
                    | Kind::AuthorizationViolation
                    | Kind::Tls => AdapterError::Fatal(text),
                    _ => AdapterError::Connection(text),
                });
            }
            Ok(Ok(client)) => client,
        };
    let js = jetstream::ContextBuilder::new()
        .timeout(config.request_timeout)
        // The adapter bounds in-flight publishes itself; this only has to never block.
        .max_ack_inflight(config.max_pending_acks.saturating_mul(2))
        // Acks of calls that timed out are waited for in the background; give up on them as
        // soon as the adapter itself would, so a server outage does not pin the ack window.
        .ack_timeout(config.request_timeout)
        .backpressure_on_inflight(false)
        .build(client.clone());
    let remaining = config
        .connect_timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(100));
    // A light account info request: it proves JetStream is enabled for this account. (The
    // typed account info of async-nats expects fields that 2.9 servers do not send.)
    let empty = serde_json::json!({});
    let probe = js.request::<_, _, Response<serde_json::Value>>("INFO", &empty);
    match tokio::time::timeout(remaining, probe).await {
        Err(_) => {
            return Err(AdapterError::Connection(format!(
                "jetstream: {url} did not answer a jetstream request within the connect timeout"
            )))
        }
        Ok(Err(err)) => {
            return Err(match err.kind() {
                RequestErrorKind::NoResponders => {
                    AdapterError::Fatal(format!("jetstream: {url} does not have jetstream enabled"))
                }
                RequestErrorKind::TimedOut => AdapterError::Connection(format!(
                    "jetstream: {url} did not answer a jetstream request in time"
                )),
                _ => AdapterError::Connection(format!("jetstream: {url}: {}", chain(&err))),
            });
        }
        Ok(Ok(Response::Err { error })) => {
            return Err(AdapterError::Fatal(format!(
                "jetstream: {url} refused jetstream requests: {error}"
            )))
        }
        Ok(Ok(Response::Ok(_))) => {}
    }
    let server = client.server_info();
    tracing::info!(server = %url, version = %server.version, "jetstream: connected");
    Ok(Conn { client, js })
}

/// Marks the classification of a publish that found no stream.
const STREAM_MISSING: &str = "no stream captures the subject";

/// How a failed publish is reported.
///
/// Timeouts, a broken connection and a full ack window are transient: the write may or may
/// not have happened, and the retry is deduplicated by the server. A missing stream, a
/// wrong-last-sequence or wrong-last-id answer, an oversized message and anything else the
/// server refuses are fatal, with the cause logged.
pub(crate) fn classify_publish(kind: PublishErrorKind, what: &str, cause: &str) -> AdapterError {
    match kind {
        PublishErrorKind::TimedOut => AdapterError::Transient(format!("{what}: ack timed out")),
        PublishErrorKind::BrokenPipe => {
            AdapterError::Transient(format!("{what}: connection lost before the ack"))
        }
        PublishErrorKind::MaxAckPending => {
            AdapterError::Transient(format!("{what}: too many publishes await their ack"))
        }
        PublishErrorKind::StreamNotFound => {
            AdapterError::Fatal(format!("{what}: {STREAM_MISSING}"))
        }
        PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::Other => {
            tracing::error!(%cause, "{what}: rejected");
            AdapterError::Fatal(format!("{what}: rejected: {cause}"))
        }
    }
}

/// An error and its sources, joined with `: `.
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: PublishErrorKind, retryable: bool) {
        let error = classify_publish(kind, "publishing", "cause");
        assert_eq!(error.is_retryable(), retryable, "{kind:?}: {error}");
        assert_eq!(error.is_fatal(), !retryable, "{kind:?}: {error}");
    }

    #[test]
    fn publish_errors_are_classified() {
        check(PublishErrorKind::TimedOut, true);
        check(PublishErrorKind::BrokenPipe, true);
        check(PublishErrorKind::MaxAckPending, true);
        check(PublishErrorKind::StreamNotFound, false);
        check(PublishErrorKind::WrongLastMessageId, false);
        check(PublishErrorKind::WrongLastSequence, false);
        check(PublishErrorKind::MaxPayloadExceeded, false);
        check(PublishErrorKind::Other, false);
    }
}
