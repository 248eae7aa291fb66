//! The tokio driver: listener, dialers with backoff, one task pair per session, ping/pong
//! liveness, bounded send queues, and the handling of peers' requests.
//!
//! Each TCP connection runs [`run_connection`]: the sans-I/O [`Session`] sits behind a mutex
//! held only while bytes are encrypted or decrypted (never across an `.await`), a writer
//! task drains the session's bounded frame queue into the socket, and the reading side
//! dispatches frames. A failure of any kind ends the connection: the reason is logged here,
//! the peer sees the socket close (or a coarse [`Frame::Close`]).

use crate::config::NetAdapterConfig;
use crate::frame::{Capabilities, CloseReason, Frame, RemoteError, PROTOCOL_VERSION};
use crate::identity::NodeId;
use crate::session::{Role, Session, SessionConfig, SessionError, SessionEvent};
use net_adapter::{Adapter, AdapterError, Batch, ShardPollResult};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tracing::{debug, info, warn};

/// Batches remembered for dedup by `(nonce, shard, sequence_start)`.
const DEDUP_CAPACITY: usize = 65_536;
/// Bytes read from the socket per call.
const READ_CHUNK: usize = 64 * 1024;
/// Frames the writer encrypts before one socket write.
const WRITE_COALESCE: usize = 64;

/// A reply to a request this node sent.
pub(crate) enum Reply {
    Ack(Result<(), RemoteError>),
    Page(Result<ShardPollResult, RemoteError>),
}

/// An established session with a peer, as the adapter sees it.
pub(crate) struct Link {
    pub(crate) id: NodeId,
    pub(crate) capabilities: Capabilities,
    pub(crate) addr: SocketAddr,
    connection: u64,
    tx: mpsc::Sender<Frame>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
}

impl Link {
    /// Sends a request built around a fresh request id and waits for its reply.
    pub(crate) async fn request(
        &self,
        node: &Node,
        build: impl FnOnce(u64) -> Frame,
    ) -> Result<Reply, AdapterError> {
        let request = node.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(request, tx);
        let guard = PendingGuard {
            link: self,
            request,
        };
        let timeout = node.config.request_timeout;
        match tokio::time::timeout(timeout, self.tx.send(build(request))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(AdapterError::Connection(format!(
                    "session with peer {} closed",
                    self.id.short()
                )))
            }
            Err(_) => return Err(AdapterError::Backpressure),
        }
        let reply = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(AdapterError::Connection(format!(
                "session with peer {} closed before it replied",
                self.id.short()
            ))),
            Err(_) => Err(AdapterError::Transient(format!(
                "peer {} did not reply within {timeout:?}",
                self.id.short()
            ))),
        };
        drop(guard);
        reply
    }
}

/// Removes a request's reply slot however the request ends (reply, timeout, cancellation).
struct PendingGuard<'a> {
    link: &'a Link,
    request: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.link.pending.lock().remove(&self.request);
    }
}

/// Recently stored batches, bounded, oldest forgotten first.
#[derive(Default)]
struct Dedup {
    set: HashSet<(u64, u16, u64)>,
    order: VecDeque<(u64, u16, u64)>,
}

impl Dedup {
    fn contains(&self, key: &(u64, u16, u64)) -> bool {
        self.set.contains(key)
    }

    fn insert(&mut self, key: (u64, u16, u64)) {
        if self.set.insert(key) {
            self.order.push_back(key);
            if self.order.len() > DEDUP_CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// The running node shared by the adapter and every task.
pub(crate) struct Node {
    pub(crate) config: NetAdapterConfig,
    session: SessionConfig,
    capabilities: Capabilities,
    pub(crate) storage: Option<Arc<dyn Adapter>>,
    links: Mutex<BTreeMap<NodeId, Arc<Link>>>,
    pub(crate) changed: Notify,
    next_request: AtomicU64,
    next_connection: AtomicU64,
    dedup: Mutex<Dedup>,
    shutdown: watch::Sender<bool>,
    pub(crate) shut_down: AtomicBool,
    handshakes: Arc<Semaphore>,
    /// Batches stored for peers, after dedup (for tests and stats).
    pub(crate) stored_batches: AtomicU64,
    /// Batches acknowledged as duplicates without storing.
    pub(crate) duplicate_batches: AtomicU64,
}

impl Node {
    pub(crate) fn new(
        config: NetAdapterConfig,
        session: SessionConfig,
        storage: Option<Arc<dyn Adapter>>,
    ) -> Arc<Self> {
        let (shutdown, _) = watch::channel(false);
        Arc::new(Self {
            capabilities: config.capabilities(),
            handshakes: Arc::new(Semaphore::new(config.max_handshakes)),
            config,
            session,
            storage,
            links: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            next_request: AtomicU64::new(1),
            next_connection: AtomicU64::new(1),
            dedup: Mutex::new(Dedup::default()),
            shutdown,
            shut_down: AtomicBool::new(false),
            stored_batches: AtomicU64::new(0),
            duplicate_batches: AtomicU64::new(0),
        })
    }

    pub(crate) fn node_id(&self) -> NodeId {
        self.session.keypair.node_id()
    }

    /// Connected peers, in node id order.
    pub(crate) fn links(&self) -> Vec<Arc<Link>> {
        self.links.lock().values().cloned().collect()
    }

    /// Binds the listener (when configured) and starts it and the dialers. Returns the bound
    /// address.
    pub(crate) async fn start(self: &Arc<Self>) -> std::io::Result<Option<SocketAddr>> {
        let mut bound = None;
        if let Some(addr) = self.config.listen {
            let listener = TcpListener::bind(addr).await?;
            bound = Some(listener.local_addr()?);
            info!(node = %self.node_id(), addr = ?bound, "mesh node listening");
            tokio::spawn(self.clone().listen(listener));
        }
        for &peer in &self.config.peers {
            tokio::spawn(self.clone().dial(peer));
        }
        Ok(bound)
    }

    /// Stops every task and closes every session (telling peers it is a shutdown).
    pub(crate) fn stop(&self) {
        self.shut_down.store(true, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        for link in self.links() {
            let _ = link.tx.try_send(Frame::Close(CloseReason::Shutdown));
        }
        self.changed.notify_waiters();
    }

    async fn listen(self: Arc<Self>, listener: TcpListener) {
        let mut stop = self.shutdown.subscribe();
        loop {
            let permit = tokio::select! {
                _ = stop.changed() => return,
                permit = self.handshakes.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let accepted = tokio::select! {
                _ = stop.changed() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, addr)) => {
                    let node = self.clone();
                    tokio::spawn(async move {
                        node.run_connection(stream, addr, Role::Responder, Some(permit))
                            .await;
                    });
                }
                Err(e) => {
                    warn!(error = %e, "mesh accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn dial(self: Arc<Self>, addr: SocketAddr) {
        let mut stop = self.shutdown.subscribe();
        let mut delay = self.config.reconnect_min;
        loop {
            if *stop.borrow() {
                return;
            }
            let connect =
                tokio::time::timeout(self.config.handshake_timeout, TcpStream::connect(addr));
            let established = tokio::select! {
                _ = stop.changed() => return,
                result = connect => match result {
                    Ok(Ok(stream)) => {
                        // The connection watches the shutdown signal itself.
                        self.clone().run_connection(stream, addr, Role::Initiator, None).await
                    }
                    Ok(Err(e)) => {
                        debug!(%addr, error = %e, "mesh dial failed");
                        false
                    }
                    Err(_) => {
                        debug!(%addr, "mesh dial timed out");
                        false
                    }
                },
            };
            if established {
                delay = self.config.reconnect_min;
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(self.config.reconnect_max);
        }
    }

    /// Runs one connection to its end. Returns true when the session got established.
    async fn run_connection(
        self: Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        role: Role,
        handshake_permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> bool {
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let mut session = match Session::new(self.session.clone(), role, Instant::now()) {
            Ok(s) => s,
            Err(e) => {
                warn!(%addr, reason = %e, "mesh session could not start");
                return false;
            }
        };
        let mut buf = vec![0u8; READ_CHUNK];
        // Handshake, then each side's Hello, all under the handshake deadline.
        let deadline = tokio::time::Instant::now() + self.config.handshake_timeout;
        let mut peer = None;
        let mut peer_caps = None;
        let mut early = Vec::new();
        while peer_caps.is_none() {
            let out = session.take_output();
            if !out.is_empty() && writer.write_all(&out).await.is_err() {
                debug!(%addr, "mesh peer closed during the handshake");
                return false;
            }
            let n = match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    info!(%addr, ?role, "mesh handshake failed: connection closed by peer");
                    return false;
                }
                Ok(Ok(n)) => n,
                Err(_) => {
                    let _ = session.handle_timeout(Instant::now() + self.config.handshake_timeout);
                    warn!(%addr, ?role, "mesh handshake failed: timed out");
                    return false;
                }
            };
            if let Err(e) = session.handle_input(&buf[..n]) {
                warn!(%addr, ?role, reason = %e, "mesh handshake failed");
                return false;
            }
            while let Some(event) = session.poll_event() {
                match event {
                    SessionEvent::Connected(id) => {
                        peer = Some(id);
                        let hello = Frame::Hello {
                            version: PROTOCOL_VERSION,
                            capabilities: self.capabilities.clone(),
                        };
                        if let Err(e) = session.send(&hello) {
                            warn!(%addr, reason = %e, "mesh session failed");
                            return false;
                        }
                    }
                    SessionEvent::Frame(Frame::Hello {
                        version,
                        capabilities,
                    }) if peer_caps.is_none() => {
                        if version != PROTOCOL_VERSION {
                            warn!(%addr, version, "mesh peer speaks another protocol version");
                            return false;
                        }
                        peer_caps = Some(capabilities);
                    }
                    SessionEvent::Frame(frame) if peer_caps.is_some() => early.push(frame),
                    SessionEvent::Frame(_) => {
                        warn!(%addr, "mesh session failed: first frame is not hello");
                        return false;
                    }
                }
            }
        }
        drop(handshake_permit);
        let (Some(peer), Some(capabilities)) = (peer, peer_caps) else {
            return false;
        };
        let out = session.take_output();
        if !out.is_empty() && writer.write_all(&out).await.is_err() {
            return false;
        }
        info!(%addr, peer = %peer, ?capabilities, "mesh session established");

        let session = Arc::new(Mutex::new(session));
        let (tx, rx) = mpsc::channel(self.config.send_queue);
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let link = Arc::new(Link {
            id: peer,
            capabilities,
            addr,
            connection,
            tx: tx.clone(),
            pending: Mutex::new(HashMap::new()),
        });
        self.links.lock().insert(peer, link.clone());
        self.changed.notify_waiters();

        let writer_task = tokio::spawn(write_loop(
            session.clone(),
            writer,
            rx,
            self.config.ping_interval,
        ));
        let inflight = Arc::new(Semaphore::new(self.config.max_inflight));
        for frame in early {
            if !self.dispatch(frame, &link, &inflight) {
                break;
            }
        }
        let mut stop = self.shutdown.subscribe();
        let reason = loop {
            let read = tokio::select! {
                _ = stop.changed() => break "shutting down".to_owned(),
                read = tokio::time::timeout(self.config.idle_timeout, reader.read(&mut buf)) => read,
            };
            let n = match read {
                Ok(Ok(0)) => break "connection closed by peer".to_owned(),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => break format!("read failed: {e}"),
                Err(_) => break "peer idle past the liveness timeout".to_owned(),
            };
            let mut frames = Vec::new();
            {
                let mut s = session.lock();
                if let Err(e) = s.handle_input(&buf[..n]) {
                    break format!("session failed: {e}");
                }
                while let Some(event) = s.poll_event() {
                    if let SessionEvent::Frame(f) = event {
                        frames.push(f);
                    }
                }
            }
            let mut open = true;
            for frame in frames {
                if !self.dispatch(frame, &link, &inflight) {
                    open = false;
                    break;
                }
            }
            if !open {
                break "peer closed the session or broke the protocol".to_owned();
            }
        };
        info!(%addr, peer = %peer, %reason, "mesh session ended");
        {
            let mut links = self.links.lock();
            if links.get(&peer).is_some_and(|l| l.connection == connection) {
                links.remove(&peer);
            }
        }
        // Give the writer a moment to flush a final Close, then stop it.
        if !*stop.borrow() {
            let _ = tx.try_send(Frame::Close(CloseReason::ProtocolError));
        }
        drop(tx);
        link.pending.lock().clear();
        let _ = tokio::time::timeout(Duration::from_millis(200), writer_task).await;
        session.lock().close();
        self.changed.notify_waiters();
        true
    }

    /// Handles one frame from `link`. Returns false when the session must end.
    fn dispatch(
        self: &Arc<Self>,
        frame: Frame,
        link: &Arc<Link>,
        inflight: &Arc<Semaphore>,
    ) -> bool {
        match frame {
            Frame::Batch { request, batch } => {
                let Ok(permit) = inflight.clone().try_acquire_owned() else {
                    let reply = Frame::BatchAck {
                        request,
                        result: Err(RemoteError::from_adapter(&AdapterError::Backpressure)),
                    };
                    let _ = link.tx.try_send(reply);
                    return true;
                };
                let node = self.clone();
                let tx = link.tx.clone();
                tokio::spawn(async move {
                    let result = node.store(batch).await;
                    let _ = tx
                        .send(Frame::BatchAck {
                            request,
                            result: result.map_err(|e| RemoteError::from_adapter(&e)),
                        })
                        .await;
                    drop(permit);
                });
                true
            }
            Frame::PollRequest {
                request,
                shard,
                cursor,
                limit,
            } => {
                let Ok(permit) = inflight.clone().try_acquire_owned() else {
                    let reply = Frame::PollResponse {
                        request,
                        result: Err(RemoteError::from_adapter(&AdapterError::Backpressure)),
                    };
                    let _ = link.tx.try_send(reply);
                    return true;
                };
                let node = self.clone();
                let tx = link.tx.clone();
                tokio::spawn(async move {
                    let result = node.read(shard, cursor.as_deref(), limit as usize).await;
                    let _ = tx
                        .send(Frame::PollResponse {
                            request,
                            result: result.map_err(|e| RemoteError::from_adapter(&e)),
                        })
                        .await;
                    drop(permit);
                });
                true
            }
            Frame::BatchAck { request, result } => {
                if let Some(slot) = link.pending.lock().remove(&request) {
                    let _ = slot.send(Reply::Ack(result));
                }
                true
            }
            Frame::PollResponse { request, result } => {
                if let Some(slot) = link.pending.lock().remove(&request) {
                    let _ = slot.send(Reply::Page(result));
                }
                true
            }
            Frame::Ping(token) => {
                let _ = link.tx.try_send(Frame::Pong(token));
                true
            }
            Frame::Pong(_) => true,
            Frame::Close(reason) => {
                debug!(peer = %link.id, ?reason, "mesh peer closed the session");
                false
            }
            Frame::Hello { .. } => {
                warn!(peer = %link.id, "mesh peer sent a second hello");
                false
            }
            // Handled inside the session; never delivered.
            Frame::Rekey => true,
        }
    }

    /// Stores a peer's batch in this node's storage, once per `(nonce, shard, sequence_start)`.
    async fn store(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        let Some(storage) = &self.storage else {
            return Err(AdapterError::Fatal("this node stores no shards".into()));
        };
        if !self.capabilities.stores(batch.shard_id) {
            return Err(AdapterError::Fatal(format!(
                "this node does not store shard {}",
                batch.shard_id
            )));
        }
        let key = (batch.process_nonce, batch.shard_id, batch.sequence_start);
        if self.dedup.lock().contains(&key) {
            self.duplicate_batches.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        match tokio::time::timeout(self.config.storage_timeout, storage.on_batch(batch)).await {
            Ok(Ok(())) => {
                self.dedup.lock().insert(key);
                self.stored_batches.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(AdapterError::Transient("storage timed out".into())),
        }
    }

    async fn read(
        &self,
        shard: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        let Some(storage) = &self.storage else {
            return Err(AdapterError::Fatal("this node stores no shards".into()));
        };
        if !self.capabilities.stores(shard) {
            return Err(AdapterError::Fatal(format!(
                "this node does not store shard {shard}"
            )));
        }
        match tokio::time::timeout(
            self.config.storage_timeout,
            storage.poll_shard(shard, cursor, limit),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(AdapterError::Transient("storage timed out".into())),
        }
    }
}

/// Encrypts queued frames and writes them; pings when the queue stays idle.
async fn write_loop(
    session: Arc<Mutex<Session>>,
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Frame>,
    ping_interval: Duration,
) {
    let mut out = Vec::with_capacity(2 * READ_CHUNK);
    let mut ping = 0u64;
    loop {
        let first = match tokio::time::timeout(ping_interval, rx.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => {
                ping += 1;
                Frame::Ping(ping)
            }
        };
        let mut closing = matches!(first, Frame::Close(_));
        {
            let mut s = session.lock();
            if !send_one(&mut s, &first) {
                break;
            }
            let mut n = 1;
            while !closing && n < WRITE_COALESCE {
                let Ok(frame) = rx.try_recv() else { break };
                closing = matches!(frame, Frame::Close(_));
                if !send_one(&mut s, &frame) {
                    return;
                }
                n += 1;
            }
            s.drain_output_into(&mut out);
        }
        if writer.write_all(&out).await.is_err() {
            break;
        }
        out.clear();
        if out.capacity() > 8 * READ_CHUNK {
            out.shrink_to(2 * READ_CHUNK);
        }
        if closing {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

/// Encrypts one frame into the session's output. A frame above the size limit is dropped
/// (its requester times out) without ending the session; any other failure ends it.
fn send_one(session: &mut Session, frame: &Frame) -> bool {
    match session.send(frame) {
        Ok(()) => true,
        Err(SessionError::TooLarge(size)) => {
            warn!(size, "mesh frame above the size limit dropped");
            true
        }
        Err(e) => {
            debug!(reason = %e, "mesh send failed");
            false
        }
    }
}
