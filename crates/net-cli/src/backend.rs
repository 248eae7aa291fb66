//! Where `produce` and `consume` store and read events: the backend flags they share, and the
//! bus each of them builds.

use crate::exit::usage;
use crate::mesh::MeshArgs;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use net_sdk::{
    AdapterConfig, AdapterInstance, ConfigError, ConsumeRequest, ConsumerError, EventBus,
    EventBusConfigBuilder, JetStreamAdapterConfig, RedisAdapterConfig,
};

/// A backend that keeps events across processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StoreKind {
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
            StoreKind::Net => "",
        }
    }
}

/// The flags that name a backend.
#[derive(Clone, Debug, Args)]
pub(crate) struct Backend {
    /// Backend that stores the events. The in-memory adapter is not offered here: it lives and
    /// dies with one process, so nothing could be read back by another `net` command.
    #[arg(long, value_enum)]
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
        let builder = net_sdk::EventBusConfig::builder().shards(self.shards);
        let builder = match self.adapter {
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
        StoreKind::Jetstream => {
            let config = JetStreamAdapterConfig::new(url, stream);
            config.validate().map_err(|e| {
                let text = e.to_string();
                usage(text.strip_prefix("fatal adapter error: ").unwrap_or(&text))
            })?;
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

fn config_error(err: ConfigError) -> anyhow::Error {
    match err {
        ConfigError::Invalid { .. } | ConfigError::LayoutMismatch { .. } => usage(err.to_string()),
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
