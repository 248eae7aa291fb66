//! [`AdapterConfig`]: which backend a bus dispatches to.

use async_trait::async_trait;
use net_adapter::{Adapter, MemoryAdapterConfig, NoopAdapter};
use net_core::{AdapterFactory, AdapterInstance, ConfigError};
use std::sync::Arc;

/// The backend of a bus. Pass it to `EventBusConfig::builder().adapter(..)`.
///
/// Broker and mesh backends are added behind cargo features as they ship.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum AdapterConfig {
    /// Discards every event (the default).
    #[default]
    Noop,
    /// Keeps events in memory, per shard, with retention by count.
    Memory(MemoryAdapterConfig),
    /// Redis Streams, a stream per shard (feature `redis`).
    #[cfg(feature = "redis")]
    Redis(net_adapter_redis::RedisAdapterConfig),
    /// The embedded durable log: segment files per shard in a local directory (feature
    /// `log`, on by default).
    #[cfg(feature = "log")]
    Log(net_adapter_log::LogAdapterConfig),
    /// NATS JetStream, a stream per shard (feature `jetstream`).
    #[cfg(feature = "jetstream")]
    JetStream(net_adapter_jetstream::JetStreamAdapterConfig),
    /// The encrypted mesh: batches go to peer nodes (feature `net`).
    #[cfg(feature = "net")]
    Net(Box<net_mesh::NetAdapterConfig>),
    /// Any other adapter, built by a factory of your own.
    Custom(Arc<dyn AdapterFactory>),
}

impl AdapterConfig {
    /// The no-op adapter.
    pub fn noop() -> Self {
        AdapterConfig::Noop
    }

    /// The in-memory adapter with default retention (1,000,000 events per shard).
    pub fn memory() -> Self {
        AdapterConfig::Memory(MemoryAdapterConfig::default())
    }

    /// The in-memory adapter with the given settings.
    pub fn memory_with(config: MemoryAdapterConfig) -> Self {
        AdapterConfig::Memory(config)
    }

    /// The embedded durable log in `dir` (created when missing), with its defaults: 64 MiB
    /// segments, an `fdatasync` before each batch is acknowledged, no retention limit
    /// (feature `log`).
    ///
    /// Only one process may have a directory open; a second bus on it fails in
    /// `EventBus::new` with the log's "in use by another process" error.
    #[cfg(feature = "log")]
    pub fn log(dir: impl Into<std::path::PathBuf>) -> Self {
        AdapterConfig::Log(net_adapter_log::LogAdapterConfig::new(dir))
    }

    /// The embedded durable log with the given settings (segment size, fsync policy,
    /// retention; feature `log`).
    #[cfg(feature = "log")]
    pub fn log_with(config: net_adapter_log::LogAdapterConfig) -> Self {
        AdapterConfig::Log(config)
    }

    /// The Redis Streams adapter with the given settings (feature `redis`).
    #[cfg(feature = "redis")]
    pub fn redis(config: net_adapter_redis::RedisAdapterConfig) -> Self {
        AdapterConfig::Redis(config)
    }

    /// The NATS JetStream adapter with the given settings (feature `jetstream`).
    #[cfg(feature = "jetstream")]
    pub fn jetstream(config: net_adapter_jetstream::JetStreamAdapterConfig) -> Self {
        AdapterConfig::JetStream(config)
    }

    /// The mesh adapter with default settings; chain [`AdapterConfig::listen`] and
    /// [`AdapterConfig::peer`] (feature `net`).
    #[cfg(feature = "net")]
    pub fn net() -> Self {
        AdapterConfig::Net(Box::default())
    }

    /// The mesh adapter with the given settings (feature `net`).
    #[cfg(feature = "net")]
    pub fn net_with(config: net_mesh::NetAdapterConfig) -> Self {
        AdapterConfig::Net(Box::new(config))
    }

    /// Sets the mesh listen address (`"0.0.0.0:7777"`). On a variant other than `Net` this
    /// starts a default mesh configuration (feature `net`).
    #[cfg(feature = "net")]
    pub fn listen(self, addr: impl AsRef<str>) -> Self {
        AdapterConfig::Net(Box::new(self.into_net().listen(addr)))
    }

    /// Adds a mesh peer to dial (`"10.0.0.2:7777"`). On a variant other than `Net` this
    /// starts a default mesh configuration (feature `net`).
    #[cfg(feature = "net")]
    pub fn peer(self, addr: impl AsRef<str>) -> Self {
        AdapterConfig::Net(Box::new(self.into_net().peer(addr)))
    }

    #[cfg(feature = "net")]
    fn into_net(self) -> net_mesh::NetAdapterConfig {
        match self {
            AdapterConfig::Net(config) => *config,
            _ => net_mesh::NetAdapterConfig::default(),
        }
    }

    /// An adapter value you built yourself (wrap it in an `Arc` to keep a handle on it).
    pub fn custom(adapter: impl Adapter + 'static) -> Self {
        AdapterConfig::Custom(Arc::new(AdapterInstance::new(adapter)))
    }
}

#[async_trait]
impl AdapterFactory for AdapterConfig {
    async fn build(&self) -> Result<Box<dyn Adapter>, ConfigError> {
        match self {
            AdapterConfig::Noop => Ok(Box::new(NoopAdapter::new())),
            AdapterConfig::Memory(config) => config.build().await,
            #[cfg(feature = "redis")]
            AdapterConfig::Redis(config) => net_adapter_redis::RedisAdapter::new(config.clone())
                .map(|adapter| Box::new(adapter) as Box<dyn Adapter>)
                .map_err(|err| ConfigError::Invalid {
                    field: "adapter",
                    reason: err.to_string(),
                }),
            #[cfg(feature = "log")]
            AdapterConfig::Log(config) => open_log(config.clone()).await,
            #[cfg(feature = "jetstream")]
            AdapterConfig::JetStream(config) => {
                // A bad setting reaches the bus as the fatal adapter error it always was.
                config.validate().map_err(net_adapter::AdapterError::from)?;
                Ok(Box::new(net_adapter_jetstream::JetStreamAdapter::new(
                    config.clone(),
                )))
            }
            #[cfg(feature = "net")]
            AdapterConfig::Net(config) => net_mesh::NetAdapter::new((**config).clone())
                .map(|adapter| Box::new(adapter) as Box<dyn Adapter>)
                .map_err(|err| ConfigError::Invalid {
                    field: "adapter",
                    reason: err.to_string(),
                }),
            AdapterConfig::Custom(factory) => factory.build().await,
        }
    }
}

/// Opens the log off the async threads (opening recovers every shard, which reads files):
/// bad settings are [`ConfigError::Invalid`], anything else (a locked directory, a
/// read-only one, a manifest of another format) is [`ConfigError::Adapter`].
#[cfg(feature = "log")]
async fn open_log(
    config: net_adapter_log::LogAdapterConfig,
) -> Result<Box<dyn Adapter>, ConfigError> {
    use net_adapter_log::{LogAdapter, LogError};
    let opened = tokio::task::spawn_blocking(move || LogAdapter::open(config))
        .await
        .map_err(|e| {
            ConfigError::Adapter(net_adapter::AdapterError::Fatal(format!(
                "log: the task opening the log failed: {e}"
            )))
        })?;
    match opened {
        Ok(adapter) => Ok(Box::new(adapter)),
        Err(LogError::Config(reason)) => Err(ConfigError::Invalid {
            field: "adapter",
            reason,
        }),
        Err(e) => Err(ConfigError::Adapter(e.into_adapter_error())),
    }
}
