//! [`JetStreamAdapterConfig`] and [`DeliverPolicy`]: what a [`crate::JetStreamAdapter`] connects
//! to, how it lays out its streams, and how long it waits.
//!
//! Every duration and count is checked by [`JetStreamAdapterConfig::validate`] before the adapter
//! connects: a zero timeout, a zero dedup window or zero replicas is rejected, never used as a
//! divisor or a "wait forever".

use net_adapter::InvalidSetting;
use std::fmt;
use std::time::Duration;

/// The placeholder a subject template must contain; it is replaced by the shard id.
pub const SHARD_PLACEHOLDER: &str = "{shard}";

/// The longest stream name prefix accepted (the server limits names to 255 bytes and the
/// adapter appends `_shard_65535`).
const MAX_STREAM_NAME: usize = 200;

/// Where a new durable consumer starts reading its shard.
///
/// Only durable consumers ([`crate::JetStreamAdapter::durable_consumer`]) use it: `poll_shard`
/// with no cursor always starts at the earliest retained event, as the adapter contract says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliverPolicy {
    /// Every retained event (the default).
    #[default]
    All,
    /// The last event stored when the consumer is created, then everything after it.
    Last,
    /// Only events stored after the consumer is created.
    New,
    /// Events from this stream sequence on (a sequence is what `StoredEvent::id` holds).
    ByStartSequence(u64),
}

impl DeliverPolicy {
    /// The same policy in async-nats terms.
    pub(crate) fn to_nats(self) -> async_nats::jetstream::consumer::DeliverPolicy {
        use async_nats::jetstream::consumer::DeliverPolicy as Nats;
        match self {
            DeliverPolicy::All => Nats::All,
            DeliverPolicy::Last => Nats::Last,
            DeliverPolicy::New => Nats::New,
            DeliverPolicy::ByStartSequence(start_sequence) => Nats::ByStartSequence {
                start_sequence: start_sequence.max(1),
            },
        }
    }
}

/// How `poll_shard` reads a page.
///
/// Either way a page costs a fixed number of requests, never one per event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadPath {
    /// Batched direct get for pages of up to 64 events when the server is 2.11 or later, a
    /// pull consumer otherwise (the default). Small pages are answered faster by one direct
    /// get; large ones stream faster through a consumer.
    #[default]
    Auto,
    /// An ephemeral pull consumer starting right after the cursor and one fetch of the page
    /// (any server from 2.9).
    PullConsumer,
    /// Batched direct gets of up to 1 000 messages each (servers 2.11 and later; an older
    /// server makes every poll fail with `Fatal`).
    BatchDirectGet,
}

/// Settings of a [`crate::JetStreamAdapter`].
///
/// Layout: shard `i` is stored in its own stream `{stream_name}_shard_{i}` (file storage,
/// limits retention, direct get allowed) that captures the subjects made from
/// [`subjects`](Self::subjects) by replacing `{shard}` with `i`. With the default (empty)
/// `subjects`, that is the single subject `{stream_name}.shard.{i}`. The adapter publishes to
/// the first subject; further ones let other publishers feed a shard's stream directly.
///
/// Build it with [`JetStreamAdapterConfig::new`] and the setters, or as a struct literal ending
/// in `..Default::default()`. `Debug` hides any password in [`url`](Self::url).
#[derive(Clone, PartialEq, Eq)]
pub struct JetStreamAdapterConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222` (credentials may be given as
    /// `nats://user:password@host:port`; they never appear in logs or errors).
    pub url: String,
    /// The prefix of every stream (`{stream_name}_shard_{id}`) and of the default subject
    /// (`{stream_name}.shard.{id}`). ASCII letters, digits, `-` and `_` only.
    pub stream_name: String,
    /// Subject templates of each shard's stream, each containing `{shard}` once; the first is
    /// where the adapter publishes. Empty means `["{stream_name}.shard.{shard}"]`.
    pub subjects: Vec<String>,
    /// Where new durable consumers start (see [`DeliverPolicy`]).
    pub deliver_policy: DeliverPolicy,
    /// Replicas of each stream (1 on a single server; at most 5).
    pub replicas: usize,
    /// Retention: the newest messages kept per shard stream (`None`: unlimited).
    pub max_messages: Option<u64>,
    /// Retention: the bytes kept per shard stream (`None`: unlimited).
    pub max_bytes: Option<u64>,
    /// Retention: how long messages are kept (`None`: forever).
    pub max_age: Option<Duration>,
    /// How long the server remembers a `Nats-Msg-Id` to drop a retried publish. It must cover
    /// the bus's whole retry budget plus a server or process restart. Default 5 minutes (the
    /// server's own default is 2 minutes).
    pub duplicate_window: Duration,
    /// Bound on connecting at `init`; an unreachable server gives `Connection` within it.
    pub connect_timeout: Duration,
    /// Bound on one `on_batch` (every publish and every ack), one `poll_shard`, and each
    /// JetStream API request.
    pub request_timeout: Duration,
    /// Bound on draining in-flight work at `shutdown`.
    pub drain_timeout: Duration,
    /// Publishes awaiting their ack at once, over all shards. A batch waits for room (within
    /// `request_timeout`) before it publishes; larger batches are published in runs of this
    /// size.
    pub max_pending_acks: usize,
    /// How pages are read (see [`ReadPath`]).
    pub read_path: ReadPath,
}

impl Default for JetStreamAdapterConfig {
    /// A local server (`nats://127.0.0.1:4222`) and streams named `net_shard_{id}`.
    fn default() -> Self {
        Self::new("nats://127.0.0.1:4222", "net")
    }
}

impl JetStreamAdapterConfig {
    /// A configuration for the server at `url` with streams named after `stream_name`, and
    /// defaults for everything else.
    pub fn new(url: impl Into<String>, stream_name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream_name: stream_name.into(),
            subjects: Vec::new(),
            deliver_policy: DeliverPolicy::All,
            replicas: 1,
            max_messages: None,
            max_bytes: None,
            max_age: None,
            duplicate_window: Duration::from_secs(5 * 60),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            max_pending_acks: 16_384,
            read_path: ReadPath::Auto,
        }
    }

    /// Sets the subject templates (see [`subjects`](Self::subjects)).
    pub fn subjects<S: Into<String>>(mut self, subjects: impl IntoIterator<Item = S>) -> Self {
        self.subjects = subjects.into_iter().map(Into::into).collect();
        self
    }

    /// Sets where new durable consumers start.
    pub fn deliver_policy(mut self, policy: DeliverPolicy) -> Self {
        self.deliver_policy = policy;
        self
    }

    /// Sets the replicas of each stream.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Keeps at most `n` messages per shard stream.
    pub fn max_messages(mut self, n: u64) -> Self {
        self.max_messages = Some(n);
        self
    }

    /// Keeps at most `n` bytes per shard stream.
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = Some(n);
        self
    }

    /// Discards messages older than `age`.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Sets the server's dedup window.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the per-call timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the drain timeout of `shutdown`.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Sets how many publishes may await their ack at once.
    pub fn max_pending_acks(mut self, n: usize) -> Self {
        self.max_pending_acks = n;
        self
    }

    /// Chooses how pages are read.
    pub fn read_path(mut self, path: ReadPath) -> Self {
        self.read_path = path;
        self
    }

    /// The subject templates in force: [`subjects`](Self::subjects), or the default one.
    pub fn subject_templates(&self) -> Vec<String> {
        if self.subjects.is_empty() {
            vec![format!("{}.shard.{SHARD_PLACEHOLDER}", self.stream_name)]
        } else {
            self.subjects.clone()
        }
    }

    /// The stream that stores `shard_id`.
    pub fn stream_for(&self, shard_id: u16) -> String {
        format!("{}_shard_{shard_id}", self.stream_name)
    }

    /// The subjects of `shard_id`'s stream; the first is where the adapter publishes.
    pub fn subjects_for(&self, shard_id: u16) -> Vec<String> {
        let id = shard_id.to_string();
        self.subject_templates()
            .iter()
            .map(|template| template.replace(SHARD_PLACEHOLDER, &id))
            .collect()
    }

    /// Checks every setting; the error names the first one that cannot work.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid = |field: &'static str, reason: String| {
            Err(InvalidSetting::new("jetstream", field, reason))
        };
        if self.url.trim().is_empty() {
            return invalid("url", "it is empty".into());
        }
        if self.stream_name.is_empty()
            || self.stream_name.len() > MAX_STREAM_NAME
            || !self
                .stream_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return invalid(
                "stream_name",
                format!(
                    "{:?} must be 1 to {MAX_STREAM_NAME} ASCII letters, digits, '-' or '_'",
                    self.stream_name
                ),
            );
        }
        let templates = self.subject_templates();
        for template in &templates {
            if let Err(reason) = check_template(template) {
                return invalid("subjects", format!("{template:?} {reason}"));
            }
        }
        for (i, a) in templates.iter().enumerate() {
            if templates[..i].contains(a) {
                return invalid("subjects", format!("{a:?} is listed twice"));
            }
        }
        if self.replicas == 0 || self.replicas > 5 {
            return invalid(
                "replicas",
                format!("{} is not between 1 and 5", self.replicas),
            );
        }
        if self.max_messages == Some(0) {
            return invalid("max_messages", "0 would keep nothing".into());
        }
        if let Some(n) = self.max_messages {
            if i64::try_from(n).is_err() {
                return invalid("max_messages", format!("{n} is too large"));
            }
        }
        if self.max_bytes == Some(0) {
            return invalid("max_bytes", "0 would keep nothing".into());
        }
        if let Some(n) = self.max_bytes {
            if i64::try_from(n).is_err() {
                return invalid("max_bytes", format!("{n} is too large"));
            }
        }
        if self.max_age == Some(Duration::ZERO) {
            return invalid("max_age", "0 would keep nothing".into());
        }
        let positive = [
            ("duplicate_window", self.duplicate_window),
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("drain_timeout", self.drain_timeout),
        ];
        for (field, value) in positive {
            if value.is_zero() {
                return invalid(field, "it must be longer than zero".into());
            }
        }
        if let Some(age) = self.max_age {
            if self.duplicate_window > age {
                return invalid(
                    "duplicate_window",
                    format!(
                        "{:?} is longer than max_age {age:?} (the server refuses this)",
                        self.duplicate_window
                    ),
                );
            }
        }
        if self.max_pending_acks == 0 || self.max_pending_acks > u32::MAX as usize {
            return invalid(
                "max_pending_acks",
                format!("{} is not between 1 and 2^32 - 1", self.max_pending_acks),
            );
        }
        Ok(())
    }
}

/// Checks one subject template: `{shard}` exactly once, and a literal subject around it
/// (non-empty dot-separated tokens without whitespace or wildcards).
fn check_template(template: &str) -> Result<(), &'static str> {
    if template.matches(SHARD_PLACEHOLDER).count() != 1 {
        return Err("must contain `{shard}` exactly once");
    }
    let subject = template.replace(SHARD_PLACEHOLDER, "0");
    if subject.split('.').any(|token| {
        token.is_empty()
            || token == "*"
            || token == ">"
            || token
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '>')
    }) {
        return Err("is not a literal subject (empty token, whitespace or wildcard)");
    }
    if subject.starts_with('$') {
        return Err("may not start with `$` (reserved for the server's own subjects)");
    }
    Ok(())
}

/// `url` with its secrets hidden: the one function every backend uses, re-exported here so
/// `net_adapter_jetstream::redact_url` keeps working.
pub use net_adapter::redact_url;

impl fmt::Debug for JetStreamAdapterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamAdapterConfig")
            .field("url", &redact_url(&self.url))
            .field("stream_name", &self.stream_name)
            .field("subjects", &self.subjects)
            .field("deliver_policy", &self.deliver_policy)
            .field("replicas", &self.replicas)
            .field("max_messages", &self.max_messages)
            .field("max_bytes", &self.max_bytes)
            .field("max_age", &self.max_age)
            .field("duplicate_window", &self.duplicate_window)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .field("max_pending_acks", &self.max_pending_acks)
            .field("read_path", &self.read_path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use net_adapter::AdapterError;

    fn base() -> JetStreamAdapterConfig {
        JetStreamAdapterConfig::new("nats://127.0.0.1:4222", "events")
    }

    /// Validates `config`; `Some(field)` expects an error naming that setting.
    fn check(config: JetStreamAdapterConfig, expected: Option<&str>) {
        match (config.validate(), expected) {
            (Ok(()), None) => {}
            (Err(e), Some(field)) => {
                assert_eq!((e.backend, e.field), ("jetstream", field), "{e}");
                let text = e.to_string();
                assert!(text.starts_with(&format!("invalid jetstream setting `{field}`: ")));
                assert!(AdapterError::from(e).is_fatal(), "{text}");
            }
            (got, want) => panic!("config {config:?}: got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn validation() {
        check(base(), None);
        check(
            base().max_messages(10).max_age(Duration::from_secs(600)),
            None,
        );
        check(base().subjects(["legacy.{shard}.in", "x.{shard}"]), None);
        check(JetStreamAdapterConfig::new("", "events"), Some("url"));
        check(
            JetStreamAdapterConfig::new("nats://h", ""),
            Some("stream_name"),
        );
        check(
            JetStreamAdapterConfig::new("nats://h", "a.b"),
            Some("stream_name"),
        );
        check(
            JetStreamAdapterConfig::new("nats://h", "a b"),
            Some("stream_name"),
        );
        check(
            JetStreamAdapterConfig::new("nats://h", "x".repeat(201)),
            Some("stream_name"),
        );
        check(base().subjects(["no.placeholder"]), Some("subjects"));
        check(base().subjects(["{shard}.{shard}"]), Some("subjects"));
        check(base().subjects(["a..{shard}"]), Some("subjects"));
        check(base().subjects(["a.*.{shard}"]), Some("subjects"));
        check(base().subjects(["a.{shard}.>"]), Some("subjects"));
        check(base().subjects(["a b.{shard}"]), Some("subjects"));
        check(base().subjects(["$JS.{shard}"]), Some("subjects"));
        check(
            base().subjects(["a.{shard}", "a.{shard}"]),
            Some("subjects"),
        );
        check(base().replicas(0), Some("replicas"));
        check(base().replicas(6), Some("replicas"));
        check(base().max_messages(0), Some("max_messages"));
        check(base().max_messages(u64::MAX), Some("max_messages"));
        check(base().max_bytes(0), Some("max_bytes"));
        check(base().max_age(Duration::ZERO), Some("max_age"));
        check(
            base().duplicate_window(Duration::ZERO),
            Some("duplicate_window"),
        );
        check(
            base().max_age(Duration::from_secs(60)),
            Some("duplicate_window"),
        );
        check(
            base().connect_timeout(Duration::ZERO),
            Some("connect_timeout"),
        );
        check(
            base().request_timeout(Duration::ZERO),
            Some("request_timeout"),
        );
        check(base().drain_timeout(Duration::ZERO), Some("drain_timeout"));
        check(base().max_pending_acks(0), Some("max_pending_acks"));
    }

    #[test]
    fn the_documented_shape_builds_with_defaults() {
        let config = JetStreamAdapterConfig {
            url: "nats://127.0.0.1:4222".into(),
            stream_name: "orders".into(),
            subjects: vec!["orders.in.{shard}".into()],
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        };
        check(config.clone(), None);
        assert_eq!(config.subjects_for(2), ["orders.in.2"]);
        check(JetStreamAdapterConfig::default(), None);
    }

    #[test]
    fn layout() {
        let config = base();
        assert_eq!(config.stream_for(7), "events_shard_7");
        assert_eq!(config.subjects_for(7), ["events.shard.7"]);
        assert_eq!(
            config.stream_for(u16::MAX),
            format!("events_shard_{}", u16::MAX)
        );
        let config = base().subjects(["in.{shard}", "legacy.{shard}.x"]);
        assert_eq!(config.subjects_for(3), ["in.3", "legacy.3.x"]);
    }

    #[test]
    fn urls_are_redacted() {
        for (url, want) in [
            ("nats://u:secret@host:4222", "nats://u:***@host:4222"),
            ("nats://host:4222", "nats://host:4222"),
            ("u:secret@host", "u:***@host"),
            ("nats://token@host/path@x", "nats://***@host/path@x"),
            ("nats://a@b:c@host", "nats://a@b:***@host"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
        let config = JetStreamAdapterConfig::new("nats://u:hunter2@h:1", "s");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn deliver_policy_maps_to_nats() {
        use async_nats::jetstream::consumer::DeliverPolicy as Nats;
        assert_eq!(DeliverPolicy::All.to_nats(), Nats::All);
        assert_eq!(
            DeliverPolicy::ByStartSequence(0).to_nats(),
            Nats::ByStartSequence { start_sequence: 1 }
        );
        assert_eq!(DeliverPolicy::New.to_nats(), Nats::New);
        assert_eq!(DeliverPolicy::Last.to_nats(), Nats::Last);
    }
}
