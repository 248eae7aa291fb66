//! The stream of one shard: the configuration the adapter asks for, the check that a stream
//! found on the server (or just created by it) really has the settings the adapter relies on,
//! and [`ShardStreams`], which creates each shard's stream once, on first use.
//!
//! The check matters twice. A stream that already exists may have been made by someone else
//! with a retention policy that deletes messages on ack, memory storage, or another subject;
//! writing into it would lose events quietly. And a server older than the client silently
//! drops settings it does not know, so the configuration the server reports back after
//! creating a stream is compared field by field with the one that was asked for.
//!
//! Streams are created on first use of a shard, once, even when several batches of that
//! shard race (a `OnceCell` per shard); a creation that fails leaves the cell empty so a later
//! call tries again.
//!
//! The stream that records the layout of the whole set of shards is another matter; see
//! `stream_layout`.

use crate::config::JetStreamAdapterConfig;
use crate::connection::{chain, Conn};
use crate::counters::{bump, Counters};
use async_nats::jetstream::context::{CreateStreamErrorKind, RequestErrorKind};
use async_nats::jetstream::response::Response;
use async_nats::jetstream::stream::{Config, DiscardPolicy, Info, RetentionPolicy, StorageType};
use async_nats::jetstream::ErrorCode;
use async_nats::Subject;
use net_adapter::AdapterError;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// The error code the server gives when a stream name is taken by a stream with another
/// configuration.
const STREAM_NAME_IN_USE: ErrorCode = ErrorCode(10058);

/// A shard's stream, known to exist with the right configuration.
#[derive(Debug)]
pub(crate) struct ShardStream {
    /// The stream's name.
    pub(crate) name: String,
    /// Where the adapter publishes.
    pub(crate) subject: Subject,
}

/// The single-flight cell of one shard's stream.
type ShardCell = Arc<OnceCell<Arc<ShardStream>>>;

/// The streams of the shards used so far, each created (or checked) once.
#[derive(Debug, Default)]
pub(crate) struct ShardStreams {
    cells: Mutex<HashMap<u16, ShardCell>>,
}

impl ShardStreams {
    /// The stream of `shard_id`, created and checked on first use (single-flight).
    pub(crate) async fn get(
        &self,
        conn: &Conn,
        config: &JetStreamAdapterConfig,
        counters: &Counters,
        shard_id: u16,
    ) -> Result<Arc<ShardStream>, AdapterError> {
        let cell = self.cells.lock().entry(shard_id).or_default().clone();
        cell.get_or_try_init(|| create(conn, config, counters, shard_id))
            .await
            .cloned()
    }

    /// Forgets that `shard_id`'s stream exists, so the next batch creates it again.
    pub(crate) fn forget(&self, shard_id: u16) {
        self.cells.lock().remove(&shard_id);
    }
}

/// Finds or creates the stream of `shard_id` and checks its configuration.
async fn create(
    conn: &Conn,
    config: &JetStreamAdapterConfig,
    counters: &Counters,
    shard_id: u16,
) -> Result<Arc<ShardStream>, AdapterError> {
    let want = stream_config(config, shard_id);
    let name = want.name.clone();
    let subject = Subject::from(want.subjects[0].as_str());
    let check = |info: &Info, what: &str| -> Result<(), AdapterError> {
        let problems = mismatches(&want, &info.config);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(AdapterError::Fatal(format!(
                "jetstream: stream {name} {what} has settings the adapter cannot use: {}",
                problems.join("; ")
            )))
        }
    };
    if let Some(info) = stream_info(conn, counters, &name).await? {
        check(&info, "already exists but")?;
        return Ok(Arc::new(ShardStream { name, subject }));
    }
    let created = conn.js.create_stream(want.clone()).await;
    bump(&counters.streams_created, 1);
    match created {
        Ok(stream) => {
            // A server older than the client ignores settings it does not know; the
            // configuration it reports is what it will apply.
            check(stream.cached_info(), "was created but")?;
            tracing::info!(stream = %name, shard = shard_id, "jetstream: created stream");
            Ok(Arc::new(ShardStream { name, subject }))
        }
        Err(err) => match err.kind() {
            CreateStreamErrorKind::JetStream(api) if api.error_code() == STREAM_NAME_IN_USE => {
                // Someone else created it in the meantime, with other settings.
                match stream_info(conn, counters, &name).await? {
                    Some(info) => {
                        check(&info, "already exists but")?;
                        Ok(Arc::new(ShardStream { name, subject }))
                    }
                    None => Err(AdapterError::Transient(format!(
                        "jetstream: stream {name} was reported in use, then not found"
                    ))),
                }
            }
            CreateStreamErrorKind::TimedOut => Err(AdapterError::Transient(format!(
                "jetstream: creating stream {name} timed out"
            ))),
            CreateStreamErrorKind::JetStreamUnavailable => Err(AdapterError::Transient(format!(
                "jetstream: creating stream {name}: jetstream is not available"
            ))),
            _ => {
                let cause = chain(&err);
                tracing::error!(stream = %name, cause = %cause, "jetstream: cannot create stream");
                Err(AdapterError::Fatal(format!(
                    "jetstream: cannot create stream {name}: {cause}"
                )))
            }
        },
    }
}

/// The info of stream `name`, or `None` when it does not exist.
pub(crate) async fn stream_info(
    conn: &Conn,
    counters: &Counters,
    name: &str,
) -> Result<Option<Info>, AdapterError> {
    bump(&counters.stream_infos, 1);
    let response: Response<Info> = conn
        .js
        .request(format!("STREAM.INFO.{name}"), &serde_json::json!({}))
        .await
        .map_err(|err| {
            let what = format!("jetstream: stream info of {name}");
            match err.kind() {
                RequestErrorKind::TimedOut => AdapterError::Transient(format!("{what} timed out")),
                RequestErrorKind::NoResponders => AdapterError::Transient(format!(
                    "{what}: jetstream is not available (not enabled, or starting)"
                )),
                RequestErrorKind::InvalidSubject => {
                    AdapterError::Fatal(format!("{what}: {}", chain(&err)))
                }
                _ => AdapterError::Connection(format!("{what}: {}", chain(&err))),
            }
        })?;
    match response {
        Response::Ok(info) => Ok(Some(info)),
        Response::Err { error } if error.error_code() == ErrorCode::STREAM_NOT_FOUND => Ok(None),
        Response::Err { error } => Err(AdapterError::Fatal(format!(
            "jetstream: stream info of {name}: {error}"
        ))),
    }
}

/// The stream configuration of `shard_id` under `config`.
pub(crate) fn stream_config(config: &JetStreamAdapterConfig, shard_id: u16) -> Config {
    Config {
        name: config.stream_for(shard_id),
        subjects: config.subjects_for(shard_id),
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        num_replicas: config.replicas,
        max_messages: limit(config.max_messages),
        max_bytes: limit(config.max_bytes),
        max_age: config.max_age.unwrap_or(Duration::ZERO),
        max_messages_per_subject: -1,
        max_consumers: -1,
        duplicate_window: config.duplicate_window,
        allow_direct: true,
        ..Config::default()
    }
}

/// A limit in the server's terms: `-1` means none.
fn limit(value: Option<u64>) -> i64 {
    value.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// A limit as the server reports it: zero and negative values both mean none.
fn reported_limit(value: i64) -> i64 {
    if value <= 0 {
        -1
    } else {
        value
    }
}

/// Every setting of `have` that differs from `want` in a way the adapter cannot live with,
/// one line each (`field: expected .., found ..`). Empty when the stream is usable.
pub(crate) fn mismatches(want: &Config, have: &Config) -> Vec<String> {
    let mut found = Vec::new();
    let mut differs = |field: &str, expected: String, actual: String| {
        if expected != actual {
            found.push(format!("{field}: expected {expected}, found {actual}"));
        }
    };
    let mut want_subjects = want.subjects.clone();
    let mut have_subjects = have.subjects.clone();
    want_subjects.sort();
    have_subjects.sort();
    differs(
        "subjects",
        format!("{want_subjects:?}"),
        format!("{have_subjects:?}"),
    );
    differs(
        "retention",
        format!("{:?}", want.retention),
        format!("{:?}", have.retention),
    );
    differs(
        "storage",
        format!("{:?}", want.storage),
        format!("{:?}", have.storage),
    );
    differs(
        "discard",
        format!("{:?}", want.discard),
        format!("{:?}", have.discard),
    );
    differs(
        "num_replicas",
        want.num_replicas.max(1).to_string(),
        have.num_replicas.max(1).to_string(),
    );
    differs(
        "max_msgs",
        reported_limit(want.max_messages).to_string(),
        reported_limit(have.max_messages).to_string(),
    );
    differs(
        "max_bytes",
        reported_limit(want.max_bytes).to_string(),
        reported_limit(have.max_bytes).to_string(),
    );
    differs(
        "max_age",
        format!("{:?}", want.max_age),
        format!("{:?}", have.max_age),
    );
    differs(
        "duplicate_window",
        format!("{:?}", want.duplicate_window),
        format!("{:?}", have.duplicate_window),
    );
    differs(
        "allow_direct",
        want.allow_direct.to_string(),
        have.allow_direct.to_string(),
    );
    differs("no_ack", "false".into(), have.no_ack.to_string());
    differs("sealed", "false".into(), have.sealed.to_string());
    differs(
        "mirror",
        "none".into(),
        have.mirror
            .as_ref()
            .map_or("none".into(), |m| format!("{:?}", m.name)),
    );
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> JetStreamAdapterConfig {
        JetStreamAdapterConfig::new("nats://h", "ev")
            .max_messages(100)
            .duplicate_window(Duration::from_secs(300))
    }

    /// Applies `change` to a copy of the wanted config and checks which fields are reported.
    fn check(change: impl FnOnce(&mut Config), fields: &[&str]) {
        let want = stream_config(&config(), 2);
        let mut have = want.clone();
        change(&mut have);
        let found = mismatches(&want, &have);
        let names: Vec<&str> = found
            .iter()
            .map(|line| line.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(names, fields, "{found:?}");
    }

    #[test]
    fn wanted_config() {
        let want = stream_config(&config(), 2);
        assert_eq!(want.name, "ev_shard_2");
        assert_eq!(want.subjects, ["ev.shard.2"]);
        assert_eq!(want.max_messages, 100);
        assert_eq!(want.max_bytes, -1);
        assert!(want.allow_direct);
        assert_eq!(want.storage, StorageType::File);
    }

    #[test]
    fn compatibility() {
        check(|_| {}, &[]);
        // How the server reports what was asked for: unlimited as -1, replicas 1.
        check(
            |c| {
                c.max_bytes = 0;
                c.num_replicas = 0;
            },
            &[],
        );
        check(|c| c.subjects = vec!["other.2".into()], &["subjects"]);
        check(|c| c.subjects.push("extra.2".into()), &["subjects"]);
        check(|c| c.retention = RetentionPolicy::WorkQueue, &["retention"]);
        check(|c| c.storage = StorageType::Memory, &["storage"]);
        check(|c| c.discard = DiscardPolicy::New, &["discard"]);
        check(|c| c.num_replicas = 3, &["num_replicas"]);
        check(|c| c.max_messages = -1, &["max_msgs"]);
        check(|c| c.max_bytes = 5, &["max_bytes"]);
        check(|c| c.max_age = Duration::from_secs(1), &["max_age"]);
        check(
            |c| c.duplicate_window = Duration::from_secs(120),
            &["duplicate_window"],
        );
        check(|c| c.allow_direct = false, &["allow_direct"]);
        check(|c| c.no_ack = true, &["no_ack"]);
        check(|c| c.sealed = true, &["sealed"]);
        check(
            |c| {
                c.storage = StorageType::Memory;
                c.sealed = true;
            },
            &["storage", "sealed"],
        );
    }
}
