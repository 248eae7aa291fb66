//! The tokio driver: listener, dialers with backoff, one task pair per session, ping/pong
//! liveness, bounded send queues, and the handling of peers' requests.
//!
//! Each TCP connection runs [`run_connection`]: the sans-I/O [`Session`] sits behind a mutex
//! held only while bytes are encrypted or decrypted (never across an `.await`), a writer
//! task drains the session's bounded frame queue into the socket, and the reading side
//! dispatches frames. A failure of any kind ends the connection: the reason is logged here,
//! the peer sees the socket close (or a coarse [`Frame::Close`]).
//!
//! The listener never stops accepting: connections in their handshake are held in the
//! bounded [`Admission`] table, which evicts the least advanced one when a newcomer needs
//! room, and failed handshakes are counted and logged at a bounded rate ([`FailureLog`]).

use crate::admission::{Admission, FailReason, FailureLog, Progress, ProgressHandle, Ticket};
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
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tracing::{debug, info, warn};

/// Batches remembered for dedup by `(nonce, shard, sequence_start)`.
const DEDUP_CAPACITY: usize = 65_536;
/// Bytes read from the socket per call.
const READ_CHUNK: usize = 64 * 1024;
/// Frames the writer encrypts before one socket write.
const WRITE_COALESCE: usize = 64;
/// Bytes read per call during the handshake (a handshake record is at most 514 bytes).
const HANDSHAKE_CHUNK: usize = 1024;
/// How often failed handshakes are summarised in the log, at most.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// First pause between attempts to store a batch while the storage is failing.
const STORAGE_RETRY_MIN: Duration = Duration::from_millis(50);
/// Longest pause between attempts to store a batch.
const STORAGE_RETRY_MAX: Duration = Duration::from_secs(2);

/// Counters of a node, read by [`crate::NetAdapter::stats`].
#[derive(Default)]
pub(crate) struct Counters {
    /// Batches stored for peers, after dedup.
    pub(crate) stored_batches: AtomicU64,
    /// Batches acknowledged as duplicates without storing.
    pub(crate) duplicate_batches: AtomicU64,
    /// Sessions established since start.
    pub(crate) sessions_established: AtomicU64,
    /// Bytes read from and written to sockets.
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Peers' batches this node's storage failed to store (answered with an error).
    pub(crate) storage_errors: AtomicU64,
    /// Attempts to store a batch repeated after a retryable storage error.
    pub(crate) storage_retries: AtomicU64,
}

/// Identifies a batch for dedup: `(process nonce, shard, sequence_start)`.
type BatchKey = (u64, u16, u64);

/// What a completed handshake yields.
struct Handshaken {
    peer: NodeId,
    capabilities: Capabilities,
    /// Frames that arrived right behind the peer's `Hello`.
    early: Vec<Frame>,
}

/// The failure of a handshake: its counted reason and a detail for the log.
type HandshakeFailure = (FailReason, String);

fn classify(error: &SessionError) -> FailReason {
    match error {
        SessionError::HandshakeTimeout => FailReason::Timeout,
        SessionError::Handshake(_) | SessionError::Decrypt | SessionError::Noise(_) => {
            FailReason::Crypto
        }
        SessionError::Identity(_) => FailReason::Identity,
        SessionError::NotAllowed(_) => FailReason::NotAllowed,
        SessionError::Closed => FailReason::Closed,
        _ => FailReason::Protocol,
    }
}

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
    /// Connections of the listener still in their handshake.
    pub(crate) admission: Arc<Admission>,
    /// Failed handshakes, counted and logged at a bounded rate.
    pub(crate) failures: FailureLog,
    /// Batches being stored, by dedup key: a copy that arrives meanwhile waits for the first.
    storing: Mutex<HashMap<BatchKey, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) counters: Arc<Counters>,
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
            admission: Admission::new(config.max_handshakes, config.max_handshakes_per_addr),
            failures: FailureLog::new(FAILURE_LOG_INTERVAL),
            storing: Mutex::new(HashMap::new()),
            counters: Arc::new(Counters::default()),
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

    /// Logs the failed handshakes of each interval as one line, until shutdown.
    async fn summarise_failures(self: Arc<Self>) {
        let mut stop = self.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(self.failures.interval()) => self.failures.flush(),
            }
        }
    }

    /// Accepts connections for as long as the node runs, never waiting for a free handshake
    /// place: admission makes room by evicting the least advanced handshake.
    async fn listen(self: Arc<Self>, listener: TcpListener) {
        let mut stop = self.shutdown.subscribe();
        loop {
            let accepted = tokio::select! {
                _ = stop.changed() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, addr)) => {
                    let started = tokio::time::Instant::now();
                    let (ticket, evicted) = self.admission.admit(addr.ip());
                    for _ in 0..evicted {
                        self.failures.record(
                            FailReason::Evicted,
                            Some(addr),
                            "evicted by a newer connection (admission table full)",
                        );
                    }
                    let node = self.clone();
                    tokio::spawn(async move {
                        node.run_connection(stream, addr, Role::Responder, Some(ticket), started)
                            .await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors, most likely: evictions free some soon.
                    self.failures
                        .record(FailReason::Accept, None, &format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
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
            let started = tokio::time::Instant::now();
            let connect =
                tokio::time::timeout(self.config.handshake_timeout, TcpStream::connect(addr));
            let established = tokio::select! {
                _ = stop.changed() => return,
                result = connect => match result {
                    Ok(Ok(stream)) => {
                        // The connection watches the shutdown signal itself.
                        self.clone()
                            .run_connection(stream, addr, Role::Initiator, None, started)
                            .await
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

    /// Runs the handshake of one connection: Noise, then both sides' `Hello`, under the
    /// handshake deadline (and, for a listener's connection, the first-message deadline).
    async fn handshake(
        &self,
        reader: &mut OwnedReadHalf,
        writer: &mut OwnedWriteHalf,
        session: &mut Session,
        progress: Option<&ProgressHandle>,
        started: tokio::time::Instant,
    ) -> Result<Handshaken, HandshakeFailure> {
        let deadline = started + self.config.handshake_timeout;
        let first_deadline = (started + self.config.first_message_timeout).min(deadline);
        let mut buf = [0u8; HANDSHAKE_CHUNK];
        let mut peer = None;
        let mut peer_caps = None;
        let mut early = Vec::new();
        let timed_out = || (FailReason::Timeout, "handshake timed out".to_owned());
        loop {
            let out = session.take_output();
            if !out.is_empty() {
                if let Some(p) = progress {
                    // A listener writes only in answer to a complete handshake message.
                    p.advance(Progress::Started);
                }
                match tokio::time::timeout_at(deadline, writer.write_all(&out)).await {
                    Ok(Ok(())) => {
                        self.counters
                            .bytes_out
                            .fetch_add(out.len() as u64, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => return Err((FailReason::Closed, format!("write failed: {e}"))),
                    Err(_) => return Err(timed_out()),
                }
            }
            if let (Some(peer), Some(capabilities)) = (peer, peer_caps.take()) {
                return Ok(Handshaken {
                    peer,
                    capabilities,
                    early,
                });
            }
            let waiting_for_first = progress.is_some_and(|p| p.get() == Progress::Accepted as u8);
            let limit = if waiting_for_first {
                first_deadline
            } else {
                deadline
            };
            let n = match tokio::time::timeout_at(limit, reader.read(&mut buf)).await {
                Ok(Ok(0)) => {
                    return Err((FailReason::Closed, "connection closed by peer".to_owned()))
                }
                Ok(Err(e)) => return Err((FailReason::Closed, format!("read failed: {e}"))),
                Ok(Ok(n)) => n,
                Err(_) => {
                    let _ = session.handle_timeout(Instant::now() + self.config.handshake_timeout);
                    if waiting_for_first {
                        return Err((
                            FailReason::Timeout,
                            "no handshake message before the first-message deadline".to_owned(),
                        ));
                    }
                    return Err(timed_out());
                }
            };
            self.counters
                .bytes_in
                .fetch_add(n as u64, Ordering::Relaxed);
            if let Err(e) = session.handle_input(&buf[..n]) {
                return Err((classify(&e), e.to_string()));
            }
            while let Some(event) = session.poll_event() {
                match event {
                    SessionEvent::Connected(id) => {
                        if let Some(p) = progress {
                            p.advance(Progress::Authenticated);
                        }
                        peer = Some(id);
                        let hello = Frame::Hello {
                            version: PROTOCOL_VERSION,
                            capabilities: self.capabilities.clone(),
                        };
                        if let Err(e) = session.send(&hello) {
                            return Err((classify(&e), e.to_string()));
                        }
                    }
                    SessionEvent::Frame(Frame::Hello {
                        version,
                        capabilities,
                    }) if peer_caps.is_none() && peer.is_some() => {
                        if version != PROTOCOL_VERSION {
                            return Err((
                                FailReason::Protocol,
                                format!("peer speaks protocol version {version}"),
                            ));
                        }
                        peer_caps = Some(capabilities);
                    }
                    SessionEvent::Frame(frame) if peer_caps.is_some() => early.push(frame),
                    SessionEvent::Frame(_) => {
                        return Err((FailReason::Protocol, "first frame is not hello".to_owned()));
                    }
                }
            }
        }
    }

    /// Runs one connection to its end. Returns true when the session got established.
    /// `ticket` is the connection's admission place when the listener accepted it;
    /// `started` is when it was accepted or dialed.
    async fn run_connection(
        self: Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        role: Role,
        mut ticket: Option<Ticket>,
        started: tokio::time::Instant,
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
        let mut stop = self.shutdown.subscribe();
        let result = {
            let progress = ticket.as_ref().map(Ticket::progress);
            let handshake = self.handshake(
                &mut reader,
                &mut writer,
                &mut session,
                progress.as_ref(),
                started,
            );
            match ticket.as_mut() {
                Some(ticket) => tokio::select! {
                    _ = &mut ticket.evicted => Err((
                        FailReason::Evicted,
                        "evicted by a newer connection (admission table full)".to_owned(),
                    )),
                    _ = stop.changed() => Err((FailReason::Closed, "shutting down".to_owned())),
                    result = handshake => result,
                },
                None => tokio::select! {
                    _ = stop.changed() => Err((FailReason::Closed, "shutting down".to_owned())),
                    result = handshake => result,
                },
            }
        };
        let handshaken = match result {
            // Evictions were counted by the listener when it made room.
            Err((FailReason::Evicted, detail)) => {
                debug!(%addr, %detail, "mesh handshake ended");
                return false;
            }
            Err((reason, detail)) => {
                debug!(%addr, ?role, reason = reason.label(), %detail, "mesh handshake failed");
                self.failures.record(reason, Some(addr), &detail);
                return false;
            }
            Ok(handshaken) => handshaken,
        };
        if let Some(ticket) = ticket {
            if !ticket.promote() {
                debug!(%addr, "mesh handshake finished just as it was evicted");
                return false;
            }
        }
        let Handshaken {
            peer,
            capabilities,
            early,
        } = handshaken;
        let handshake_ms = started.elapsed().as_secs_f64() * 1e3;
        self.counters
            .sessions_established
            .fetch_add(1, Ordering::Relaxed);
        info!(
            %addr,
            peer = %peer,
            role = role_label(role),
            handshake_ms = format_args!("{handshake_ms:.1}"),
            shards = capabilities.shards.len(),
            tags = %capabilities.tags.join(","),
            "mesh session established"
        );
        let mut buf = vec![0u8; READ_CHUNK];

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
            self.counters.clone(),
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
                Ok(Ok(n)) => {
                    self.counters
                        .bytes_in
                        .fetch_add(n as u64, Ordering::Relaxed);
                    n
                }
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
        // A copy of a batch still being stored (the sender gave up waiting and retried)
        // waits for the first attempt, then finds it in the dedup set.
        let gate = self
            .storing
            .lock()
            .entry(key)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        let result = {
            let _held = gate.lock().await;
            self.store_once(storage, batch, key).await
        };
        {
            let mut storing = self.storing.lock();
            // Only the map and this call still hold the gate: nobody waits on it.
            if Arc::strong_count(&gate) == 2 {
                storing.remove(&key);
            }
        }
        result
    }

    /// Stores a batch unless it was stored before, retrying retryable storage errors with
    /// backoff for up to the storage retry window.
    async fn store_once(
        &self,
        storage: &Arc<dyn Adapter>,
        batch: Arc<Batch>,
        key: (u64, u16, u64),
    ) -> Result<(), AdapterError> {
        if self.dedup.lock().contains(&key) {
            self.counters
                .duplicate_batches
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let window_ends = tokio::time::Instant::now() + self.config.storage_retry_window;
        let mut pause = STORAGE_RETRY_MIN;
        loop {
            let attempt =
                tokio::time::timeout(self.config.storage_timeout, storage.on_batch(batch.clone()))
                    .await
                    .unwrap_or_else(|_| Err(AdapterError::Transient("storage timed out".into())));
            let error = match attempt {
                Ok(()) => {
                    self.dedup.lock().insert(key);
                    self.counters.stored_batches.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => e,
            };
            let now = tokio::time::Instant::now();
            if !error.is_retryable() || now >= window_ends || self.shut_down.load(Ordering::SeqCst)
            {
                self.counters.storage_errors.fetch_add(1, Ordering::Relaxed);
                return Err(error);
            }
            debug!(shard = key.1, error = %error, "storage failed; retrying the batch");
            self.counters
                .storage_retries
                .fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep_until((now + pause).min(window_ends)).await;
            pause = (pause * 2).min(STORAGE_RETRY_MAX);
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

fn role_label(role: Role) -> &'static str {
    match role {
        Role::Initiator => "dialer",
        Role::Responder => "listener",
    }
}

/// Encrypts queued frames and writes them; pings when the queue stays idle.
async fn write_loop(
    session: Arc<Mutex<Session>>,
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Frame>,
    ping_interval: Duration,
    counters: Arc<Counters>,
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
        counters
            .bytes_out
            .fetch_add(out.len() as u64, Ordering::Relaxed);
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
