//! The adapter classes passed as `EventBus(adapter=...)`: each builds a `net_sdk::AdapterConfig`.

use crate::errors::ConfigError;
use net_sdk::mesh::{EntityKeypair, NetAdapterConfig};
use net_sdk::{AdapterConfig, FsyncPolicy, JetStreamAdapterConfig, LogAdapterConfig};
use net_sdk::{MemoryAdapterConfig, RedisAdapterConfig};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::time::Duration;

/// Adds the classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Noop>()?;
    m.add_class::<Memory>()?;
    m.add_class::<Log>()?;
    m.add_class::<Redis>()?;
    m.add_class::<JetStream>()?;
    m.add_class::<Mesh>()?;
    Ok(())
}

/// The configuration an adapter object stands for.
pub(crate) fn adapter_config(adapter: &Bound<'_, PyAny>) -> PyResult<AdapterConfig> {
    if let Ok(a) = adapter.cast::<Noop>() {
        return Ok(a.get().config.clone());
    }
    if let Ok(a) = adapter.cast::<Memory>() {
        return Ok(a.get().config.clone());
    }
    if let Ok(a) = adapter.cast::<Log>() {
        return Ok(a.get().config.clone());
    }
    if let Ok(a) = adapter.cast::<Redis>() {
        return Ok(a.get().config.clone());
    }
    if let Ok(a) = adapter.cast::<JetStream>() {
        return Ok(a.get().config.clone());
    }
    if let Ok(a) = adapter.cast::<Mesh>() {
        return Ok(a.get().config.clone());
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "adapter must be netbus.Noop, Memory, Log, Redis, JetStream or Mesh, not {}",
        adapter.get_type().name()?
    )))
}

/// Discards every event (polls return nothing).
#[pyclass(frozen, module = "netbus")]
pub(crate) struct Noop {
    config: AdapterConfig,
}

#[pymethods]
impl Noop {
    #[new]
    fn new() -> Self {
        Self {
            config: AdapterConfig::noop(),
        }
    }

    fn __repr__(&self) -> &'static str {
        "Noop()"
    }
}

/// Events kept in memory, per shard, the newest `max_events_per_shard` of each.
#[pyclass(frozen, module = "netbus")]
pub(crate) struct Memory {
    config: AdapterConfig,
    max_events_per_shard: usize,
}

#[pymethods]
impl Memory {
    #[new]
    #[pyo3(signature = (*, max_events_per_shard = 1_000_000))]
    fn new(max_events_per_shard: usize) -> Self {
        Self {
            config: AdapterConfig::memory_with(
                MemoryAdapterConfig::default().max_events_per_shard(max_events_per_shard),
            ),
            max_events_per_shard,
        }
    }

    fn __repr__(&self) -> String {
        format!("Memory(max_events_per_shard={})", self.max_events_per_shard)
    }
}

/// The embedded durable log: segment files per shard in `dir` (created when missing).
///
/// `fsync` is `"every_batch"` (the default: a flushed batch survives a power loss),
/// `"never"`, or a number of milliseconds between background syncs.
#[pyclass(frozen, module = "netbus")]
pub(crate) struct Log {
    config: AdapterConfig,
    dir: PathBuf,
}

#[pymethods]
impl Log {
    #[new]
    #[pyo3(signature = (dir, *, fsync = None, segment_bytes = None))]
    fn new(
        dir: PathBuf,
        fsync: Option<&Bound<'_, PyAny>>,
        segment_bytes: Option<u64>,
    ) -> PyResult<Self> {
        let mut config = LogAdapterConfig::new(dir.clone());
        if let Some(fsync) = fsync {
            config.fsync = if let Ok(ms) = fsync.extract::<u64>() {
                FsyncPolicy::Interval(Duration::from_millis(ms))
            } else {
                match fsync.extract::<String>()?.as_str() {
                    "every_batch" => FsyncPolicy::EveryBatch,
                    "never" => FsyncPolicy::Never,
                    other => {
                        return Err(ConfigError::new_err(format!(
                        "fsync must be \"every_batch\", \"never\" or milliseconds, not {other:?}"
                    )))
                    }
                }
            };
        }
        if let Some(n) = segment_bytes {
            config = config.segment_bytes(n);
        }
        Ok(Self {
            config: AdapterConfig::log_with(config),
            dir,
        })
    }

    fn __repr__(&self) -> String {
        format!("Log({:?})", self.dir)
    }
}

/// Redis Streams: one stream per shard, named after `stream`.
#[pyclass(frozen, module = "netbus")]
pub(crate) struct Redis {
    config: AdapterConfig,
    stream: String,
}

#[pymethods]
impl Redis {
    #[new]
    #[pyo3(signature = (url, stream, *, max_len = None))]
    fn new(url: String, stream: String, max_len: Option<usize>) -> Self {
        let mut config = RedisAdapterConfig::new(url, stream.clone());
        if let Some(n) = max_len {
            config = config.max_len(n);
        }
        Self {
            config: AdapterConfig::redis(config),
            stream,
        }
    }

    fn __repr__(&self) -> String {
        format!("Redis(stream={:?})", self.stream)
    }
}

/// NATS JetStream: one stream per shard, named after `stream`.
#[pyclass(frozen, module = "netbus")]
pub(crate) struct JetStream {
    config: AdapterConfig,
    stream: String,
}

#[pymethods]
impl JetStream {
    #[new]
    #[pyo3(signature = (url, stream))]
    fn new(url: String, stream: String) -> Self {
        Self {
            config: AdapterConfig::jetstream(JetStreamAdapterConfig::new(url, stream.clone())),
            stream,
        }
    }

    fn __repr__(&self) -> String {
        format!("JetStream(stream={:?})", self.stream)
    }
}

/// The encrypted mesh: batches go to the peer nodes that store their shard.
///
/// `peers` are `host:port` addresses to dial; `listen` an address to accept peers on;
/// `psk_file` holds the mesh's pre-shared key (64 hex digits, as `net keygen --psk` writes);
/// `identity` is a key file written by `net keygen` (default: a fresh identity per bus).
#[pyclass(frozen, module = "netbus")]
pub(crate) struct Mesh {
    config: AdapterConfig,
    peers: Vec<String>,
}

#[pymethods]
impl Mesh {
    #[new]
    #[pyo3(signature = (*, peers = Vec::new(), listen = None, psk_file = None, identity = None, request_timeout_ms = None))]
    fn new(
        peers: Vec<String>,
        listen: Option<String>,
        psk_file: Option<PathBuf>,
        identity: Option<PathBuf>,
        request_timeout_ms: Option<u64>,
    ) -> PyResult<Self> {
        let mut config = NetAdapterConfig::default();
        for peer in &peers {
            config = config.peer(peer);
        }
        if let Some(addr) = listen {
            config = config.listen(addr);
        }
        if let Some(path) = psk_file {
            config = config.psk(read_psk(&path)?);
        }
        if let Some(path) = identity {
            let keypair = EntityKeypair::load(&path)
                .map_err(|e| ConfigError::new_err(format!("identity {}: {e}", path.display())))?;
            config = config.keypair(keypair);
        }
        if let Some(ms) = request_timeout_ms {
            config = config.request_timeout(Duration::from_millis(ms));
        }
        config
            .validate()
            .map_err(|e| ConfigError::new_err(format!("invalid mesh setting: {e}")))?;
        Ok(Self {
            config: AdapterConfig::net_with(config),
            peers,
        })
    }

    fn __repr__(&self) -> String {
        format!("Mesh(peers={:?})", self.peers)
    }
}

/// Reads a pre-shared key file: 64 hex digits, surrounding whitespace ignored.
fn read_psk(path: &std::path::Path) -> PyResult<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new_err(format!("psk file {}: {e}", path.display())))?;
    let hex = text.trim();
    let bad = || {
        ConfigError::new_err(format!(
            "psk file {}: expected 64 hex digits",
            path.display()
        ))
    };
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(key)
}
