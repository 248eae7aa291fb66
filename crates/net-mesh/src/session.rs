//! The sans-I/O session: Noise handshake, identity binding, record framing, fragmentation,
//! reassembly and rekeying, with no sockets and no clock of its own.
//!
//! A [`Session`] is fed the bytes read from the peer ([`Session::handle_input`]) and the
//! current time ([`Session::handle_timeout`]); it hands back the bytes to write
//! ([`Session::take_output`]) and what happened ([`Session::poll_event`]). The tokio driver
//! (the private `node` module) is a thin loop around it, and the tests drive two sessions against
//! each other in memory.
//!
//! # Wire format
//!
//! Everything on the wire is a *record*: a 2-byte big-endian length `n` (1 to 65535)
//! followed by `n` bytes. During the handshake the bytes are Noise handshake messages
//! (at most [`MAX_HANDSHAKE_MESSAGE`] bytes); afterwards each is a Noise transport message
//! whose plaintext is a record header and a chunk of an encoded [`Frame`]:
//!
//! - `0x00` + the whole frame;
//! - `0x01` + total frame length (u32) + the first chunk, for a frame longer than one record;
//! - `0x02` + the next chunk of the frame being reassembled.
//!
//! Fragments of one frame are never interleaved with other records. The total length is
//! checked against [`SessionConfig::max_frame`] before any buffer is reserved.
//!
//! Noise transport nonces are implicit counters: a record replayed, dropped, reordered or
//! altered fails authentication, and any failure ends the session for good.

mod payload;

use crate::frame::{EncodeError, Frame, FrameError};
use crate::identity::{verify, EntityKeypair, NodeId};
use bytes::Bytes;
use payload::{identity_payload, signed_message};
use snow::{HandshakeState, TransportState};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Noise protocol name without a pre-shared key.
pub const NOISE_XX: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Noise protocol name with a pre-shared key, mixed in at the end of the third message.
pub const NOISE_XX_PSK: &str = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";
/// Bound into every handshake through the Noise prologue: a peer speaking another protocol
/// or version fails the handshake.
pub const PROLOGUE: &[u8] = b"net-mesh/1";
/// The largest Noise message.
pub const MAX_NOISE_MESSAGE: usize = 65_535;
/// The largest handshake message accepted; a longer length prefix ends the handshake at once.
pub const MAX_HANDSHAKE_MESSAGE: usize = 512;
#[cfg(feature = "fuzzing")]
pub use payload::IDENTITY_PAYLOAD_LEN;
/// Authentication tag added by ChaCha20-Poly1305.
const TAG_LEN: usize = 16;
/// Largest plaintext in one transport message.
const MAX_PLAINTEXT: usize = MAX_NOISE_MESSAGE - TAG_LEN;
const RECORD_WHOLE: u8 = 0x00;
const RECORD_FIRST: u8 = 0x01;
const RECORD_NEXT: u8 = 0x02;
/// Largest chunk of a frame carried by one record (room for the `RECORD_FIRST` header).
const MAX_CHUNK: usize = MAX_PLAINTEXT - 5;

/// Settings of a session, shared by every session of a node.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// This node's identity.
    pub keypair: EntityKeypair,
    /// Pre-shared key: when set, only peers holding the same key complete the handshake.
    pub psk: Option<[u8; 32]>,
    /// When set, only these node ids are accepted as peers.
    pub allow: Option<Arc<HashSet<NodeId>>>,
    /// How long a handshake may take from the session's creation.
    pub handshake_timeout: Duration,
    /// Largest frame (after reassembly) accepted from the peer.
    pub max_frame: usize,
    /// The sender switches to a new key after this many records.
    pub rekey_after: u64,
    /// ... or after this many plaintext bytes, whichever comes first.
    pub rekey_after_bytes: u64,
}

impl SessionConfig {
    /// Defaults around `keypair`: no psk, no allow-list, 10 s handshake timeout, 64 MiB
    /// frames, rekey every 2^20 records or 16 GiB, whichever comes first.
    pub fn new(keypair: EntityKeypair) -> Self {
        Self {
            keypair,
            psk: None,
            allow: None,
            handshake_timeout: Duration::from_secs(10),
            max_frame: 64 << 20,
            rekey_after: 1 << 20,
            rekey_after_bytes: 16 << 30,
        }
    }
}

/// Why a session ended. The peer is never told which of these it was.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The handshake did not finish before its deadline.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// A handshake message failed Noise processing (wrong psk, tampering, garbage).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The peer's identity payload is malformed or its signature does not verify.
    #[error("peer identity not proven: {0}")]
    Identity(&'static str),
    /// The peer proved an identity that the allow-list does not contain.
    #[error("peer {0} is not on the allow-list")]
    NotAllowed(NodeId),
    /// A transport record failed authentication (replayed, reordered, altered, wrong key).
    #[error("record failed authentication")]
    Decrypt,
    /// A length prefix or a fragment header announced more than the limits allow.
    #[error("oversized: {0}")]
    Oversize(String),
    /// A record or frame does not follow the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A frame could not be decoded.
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    /// A frame to send cannot be encoded (a field too long for its length prefix). The
    /// session stays open.
    #[error("frame cannot be encoded: {0}")]
    Encode(#[from] EncodeError),
    /// A frame to send is larger than the configured limit.
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The session already ended.
    #[error("session is closed")]
    Closed,
    /// Noise refused to build or run the session (a local problem).
    #[error("noise: {0}")]
    Noise(String),
}

/// What a session reports to its driver.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// The handshake finished and the peer proved this identity.
    Connected(NodeId),
    /// A frame arrived.
    Frame(Frame),
}

/// Which side of the handshake this session plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The dialing side: writes the first handshake message.
    Initiator,
    /// The listening side.
    Responder,
}

enum State {
    Handshake {
        noise: Box<HandshakeState>,
        /// Handshake messages processed so far (read or written).
        step: u8,
        deadline: Instant,
    },
    Transport(Box<TransportState>),
    Closed,
}

struct Reassembly {
    total: usize,
    buf: Vec<u8>,
}

/// One end of a session between two nodes. See the module documentation.
pub struct Session {
    config: SessionConfig,
    role: Role,
    state: State,
    static_public: [u8; 32],
    peer: Option<NodeId>,
    input: Vec<u8>,
    output: Vec<u8>,
    events: VecDeque<SessionEvent>,
    reassembly: Option<Reassembly>,
    plaintext: Vec<u8>,
    encode_buf: Vec<u8>,
    sent_since_rekey: u64,
    bytes_since_rekey: u64,
    records_sent: u64,
    records_received: u64,
    /// Test hook: sign the identity payload with this key instead of the node's own.
    #[cfg(test)]
    pub(crate) forged_signer: Option<EntityKeypair>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("peer", &self.peer)
            .field("records_sent", &self.records_sent)
            .field("records_received", &self.records_received)
            .finish_non_exhaustive()
    }
}

fn noise_err(e: snow::Error) -> SessionError {
    SessionError::Noise(e.to_string())
}

impl Session {
    /// A new session started at `now`. An initiator has its first handshake message ready in
    /// [`Session::take_output`] at once.
    pub fn new(config: SessionConfig, role: Role, now: Instant) -> Result<Self, SessionError> {
        let name = if config.psk.is_some() {
            NOISE_XX_PSK
        } else {
            NOISE_XX
        };
        let params = name.parse().map_err(noise_err)?;
        let builder = snow::Builder::new(params);
        let static_keys = builder.generate_keypair().map_err(noise_err)?;
        let mut builder = snow::Builder::new(name.parse().map_err(noise_err)?)
            .local_private_key(&static_keys.private)
            .map_err(noise_err)?
            .prologue(PROLOGUE)
            .map_err(noise_err)?;
        if let Some(psk) = &config.psk {
            builder = builder.psk(3, psk).map_err(noise_err)?;
        }
        let noise = match role {
            Role::Initiator => builder.build_initiator(),
            Role::Responder => builder.build_responder(),
        }
        .map_err(noise_err)?;
        let mut static_public = [0u8; 32];
        static_public.copy_from_slice(&static_keys.public);
        let deadline = now + config.handshake_timeout;
        let mut session = Self {
            config,
            role,
            state: State::Handshake {
                noise: Box::new(noise),
                step: 0,
                deadline,
            },
            static_public,
            peer: None,
            input: Vec::new(),
            output: Vec::new(),
            events: VecDeque::new(),
            reassembly: None,
            plaintext: vec![0u8; MAX_NOISE_MESSAGE],
            encode_buf: Vec::new(),
            sent_since_rekey: 0,
            bytes_since_rekey: 0,
            records_sent: 0,
            records_received: 0,
            #[cfg(test)]
            forged_signer: None,
        };
        if role == Role::Initiator {
            session.write_handshake(&[])?;
        }
        Ok(session)
    }

    /// The peer's proven identity, once the handshake finished.
    pub fn peer(&self) -> Option<NodeId> {
        self.peer
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// True once the handshake finished and until the session ends.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Transport(_))
    }

    /// True once the session ended (after an error or [`Session::close`]).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// When the driver must call [`Session::handle_timeout`] next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Handshake { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// Tells the session the time; ends a handshake past its deadline.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SessionError> {
        if let State::Handshake { deadline, .. } = &self.state {
            if now >= *deadline {
                return self.fail(SessionError::HandshakeTimeout);
            }
        }
        Ok(())
    }

    /// Ends the session: nothing more is read or written.
    pub fn close(&mut self) {
        self.state = State::Closed;
        self.input = Vec::new();
        self.reassembly = None;
    }

    /// Bytes to write to the peer, in order. Empty when there is nothing to send.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Appends the bytes to write to the peer to `out`, keeping this session's buffer.
    pub fn drain_output_into(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.output);
        self.output.clear();
    }

    /// The next thing that happened, if any.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Number of records sent and received since the handshake.
    pub fn record_counts(&self) -> (u64, u64) {
        (self.records_sent, self.records_received)
    }

    /// Feeds bytes read from the peer. Any error ends the session; the caller should log it
    /// and drop the connection without telling the peer why.
    pub fn handle_input(&mut self, mut bytes: &[u8]) -> Result<(), SessionError> {
        if self.is_closed() {
            return Err(SessionError::Closed);
        }
        // Process whole records straight from `bytes` when nothing is buffered, and keep at
        // most one partial record (at most 2 + 65535 bytes) between calls.
        loop {
            let available = if self.input.is_empty() {
                bytes
            } else {
                // Complete the buffered record from `bytes` first.
                let need = match self.input.len() {
                    0 | 1 => 2 - self.input.len(),
                    _ => {
                        let n = u16::from_be_bytes([self.input[0], self.input[1]]) as usize;
                        self.check_length(n)?;
                        2 + n - self.input.len()
                    }
                };
                let take = need.min(bytes.len());
                self.input.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if take < need {
                    return Ok(());
                }
                if self.input.len() == 2 {
                    continue;
                }
                let record = std::mem::take(&mut self.input);
                self.handle_record(&record[2..])?;
                continue;
            };
            if available.is_empty() {
                return Ok(());
            }
            if available.len() < 2 {
                self.input.extend_from_slice(available);
                return Ok(());
            }
            let n = u16::from_be_bytes([available[0], available[1]]) as usize;
            self.check_length(n)?;
            if available.len() < 2 + n {
                self.input.reserve_exact(2 + n);
                self.input.extend_from_slice(available);
                return Ok(());
            }
            let (record, rest) = available.split_at(2 + n);
            bytes = rest;
            self.handle_record(&record[2..])?;
        }
    }

    fn check_length(&mut self, n: usize) -> Result<(), SessionError> {
        let max = match self.state {
            State::Handshake { .. } => MAX_HANDSHAKE_MESSAGE,
            _ => MAX_NOISE_MESSAGE,
        };
        if n == 0 || n > max {
            return self.fail(SessionError::Oversize(format!(
                "record length {n} outside 1..={max}"
            )));
        }
        if matches!(self.state, State::Transport(_)) && n < TAG_LEN {
            return self.fail(SessionError::Protocol(format!(
                "record of {n} bytes is shorter than its tag"
            )));
        }
        Ok(())
    }

    fn fail<T>(&mut self, error: SessionError) -> Result<T, SessionError> {
        self.close();
        Err(error)
    }

    fn handle_record(&mut self, record: &[u8]) -> Result<(), SessionError> {
        match &mut self.state {
            State::Closed => Err(SessionError::Closed),
            State::Handshake { .. } => match self.read_handshake(record) {
                Ok(()) => Ok(()),
                Err(e) => self.fail(e),
            },
            State::Transport(noise) => {
                let n = match noise.read_message(record, &mut self.plaintext) {
                    Ok(n) => n,
                    Err(_) => return self.fail(SessionError::Decrypt),
                };
                self.records_received += 1;
                match self.handle_plaintext(n) {
                    Ok(()) => Ok(()),
                    Err(e) => self.fail(e),
                }
            }
        }
    }

    fn handle_plaintext(&mut self, n: usize) -> Result<(), SessionError> {
        let plain = &self.plaintext[..n];
        let (&flag, rest) = plain
            .split_first()
            .ok_or_else(|| SessionError::Protocol("empty record".into()))?;
        match (flag, self.reassembly.as_mut()) {
            (RECORD_WHOLE, None) => {
                let frame = Frame::decode(&Bytes::copy_from_slice(rest))?;
                self.deliver(frame)
            }
            (RECORD_FIRST, None) => {
                if rest.len() < 4 {
                    return Err(SessionError::Protocol("short fragment header".into()));
                }
                let total = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let chunk = &rest[4..];
                if total > self.config.max_frame {
                    return Err(SessionError::Oversize(format!(
                        "fragmented frame of {total} bytes exceeds {}",
                        self.config.max_frame
                    )));
                }
                if total <= chunk.len() {
                    return Err(SessionError::Protocol(
                        "fragmented frame no longer than its first chunk".into(),
                    ));
                }
                // Bounded by `max_frame`, checked above.
                let mut buf = Vec::with_capacity(total);
                buf.extend_from_slice(chunk);
                self.reassembly = Some(Reassembly { total, buf });
                Ok(())
            }
            (RECORD_NEXT, Some(re)) => {
                if re.buf.len() + rest.len() > re.total {
                    return Err(SessionError::Protocol(
                        "fragment runs past the announced length".into(),
                    ));
                }
                re.buf.extend_from_slice(rest);
                if re.buf.len() == re.total {
                    if let Some(re) = self.reassembly.take() {
                        let frame = Frame::decode(&Bytes::from(re.buf))?;
                        self.deliver(frame)?;
                    }
                }
                Ok(())
            }
            (RECORD_WHOLE | RECORD_FIRST, Some(_)) => Err(SessionError::Protocol(
                "new frame while a fragmented one is incomplete".into(),
            )),
            (RECORD_NEXT, None) => Err(SessionError::Protocol(
                "continuation without a first fragment".into(),
            )),
            (flag, _) => Err(SessionError::Protocol(format!(
                "unknown record flag {flag:#04x}"
            ))),
        }
    }

    fn deliver(&mut self, frame: Frame) -> Result<(), SessionError> {
        if frame == Frame::Rekey {
            if let State::Transport(noise) = &mut self.state {
                noise.rekey_incoming();
            }
            return Ok(());
        }
        self.events.push_back(SessionEvent::Frame(frame));
        Ok(())
    }

    fn read_handshake(&mut self, message: &[u8]) -> Result<(), SessionError> {
        let State::Handshake { noise, step, .. } = &mut self.state else {
            return Err(SessionError::Closed);
        };
        // The hash before this message is what the sender signed.
        let mut hash_before = [0u8; 32];
        hash_before.copy_from_slice(noise.get_handshake_hash());
        let mut payload = [0u8; MAX_HANDSHAKE_MESSAGE];
        let n = noise
            .read_message(message, &mut payload)
            .map_err(|e| SessionError::Handshake(e.to_string()))?;
        *step += 1;
        let step = *step;
        match (self.role, step) {
            (Role::Responder, 1) => {
                if n != 0 {
                    return Err(SessionError::Handshake(
                        "first message carries a payload".into(),
                    ));
                }
                self.write_identity()
            }
            (Role::Initiator, 2) => {
                self.verify_identity(&payload[..n], &hash_before)?;
                self.write_identity()?;
                self.finish()
            }
            (Role::Responder, 3) => {
                self.verify_identity(&payload[..n], &hash_before)?;
                self.finish()
            }
            _ => Err(SessionError::Handshake(
                "unexpected handshake message".into(),
            )),
        }
    }

    fn write_identity(&mut self) -> Result<(), SessionError> {
        let State::Handshake { noise, .. } = &self.state else {
            return Err(SessionError::Closed);
        };
        #[allow(unused_mut)]
        let mut payload = identity_payload(
            &self.config.keypair,
            &self.static_public,
            noise.get_handshake_hash(),
        );
        #[cfg(test)]
        if let Some(forger) = &self.forged_signer {
            let forged = identity_payload(forger, &self.static_public, noise.get_handshake_hash());
            payload[33..].copy_from_slice(&forged[33..]);
        }
        self.write_handshake(&payload)
    }

    fn write_handshake(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let State::Handshake { noise, step, .. } = &mut self.state else {
            return Err(SessionError::Closed);
        };
        let start = self.output.len();
        self.output.resize(start + 2 + MAX_HANDSHAKE_MESSAGE, 0);
        let n = noise
            .write_message(payload, &mut self.output[start + 2..])
            .map_err(noise_err)?;
        self.output.truncate(start + 2 + n);
        self.output[start..start + 2].copy_from_slice(&(n as u16).to_be_bytes());
        *step += 1;
        Ok(())
    }

    fn verify_identity(&mut self, payload: &[u8], hash: &[u8; 32]) -> Result<(), SessionError> {
        let State::Handshake { noise, .. } = &self.state else {
            return Err(SessionError::Closed);
        };
        let (id, signature) = decode_identity_payload(payload)?;
        let remote_static = noise
            .get_remote_static()
            .ok_or(SessionError::Identity("no remote static key"))?;
        let message = signed_message(remote_static, hash);
        if !verify(&id, &message, &signature) {
            return Err(SessionError::Identity("signature does not verify"));
        }
        if let Some(allow) = &self.config.allow {
            if !allow.contains(&id) {
                return Err(SessionError::NotAllowed(id));
            }
        }
        self.peer = Some(id);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SessionError> {
        let state = std::mem::replace(&mut self.state, State::Closed);
        let State::Handshake { noise, .. } = state else {
            return Err(SessionError::Closed);
        };
        let transport = noise.into_transport_mode().map_err(noise_err)?;
        self.state = State::Transport(Box::new(transport));
        let peer = self.peer.ok_or(SessionError::Identity(
            "handshake finished without identity",
        ))?;
        self.events.push_back(SessionEvent::Connected(peer));
        Ok(())
    }

    /// Encodes, fragments and encrypts `frame` into the output. Fails when the session is not
    /// established, the frame cannot be encoded or it exceeds [`SessionConfig::max_frame`].
    pub fn send(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let mut buf = std::mem::take(&mut self.encode_buf);
        buf.clear();
        let result = match frame.encode(&mut buf) {
            Ok(()) => self.send_encoded(&buf),
            Err(e) => Err(e.into()),
        };
        if buf.capacity() <= 4 * MAX_NOISE_MESSAGE {
            self.encode_buf = buf;
        }
        result
    }

    /// Sends an already encoded frame (see [`Frame::encode`]).
    pub fn send_encoded(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        if !self.is_established() {
            return Err(SessionError::Closed);
        }
        if frame.len() > self.config.max_frame {
            return Err(SessionError::TooLarge(frame.len()));
        }
        if frame.len() < MAX_PLAINTEXT {
            self.seal(&[RECORD_WHOLE], frame)?;
        } else {
            let total = u32::try_from(frame.len())
                .map_err(|_| SessionError::TooLarge(frame.len()))?
                .to_be_bytes();
            let header = [RECORD_FIRST, total[0], total[1], total[2], total[3]];
            let (first, mut rest) = frame.split_at(MAX_CHUNK);
            self.seal(&header, first)?;
            while !rest.is_empty() {
                let take = rest.len().min(MAX_PLAINTEXT - 1);
                let (chunk, tail) = rest.split_at(take);
                self.seal(&[RECORD_NEXT], chunk)?;
                rest = tail;
            }
        }
        if self.sent_since_rekey >= self.config.rekey_after
            || self.bytes_since_rekey >= self.config.rekey_after_bytes
        {
            self.seal(&[RECORD_WHOLE], &Frame::Rekey.to_bytes()?)?;
            if let State::Transport(noise) = &mut self.state {
                noise.rekey_outgoing();
            }
            self.sent_since_rekey = 0;
            self.bytes_since_rekey = 0;
        }
        Ok(())
    }

    /// Encrypts one record (`header` + `body`, at most [`MAX_PLAINTEXT`] bytes) into the output.
    fn seal(&mut self, header: &[u8], body: &[u8]) -> Result<(), SessionError> {
        let State::Transport(noise) = &mut self.state else {
            return Err(SessionError::Closed);
        };
        let plain_len = header.len() + body.len();
        let mut plain = std::mem::take(&mut self.plaintext);
        plain[..header.len()].copy_from_slice(header);
        plain[header.len()..plain_len].copy_from_slice(body);
        let start = self.output.len();
        self.output.resize(start + 2 + plain_len + TAG_LEN, 0);
        let result = noise.write_message(&plain[..plain_len], &mut self.output[start + 2..]);
        self.plaintext = plain;
        let n = result.map_err(noise_err)?;
        self.output.truncate(start + 2 + n);
        self.output[start..start + 2].copy_from_slice(&(n as u16).to_be_bytes());
        self.records_sent += 1;
        self.sent_since_rekey += 1;
        self.bytes_since_rekey += plain_len as u64;
        Ok(())
    }
}

/// Decodes a handshake identity payload into the claimed node id and its signature. Checks
/// only the shape; the signature is verified by the session.
pub fn decode_identity_payload(payload: &[u8]) -> Result<(NodeId, [u8; 64]), SessionError> {
    payload::decode(payload).map_err(SessionError::Identity)
}

#[cfg(test)]
mod tests;
