//! `net keygen` and `net node` (the mesh flags they share with `produce` and `consume` under
//! `--adapter net` are in `mesh_args`).
//!
//! A node listens for peers, stores what they send it (in memory, in the embedded log on local
//! disk, Redis, JetStream, or by forwarding it to the nodes it dials) and answers their polls. Every connection is a Noise
//! session bound to the nodes' ed25519 identities; with a pre-shared key, peers without it
//! cannot complete the handshake.

use crate::backend::{adapter_config, config_error, LogArgs, StoreKind, DEFAULT_LOG_DIR};
use crate::exit::usage;
use crate::mesh_args::{new_adapter, MeshArgs};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use net_mesh::{EntityKeypair, NetAdapter, ShardRange};
use net_sdk::{Adapter, AdapterConfig, AdapterFactory, MemoryAdapter, MemoryAdapterConfig};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The most events per shard `--retain` may keep in memory.
const MAX_RETAIN: u64 = 100_000_000;
/// The longest `--storage-retry-window`, in seconds (one hour).
const MAX_STORAGE_RETRY_WINDOW: u64 = 3_600;

/// Flags of `net keygen`.
#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the new identity (created with mode 0600).
    #[arg(long, short = 'o', default_value = "node.key")]
    out: PathBuf,
    /// Replace an existing identity file (its node id is lost).
    #[arg(long)]
    force: bool,
    /// Also write a new random pre-shared key to this file (64 hex digits, mode 0600); give
    /// the same file to every node of the mesh with --psk-file.
    #[arg(long)]
    psk: Option<PathBuf>,
}

/// Writes `bytes` to `path` with mode 0600 (on Unix), through a temporary file renamed into
/// place.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// `path` made absolute with its directory resolved (the file itself need not exist), so
/// two spellings of one file compare equal.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(full) = path.canonicalize() {
        return full;
    }
    let name = path.file_name().map(PathBuf::from).unwrap_or_default();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    dir.canonicalize().unwrap_or(dir).join(name)
}

/// Runs `net keygen`.
pub(crate) fn keygen(args: KeygenArgs) -> Result<ExitCode> {
    if let Some(psk) = &args.psk {
        if resolved(psk) == resolved(&args.out) {
            return Err(usage(format!(
                "--psk {} is the identity file itself: give the pre-shared key its own file",
                psk.display()
            )));
        }
    }
    for path in std::iter::once(&args.out).chain(args.psk.as_ref()) {
        if path.is_dir() {
            return Err(usage(format!("{} is a directory", path.display())));
        }
        if path.exists() && !args.force {
            return Err(usage(format!(
                "{} already exists (use --force to replace it)",
                path.display()
            )));
        }
    }
    let keypair = EntityKeypair::generate().context("generate a keypair")?;
    keypair
        .save(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    if let Some(path) = &args.psk {
        let mut psk = [0u8; 32];
        getrandom::fill(&mut psk).map_err(|e| anyhow::anyhow!("generate a pre-shared key: {e}"))?;
        let hex: String = psk.iter().map(|b| format!("{b:02x}")).collect();
        write_private(path, format!("{hex}\n").as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{}", keypair.node_id());
    Ok(ExitCode::SUCCESS)
}

/// Where a node keeps what peers send it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StorageKind {
    /// In this process's memory (lost when the node stops).
    Memory,
    /// The embedded durable log in --dir (default ./net-data): kept on local disk, synced as
    /// --fsync says before a batch is acknowledged.
    Log,
    /// Redis Streams at --storage-url.
    Redis,
    /// NATS JetStream at --storage-url.
    Jetstream,
    /// Nowhere here: every batch is forwarded to the --peer nodes, and acknowledged once one
    /// of them stored it (a relay).
    Forward,
}

impl StorageKind {
    /// The name the flag takes.
    fn name(self) -> &'static str {
        match self {
            StorageKind::Memory => "memory",
            StorageKind::Log => "log",
            StorageKind::Redis => "redis",
            StorageKind::Jetstream => "jetstream",
            StorageKind::Forward => "forward",
        }
    }
}

/// Flags of `net node`.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// Address to accept peers on, e.g. 0.0.0.0:7777 (port 0 picks a free one; the address
    /// is printed on standard output).
    #[arg(long, default_value = "127.0.0.1:7777")]
    listen: String,
    /// Where this node stores the events peers send it.
    #[arg(long, value_enum, default_value = "memory")]
    storage: StorageKind,
    /// Server URL of a redis or jetstream storage [default: the local server's usual port].
    #[arg(long)]
    storage_url: Option<String>,
    /// Stream name (prefix) of a redis or jetstream storage.
    #[arg(long, default_value = "net")]
    storage_stream: String,
    /// Events the memory storage keeps per shard (older ones are trimmed; 1 to 100000000).
    #[arg(
        long,
        default_value_t = 1_000_000,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_RETAIN)
    )]
    retain: usize,
    /// How long, in seconds, the node keeps retrying a peer's batch while its redis or
    /// jetstream storage is unreachable (a broker restarting) before answering the peer with
    /// the error (0 to 3600; 0: one attempt).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(0..=MAX_STORAGE_RETRY_WINDOW)
    )]
    storage_retry_window: u64,
    /// Shards this node stores, as ranges such as 0-7,12 (default: every shard).
    #[arg(long)]
    stores: Option<String>,
    /// Labels announced to peers, e.g. durable or region=eu (repeat for several).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Serve Prometheus metrics of the node on http://ADDR/metrics, and /health (200 while
    /// the storage is healthy, 503 otherwise), e.g. 127.0.0.1:9100.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Where the log storage lives and when it syncs.
    #[command(flatten)]
    log: LogArgs,
    /// Identity, peers, key and allow-list (last, under their own help heading).
    #[command(flatten)]
    mesh: MeshArgs,
}

/// Parses `0-7,12` into ranges.
fn parse_ranges(text: &str) -> Result<Vec<ShardRange>> {
    let bad = || usage(format!("--stores {text}: expected ranges such as 0-7,12"));
    text.split(',')
        .map(|part| {
            let part = part.trim();
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: u16 = a.trim().parse().map_err(|_| bad())?;
            let b: u16 = b.trim().parse().map_err(|_| bad())?;
            if a > b {
                return Err(bad());
            }
            Ok(ShardRange::new(a, b))
        })
        .collect()
}

/// Runs `net node` until Ctrl-C (or SIGTERM), then stops serving and flushes the storage.
pub(crate) async fn node(args: NodeArgs) -> Result<ExitCode> {
    if args.mesh.identity.is_none() {
        return Err(usage(
            "net node needs --identity (create one with `net keygen -o node.key`)",
        ));
    }
    args.log.refuse_unless_log(
        args.storage == StorageKind::Log,
        &format!("--storage {}", args.storage.name()),
    )?;
    let mut config = args.mesh.config()?;
    config.storage_retry_window = Duration::from_secs(args.storage_retry_window);
    config = config.listen(&args.listen);
    config
        .validate()
        .map_err(|e| usage(format!("invalid --listen: {e}")))?;
    for range in match &args.stores {
        Some(text) => parse_ranges(text)?,
        None => vec![ShardRange::ALL],
    } {
        config = config.stores(range);
    }
    for tag in &args.tags {
        config = config.tag(tag.clone());
    }
    let storage: Arc<dyn Adapter> = match args.storage {
        StorageKind::Memory => Arc::new(MemoryAdapter::with_config(
            MemoryAdapterConfig::default().max_events_per_shard(args.retain),
        )),
        StorageKind::Log => {
            let log = args.log.config(Path::new(DEFAULT_LOG_DIR));
            let shown = log.dir.display().to_string();
            let adapter = AdapterConfig::log_with(log)
                .build()
                .await
                .map_err(config_error)
                .with_context(|| format!("cannot open the log storage in {shown}"))?;
            Arc::from(adapter)
        }
        StorageKind::Redis | StorageKind::Jetstream => {
            let kind = if args.storage == StorageKind::Redis {
                StoreKind::Redis
            } else {
                StoreKind::Jetstream
            };
            let url = args.storage_url.as_deref().unwrap_or(kind.default_url());
            let mut adapter = adapter_config(kind, url, &args.storage_stream)?
                .build()
                .await
                .map_err(|e| usage(e.to_string()))?;
            adapter
                .init()
                .await
                .with_context(|| format!("cannot open the {} storage", args.storage.name()))?;
            Arc::from(adapter)
        }
        StorageKind::Forward => {
            if args.mesh.peers.is_empty() {
                return Err(usage("--storage forward needs at least one --peer"));
            }
            // The relay dials the peers itself; the listening side dials nobody, so each pair
            // of nodes shares one session.
            let upstream = Arc::new(new_adapter(args.mesh.config()?)?);
            upstream
                .start()
                .await
                .context("start the forwarding link")?;
            config.peers.clear();
            upstream
        }
    };
    let storage_name = storage.name().to_owned();
    config = config.storage(storage.clone());
    let adapter = Arc::new(new_adapter(config)?);
    adapter
        .start()
        .await
        .with_context(|| format!("cannot start the node on {}", args.listen))?;
    let metrics = match &args.metrics {
        Some(addr) => Some(MetricsServer::start(
            addr,
            adapter.clone(),
            storage.clone(),
            tokio::runtime::Handle::current(),
        )?),
        None => None,
    };
    let addr = adapter
        .local_addr()
        .map_or_else(|| args.listen.clone(), |a| a.to_string());
    println!("node {} listening on {addr}", adapter.node_id());
    std::io::stdout().flush()?;
    if args.storage == StorageKind::Memory {
        // Peers are told "stored" as soon as memory holds a batch: say loudly that a stop or
        // a crash of this process loses all of it.
        tracing::warn!(
            retain = args.retain,
            "memory storage is not durable: acknowledged events are lost when this node stops \
             or crashes, and the oldest are trimmed past --retain per shard"
        );
        eprintln!(
            "warning: --storage memory is not durable: events acknowledged to peers are lost \
             when this node stops (use --storage log, redis or jetstream to keep them)"
        );
    }
    tracing::info!(
        node = %adapter.node_id(),
        %addr,
        storage = %storage_name,
        peers = ?args.mesh.peers,
        "node started"
    );

    // Sessions, their peers and failed handshakes are logged by the mesh itself.
    shutdown_signal().await;
    drop(metrics);
    tracing::info!("shutting down: no new requests; flushing the storage");
    adapter.shutdown().await.context("stop the node")?;
    storage.flush().await.context("flush the storage")?;
    storage.shutdown().await.context("shut the storage down")?;
    let stats = adapter.stats();
    tracing::info!(
        batches = stats.stored_batches,
        duplicates = stats.duplicate_batches,
        storage_retries = stats.storage_retries,
        storage_errors = stats.storage_errors,
        "node stopped"
    );
    eprintln!(
        "node stopped: stored {} batches ({} duplicate deliveries dropped, {} storage retries, \
         {} batches refused after storage errors)",
        stats.stored_batches, stats.duplicate_batches, stats.storage_retries, stats.storage_errors
    );
    Ok(ExitCode::SUCCESS)
}

/// The `--metrics` HTTP endpoint: a small blocking server on its own thread, stopped when
/// dropped.
struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    fn start(
        addr: &str,
        node: Arc<NetAdapter>,
        storage: Arc<dyn Adapter>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self> {
        let resolved = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                usage(format!(
                    "--metrics {addr}: expected an address such as 127.0.0.1:9100"
                ))
            })?;
        let server = tiny_http::Server::http(resolved)
            .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
        let bound = server
            .server_addr()
            .to_ip()
            .map_or_else(|| addr.to_owned(), |a| a.to_string());
        tracing::info!(addr = %bound, "serving metrics on /metrics and /health");
        let server = Arc::new(server);
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("net-metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let path = request.url().split('?').next().unwrap_or("").to_owned();
                    let response = match path.as_str() {
                        "/metrics" => {
                            let healthy = runtime.block_on(storage.is_healthy());
                            tiny_http::Response::from_string(node_metrics(
                                &node.stats(),
                                storage.name(),
                                healthy,
                            ))
                            .with_header(text_header("text/plain; version=0.0.4"))
                        }
                        "/health" => if runtime.block_on(storage.is_healthy()) {
                            tiny_http::Response::from_string("ok\n")
                        } else {
                            tiny_http::Response::from_string("storage unhealthy\n")
                                .with_status_code(503)
                        }
                        .with_header(text_header("text/plain")),
                        _ => tiny_http::Response::from_string("not found\n").with_status_code(404),
                    };
                    let _ = request.respond(response);
                }
            })
            .context("start the metrics thread")?;
        Ok(Self {
            server,
            thread: Some(thread),
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn text_header(value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes("Content-Type", value).expect("a valid header")
}

/// The node's counters in the Prometheus text format.
fn node_metrics(stats: &net_mesh::NodeStats, storage: &str, healthy: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: u64| vec![(String::new(), v)];
    metric(
        "net_node_sessions_open",
        "gauge",
        "Mesh sessions established now.",
        &one(stats.sessions_open),
    );
    metric(
        "net_node_sessions_established_total",
        "counter",
        "Mesh sessions established since start.",
        &one(stats.sessions_established),
    );
    metric(
        "net_node_handshakes_in_progress",
        "gauge",
        "Accepted connections still in their handshake.",
        &one(stats.handshakes_in_progress),
    );
    let failures: Vec<(String, u64)> = stats
        .handshake_failures
        .iter()
        .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), *n))
        .collect();
    metric(
        "net_node_handshake_failures_total",
        "counter",
        "Failed handshakes and accepts, by reason.",
        &failures,
    );
    metric(
        "net_node_batches_stored_total",
        "counter",
        "Peers' batches stored in this node's storage.",
        &one(stats.stored_batches),
    );
    metric(
        "net_node_batches_duplicate_total",
        "counter",
        "Peers' batches acknowledged as already stored.",
        &one(stats.duplicate_batches),
    );
    metric(
        "net_node_storage_errors_total",
        "counter",
        "Peers' batches refused after storage errors.",
        &one(stats.storage_errors),
    );
    metric(
        "net_node_storage_retries_total",
        "counter",
        "Storage attempts repeated after retryable errors.",
        &one(stats.storage_retries),
    );
    metric(
        "net_node_bytes_in_total",
        "counter",
        "Bytes read from peers.",
        &one(stats.bytes_in),
    );
    metric(
        "net_node_bytes_out_total",
        "counter",
        "Bytes written to peers.",
        &one(stats.bytes_out),
    );
    metric(
        "net_node_storage_healthy",
        "gauge",
        "1 when the storage reports itself healthy, else 0.",
        &[(format!("{{storage=\"{storage}\"}}"), u64::from(healthy))],
    );
    out
}

/// Resolves on Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        let r = parse_ranges("0-7, 12").unwrap();
        assert_eq!(r, vec![ShardRange::new(0, 7), ShardRange::new(12, 12)]);
        for bad in ["", "a", "7-3", "1-", "0-70000"] {
            assert!(parse_ranges(bad).is_err(), "{bad}");
        }
    }
}
