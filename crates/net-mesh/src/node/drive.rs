//! The session driver: one connection from its handshake to its end. The sans-I/O
//! [`Session`] sits behind a mutex held only while bytes are encrypted or decrypted (never
//! across an `.await`); a writer task drains the bounded frame queue into the socket, and the
//! reading side dispatches the frames that arrive.

use super::client::{Link, Reply};
use super::counters::Counters;
use super::Node;
use crate::admission::{FailReason, Progress, ProgressHandle, Ticket};
use crate::frame::{Capabilities, CloseReason, Frame, RemoteError, PROTOCOL_VERSION};
use crate::identity::NodeId;
use crate::session::{Role, Session, SessionError, SessionEvent};
use net_adapter::AdapterError;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn};

/// Bytes read from the socket per call.
const READ_CHUNK: usize = 64 * 1024;
/// Frames the writer encrypts before one socket write.
const WRITE_COALESCE: usize = 64;
/// Bytes read per call during the handshake (a handshake record is at most 514 bytes).
const HANDSHAKE_CHUNK: usize = 1024;

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

impl Node {
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
    pub(super) async fn run_connection(
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
                    let result = node.store.store(batch, &node.shut_down).await;
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
                    let result = node
                        .store
                        .read(shard, cursor.as_deref(), limit as usize)
                        .await;
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
