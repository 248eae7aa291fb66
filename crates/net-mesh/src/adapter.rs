//! [`NetAdapter`]: the bus's adapter that stores batches on peers over the mesh.
//!
//! `on_batch` sends the batch to the connected peers whose capabilities cover its shard (the
//! first [`NetAdapterConfig::replication`] of them in node id order) and returns once each
//! of them answered that its own adapter accepted the batch. The receiving node drops a
//! batch it already stored (same nonce, shard and `sequence_start`), so a retry after a lost
//! acknowledgement stores nothing twice.
//!
//! `poll_shard` reads from the first connected peer (in node id order) that stores the shard.
//! Cursors are the storing peer's own (a `MemoryAdapter` id by default), passed through
//! unchanged, so pages are replayable and a cursor survives reconnections. Replicas keep
//! their own positions: a cursor from one replica means nothing to another, so consumers
//! should read from one storing peer.
//!
//! With no connected peer covering a shard, both calls fail according to
//! [`NoPeerPolicy`](crate::NoPeerPolicy): a retryable [`AdapterError::Connection`] by default.

use crate::config::{NetAdapterConfig, NoPeerPolicy};
use crate::frame::{Capabilities, Frame};
use crate::identity::{EntityKeypair, IdentityError, NodeId};
use crate::node::{Link, Node, Reply};
use crate::session::SessionConfig;
use net_adapter::{
    async_trait, Adapter, AdapterError, Batch, MemoryAdapter, ShardPollResult, MAX_PAGE,
};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Why a [`NetAdapter`] could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The configuration is invalid.
    #[error("invalid mesh configuration: {0}")]
    Config(String),
    /// The identity could not be created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The listener could not bind its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// A connected peer as [`NetAdapter::peers`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's proven identity.
    pub id: NodeId,
    /// The address of the connection.
    pub addr: SocketAddr,
    /// What the peer announced.
    pub capabilities: Capabilities,
}

/// A snapshot of a node's counters, for metrics. Counts are totals since the node started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Sessions established now.
    pub sessions_open: u64,
    /// Sessions established since start.
    pub sessions_established: u64,
    /// Connections accepted by the listener and still in their handshake.
    pub handshakes_in_progress: u64,
    /// Failed handshakes (both directions) and failed accepts, by reason: `closed`,
    /// `timeout`, `evicted`, `crypto`, `identity`, `not_allowed`, `protocol`, `accept`.
    pub handshake_failures: Vec<(&'static str, u64)>,
    /// Peers' batches stored in this node's storage (after dedup).
    pub stored_batches: u64,
    /// Peers' batches acknowledged as already stored.
    pub duplicate_batches: u64,
    /// Peers' batches this node's storage failed to store (after its retry window).
    pub storage_errors: u64,
    /// Storage attempts repeated after a retryable storage error.
    pub storage_retries: u64,
    /// Bytes read from peers' sockets.
    pub bytes_in: u64,
    /// Bytes written to peers' sockets.
    pub bytes_out: u64,
}

/// The mesh adapter. See the module documentation for routing, delivery and cursors.
pub struct NetAdapter {
    node: Arc<Node>,
    local_addr: Mutex<Option<SocketAddr>>,
    started: tokio::sync::Mutex<bool>,
}

impl std::fmt::Debug for NetAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetAdapter")
            .field("node_id", &self.node.node_id())
            .field("local_addr", &*self.local_addr.lock())
            .finish_non_exhaustive()
    }
}

impl NetAdapter {
    /// An adapter with these settings, not started yet: the bus starts it through
    /// [`Adapter::init`], or call [`NetAdapter::start`].
    pub fn new(config: NetAdapterConfig) -> Result<Self, MeshError> {
        config.validate().map_err(MeshError::Config)?;
        let keypair = match &config.keypair {
            Some(k) => k.clone(),
            None => EntityKeypair::generate()?,
        };
        let mut session = SessionConfig::new(keypair);
        session.psk = config.psk;
        session.allow = config
            .allow
            .as_ref()
            .map(|ids| Arc::new(ids.iter().copied().collect()));
        session.handshake_timeout = config.handshake_timeout;
        session.max_frame = config.max_frame;
        session.rekey_after = config.rekey_after;
        session.rekey_after_bytes = config.rekey_after_bytes;
        let storage = match (&config.storage, config.stores.is_empty()) {
            (Some(s), _) => Some(s.clone()),
            (None, false) => Some(Arc::new(MemoryAdapter::new()) as Arc<dyn Adapter>),
            (None, true) => None,
        };
        Ok(Self {
            node: Node::new(config, session, storage),
            local_addr: Mutex::new(None),
            started: tokio::sync::Mutex::new(false),
        })
    }

    /// Starts listening and dialing (once; later calls do nothing). Must run inside a tokio
    /// runtime with I/O and timers enabled.
    pub async fn start(&self) -> Result<(), MeshError> {
        let mut started = self.started.lock().await;
        if *started {
            return Ok(());
        }
        let bound = self.node.start().await.map_err(|source| MeshError::Bind {
            addr: self
                .node
                .config
                .listen
                .map_or_else(|| "no address".to_owned(), |a| a.to_string()),
            source,
        })?;
        *self.local_addr.lock() = bound;
        *started = true;
        Ok(())
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node.node_id()
    }

    /// The address the listener is bound to, once started.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *self.local_addr.lock()
    }

    /// Where this node stores peers' batches, if it stores any.
    pub fn storage(&self) -> Option<Arc<dyn Adapter>> {
        self.node.storage()
    }

    /// The peers connected now, in node id order.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.node
            .links()
            .iter()
            .map(|l| PeerInfo {
                id: l.id,
                addr: l.addr,
                capabilities: l.capabilities.clone(),
            })
            .collect()
    }

    /// Batches this node stored for peers, and batches it acknowledged as duplicates.
    pub fn stored_counts(&self) -> (u64, u64) {
        (
            self.node.counters.stored_batches.load(Ordering::Relaxed),
            self.node.counters.duplicate_batches.load(Ordering::Relaxed),
        )
    }

    /// The node's counters now.
    pub fn stats(&self) -> NodeStats {
        let c = &self.node.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        NodeStats {
            sessions_open: self.node.links().len() as u64,
            sessions_established: load(&c.sessions_established),
            handshakes_in_progress: self.node.admission.len() as u64,
            handshake_failures: self
                .node
                .failures
                .totals()
                .into_iter()
                .map(|(reason, n)| (reason.label(), n))
                .collect(),
            stored_batches: load(&c.stored_batches),
            duplicate_batches: load(&c.duplicate_batches),
            storage_errors: load(&c.storage_errors),
            storage_retries: load(&c.storage_retries),
            bytes_in: load(&c.bytes_in),
            bytes_out: load(&c.bytes_out),
        }
    }

    /// Waits until at least `n` connected peers store `shard`. Returns false on timeout.
    pub async fn wait_for_coverage(&self, shard: u16, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.node.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.covering(shard).len() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.covering(shard).len() >= n;
            }
        }
    }

    fn covering(&self, shard: u16) -> Vec<Arc<Link>> {
        self.node
            .links()
            .into_iter()
            .filter(|l| l.capabilities.stores(shard))
            .collect()
    }

    fn check_open(&self) -> Result<(), AdapterError> {
        if self.node.shut_down.load(Ordering::SeqCst) {
            Err(AdapterError::Shutdown)
        } else {
            Ok(())
        }
    }

    fn no_peer(&self, shard: u16, have: usize, want: usize) -> AdapterError {
        let text =
            format!("net: {have} of {want} required peers storing shard {shard} are connected");
        match self.node.config.no_peer {
            NoPeerPolicy::Fatal if have == 0 => AdapterError::Fatal(text),
            _ => AdapterError::Connection(text),
        }
    }
}

/// Severity order for combining replica outcomes: fatal beats retryable.
fn worse(a: AdapterError, b: AdapterError) -> AdapterError {
    if b.is_fatal() && !a.is_fatal() {
        b
    } else {
        a
    }
}

#[async_trait]
impl Adapter for NetAdapter {
    async fn init(&mut self) -> Result<(), AdapterError> {
        self.start()
            .await
            .map_err(|e| AdapterError::Fatal(e.to_string()))
    }

    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        self.check_open()?;
        // Kind, request, shard, nonce, sequence and count, then 12 bytes and the payload per
        // event: refuse what no peer would accept before sending anything.
        let size = 31 + batch.events.iter().map(|e| 12 + e.raw.len()).sum::<usize>();
        if size > self.node.config.max_frame {
            return Err(AdapterError::Fatal(format!(
                "net: batch of {size} bytes exceeds max_frame ({})",
                self.node.config.max_frame
            )));
        }
        let want = self.node.config.replication;
        let covering = self.covering(batch.shard_id);
        if covering.len() < want {
            return Err(self.no_peer(batch.shard_id, covering.len(), want));
        }
        let requests = covering.iter().take(want).map(|link| {
            let batch = batch.clone();
            async move {
                let reply = self
                    .node
                    .request(link, |request| Frame::Batch { request, batch })
                    .await?;
                match reply {
                    Reply::Ack(Ok(())) => Ok(()),
                    Reply::Ack(Err(e)) => Err(e.into_adapter(&link.id.short())),
                    Reply::Page(_) => Err(AdapterError::Transient(format!(
                        "peer {} answered a batch with a page",
                        link.id.short()
                    ))),
                }
            }
        });
        let results = futures_join(requests).await;
        let mut error = None;
        for result in results {
            if let Err(e) = result {
                error = Some(match error {
                    None => e,
                    Some(prev) => worse(prev, e),
                });
            }
        }
        self.check_open()?;
        match error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    async fn poll_shard(
        &self,
        shard_id: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        self.check_open()?;
        let Some(link) = self.covering(shard_id).into_iter().next() else {
            return Err(self.no_peer(shard_id, 0, 1));
        };
        let limit = limit.min(MAX_PAGE) as u32;
        // Cursors cross the wire behind a u16 length: a longer one is no peer's cursor, and
        // encoding it would fail rather than cut it.
        if let Some(c) = cursor.filter(|c| c.len() > usize::from(u16::MAX)) {
            return Err(AdapterError::InvalidCursor(format!(
                "cursor of {} bytes is longer than any peer's cursor",
                c.len()
            )));
        }
        let cursor = cursor.map(str::to_owned);
        let reply = self
            .node
            .request(&link, |request| Frame::PollRequest {
                request,
                shard: shard_id,
                cursor,
                limit,
            })
            .await?;
        self.check_open()?;
        match reply {
            Reply::Page(Ok(page)) => {
                if page.events.len() > limit as usize
                    || page.events.iter().any(|e| e.shard_id != shard_id)
                {
                    return Err(AdapterError::Transient(format!(
                        "peer {} answered with a page that does not match the request",
                        link.id.short()
                    )));
                }
                Ok(page)
            }
            Reply::Page(Err(e)) => Err(e.into_adapter(&link.id.short())),
            Reply::Ack(_) => Err(AdapterError::Transient(format!(
                "peer {} answered a poll with an acknowledgement",
                link.id.short()
            ))),
        }
    }

    async fn flush(&self) -> Result<(), AdapterError> {
        // `on_batch` returns only once the storing peers accepted the batch: nothing is held
        // here that a flush could push further.
        self.check_open()
    }

    async fn shutdown(&self) -> Result<(), AdapterError> {
        self.node.stop();
        Ok(())
    }

    fn name(&self) -> &str {
        "net"
    }

    async fn is_healthy(&self) -> bool {
        !self.node.shut_down.load(Ordering::SeqCst)
            && (self.node.config.peers.is_empty() || !self.node.links().is_empty())
    }
}

impl Drop for NetAdapter {
    fn drop(&mut self) {
        self.node.stop();
    }
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut results: Vec<Option<T>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (f, slot) in pinned.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::ShardRange;
    use crate::session::{Role, Session};
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Dials `addr` with a session whose identity payload is signed by `forger` while
    /// claiming `claimed`'s id; returns what the listener did after message three: `true`
    /// when it closed the connection without a word.
    async fn forged_handshake(
        addr: SocketAddr,
        claimed: EntityKeypair,
        forger: EntityKeypair,
    ) -> bool {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut session =
            Session::new(SessionConfig::new(claimed), Role::Initiator, Instant::now()).unwrap();
        session.forged_signer = Some(forger);
        socket.write_all(&session.take_output()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        while !session.is_established() {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "listener closed before message two");
            session.handle_input(&buf[..n]).unwrap();
        }
        socket.write_all(&session.take_output()).await.unwrap();
        // Message three went out; an honest listener would now send its Hello.
        matches!(
            tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listener_refuses_a_signature_by_another_key_over_tcp() {
        let storage = NetAdapter::new(
            NetAdapterConfig::default()
                .listen("127.0.0.1:0")
                .stores(ShardRange::ALL),
        )
        .unwrap();
        storage.start().await.unwrap();
        let addr = storage.local_addr().unwrap();
        let claimed = EntityKeypair::generate().unwrap();
        let forger = EntityKeypair::generate().unwrap();
        assert!(forged_handshake(addr, claimed.clone(), forger).await);
        assert!(storage.peers().is_empty());
        // The same client signing honestly gets a Hello back.
        assert!(!forged_handshake(addr, claimed.clone(), claimed).await);
    }
}
