//! Storage nodes in child processes.
//!
//! The child is this very test binary, run again with `NET_MESH_CHILD_DIR` set and only the
//! `child_storage_node` test selected: that test then runs a storage node on a journal in
//! the given directory and prints `READY` once it listens. Without the variable the entry
//! point returns at once.

#![allow(dead_code)]

use super::journal::Journal;
use net_adapter::Adapter;
use net_mesh::{EntityKeypair, NetAdapter, NetAdapterConfig, ShardRange};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Runs the storage node when this process was started as a child; returns otherwise.
pub(crate) fn child_entry() {
    let Ok(dir) = std::env::var("NET_MESH_CHILD_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let listen = std::env::var("NET_MESH_CHILD_LISTEN").expect("listen address");
    let first: u16 = std::env::var("NET_MESH_CHILD_FIRST")
        .unwrap()
        .parse()
        .unwrap();
    let last: u16 = std::env::var("NET_MESH_CHILD_LAST")
        .unwrap()
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let keypair = EntityKeypair::load_or_generate(&dir.join("node.key")).unwrap();
        let journal = Journal::open(&dir).await;
        let mut config = NetAdapterConfig::default()
            .listen(&listen)
            .keypair(keypair)
            .stores(ShardRange::new(first, last))
            .tag("durable")
            .storage(journal as Arc<dyn Adapter>);
        config.reconnect_min = Duration::from_millis(20);
        let node = NetAdapter::new(config).unwrap();
        node.start().await.unwrap();
        println!("READY {}", node.node_id());
        // Serve until the parent closes stdin (or kills the process).
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin()
                .read_line(&mut line)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await;
        let _ = node.shutdown().await;
    });
    std::process::exit(0);
}

/// A storage node in a child process.
pub(crate) struct ChildNode {
    child: Option<Child>,
    pub(crate) dir: PathBuf,
    pub(crate) addr: String,
    shards: (u16, u16),
    test: &'static str,
}

/// A free loopback port (bound, then released).
pub(crate) fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

impl ChildNode {
    /// Starts a storage node for shards `first..=last` with its journal in `dir`; `test` is
    /// the name of the entry-point test in the calling test binary.
    pub(crate) fn start(test: &'static str, dir: &Path, first: u16, last: u16) -> ChildNode {
        let mut node = ChildNode {
            child: None,
            dir: dir.to_path_buf(),
            addr: free_addr(),
            shards: (first, last),
            test,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", self.test, "--nocapture", "--test-threads", "1"])
            .env("NET_MESH_CHILD_DIR", &self.dir)
            .env("NET_MESH_CHILD_LISTEN", &self.addr)
            .env("NET_MESH_CHILD_FIRST", self.shards.0.to_string())
            .env("NET_MESH_CHILD_LAST", self.shards.1.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child node");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("READY ") => break,
                Some(Ok(_)) => continue,
                other => panic!("child node did not start: {other:?}"),
            }
        }
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown, no flush.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node again on the same address, journal and key.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Stops the node gracefully (closes its stdin) and waits for it.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        self.kill();
    }
}
