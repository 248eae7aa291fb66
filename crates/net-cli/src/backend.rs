//! Where `produce` and `consume` store and read events: the backend flags they share, and the
//! bus each of them builds.
//!
//! With no `--adapter`, events go to the embedded log in `./net-data`: `net produce` then
//! `net consume` work on a machine with no server at all. Only one process may have a log
//! directory open; a second one fails at start with one line and status 1.

use crate::exit::usage;
use crate::mesh_args::MeshArgs;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use net_sdk::{
    AdapterConfig, AdapterInstance, ConfigError, ConsumeRequest, ConsumerError, EventBus,
    EventBusConfigBuilder, FsyncPolicy, JetStreamAdapterConfig, LogAdapterConfig,
    RedisAdapterConfig,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The log directory of `produce`, `consume`, `tail` and `node` when `--dir` is not given.
pub(crate) const DEFAULT_LOG_DIR: &str = "net-data";

/// The longest `--fsync interval-ms=N`: one day, as the log allows.
const MAX_FSYNC_INTERVAL_MS: u64 = 86_400_000;

/// A backend that keeps events across processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StoreKind {
    /// The embedded durable log in --dir: segment files on local disk, no server needed.
    Log,
    /// Redis Streams: one stream per shard, named STREAM:shard:N (N = 0, 1, ...).
    Redis,
    /// NATS JetStream: one stream per shard, named STREAM_shard_N (N = 0, 1, ...).
    Jetstream,
    /// The encrypted mesh: events are stored by the `net node`s given with --peer.
    Net,
}

impl StoreKind {
    /// The URL used when `--url` is not given.
    pub(crate) fn default_url(self) -> &'static str {
        match self {
            StoreKind::Redis => "redis://127.0.0.1:6379",
            StoreKind::Jetstream => "nats://127.0.0.1:4222",
            StoreKind::Log | StoreKind::Net => "",
        }
    }
}

/// Parses `--fsync`: `batch`, `never` or `interval-ms=N`.
fn parse_fsync(text: &str) -> Result<FsyncPolicy, String> {
    match text {
        "batch" => Ok(FsyncPolicy::EveryBatch),
        "never" => Ok(FsyncPolicy::Never),
        _ => {
            let bad = || {
                format!(
                    "expected batch, never or interval-ms=N with N from 1 to \
                     {MAX_FSYNC_INTERVAL_MS}"
                )
            };
            let ms = text
                .strip_prefix("interval-ms=")
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(bad)?;
            match ms.parse::<u64>() {
                Ok(ms @ 1..=MAX_FSYNC_INTERVAL_MS) => {
                    Ok(FsyncPolicy::Interval(Duration::from_millis(ms)))
                }
                _ => Err(bad()),
            }
        }
    }
}

/// The flags of the embedded log.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Log (--adapter log, net node --storage log)")]
pub(crate) struct LogArgs {
    /// Directory of the log (created when missing) [default: ./net-data; for `net bench`, a
    /// fresh temporary directory removed afterwards]. One process at a time may use it.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// When the log syncs to disk: `batch` (before each batch is acknowledged: survives a
    /// power loss), `interval-ms=N` (every N ms: a power loss may take the last N ms) or
    /// `never` (the OS decides). A killed process loses nothing acknowledged under any of
    /// them [default: batch].
    #[arg(long, value_name = "POLICY", value_parser = parse_fsync)]
    pub(crate) fsync: Option<FsyncPolicy>,
}

impl LogArgs {
    /// The log settings these flags describe, in `dir` unless `--dir` names another.
    pub(crate) fn config(&self, dir: &Path) -> LogAdapterConfig {
        let dir = self.dir.as_deref().unwrap_or(dir);
        LogAdapterConfig::new(dir).fsync(self.fsync.unwrap_or_default())
    }

    /// Refuses the log flags next to a backend that is not the log (`what` names it).
    pub(crate) fn refuse_unless_log(&self, is_log: bool, what: &str) -> Result<()> {
        if is_log {
            return Ok(());
        }
        let flag = match (&self.dir, &self.fsync) {
            (Some(_), _) => "--dir",
            (None, Some(_)) => "--fsync",
            (None, None) => return Ok(()),
        };
        Err(usage(format!(
            "{flag} applies to the log only, not to {what}"
        )))
    }
}

/// The flags that name a backend.
#[derive(Clone, Debug, Args)]
pub(crate) struct Backend {
    /// Backend that stores the events: by default the embedded log in ./net-data (see --dir),
    /// which needs no server. The in-memory adapter is not offered here: it lives and dies
    /// with one process, so nothing could be read back by another `net` command.
    #[arg(long, value_enum, default_value = "log")]
    pub(crate) adapter: StoreKind,
    /// Server URL of redis or jetstream [default: redis://127.0.0.1:6379 for redis,
    /// nats://127.0.0.1:4222 for jetstream]. A password in it never appears in messages.
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// Name (prefix) of the per-shard streams; producers and consumers of the same events
    /// must use the same name.
    #[arg(long, default_value = "net")]
    pub(crate) stream: String,
    /// Number of shards. Producers and consumers of the same stream must agree: the first
    /// command on a stream records its count in the backend, and one with another count
    /// exits with status 2 (the mesh keeps no such record).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) shards: u16,
    #[command(flatten)]
    pub(crate) log: LogArgs,
    #[command(flatten)]
    pub(crate) mesh: MeshArgs,
}

impl Backend {
    /// The URL in force.
    pub(crate) fn url(&self) -> &str {
        self.url
            .as_deref()
            .unwrap_or_else(|| self.adapter.default_url())
    }

    /// Starts a bus on this backend, with `configure` applied to its settings, and checks
    /// the backend answers.
    pub(crate) async fn open_bus(
        &self,
        configure: impl FnOnce(EventBusConfigBuilder) -> EventBusConfigBuilder,
    ) -> Result<EventBus> {
        let what = self.describe();
        self.log
            .refuse_unless_log(self.adapter == StoreKind::Log, &what)?;
        if self.adapter == StoreKind::Log && self.url.is_some() {
            return Err(usage(
                "--url applies to redis and jetstream; the log is located with --dir",
            ));
        }
        let builder = net_sdk::EventBusConfig::builder().shards(self.shards);
        let builder = match self.adapter {
            StoreKind::Log => builder.adapter(AdapterConfig::log_with(
                self.log.config(Path::new(DEFAULT_LOG_DIR)),
            )),
            StoreKind::Net => {
                let adapter = self.mesh.connect(self.shards).await?;
                builder.adapter(AdapterInstance::new(adapter))
            }
            kind => builder.adapter(adapter_config(kind, self.url(), &self.stream)?),
        };
        let bus = start_bus(configure(builder), &what).await?;
        if self.adapter != StoreKind::Net {
            check_reachable(&bus, &what).await?;
        }
        Ok(bus)
    }

    /// A short description for messages, without any password.
    pub(crate) fn describe(&self) -> String {
        let url = net_sdk::redis::redact_url(self.url());
        match self.adapter {
            StoreKind::Log => {
                let dir = self
                    .log
                    .dir
                    .as_deref()
                    .unwrap_or(Path::new(DEFAULT_LOG_DIR));
                format!("the log in {}", dir.display())
            }
            StoreKind::Redis => format!("redis at {url}"),
            StoreKind::Jetstream => format!("jetstream at {url}"),
            StoreKind::Net => self.mesh.describe(),
        }
    }
}

/// The adapter configuration of `kind` at `url` under `stream`, checked without a server.
pub(crate) fn adapter_config(kind: StoreKind, url: &str, stream: &str) -> Result<AdapterConfig> {
    match kind {
        StoreKind::Redis => {
            let config = RedisAdapterConfig::new(url, stream);
            config.validate().map_err(|e| usage(e.to_string()))?;
            Ok(AdapterConfig::redis(config))
        }
        StoreKind::Net => Err(usage("the mesh is configured with --peer, not a URL")),
        StoreKind::Log => Err(usage("the log is configured with --dir, not a URL")),
        StoreKind::Jetstream => {
            let config = JetStreamAdapterConfig::new(url, stream);
            config.validate().map_err(|e| usage(e.to_string()))?;
            Ok(AdapterConfig::jetstream(config))
        }
    }
}

/// Builds a bus, turning bad settings into usage errors.
pub(crate) async fn start_bus(builder: EventBusConfigBuilder, what: &str) -> Result<EventBus> {
    let config = builder.build().map_err(config_error)?;
    EventBus::new(config)
        .await
        .map_err(config_error)
        .with_context(|| format!("cannot start {what}"))
}

/// Bad settings are usage errors (status 2); anything else, such as a log directory held by
/// another process, is a failure (status 1).
pub(crate) fn config_error(err: ConfigError) -> anyhow::Error {
    match err {
        ConfigError::Invalid { .. } | ConfigError::LayoutMismatch { .. } => usage(err.to_string()),
        // The log's own message says it all ("log directory X is in use by another process").
        ConfigError::Adapter(net_sdk::AdapterError::Fatal(text)) if text.starts_with("log: ") => {
            anyhow::anyhow!("{}", &text["log: ".len()..])
        }
        other => anyhow::Error::new(other),
    }
}

/// Asks every shard for nothing, so an unreachable backend fails now with a clear message
/// rather than after the retry budget of the first batch.
pub(crate) async fn check_reachable(bus: &EventBus, what: &str) -> Result<()> {
    match bus.poll(ConsumeRequest::new(0)).await {
        Ok(_) => Ok(()),
        Err(ConsumerError::Adapter(e)) => {
            Err(anyhow::Error::new(e).context(format!("cannot reach {what}")))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read from {what}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_broker_settings_are_usage_errors_in_one_shape() {
        for (kind, url, stream, expected) in [
            (
                StoreKind::Redis,
                "redis://127.0.0.1:6379",
                "two words",
                "invalid redis setting `stream_name`: ",
            ),
            (
                StoreKind::Jetstream,
                "nats://127.0.0.1:4222",
                "has.dot",
                "invalid jetstream setting `stream_name`: ",
            ),
        ] {
            let err = adapter_config(kind, url, stream).expect_err("a bad stream name");
            let usage = err
                .downcast_ref::<crate::exit::UsageError>()
                .expect("a usage error");
            assert!(usage.0.starts_with(expected), "{kind:?}: {}", usage.0);
        }
    }

    fn check(text: &str, expected: Option<FsyncPolicy>) {
        assert_eq!(parse_fsync(text).ok(), expected, "{text}");
    }

    #[test]
    fn fsync_policies_parse() {
        check("batch", Some(FsyncPolicy::EveryBatch));
        check("never", Some(FsyncPolicy::Never));
        check(
            "interval-ms=250",
            Some(FsyncPolicy::Interval(Duration::from_millis(250))),
        );
        check(
            "interval-ms=86400000",
            Some(FsyncPolicy::Interval(Duration::from_secs(86_400))),
        );
        for bad in [
            "",
            "Batch",
            "interval",
            "interval-ms=",
            "interval-ms=0",
            "interval-ms=86400001",
            "interval-ms=-1",
            "interval-ms=+5",
            "interval-ms=1.5",
            "interval-ms=18446744073709551616",
        ] {
            check(bad, None);
        }
    }
}
