//! The sans-I/O connection: a [`Session`] plus everything above the record layer that is
//! still protocol rather than I/O — the `Hello` exchange, the version check, the rule that
//! the first frame is a `Hello`, the handshake and first-message deadlines, pings when the
//! sending side is idle, answers to the peer's pings, and the idle deadline.
//!
//! Like the session it owns no socket and no clock: the driver feeds it bytes with the time
//! ([`Connection::handle_input`]), asks when it must next be woken
//! ([`Connection::poll_timeout`]), and wakes it then ([`Connection::handle_timeout`]). Every
//! deadline the driver waits for comes from here.
//!
//! Phases: `Handshake` (Noise, §3 of `docs/mesh-protocol.md`) → `AwaitHello` (own `Hello`
//! sent, waiting for the peer's) → `Established` → `Closed`. Any error closes it for good.

use crate::frame::{Capabilities, CloseReason, Frame, PROTOCOL_VERSION};
use crate::identity::NodeId;
use crate::session::{Role, Session, SessionConfig, SessionError, SessionEvent};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Settings of a connection above its session.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    /// What this node announces in its `Hello`.
    pub capabilities: Capabilities,
    /// How long the whole handshake, both `Hello`s included, may take.
    pub handshake_timeout: Duration,
    /// For a listening side: how long the first handshake message may take to arrive.
    pub first_message_timeout: Option<Duration>,
    /// A `Ping` goes out after this long without sending anything.
    pub ping_interval: Duration,
    /// The connection ends after this long without receiving anything.
    pub idle_timeout: Duration,
}

/// Why a connection ended.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The session (record layer or Noise handshake) failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A listening side got no complete handshake message in time.
    #[error("no handshake message before the first-message deadline")]
    FirstMessageTimeout,
    /// The handshake, both `Hello`s included, did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer's first frame was not a `Hello`.
    #[error("first frame is not hello")]
    NotHello,
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {0}")]
    Version(u16),
    /// The peer sent a second `Hello`.
    #[error("peer sent a second hello")]
    SecondHello,
    /// Nothing arrived from the peer for the idle timeout.
    #[error("peer idle past the liveness timeout")]
    Idle,
}

/// What a connection reports to its driver.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// Noise finished and the peer proved this identity; its `Hello` is still due.
    Authenticated(NodeId),
    /// The peer's `Hello` arrived: the connection is established.
    Established {
        /// The peer's proven identity.
        peer: NodeId,
        /// What the peer announced.
        capabilities: Capabilities,
    },
    /// A frame of the established connection (pings, pongs and rekeys are handled inside).
    Frame(Frame),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Handshake,
    AwaitHello,
    Established,
    Closed,
}

/// One end of a connection between two nodes. See the module documentation.
#[derive(Debug)]
pub struct Connection {
    session: Session,
    config: ConnectionConfig,
    phase: Phase,
    /// End of the handshake, both `Hello`s included.
    handshake_deadline: Instant,
    /// End of the wait for the first handshake message, while it applies.
    first_deadline: Option<Instant>,
    last_sent: Instant,
    last_received: Instant,
    pings_sent: u64,
    output: Vec<u8>,
    events: std::collections::VecDeque<ConnectionEvent>,
}

impl Connection {
    /// A new connection started at `now` (when TCP connected or the dial began). An initiator
    /// has its first handshake message ready in the output at once.
    pub fn new(
        session: SessionConfig,
        config: ConnectionConfig,
        role: Role,
        now: Instant,
    ) -> Result<Self, SessionError> {
        let mut session = Session::new(session, role, now)?;
        let mut output = Vec::new();
        session.drain_output_into(&mut output);
        let first_deadline = match role {
            Role::Responder => config.first_message_timeout.map(|t| now + t),
            Role::Initiator => None,
        };
        Ok(Self {
            session,
            handshake_deadline: now + config.handshake_timeout,
            first_deadline,
            config,
            phase: Phase::Handshake,
            last_sent: now,
            last_received: now,
            pings_sent: 0,
            output,
            events: Default::default(),
        })
    }

    /// True once the peer's `Hello` arrived, until the connection ends.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn is_established(&self) -> bool {
        self.phase == Phase::Established
    }

    /// True once the connection ended.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// True while bytes wait in the output.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Bytes to write to the peer, in order.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Appends the bytes to write to the peer to `out`, keeping this connection's buffer.
    pub fn drain_output_into(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.output);
        self.output.clear();
    }

    /// The next thing that happened, if any.
    pub fn poll_event(&mut self) -> Option<ConnectionEvent> {
        self.events.pop_front()
    }

    /// When the driver must call [`Connection::handle_timeout`] next; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Handshake | Phase::AwaitHello => Some(match self.first_deadline {
                Some(first) => first.min(self.handshake_deadline),
                None => self.handshake_deadline,
            }),
            Phase::Established => Some(
                (self.last_sent + self.config.ping_interval)
                    .min(self.last_received + self.config.idle_timeout),
            ),
            Phase::Closed => None,
        }
    }

    /// Tells the connection the time: fails a handshake past its deadline, closes an
    /// established connection idle past the idle timeout (after queueing a `Close`), and
    /// queues a `Ping` when nothing was sent for the ping interval.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnectionError> {
        match self.phase {
            Phase::Closed => Err(SessionError::Closed.into()),
            Phase::Handshake | Phase::AwaitHello => {
                if self.first_deadline.is_some_and(|d| now >= d) {
                    return self.fail(ConnectionError::FirstMessageTimeout);
                }
                if now >= self.handshake_deadline {
                    return self.fail(ConnectionError::HandshakeTimeout);
                }
                Ok(())
            }
            Phase::Established => {
                if now >= self.last_received + self.config.idle_timeout {
                    // Best effort: the peer learns why, coarsely.
                    let _ = self.send(&Frame::Close(CloseReason::Timeout), now);
                    return self.fail(ConnectionError::Idle);
                }
                if now >= self.last_sent + self.config.ping_interval {
                    self.pings_sent += 1;
                    self.send(&Frame::Ping(self.pings_sent), now)?;
                }
                Ok(())
            }
        }
    }

    /// Feeds bytes read from the peer at `now`. Any error ends the connection; the caller
    /// should log it and drop the socket without telling the peer why.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) -> Result<(), ConnectionError> {
        if self.phase == Phase::Closed {
            return Err(SessionError::Closed.into());
        }
        self.last_received = now;
        if let Err(e) = self.session.handle_input(bytes) {
            return self.fail(e.into());
        }
        if self.phase == Phase::Handshake && self.session.role() == Role::Responder {
            // The responder writes only in answer to a complete handshake message.
            let before = self.output.len();
            self.session.drain_output_into(&mut self.output);
            if self.output.len() > before {
                self.first_deadline = None;
            }
        }
        while let Some(event) = self.session.poll_event() {
            if let Err(e) = self.on_event(event, now) {
                return self.fail(e);
            }
        }
        self.session.drain_output_into(&mut self.output);
        Ok(())
    }

    fn on_event(&mut self, event: SessionEvent, now: Instant) -> Result<(), ConnectionError> {
        match (self.phase, event) {
            (Phase::Handshake, SessionEvent::Connected(peer)) => {
                self.phase = Phase::AwaitHello;
                self.first_deadline = None;
                self.events.push_back(ConnectionEvent::Authenticated(peer));
                let hello = Frame::Hello {
                    version: PROTOCOL_VERSION,
                    capabilities: self.config.capabilities.clone(),
                };
                Ok(self.send_frame(&hello, now)?)
            }
            (
                Phase::AwaitHello,
                SessionEvent::Frame(Frame::Hello {
                    version,
                    capabilities,
                }),
            ) => {
                if version != PROTOCOL_VERSION {
                    return Err(ConnectionError::Version(version));
                }
                let peer = self
                    .session
                    .peer()
                    .ok_or(SessionError::Identity("no proven identity"))?;
                self.phase = Phase::Established;
                self.events
                    .push_back(ConnectionEvent::Established { peer, capabilities });
                Ok(())
            }
            (Phase::AwaitHello, SessionEvent::Frame(_)) => Err(ConnectionError::NotHello),
            (Phase::Established, SessionEvent::Frame(frame)) => match frame {
                Frame::Hello { .. } => Err(ConnectionError::SecondHello),
                Frame::Ping(token) => Ok(self.send_frame(&Frame::Pong(token), now)?),
                Frame::Pong(_) => Ok(()),
                frame => {
                    self.events.push_back(ConnectionEvent::Frame(frame));
                    Ok(())
                }
            },
            (_, event) => Err(SessionError::Protocol(format!(
                "unexpected {event:?} while {:?}",
                self.phase
            ))
            .into()),
        }
    }

    /// Encodes, encrypts and queues `frame`. Fails when the connection is not established or
    /// the frame is too large ([`SessionError::TooLarge`], which leaves the connection open).
    pub fn send(&mut self, frame: &Frame, now: Instant) -> Result<(), SessionError> {
        if self.phase != Phase::Established {
            return Err(SessionError::Closed);
        }
        self.send_frame(frame, now)
    }

    fn send_frame(&mut self, frame: &Frame, now: Instant) -> Result<(), SessionError> {
        self.session.send(frame)?;
        self.session.drain_output_into(&mut self.output);
        self.last_sent = now;
        Ok(())
    }

    /// Ends the connection: nothing more is read or written.
    pub fn close(&mut self) {
        self.phase = Phase::Closed;
        self.session.close();
    }

    fn fail(&mut self, error: ConnectionError) -> Result<(), ConnectionError> {
        self.close();
        Err(error)
    }
}

#[cfg(test)]
mod tests;
