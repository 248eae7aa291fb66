//! The mesh flags (`MeshArgs`) that `node` takes, and `bench`, `produce` and `consume` with
//! `--adapter net`, and the key files they name: the identity and the pre-shared key, both
//! refused when other users may read them.

use crate::exit::usage;
use anyhow::{Context, Result};
use clap::Args;
use net_mesh::{EntityKeypair, MeshError, NetAdapter, NetAdapterConfig, NodeId};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The longest `--connect-timeout-ms` (one hour).
const MAX_CONNECT_TIMEOUT_MS: u64 = 3_600_000;
/// The mesh flags shared by `node`, and by `bench`, `produce` and `consume` with
/// `--adapter net`.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Mesh (net node, and --adapter net)")]
pub(crate) struct MeshArgs {
    /// A node to connect to, as host:port (repeat for several); redialed with backoff
    /// whenever the connection drops.
    #[arg(long = "peer", value_name = "ADDR")]
    pub(crate) peers: Vec<String>,
    /// Identity file written by `net keygen` (required by `net node`; elsewhere, without it a
    /// fresh identity is made for this run, which nodes with an --allow list refuse).
    #[arg(long, value_name = "FILE")]
    pub(crate) identity: Option<PathBuf>,
    /// File holding the mesh's pre-shared key (64 hex digits, as `net keygen --psk` writes).
    #[arg(long, value_name = "FILE")]
    pub(crate) psk_file: Option<PathBuf>,
    /// Accept only these node ids as peers (repeat for several; default: any node that
    /// completes the handshake).
    // Node ids are base64url and may start with `-`.
    #[arg(long = "allow", value_name = "NODE_ID", allow_hyphen_values = true)]
    pub(crate) allow: Vec<String>,
    /// How long bench, produce and consume wait for connected peers that store every shard,
    /// in milliseconds (1 to 3600000).
    #[arg(
        long,
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..=MAX_CONNECT_TIMEOUT_MS)
    )]
    pub(crate) connect_timeout_ms: u64,
}

/// Refuses a secret file that users other than its owner may access (Unix).
fn check_private(path: &Path, what: &str) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read the {what} {}", path.display()))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(usage(format!(
                "{what} {} is accessible by other users (mode {mode:o}); expected 0600 \
                 (chmod 600 {})",
                path.display(),
                path.display()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
    Ok(())
}

/// Reads a pre-shared key file: 64 hex digits (surrounding whitespace ignored).
fn read_psk(path: &Path) -> Result<[u8; 32]> {
    if !path.is_file() {
        return Err(usage(format!(
            "pre-shared key file {} does not exist (create one with `net keygen --psk {}`)",
            path.display(),
            path.display()
        )));
    }
    check_private(path, "pre-shared key file")?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        usage(format!(
            "cannot read the pre-shared key file {}: {e}",
            path.display()
        ))
    })?;
    let text = text.trim();
    let bad = || {
        usage(format!(
            "pre-shared key file {} must hold 64 hex digits",
            path.display()
        ))
    };
    if text.len() != 64 || !text.is_ascii() {
        return Err(bad());
    }
    let mut psk = [0u8; 32];
    for (i, byte) in psk.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(psk)
}

/// Loads an identity file, refusing missing, malformed or group/other-readable files.
fn load_identity(path: &Path) -> Result<EntityKeypair> {
    if !path.exists() {
        return Err(usage(format!(
            "identity file {} does not exist (create it with `net keygen -o {}`)",
            path.display(),
            path.display()
        )));
    }
    EntityKeypair::load(path).map_err(|e| usage(e.to_string()))
}

impl MeshArgs {
    /// The adapter settings these flags describe (dialing the peers, storing nothing).
    pub(crate) fn config(&self) -> Result<NetAdapterConfig> {
        let mut config = NetAdapterConfig::default();
        for peer in &self.peers {
            config = config.peer(peer);
        }
        if let Some(path) = &self.identity {
            config = config.keypair(load_identity(path)?);
        }
        if let Some(path) = &self.psk_file {
            config = config.psk(read_psk(path)?);
        }
        if !self.allow.is_empty() {
            let ids = self
                .allow
                .iter()
                .map(|id| {
                    id.parse::<NodeId>()
                        .map_err(|e| usage(format!("--allow {id}: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            config = config.allow(ids);
        }
        config
            .validate()
            .map_err(|e| usage(format!("invalid mesh setting: {e}")))?;
        Ok(config)
    }

    /// A started adapter that dials the peers, once connected peers store every shard below
    /// `shards`.
    pub(crate) async fn connect(&self, shards: u16) -> Result<Arc<NetAdapter>> {
        if self.peers.is_empty() {
            return Err(usage("--adapter net needs at least one --peer"));
        }
        let adapter = Arc::new(new_adapter(self.config()?)?);
        adapter.start().await.context("start the mesh adapter")?;
        let timeout = Duration::from_millis(self.connect_timeout_ms);
        for shard in 0..shards {
            if !adapter.wait_for_coverage(shard, 1, timeout).await {
                let peers = adapter.peers();
                anyhow::bail!(
                    "no connected peer stores shard {shard} after {} ms ({} of {} peers connected: \
                     check the addresses, the pre-shared key and the peers' allow-lists)",
                    self.connect_timeout_ms,
                    peers.len(),
                    self.peers.len()
                );
            }
        }
        Ok(adapter)
    }

    /// A short description for messages.
    pub(crate) fn describe(&self) -> String {
        format!("the mesh via {}", self.peers.join(", "))
    }
}

/// The mesh adapter for `config`; an invalid setting is a usage error.
pub(crate) fn new_adapter(config: NetAdapterConfig) -> Result<NetAdapter> {
    NetAdapter::new(config).map_err(|e| match e {
        MeshError::Config(reason) => usage(format!("invalid mesh setting: {reason}")),
        other => anyhow::Error::new(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_starting_with_a_hyphen_are_values() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            mesh: MeshArgs,
        }
        let cli = Cli::try_parse_from(["net", "--allow", "-GxY", "--peer", "a:1"]).unwrap();
        assert_eq!(cli.mesh.allow, ["-GxY"]);
        assert_eq!(cli.mesh.peers, ["a:1"]);
    }

    #[test]
    fn psk_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psk");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        // Whatever the umask made of it, a key file must be private to be read at all.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        assert_eq!(read_psk(&path).unwrap(), [0xab; 32]);
        for bad in ["ab", &"zz".repeat(32), &"é".repeat(32)] {
            std::fs::write(&path, bad).unwrap();
            assert!(read_psk(&path).is_err(), "{bad}");
        }
    }
}
