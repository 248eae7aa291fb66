//! The tokio driver: the running [`Node`] shared by the adapter and every task.
//!
//! It is split along its seams: `listen` accepts and dials, `drive` runs one connection's
//! session from its handshake to its end, `storage` stores and reads for peers, `client`
//! holds the requests this node sends, and `counters` what all of them count.
//!
//! A failure of any kind ends a connection: the reason is logged here, the peer sees the
//! socket close (or a coarse [`Frame::Close`]). The listener never stops accepting:
//! connections in their handshake are held in the bounded [`Admission`] table, which evicts
//! the least advanced one when a newcomer needs room, and failed handshakes are counted and
//! logged at a bounded rate ([`FailureLog`]).

mod client;
mod counters;
mod drive;
mod listen;
mod storage;

pub(crate) use client::{Link, Reply};
use counters::Counters;
use storage::Store;

use crate::admission::{Admission, FailureLog};
use crate::config::NetAdapterConfig;
use crate::connection::ConnectionConfig;
use crate::frame::{CloseReason, Frame};
use crate::identity::NodeId;
use crate::session::SessionConfig;
use net_adapter::{Adapter, AdapterError};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tracing::info;

/// How often failed handshakes are summarised in the log, at most.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// The running node shared by the adapter and every task.
pub(crate) struct Node {
    pub(crate) config: NetAdapterConfig,
    session: SessionConfig,
    /// Settings of every connection above its session: Hello, deadlines, liveness.
    connection: ConnectionConfig,
    /// This node's storage, serving peers' batches and polls.
    store: Store,
    links: Mutex<BTreeMap<NodeId, Arc<Link>>>,
    pub(crate) changed: Notify,
    next_request: AtomicU64,
    next_connection: AtomicU64,
    shutdown: watch::Sender<bool>,
    pub(crate) shut_down: AtomicBool,
    /// Connections of the listener still in their handshake.
    pub(crate) admission: Arc<Admission>,
    /// Failed handshakes, counted and logged at a bounded rate.
    pub(crate) failures: FailureLog,
    pub(crate) counters: Arc<Counters>,
}

impl Node {
    pub(crate) fn new(
        config: NetAdapterConfig,
        session: SessionConfig,
        storage: Option<Arc<dyn Adapter>>,
    ) -> Arc<Self> {
        let (shutdown, _) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        Arc::new(Self {
            connection: ConnectionConfig {
                capabilities: config.capabilities(),
                handshake_timeout: config.handshake_timeout,
                first_message_timeout: Some(config.first_message_timeout),
                ping_interval: config.ping_interval,
                idle_timeout: config.idle_timeout,
            },
            admission: Admission::new(config.max_handshakes, config.max_handshakes_per_addr),
            failures: FailureLog::new(FAILURE_LOG_INTERVAL),
            store: Store::new(
                storage,
                config.capabilities(),
                config.storage_timeout,
                config.storage_retry_window,
                counters.clone(),
            ),
            counters,
            config,
            session,
            links: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            next_request: AtomicU64::new(1),
            next_connection: AtomicU64::new(1),
            shutdown,
            shut_down: AtomicBool::new(false),
        })
    }

    pub(crate) fn node_id(&self) -> NodeId {
        self.session.keypair.node_id()
    }

    /// Where this node stores peers' batches, if it stores any.
    pub(crate) fn storage(&self) -> Option<Arc<dyn Adapter>> {
        self.store.adapter()
    }

    /// Connected peers, in node id order.
    pub(crate) fn links(&self) -> Vec<Arc<Link>> {
        self.links.lock().values().cloned().collect()
    }

    /// Sends a request to `link` under a fresh request id and waits for its reply, for at
    /// most the request timeout.
    pub(crate) async fn request(
        &self,
        link: &Link,
        build: impl FnOnce(u64) -> Frame,
    ) -> Result<Reply, AdapterError> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        link.request(id, self.config.request_timeout, build).await
    }

    /// Binds the listener (when configured) and starts it and the dialers. Returns the bound
    /// address.
    pub(crate) async fn start(self: &Arc<Self>) -> std::io::Result<Option<SocketAddr>> {
        let mut bound = None;
        if let Some(addr) = self.config.listen {
            let listener = TcpListener::bind(addr).await?;
            let local = listener.local_addr()?;
            bound = Some(local);
            info!(node = %self.node_id(), addr = %local, "mesh node listening");
            tokio::spawn(self.clone().listen(listener));
        }
        tokio::spawn(self.clone().summarise_failures());
        for &peer in &self.config.peers {
            tokio::spawn(self.clone().dial(peer));
        }
        Ok(bound)
    }

    /// Stops every task and closes every session (telling peers it is a shutdown).
    pub(crate) fn stop(&self) {
        self.shut_down.store(true, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        self.failures.flush();
        for link in self.links() {
            let _ = link.tx.try_send(Frame::Close(CloseReason::Shutdown));
        }
        self.changed.notify_waiters();
    }
}
