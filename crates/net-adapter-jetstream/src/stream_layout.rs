//! The stream's recorded layout (see [`net_adapter::StreamLayout`]) on JetStream.
//!
//! It lives in its own small stream, `{stream_name}_layout` (file storage, the configured
//! replicas), on the subject `$NET.layout.{stream_name}`, which no shard stream's subjects can
//! overlap. The stream keeps one message per subject, so its last message is the record.
//!
//! Recording "if absent" publishes with `Nats-Expected-Last-Subject-Sequence: 0`: the server
//! accepts it only while the subject has no message, so of two buses racing on a new stream
//! exactly one wins; the loser's publish fails with "wrong last sequence" and it reads the
//! winner's record.

use crate::config::JetStreamAdapterConfig;
use crate::connection::{chain, classify_publish, Conn};
use async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE;
use async_nats::jetstream::context::{CreateStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::stream::{
    Config, DiscardPolicy, LastRawMessageErrorKind, RetentionPolicy, StorageType,
};
use async_nats::HeaderMap;
use bytes::Bytes;
use net_adapter::{AdapterError, LayoutWrite, StreamLayout};

/// The name of the stream that keeps the layout record.
pub(crate) fn stream_name(config: &JetStreamAdapterConfig) -> String {
    format!("{}_layout", config.stream_name)
}

/// The subject of the layout record.
pub(crate) fn subject(config: &JetStreamAdapterConfig) -> String {
    format!("$NET.layout.{}", config.stream_name)
}

/// Records `layout` as `write` says and returns the layout recorded afterwards.
pub(crate) async fn record(
    conn: &Conn,
    config: &JetStreamAdapterConfig,
    layout: StreamLayout,
    write: LayoutWrite,
) -> Result<StreamLayout, AdapterError> {
    let name = stream_name(config);
    let subject = subject(config);
    let stream = conn
        .js
        .get_or_create_stream(Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            num_replicas: config.replicas,
            max_messages_per_subject: 1,
            allow_direct: true,
            ..Config::default()
        })
        .await
        .map_err(|err| {
            let what = format!("jetstream: layout stream {name}");
            match err.kind() {
                CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable => {
                    AdapterError::Transient(format!("{what}: {}", chain(&err)))
                }
                _ => AdapterError::Fatal(format!("{what}: {}", chain(&err))),
            }
        })?;
    let mut headers = HeaderMap::new();
    if write == LayoutWrite::IfAbsent {
        headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
    }
    let what = format!("jetstream: recording the layout on {subject}");
    let published = match conn
        .js
        .publish_with_headers(
            subject.clone(),
            headers,
            Bytes::from(layout.encode().into_bytes()),
        )
        .await
    {
        Ok(ack) => ack.await,
        Err(err) => Err(err),
    };
    match published {
        Ok(_) => return Ok(layout),
        Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => {}
        Err(err) => return Err(classify_publish(err.kind(), &what, &chain(&err))),
    }
    let message = stream
        .get_last_raw_message_by_subject(&subject)
        .await
        .map_err(|err| {
            let what = format!("jetstream: reading the layout on {subject}");
            match err.kind() {
                LastRawMessageErrorKind::NoMessageFound => {
                    AdapterError::Transient(format!("{what}: recorded, then gone"))
                }
                LastRawMessageErrorKind::InvalidSubject => {
                    AdapterError::Fatal(format!("{what}: {}", chain(&err)))
                }
                _ => AdapterError::Connection(format!("{what}: {}", chain(&err))),
            }
        })?;
    StreamLayout::decode(&message.payload, &format!("jetstream stream {name}"))
}
