//! The `adapter` setting of `EventBus.create`: `{ type: 'memory' | 'log' | 'redis' |
//! 'jetstream' | 'mesh' | 'noop', ... }` as a `net_sdk::AdapterConfig`.

use crate::errors::{coded, invalid_arg, CONFIG};
use napi::bindgen_prelude::Either;
use napi_derive::napi;
use net_sdk::mesh::{EntityKeypair, NetAdapterConfig};
use net_sdk::{AdapterConfig, FsyncPolicy, JetStreamAdapterConfig, LogAdapterConfig};
use net_sdk::{MemoryAdapterConfig, RedisAdapterConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the bus keeps its events. `type` picks the backend; the other fields are that
/// backend's settings.
#[napi(object)]
#[derive(Default)]
pub struct AdapterOptions {
    /// `memory` (the default), `log`, `redis`, `jetstream`, `mesh` or `noop`.
    #[napi(
        js_name = "type",
        ts_type = "'memory' | 'log' | 'redis' | 'jetstream' | 'mesh' | 'noop'"
    )]
    pub kind: String,
    /// memory: the newest events kept per shard (default 1,000,000).
    pub max_events_per_shard: Option<u32>,
    /// log: the directory of the segment files (created when missing).
    pub dir: Option<String>,
    /// log: `'every_batch'` (default), `'never'`, or milliseconds between background syncs.
    pub fsync: Option<Either<String, u32>>,
    /// log: the size at which a segment file is closed and a new one started.
    pub segment_bytes: Option<i64>,
    /// redis, jetstream: the server's URL.
    pub url: Option<String>,
    /// redis, jetstream: the stream name the per-shard streams are named after.
    pub stream: Option<String>,
    /// redis: the approximate length each stream is trimmed to.
    pub max_len: Option<u32>,
    /// mesh: `host:port` addresses of the nodes to dial.
    pub peers: Option<Vec<String>>,
    /// mesh: an address to accept peers on.
    pub listen: Option<String>,
    /// mesh: a file holding the mesh's pre-shared key (64 hex digits, as `net keygen --psk`
    /// writes it).
    pub psk_file: Option<String>,
    /// mesh: a key file written by `net keygen` (default: a fresh identity per bus).
    pub identity: Option<String>,
    /// mesh: how long a request to a peer may take.
    pub request_timeout_ms: Option<u32>,
}

/// A required setting of the adapter.
fn required<T: Clone>(value: &Option<T>, adapter: &str, name: &str) -> napi::Result<T> {
    value
        .clone()
        .ok_or_else(|| invalid_arg(format!("the {adapter} adapter needs `{name}`")))
}

/// The configuration `options` stand for.
pub(crate) fn adapter_config(options: &AdapterOptions) -> napi::Result<AdapterConfig> {
    match options.kind.as_str() {
        "noop" => Ok(AdapterConfig::noop()),
        "memory" => {
            let mut config = MemoryAdapterConfig::default();
            if let Some(n) = options.max_events_per_shard {
                config = config.max_events_per_shard(n as usize);
            }
            Ok(AdapterConfig::memory_with(config))
        }
        "log" => {
            let dir = required(&options.dir, "log", "dir")?;
            let mut config = LogAdapterConfig::new(PathBuf::from(dir));
            if let Some(fsync) = &options.fsync {
                config.fsync = match fsync {
                    Either::B(ms) => FsyncPolicy::Interval(Duration::from_millis(u64::from(*ms))),
                    Either::A(name) => match name.as_str() {
                        "every_batch" => FsyncPolicy::EveryBatch,
                        "never" => FsyncPolicy::Never,
                        other => {
                            return Err(invalid_arg(format!(
                                "fsync must be 'every_batch', 'never' or milliseconds, not {other:?}"
                            )))
                        }
                    },
                };
            }
            if let Some(n) = options.segment_bytes {
                let n = u64::try_from(n)
                    .map_err(|_| invalid_arg("segmentBytes must not be negative"))?;
                config = config.segment_bytes(n);
            }
            Ok(AdapterConfig::log_with(config))
        }
        "redis" => {
            let url = required(&options.url, "redis", "url")?;
            let stream = required(&options.stream, "redis", "stream")?;
            let mut config = RedisAdapterConfig::new(url, stream);
            if let Some(n) = options.max_len {
                config = config.max_len(n as usize);
            }
            Ok(AdapterConfig::redis(config))
        }
        "jetstream" => {
            let url = required(&options.url, "jetstream", "url")?;
            let stream = required(&options.stream, "jetstream", "stream")?;
            Ok(AdapterConfig::jetstream(JetStreamAdapterConfig::new(
                url, stream,
            )))
        }
        "mesh" => mesh_config(options),
        other => Err(invalid_arg(format!(
            "adapter.type must be 'memory', 'log', 'redis', 'jetstream', 'mesh' or 'noop', not {other:?}"
        ))),
    }
}

/// The mesh adapter's configuration.
fn mesh_config(options: &AdapterOptions) -> napi::Result<AdapterConfig> {
    let mut config = NetAdapterConfig::default();
    for peer in options.peers.iter().flatten() {
        config = config.peer(peer);
    }
    if let Some(addr) = &options.listen {
        config = config.listen(addr);
    }
    if let Some(path) = &options.psk_file {
        config = config.psk(read_psk(Path::new(path))?);
    }
    if let Some(path) = &options.identity {
        let keypair = EntityKeypair::load(Path::new(path))
            .map_err(|e| coded(CONFIG, format!("identity {path}: {e}")))?;
        config = config.keypair(keypair);
    }
    if let Some(ms) = options.request_timeout_ms {
        config = config.request_timeout(Duration::from_millis(u64::from(ms)));
    }
    config
        .validate()
        .map_err(|e| coded(CONFIG, format!("invalid mesh setting: {e}")))?;
    Ok(AdapterConfig::net_with(config))
}

/// Reads a pre-shared key file: 64 hex digits, surrounding whitespace ignored.
fn read_psk(path: &Path) -> napi::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| coded(CONFIG, format!("psk file {}: {e}", path.display())))?;
    let hex = text.trim();
    let bad = || {
        coded(
            CONFIG,
            format!("psk file {}: expected 64 hex digits", path.display()),
        )
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
