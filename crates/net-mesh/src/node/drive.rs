//! The connection driver: one connection from its handshake to its end. The sans-I/O
//! [`Connection`] sits behind a mutex held only while bytes are encrypted or decrypted (never
//! across an `.await`); a writer task drains the bounded frame queue into the socket, and the
//! reading side dispatches the frames that arrive.

use super::client::{Link, Reply};
use super::counters::Counters;
use super::Node;
use crate::admission::{FailReason, Progress, ProgressHandle, Ticket};
use crate::connection::{Connection, ConnectionError, ConnectionEvent};
use crate::frame::{Capabilities, CloseReason, Frame, RemoteError};
use crate::identity::NodeId;
use crate::session::{Role, SessionError};
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
use tokio::sync::{mpsc, Notify, Semaphore};
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
    /// Runs the handshake of one connection: Noise, then both sides' `Hello`. It waits for
    /// the socket only until the connection's next deadline (`poll_timeout`), then lets the
    /// connection decide whether that deadline ends it.
    async fn handshake(
        &self,
        reader: &mut OwnedReadHalf,
        writer: &mut OwnedWriteHalf,
        conn: &mut Connection,
        progress: Option<&ProgressHandle>,
    ) -> Result<Handshaken, HandshakeFailure> {
        let mut buf = [0u8; HANDSHAKE_CHUNK];
        let mut established = None;
        let mut early = Vec::new();
        loop {
            let Some(deadline) = conn.poll_timeout().map(tokio::time::Instant::from_std) else {
                return Err((FailReason::Closed, "connection closed".to_owned()));
            };
            let out = conn.take_output();
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
                    Err(_) => {
                        conn.handle_timeout(now()).map_err(failure)?;
                        continue;
                    }
                }
            }
            if let Some((peer, capabilities)) = established.take() {
                return Ok(Handshaken {
                    peer,
                    capabilities,
                    early,
                });
            }
            let n = match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
                Ok(Ok(0)) => {
                    return Err((FailReason::Closed, "connection closed by peer".to_owned()))
                }
                Ok(Err(e)) => return Err((FailReason::Closed, format!("read failed: {e}"))),
                Ok(Ok(n)) => n,
                Err(_) => {
                    conn.handle_timeout(now()).map_err(failure)?;
                    continue;
                }
            };
            self.counters
                .bytes_in
                .fetch_add(n as u64, Ordering::Relaxed);
            conn.handle_input(&buf[..n], now()).map_err(failure)?;
            while let Some(event) = conn.poll_event() {
                match event {
                    ConnectionEvent::Authenticated(_) => {
                        if let Some(p) = progress {
                            p.advance(Progress::Authenticated);
                        }
                    }
                    ConnectionEvent::Established { peer, capabilities } => {
                        established = Some((peer, capabilities));
                    }
                    ConnectionEvent::Frame(frame) => early.push(frame),
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
        let connection = Connection::new(
            self.session.clone(),
            self.connection.clone(),
            role,
            started.into_std(),
        );
        let mut conn = match connection {
            Ok(c) => c,
            Err(e) => {
                warn!(%addr, reason = %e, "mesh session could not start");
                return false;
            }
        };
        let mut stop = self.shutdown.subscribe();
        let result = {
            let progress = ticket.as_ref().map(Ticket::progress);
            let handshake = self.handshake(&mut reader, &mut writer, &mut conn, progress.as_ref());
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

        let conn = Arc::new(Mutex::new(conn));
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

        // Wakes the writer when reading left bytes to send (a pong).
        let wake = Arc::new(Notify::new());
        let mut writer_task = tokio::spawn(write_loop(
            conn.clone(),
            writer,
            rx,
            wake.clone(),
            self.counters.clone(),
        ));
        let mut writer_done = false;
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
                // The writer ends the connection on its own when the connection's timer
                // closes it (idle peer) or the socket refuses a write.
                ended = &mut writer_task => {
                    writer_done = true;
                    break ended.unwrap_or_else(|e| format!("writer failed: {e}"));
                }
                read = reader.read(&mut buf) => read,
            };
            let n = match read {
                Ok(0) => break "connection closed by peer".to_owned(),
                Ok(n) => {
                    self.counters
                        .bytes_in
                        .fetch_add(n as u64, Ordering::Relaxed);
                    n
                }
                Err(e) => break format!("read failed: {e}"),
            };
            let mut frames = Vec::new();
            {
                let mut c = conn.lock();
                if let Err(e) = c.handle_input(&buf[..n], now()) {
                    break format!("session failed: {e}");
                }
                while let Some(event) = c.poll_event() {
                    if let ConnectionEvent::Frame(f) = event {
                        frames.push(f);
                    }
                }
                if c.has_output() {
                    wake.notify_one();
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
        if !writer_done {
            let _ = tokio::time::timeout(Duration::from_millis(200), writer_task).await;
        }
        conn.lock().close();
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

            Frame::Close(reason) => {
                debug!(peer = %link.id, ?reason, "mesh peer closed the session");
                false
            }
            // Answered, refused or applied inside the connection core; never delivered.
            Frame::Hello { .. } | Frame::Ping(_) | Frame::Pong(_) | Frame::Rekey => true,
        }
    }
}

fn role_label(role: Role) -> &'static str {
    match role {
        Role::Initiator => "dialer",
        Role::Responder => "listener",
    }
}

/// Encrypts queued frames and writes them. Between frames it sleeps until the connection's
/// next deadline (`poll_timeout`) and hands the time to it, which may queue a ping or end
/// an idle connection. Returns why it stopped.
async fn write_loop(
    conn: Arc<Mutex<Connection>>,
    mut writer: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Frame>,
    wake: Arc<Notify>,
    counters: Arc<Counters>,
) -> String {
    let mut out = Vec::with_capacity(2 * READ_CHUNK);
    let reason = loop {
        let deadline = conn.lock().poll_timeout();
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        let first = tokio::select! {
            frame = rx.recv() => match frame {
                Some(frame) => Some(frame),
                None => break "send queue closed".to_owned(),
            },
            () = timer => None,
            () = wake.notified() => None,
        };
        let mut closing = matches!(first, Some(Frame::Close(_)));
        let mut ended = None;
        {
            let mut c = conn.lock();
            let now = now();
            if let Err(e) = c.handle_timeout(now) {
                ended = Some(e.to_string());
            } else if let Some(first) = first {
                if let Err(e) = send_one(&mut c, &first, now) {
                    ended = Some(e);
                }
                let mut n = 1;
                while ended.is_none() && !closing && n < WRITE_COALESCE {
                    let Ok(frame) = rx.try_recv() else { break };
                    closing = matches!(frame, Frame::Close(_));
                    if let Err(e) = send_one(&mut c, &frame, now) {
                        ended = Some(e);
                    }
                    n += 1;
                }
            }
            c.drain_output_into(&mut out);
        }
        if !out.is_empty() {
            if let Err(e) = writer.write_all(&out).await {
                break format!("write failed: {e}");
            }
            counters
                .bytes_out
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            out.clear();
            if out.capacity() > 8 * READ_CHUNK {
                out.shrink_to(2 * READ_CHUNK);
            }
        }
        if let Some(reason) = ended {
            break reason;
        }
        if closing {
            break "closed".to_owned();
        }
    };
    let _ = writer.shutdown().await;
    reason
}

/// Encrypts one frame into the connection's output. A frame above the size limit is dropped
/// (its requester times out) without ending the connection; any other failure ends it.
fn send_one(conn: &mut Connection, frame: &Frame, now: Instant) -> Result<(), String> {
    match conn.send(frame, now) {
        Ok(()) => Ok(()),
        Err(SessionError::TooLarge(size)) => {
            warn!(size, "mesh frame above the size limit dropped");
            Ok(())
        }
        Err(SessionError::Encode(e)) => {
            warn!(reason = %e, "mesh frame that cannot be encoded dropped");
            Ok(())
        }
        Err(e) => {
            debug!(reason = %e, "mesh send failed");
            Err(format!("send failed: {e}"))
        }
    }
}

/// The time as the connection core sees it, from tokio's clock.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The counted reason and the logged detail of a failed handshake.
fn failure(error: ConnectionError) -> HandshakeFailure {
    let reason = match &error {
        ConnectionError::Session(e) => classify(e),
        ConnectionError::FirstMessageTimeout | ConnectionError::HandshakeTimeout => {
            FailReason::Timeout
        }
        _ => FailReason::Protocol,
    };
    (reason, error.to_string())
}
