//! The messages two nodes exchange inside an established session, and their byte encoding.
//!
//! Every message starts with one kind byte; all integers are big-endian. The exact layout of
//! each message is in `docs/mesh-protocol.md`. Decoding never trusts a length or a count
//! before checking it against the bytes actually present, so a hostile message cannot make
//! the decoder allocate more than the message's own size.

use bytes::Bytes;
use net_adapter::{AdapterError, Batch, BatchEvent, ShardPollResult, StoredEvent};
use std::sync::Arc;
use thiserror::Error;

/// Version of the message set, carried in [`Frame::Hello`].
pub const PROTOCOL_VERSION: u16 = 1;

/// Most shard ranges a [`Capabilities`] may announce.
pub const MAX_RANGES: usize = 1024;
/// Most tags a [`Capabilities`] may announce.
pub const MAX_TAGS: usize = 64;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 255;
/// Longest error message carried in a reply, in bytes: [`RemoteError::from_adapter`] cuts
/// longer ones, and encoding refuses them.
pub const MAX_ERROR_LEN: usize = 1024;

const KIND_HELLO: u8 = 0x01;
const KIND_BATCH: u8 = 0x02;
const KIND_BATCH_ACK: u8 = 0x03;
const KIND_POLL_REQUEST: u8 = 0x04;
const KIND_POLL_RESPONSE: u8 = 0x05;
const KIND_PING: u8 = 0x06;
const KIND_PONG: u8 = 0x07;
const KIND_CLOSE: u8 = 0x08;
const KIND_REKEY: u8 = 0x09;

/// Why bytes could not be decoded as a [`Frame`].
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The message ended before a field it announced.
    #[error("message truncated")]
    Truncated,
    /// Bytes remain after the last field.
    #[error("trailing bytes after message")]
    Trailing,
    /// The kind byte names no known message.
    #[error("unknown message kind {0:#04x}")]
    UnknownKind(u8),
    /// A field holds a value the protocol does not allow.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

/// Why a [`Frame`] could not be encoded: a field holds more than its length prefix, or the
/// protocol's limit, allows. Nothing is cut to fit.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The field `field` holds `len` bytes (or items); at most `max` fit.
    #[error("{field} of {len} exceeds the limit of {max}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length, in bytes or items.
        len: usize,
        /// The most the encoding allows.
        max: usize,
    },
    /// A field holds a value the decoder would refuse.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

/// `len` if it is at most `max`, else the error naming `field`.
fn check_len(field: &'static str, len: usize, max: usize) -> Result<usize, EncodeError> {
    if len > max {
        Err(EncodeError::TooLong { field, len, max })
    } else {
        Ok(len)
    }
}

/// A length or count carried in a u32 field.
fn len32(field: &'static str, len: usize) -> Result<u32, EncodeError> {
    let max = u32::MAX as usize;
    check_len(field, len, max).map(|n| n as u32)
}

/// An inclusive range of shard ids a node stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShardRange {
    /// First shard id of the range.
    pub start: u16,
    /// Last shard id of the range (inclusive).
    pub end: u16,
}

impl ShardRange {
    /// Every shard id.
    pub const ALL: ShardRange = ShardRange {
        start: 0,
        end: u16::MAX,
    };

    /// The range `start..=end` (the bounds are swapped when given in reverse).
    pub fn new(start: u16, end: u16) -> Self {
        Self {
            start: start.min(end),
            end: start.max(end),
        }
    }

    /// True when `shard` lies in the range.
    pub fn contains(&self, shard: u16) -> bool {
        self.start <= shard && shard <= self.end
    }
}

/// What a node announces about itself after the handshake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The shards whose batches this node stores (empty: it stores nothing).
    pub shards: Vec<ShardRange>,
    /// Free-form labels such as `durable` or `region=eu`.
    pub tags: Vec<String>,
}

impl Capabilities {
    /// True when the node stores `shard`.
    pub fn stores(&self, shard: u16) -> bool {
        self.shards.iter().any(|r| r.contains(shard))
    }
}

/// The class of an error a peer reports in a reply, mirroring [`AdapterError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Retry later.
    Transient,
    /// Retrying cannot help.
    Fatal,
    /// The peer's storage is full.
    Backpressure,
    /// The peer's storage is unreachable.
    Connection,
    /// The peer is shutting down.
    Shutdown,
    /// The cursor is not one the peer's storage produced.
    InvalidCursor,
}

impl ErrorKind {
    fn code(self) -> u8 {
        match self {
            ErrorKind::Transient => 1,
            ErrorKind::Fatal => 2,
            ErrorKind::Backpressure => 3,
            ErrorKind::Connection => 4,
            ErrorKind::Shutdown => 5,
            ErrorKind::InvalidCursor => 6,
        }
    }

    fn from_code(code: u8) -> Result<Self, FrameError> {
        Ok(match code {
            1 => ErrorKind::Transient,
            2 => ErrorKind::Fatal,
            3 => ErrorKind::Backpressure,
            4 => ErrorKind::Connection,
            5 => ErrorKind::Shutdown,
            6 => ErrorKind::InvalidCursor,
            _ => return Err(FrameError::Invalid("error kind")),
        })
    }
}

/// An error a peer reported for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteError {
    /// Its class.
    pub kind: ErrorKind,
    /// A short description (at most [`MAX_ERROR_LEN`] bytes).
    pub message: String,
}

impl RemoteError {
    /// The reply to send for a local adapter error.
    pub fn from_adapter(error: &AdapterError) -> Self {
        use net_adapter::AdapterErrorKind as Local;
        let kind = match error.kind() {
            Local::Transient => ErrorKind::Transient,
            Local::Backpressure => ErrorKind::Backpressure,
            Local::Connection => ErrorKind::Connection,
            Local::Shutdown => ErrorKind::Shutdown,
            Local::InvalidCursor => ErrorKind::InvalidCursor,
            _ => ErrorKind::Fatal,
        };
        let mut message = error.to_string();
        truncate_utf8(&mut message, MAX_ERROR_LEN);
        Self { kind, message }
    }

    /// The adapter error a caller sees for this reply, naming the peer it came from.
    pub fn into_adapter(self, peer: &str) -> AdapterError {
        let text = format!("peer {peer}: {}", self.message);
        match self.kind {
            ErrorKind::Transient => AdapterError::Transient(text),
            ErrorKind::Fatal => AdapterError::Fatal(text),
            ErrorKind::Backpressure => AdapterError::Backpressure,
            ErrorKind::Connection => AdapterError::Connection(text),
            // The peer shutting down is no reason for this node to refuse work: another peer
            // (or the same one, restarted) may take the call.
            ErrorKind::Shutdown => AdapterError::Connection(text),
            ErrorKind::InvalidCursor => AdapterError::InvalidCursor(self.message),
        }
    }
}

/// Why a session is being closed, as told to the peer. Deliberately coarse: the reason of a
/// failure stays in the local log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The node is shutting down.
    Shutdown,
    /// The peer broke the protocol.
    ProtocolError,
    /// The peer stopped answering pings.
    Timeout,
}

/// One message of an established session.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// The first message each side sends: protocol version and capabilities.
    Hello {
        /// The sender's [`PROTOCOL_VERSION`].
        version: u16,
        /// What the sender stores.
        capabilities: Capabilities,
    },
    /// Store this batch; answered by [`Frame::BatchAck`] with the same `request`.
    Batch {
        /// Request id chosen by the sender.
        request: u64,
        /// The batch.
        batch: Arc<Batch>,
    },
    /// The outcome of a [`Frame::Batch`].
    BatchAck {
        /// The request id of the batch.
        request: u64,
        /// `Ok` once the receiver's own adapter accepted the batch.
        result: Result<(), RemoteError>,
    },
    /// Read a page of one shard from the receiver's storage.
    PollRequest {
        /// Request id chosen by the sender.
        request: u64,
        /// The shard.
        shard: u16,
        /// Exclusive cursor, `None` for the start of the shard.
        cursor: Option<String>,
        /// Most events wanted.
        limit: u32,
    },
    /// The answer to a [`Frame::PollRequest`].
    PollResponse {
        /// The request id of the poll.
        request: u64,
        /// The page, or why there is none.
        result: Result<ShardPollResult, RemoteError>,
    },
    /// Liveness probe; answered by [`Frame::Pong`] with the same token.
    Ping(u64),
    /// Answer to [`Frame::Ping`].
    Pong(u64),
    /// The sender ends the session.
    Close(CloseReason),
    /// The sender's next messages use a new key (see `docs/mesh-protocol.md`).
    Rekey,
}

impl Frame {
    /// Appends the encoding of the frame to `out`. Fails, leaving `out` as it was, when a
    /// field does not fit its length prefix or the protocol's limits (see [`EncodeError`]).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_fields(out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_fields(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Frame::Hello {
                version,
                capabilities,
            } => {
                out.push(KIND_HELLO);
                out.extend_from_slice(&version.to_be_bytes());
                let ranges = &capabilities.shards;
                // MAX_RANGES fits a u16 and MAX_TAGS and MAX_TAG_LEN a u8.
                put_u16(
                    out,
                    check_len("shard ranges", ranges.len(), MAX_RANGES)? as u16,
                );
                for r in ranges {
                    if r.start > r.end {
                        return Err(EncodeError::Invalid("shard range start after end"));
                    }
                    put_u16(out, r.start);
                    put_u16(out, r.end);
                }
                let tags = &capabilities.tags;
                out.push(check_len("tags", tags.len(), MAX_TAGS)? as u8);
                for tag in tags {
                    out.push(check_len("tag", tag.len(), MAX_TAG_LEN)? as u8);
                    out.extend_from_slice(tag.as_bytes());
                }
            }
            Frame::Batch { request, batch } => {
                out.push(KIND_BATCH);
                put_u64(out, *request);
                put_u16(out, batch.shard_id);
                put_u64(out, batch.process_nonce);
                put_u64(out, batch.sequence_start);
                put_u32(out, len32("batch events", batch.events.len())?);
                for event in &batch.events {
                    put_u64(out, event.insertion_ts);
                    put_u32(out, len32("event payload", event.raw.len())?);
                    out.extend_from_slice(&event.raw);
                }
            }
            Frame::BatchAck { request, result } => {
                out.push(KIND_BATCH_ACK);
                put_u64(out, *request);
                match result {
                    Ok(()) => out.push(0),
                    Err(e) => put_error(out, e)?,
                }
            }
            Frame::PollRequest {
                request,
                shard,
                cursor,
                limit,
            } => {
                out.push(KIND_POLL_REQUEST);
                put_u64(out, *request);
                put_u16(out, *shard);
                match cursor {
                    None => out.push(0),
                    Some(c) => {
                        out.push(1);
                        put_str16(out, "cursor", c)?;
                    }
                }
                put_u32(out, *limit);
            }
            Frame::PollResponse { request, result } => {
                out.push(KIND_POLL_RESPONSE);
                put_u64(out, *request);
                match result {
                    Ok(page) => {
                        out.push(0);
                        put_str16(out, "cursor", &page.cursor)?;
                        out.push(u8::from(page.has_more));
                        put_u32(out, len32("page events", page.events.len())?);
                        for event in &page.events {
                            put_str16(out, "event id", &event.id)?;
                            put_u64(out, event.insertion_ts);
                            put_u16(out, event.shard_id);
                            match &event.dedup_id {
                                None => out.push(0),
                                Some(d) => {
                                    out.push(1);
                                    put_str16(out, "dedup id", d)?;
                                }
                            }
                            put_u32(out, len32("event payload", event.raw.len())?);
                            out.extend_from_slice(&event.raw);
                        }
                    }
                    Err(e) => put_error(out, e)?,
                }
            }
            Frame::Ping(token) => {
                out.push(KIND_PING);
                put_u64(out, *token);
            }
            Frame::Pong(token) => {
                out.push(KIND_PONG);
                put_u64(out, *token);
            }
            Frame::Close(reason) => {
                out.push(KIND_CLOSE);
                out.push(match reason {
                    CloseReason::Shutdown => 0,
                    CloseReason::ProtocolError => 1,
                    CloseReason::Timeout => 2,
                });
            }
            Frame::Rekey => out.push(KIND_REKEY),
        }
        Ok(())
    }

    /// The encoding of the frame as a new vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Decodes one whole message. `bytes` is a [`Bytes`] so event payloads can share it
    /// instead of being copied.
    pub fn decode(bytes: &Bytes) -> Result<Frame, FrameError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        let frame = match r.u8()? {
            KIND_HELLO => {
                let version = r.u16()?;
                let n = r.u16()? as usize;
                if n > MAX_RANGES {
                    return Err(FrameError::Invalid("too many shard ranges"));
                }
                r.need(n * 4)?;
                let mut shards = Vec::with_capacity(n);
                for _ in 0..n {
                    let start = r.u16()?;
                    let end = r.u16()?;
                    if start > end {
                        return Err(FrameError::Invalid("shard range start after end"));
                    }
                    shards.push(ShardRange { start, end });
                }
                let n = r.u8()? as usize;
                if n > MAX_TAGS {
                    return Err(FrameError::Invalid("too many tags"));
                }
                let mut tags = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = r.u8()? as usize;
                    tags.push(r.string(len)?);
                }
                Frame::Hello {
                    version,
                    capabilities: Capabilities { shards, tags },
                }
            }
            KIND_BATCH => {
                let request = r.u64()?;
                let shard_id = r.u16()?;
                let process_nonce = r.u64()?;
                let sequence_start = r.u64()?;
                let n = r.u32()? as usize;
                // Every event takes at least 12 bytes; refuse a count the message cannot hold.
                if n > r.remaining() / 12 {
                    return Err(FrameError::Truncated);
                }
                let mut events = Vec::with_capacity(n);
                for _ in 0..n {
                    let insertion_ts = r.u64()?;
                    let len = r.u32()? as usize;
                    let raw = r.slice(len)?;
                    events.push(BatchEvent {
                        raw,
                        insertion_ts,
                        shard_id,
                    });
                }
                Frame::Batch {
                    request,
                    batch: Arc::new(Batch {
                        shard_id,
                        events,
                        sequence_start,
                        process_nonce,
                    }),
                }
            }
            KIND_BATCH_ACK => {
                let request = r.u64()?;
                let result = match r.u8()? {
                    0 => Ok(()),
                    code => Err(r.error(code)?),
                };
                Frame::BatchAck { request, result }
            }
            KIND_POLL_REQUEST => {
                let request = r.u64()?;
                let shard = r.u16()?;
                let cursor = match r.u8()? {
                    0 => None,
                    1 => Some(r.str16()?),
                    _ => return Err(FrameError::Invalid("cursor flag")),
                };
                let limit = r.u32()?;
                Frame::PollRequest {
                    request,
                    shard,
                    cursor,
                    limit,
                }
            }
            KIND_POLL_RESPONSE => {
                let request = r.u64()?;
                let result = match r.u8()? {
                    0 => {
                        let cursor = r.str16()?;
                        let has_more = match r.u8()? {
                            0 => false,
                            1 => true,
                            _ => return Err(FrameError::Invalid("has_more flag")),
                        };
                        let n = r.u32()? as usize;
                        // Every event takes at least 17 bytes.
                        if n > r.remaining() / 17 {
                            return Err(FrameError::Truncated);
                        }
                        let mut events = Vec::with_capacity(n);
                        for _ in 0..n {
                            let id = r.str16()?;
                            let insertion_ts = r.u64()?;
                            let shard_id = r.u16()?;
                            let dedup_id = match r.u8()? {
                                0 => None,
                                1 => Some(r.str16()?),
                                _ => return Err(FrameError::Invalid("dedup flag")),
                            };
                            let len = r.u32()? as usize;
                            let raw = r.slice(len)?;
                            events.push(StoredEvent {
                                id,
                                raw,
                                insertion_ts,
                                shard_id,
                                dedup_id,
                            });
                        }
                        Ok(ShardPollResult {
                            events,
                            cursor,
                            has_more,
                        })
                    }
                    code => Err(r.error(code)?),
                };
                Frame::PollResponse { request, result }
            }
            KIND_PING => Frame::Ping(r.u64()?),
            KIND_PONG => Frame::Pong(r.u64()?),
            KIND_CLOSE => Frame::Close(match r.u8()? {
                0 => CloseReason::Shutdown,
                1 => CloseReason::ProtocolError,
                2 => CloseReason::Timeout,
                _ => return Err(FrameError::Invalid("close reason")),
            }),
            KIND_REKEY => Frame::Rekey,
            kind => return Err(FrameError::UnknownKind(kind)),
        };
        if r.remaining() != 0 {
            return Err(FrameError::Trailing);
        }
        Ok(frame)
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// A string of at most 65535 bytes behind its u16 length; a longer one is an error.
fn put_str16(out: &mut Vec<u8>, field: &'static str, s: &str) -> Result<(), EncodeError> {
    put_u16(out, check_len(field, s.len(), u16::MAX.into())? as u16);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// An error reply; its message must already fit [`MAX_ERROR_LEN`] (as
/// [`RemoteError::from_adapter`] makes it).
fn put_error(out: &mut Vec<u8>, e: &RemoteError) -> Result<(), EncodeError> {
    out.push(e.kind.code());
    check_len("error message", e.message.len(), MAX_ERROR_LEN)?;
    put_str16(out, "error message", &e.message)
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn need(&self, n: usize) -> Result<(), FrameError> {
        if n > self.remaining() {
            Err(FrameError::Truncated)
        } else {
            Ok(())
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        self.need(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    fn slice(&mut self, n: usize) -> Result<Bytes, FrameError> {
        self.need(n)?;
        let s = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> Result<String, FrameError> {
        self.need(n)?;
        let s = std::str::from_utf8(&self.buf[self.pos..self.pos + n])
            .map_err(|_| FrameError::Invalid("string is not utf-8"))?
            .to_owned();
        self.pos += n;
        Ok(s)
    }

    fn str16(&mut self) -> Result<String, FrameError> {
        let n = self.u16()? as usize;
        self.string(n)
    }

    fn error(&mut self, code: u8) -> Result<RemoteError, FrameError> {
        let kind = ErrorKind::from_code(code)?;
        let message = self.str16()?;
        if message.len() > MAX_ERROR_LEN {
            return Err(FrameError::Invalid("error message too long"));
        }
        Ok(RemoteError { kind, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_batch() -> Arc<Batch> {
        Arc::new(Batch {
            shard_id: 7,
            events: (0..3)
                .map(|i| BatchEvent {
                    raw: Bytes::from(format!("{{\"i\":{i}}}")),
                    insertion_ts: 1_000 + i,
                    shard_id: 7,
                })
                .collect(),
            sequence_start: 42,
            process_nonce: 0xdead_beef,
        })
    }

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello {
                version: PROTOCOL_VERSION,
                capabilities: Capabilities {
                    shards: vec![ShardRange::new(0, 15), ShardRange::new(100, 100)],
                    tags: vec!["durable".into(), "region=eu".into()],
                },
            },
            Frame::Batch {
                request: 9,
                batch: sample_batch(),
            },
            Frame::BatchAck {
                request: 9,
                result: Ok(()),
            },
            Frame::BatchAck {
                request: 10,
                result: Err(RemoteError {
                    kind: ErrorKind::Backpressure,
                    message: "full".into(),
                }),
            },
            Frame::PollRequest {
                request: 11,
                shard: 3,
                cursor: Some("17".into()),
                limit: 100,
            },
            Frame::PollRequest {
                request: 12,
                shard: 3,
                cursor: None,
                limit: 0,
            },
            Frame::PollResponse {
                request: 11,
                result: Ok(ShardPollResult {
                    events: vec![StoredEvent {
                        id: "18".into(),
                        raw: Bytes::from_static(b"{}"),
                        insertion_ts: 5,
                        shard_id: 3,
                        dedup_id: Some("a:3:0:0".into()),
                    }],
                    cursor: "18".into(),
                    has_more: true,
                }),
            },
            Frame::PollResponse {
                request: 12,
                result: Err(RemoteError {
                    kind: ErrorKind::InvalidCursor,
                    message: "garbage".into(),
                }),
            },
            Frame::Ping(1),
            Frame::Pong(1),
            Frame::Close(CloseReason::ProtocolError),
            Frame::Rekey,
        ]
    }

    fn check(bytes: &[u8], expected: Result<Frame, FrameError>) {
        assert_eq!(
            Frame::decode(&Bytes::copy_from_slice(bytes)),
            expected,
            "{bytes:?}"
        );
    }

    #[test]
    fn every_frame_round_trips() {
        for frame in samples() {
            let bytes = frame.to_bytes().unwrap();
            check(&bytes, Ok(frame));
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        check(&[], Err(FrameError::Truncated));
        check(&[0xff], Err(FrameError::UnknownKind(0xff)));
        check(&[KIND_PING, 0, 0], Err(FrameError::Truncated));
        check(&[KIND_REKEY, 0], Err(FrameError::Trailing));
        check(&[KIND_CLOSE, 9], Err(FrameError::Invalid("close reason")));
        // A batch claiming four billion events in a few bytes is refused before any allocation.
        let mut huge = vec![KIND_BATCH];
        huge.extend_from_slice(&[0; 8 + 2 + 8 + 8]);
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        check(&huge, Err(FrameError::Truncated));
        // An event claiming more bytes than the message holds.
        let mut bytes = Frame::Batch {
            request: 1,
            batch: sample_batch(),
        }
        .to_bytes()
        .unwrap();
        bytes.truncate(bytes.len() - 1);
        check(&bytes, Err(FrameError::Truncated));
        // A reversed shard range.
        check(
            &[KIND_HELLO, 0, 1, 0, 1, 0, 9, 0, 1, 0],
            Err(FrameError::Invalid("shard range start after end")),
        );
        // A string that is not UTF-8.
        check(
            &[
                KIND_POLL_REQUEST,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                1,
                0,
                1,
                1,
                0,
                1,
                0xff,
                0,
                0,
                0,
                1,
            ],
            Err(FrameError::Invalid("string is not utf-8")),
        );
    }

    /// Encodes `frame` after a marker byte; expects `expected` and the marker alone left
    /// behind on failure.
    fn check_encode(frame: Frame, expected: Result<(), EncodeError>) {
        let mut out = vec![0xaa];
        assert_eq!(frame.encode(&mut out), expected);
        if expected.is_err() {
            assert_eq!(out, [0xaa], "a failed encoding leaves nothing behind");
        }
    }

    fn hello(shards: Vec<ShardRange>, tags: Vec<String>) -> Frame {
        Frame::Hello {
            version: PROTOCOL_VERSION,
            capabilities: Capabilities { shards, tags },
        }
    }

    fn too_long(field: &'static str, len: usize, max: usize) -> Result<(), EncodeError> {
        Err(EncodeError::TooLong { field, len, max })
    }

    #[test]
    fn encoding_refuses_what_does_not_fit_instead_of_cutting_it() {
        let range = ShardRange::new(1, 2);
        check_encode(hello(vec![range; MAX_RANGES], vec![]), Ok(()));
        check_encode(
            hello(vec![range; MAX_RANGES + 1], vec![]),
            too_long("shard ranges", MAX_RANGES + 1, MAX_RANGES),
        );
        check_encode(
            hello(vec![ShardRange { start: 9, end: 1 }], vec![]),
            Err(EncodeError::Invalid("shard range start after end")),
        );
        check_encode(hello(vec![], vec!["t".into(); MAX_TAGS]), Ok(()));
        check_encode(
            hello(vec![], vec!["t".into(); MAX_TAGS + 1]),
            too_long("tags", MAX_TAGS + 1, MAX_TAGS),
        );
        check_encode(hello(vec![], vec!["x".repeat(MAX_TAG_LEN)]), Ok(()));
        check_encode(
            hello(vec![], vec!["x".repeat(MAX_TAG_LEN + 1)]),
            too_long("tag", MAX_TAG_LEN + 1, MAX_TAG_LEN),
        );
        let long = "é".repeat(40_000); // 80,000 bytes: the old encoder cut it to 65,534
        let max16 = usize::from(u16::MAX);
        check_encode(
            Frame::PollRequest {
                request: 1,
                shard: 0,
                cursor: Some(long.clone()),
                limit: 1,
            },
            too_long("cursor", long.len(), max16),
        );
        let page = |cursor: &str, id: &str, dedup: &str| Frame::PollResponse {
            request: 1,
            result: Ok(ShardPollResult {
                events: vec![StoredEvent {
                    id: id.into(),
                    raw: Bytes::from_static(b"{}"),
                    insertion_ts: 1,
                    shard_id: 0,
                    dedup_id: Some(dedup.into()),
                }],
                cursor: cursor.into(),
                has_more: false,
            }),
        };
        check_encode(page(&"c".repeat(max16), "1", "d"), Ok(()));
        check_encode(page(&long, "1", "d"), too_long("cursor", long.len(), max16));
        check_encode(
            page("1", &long, "d"),
            too_long("event id", long.len(), max16),
        );
        check_encode(
            page("1", "1", &long),
            too_long("dedup id", long.len(), max16),
        );
        let error = |message: String| Frame::BatchAck {
            request: 1,
            result: Err(RemoteError {
                kind: ErrorKind::Fatal,
                message,
            }),
        };
        check_encode(error("m".repeat(MAX_ERROR_LEN)), Ok(()));
        check_encode(
            error("m".repeat(MAX_ERROR_LEN + 1)),
            too_long("error message", MAX_ERROR_LEN + 1, MAX_ERROR_LEN),
        );
        // Adapter errors are cut to the limit when the reply is made, at a char boundary.
        let reply = RemoteError::from_adapter(&AdapterError::Fatal("é".repeat(MAX_ERROR_LEN)));
        assert!(reply.message.len() <= MAX_ERROR_LEN);
        check_encode(
            Frame::PollResponse {
                request: 2,
                result: Err(reply),
            },
            Ok(()),
        );
    }

    #[test]
    fn u32_fields_refuse_lengths_beyond_four_gibibytes() {
        assert_eq!(len32("event payload", 7), Ok(7));
        assert_eq!(len32("event payload", u32::MAX as usize), Ok(u32::MAX));
        let over = u32::MAX as usize + 1;
        assert_eq!(
            len32("event payload", over),
            Err(EncodeError::TooLong {
                field: "event payload",
                len: over,
                max: u32::MAX as usize,
            })
        );
    }

    #[test]
    fn every_truncation_of_a_valid_message_is_an_error() {
        for frame in samples() {
            let bytes = frame.to_bytes().unwrap();
            for cut in 0..bytes.len() {
                assert!(Frame::decode(&Bytes::copy_from_slice(&bytes[..cut])).is_err());
            }
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Frame::decode(&Bytes::from(bytes));
        }

        #[test]
        fn decoding_mutated_frames_never_panics(index in 0usize..12, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = samples()[index].to_bytes().unwrap();
            for (at, value) in flips {
                let at = at % bytes.len();
                bytes[at] ^= value;
            }
            if let Ok(frame) = Frame::decode(&Bytes::from(bytes.clone())) {
                // Whatever decodes must encode back to the same bytes.
                prop_assert_eq!(frame.to_bytes().unwrap(), bytes);
            }
        }

        #[test]
        fn batches_round_trip(shard in any::<u16>(), nonce in any::<u64>(), seq in any::<u64>(),
                              payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let batch = Arc::new(Batch {
                shard_id: shard,
                events: payloads.into_iter().enumerate().map(|(i, p)| BatchEvent {
                    raw: Bytes::from(p), insertion_ts: i as u64, shard_id: shard,
                }).collect(),
                sequence_start: seq,
                process_nonce: nonce,
            });
            let frame = Frame::Batch { request: 1, batch };
            prop_assert_eq!(Frame::decode(&Bytes::from(frame.to_bytes().unwrap())), Ok(frame));
        }
    }
}
