//! [`Event`] and [`RawEvent`]: what producers hand to the bus.

use bytes::{Bytes, BytesMut};
use serde_json::Value as JsonValue;
use std::cell::RefCell;
use xxhash_rust::xxh3::xxh3_64;

/// Size of the blocks that serialized payloads are carved from.
const BLOCK_BYTES: usize = 16 * 1024;

/// A thread's serialization state.
#[derive(Default)]
struct Serializer {
    /// Reused output of `serde_json` (writing into a `Vec` is its fastest path).
    scratch: Vec<u8>,
    /// The current block: payloads are copied into it back to back and split off as `Bytes`
    /// that share it.
    block: BytesMut,
}

thread_local! {
    static SERIALIZER: RefCell<Serializer> = RefCell::new(Serializer::default());
}

/// Serializes `value` into `Bytes` carved from this thread's current block.
///
/// Allocating every payload on its own made the allocator the largest cost of `ingest`: a
/// payload is allocated on the producer's thread and freed on a batch worker's, which with
/// glibc means locking the producer's arena and consolidating free lists. Payloads carved
/// from a shared block cost one reference-count increment each, and a block is freed when
/// its last payload is dropped. A block whose payloads are all gone before it is full is
/// reused in place.
///
/// The cost of sharing: a payload kept alive keeps its whole block alive (at most
/// [`BLOCK_BYTES`], or the payload's own size when it is larger), as `Bytes::slice` does.
pub(crate) fn serialize<T: serde::Serialize + ?Sized>(
    value: &T,
) -> Result<Bytes, serde_json::Error> {
    SERIALIZER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut state) => {
            let Serializer { scratch, block } = &mut *state;
            scratch.clear();
            serde_json::to_writer(&mut *scratch, value)?;
            if block.capacity() - block.len() < scratch.len() {
                // Reclaims the block in place if every payload cut from it was dropped.
                block.reserve(BLOCK_BYTES.max(scratch.len()));
            }
            block.extend_from_slice(scratch);
            let bytes = block.split().freeze();
            // Do not keep unusually large buffers alive for the rest of the thread.
            if scratch.capacity() > BLOCK_BYTES {
                *scratch = Vec::new();
            }
            if block.capacity() > 4 * BLOCK_BYTES {
                *block = BytesMut::new();
            }
            Ok(bytes)
        }
        // Only reachable if serializing re-enters this function on the same thread.
        Err(_) => serde_json::to_vec(value).map(Bytes::from),
    })
}

/// A JSON event, convenient to build in code. [`crate::EventBus::ingest`] serializes it once.
#[derive(Clone, Debug, PartialEq)]
pub struct Event(pub JsonValue);

impl Event {
    /// Wraps a JSON value.
    pub fn new(value: JsonValue) -> Self {
        Event(value)
    }

    /// Parses a JSON document.
    #[allow(clippy::should_implement_trait)] // the API keeps the inherent name; FromStr is implemented too
    pub fn from_str(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s).map(Event)
    }

    /// Parses a JSON document from bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes).map(Event)
    }

    /// The wrapped value.
    pub fn into_inner(self) -> JsonValue {
        self.0
    }

    /// A reference to the wrapped value.
    pub fn as_value(&self) -> &JsonValue {
        &self.0
    }

    /// Serializes the event into a [`RawEvent`].
    pub fn into_raw(self) -> RawEvent {
        RawEvent::from_value(self.0)
    }
}

impl std::str::FromStr for Event {
    type Err = serde_json::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Event::from_str(s)
    }
}

impl From<JsonValue> for Event {
    fn from(value: JsonValue) -> Self {
        Event(value)
    }
}

/// A pre-serialized event: the payload bytes and a 64-bit routing hash.
///
/// The bus takes ownership of the bytes and never copies them. The hash picks the shard:
/// by default it is the xxh3 hash of the payload, so equal payloads land on the same shard.
/// To keep the events of one key in order, give them the same hash with
/// [`RawEvent::with_key`] (or [`RawEvent::from_bytes_with_hash`]): events with equal hashes go
/// to the same shard, whose order the bus preserves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEvent {
    bytes: Bytes,
    hash: u64,
}

impl RawEvent {
    /// Wraps bytes without validating them.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let hash = xxh3_64(&bytes);
        RawEvent { bytes, hash }
    }

    /// Wraps bytes after checking they are one JSON document under the rule of
    /// [`net_adapter::payload`]: valid UTF-8, no lone surrogate escape, numbers that fit an
    /// `f64`, at most [`net_adapter::payload::MAX_DEPTH`] levels of nesting.
    ///
    /// The filter evaluator parses exactly the payloads this accepts, so every filter sees
    /// every field of a validated event.
    ///
    /// # Errors
    ///
    /// The first violation of the rule and its position.
    pub fn from_bytes_validated(bytes: impl Into<Bytes>) -> Result<Self, serde_json::Error> {
        let bytes = bytes.into();
        net_adapter::payload::validate(&bytes)?;
        Ok(Self::from_bytes(bytes))
    }

    /// Wraps bytes with a routing hash chosen by the caller.
    pub fn from_bytes_with_hash(bytes: impl Into<Bytes>, hash: u64) -> Self {
        RawEvent {
            bytes: bytes.into(),
            hash,
        }
    }

    /// Wraps bytes routed by `key`: every event with the same key goes to the same shard and
    /// keeps its ingest order there.
    pub fn with_key(bytes: impl Into<Bytes>, key: impl AsRef<[u8]>) -> Self {
        Self::from_bytes_with_hash(bytes, xxh3_64(key.as_ref()))
    }

    /// Serializes any `T: Serialize` to JSON, routed by the hash of the payload like
    /// [`RawEvent::from_bytes`].
    ///
    /// The payload is carved from a block shared with the payloads serialized before it on
    /// this thread, as [`crate::EventBus::ingest`] does, instead of getting an allocation of
    /// its own.
    ///
    /// ```
    /// use net_core::RawEvent;
    ///
    /// let event = RawEvent::from_serialize(&[1, 2, 3])?;
    /// assert_eq!(&event.bytes()[..], b"[1,2,3]");
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// What `serde_json` reports for a value it cannot serialize (a map with non-string keys,
    /// a failing `Serialize` impl).
    pub fn from_serialize<T: serde::Serialize + ?Sized>(
        value: &T,
    ) -> Result<Self, serde_json::Error> {
        serialize(value).map(Self::from_bytes)
    }

    /// Like [`RawEvent::from_serialize`], routed by `key` like [`RawEvent::with_key`].
    ///
    /// # Errors
    ///
    /// As [`RawEvent::from_serialize`].
    pub fn from_serialize_with_key<T: serde::Serialize + ?Sized>(
        value: &T,
        key: impl AsRef<[u8]>,
    ) -> Result<Self, serde_json::Error> {
        serialize(value).map(|bytes| Self::with_key(bytes, key))
    }

    /// Serializes a JSON value.
    pub fn from_value(value: JsonValue) -> Self {
        // Serializing a `serde_json::Value` cannot fail: its map keys are strings.
        let bytes = serialize(&value).unwrap_or_default();
        Self::from_bytes(bytes)
    }

    /// The payload bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The routing hash.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Takes the payload bytes back.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validated_rejects_invalid_json() {
        for bad in ["", "{", "{\"a\":}", "nul", "[1,2", "{} {}", "\u{0}"] {
            assert!(
                RawEvent::from_bytes_validated(bad.as_bytes().to_vec()).is_err(),
                "{bad:?}"
            );
        }
        // What the filter evaluator could not parse is refused here too: bytes that are not
        // UTF-8 inside a string, lone surrogate escapes, nesting past the limit.
        let depth = net_adapter::payload::MAX_DEPTH;
        let too_deep = format!("{}1{}", "[".repeat(depth + 1), "]".repeat(depth + 1));
        let deepest = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        for bad in [
            &b"{\"a\":\"\xff\xfe\"}"[..],
            br#"{"a":"\ud800"}"#,
            br#"{"\udfff":1}"#,
            too_deep.as_bytes(),
        ] {
            let error = RawEvent::from_bytes_validated(bad.to_vec()).expect_err("refused");
            assert!(!error.to_string().is_empty());
        }
        assert!(RawEvent::from_bytes_validated(deepest.into_bytes()).is_ok());
        for good in ["{}", "[1,2]", "\"x\"", " {\"a\": [1, {\"b\": null}]} "] {
            assert!(
                RawEvent::from_bytes_validated(good.as_bytes().to_vec()).is_ok(),
                "{good:?}"
            );
        }
    }

    #[test]
    fn serialized_payloads_share_a_block_and_stay_independent() {
        // Run on a fresh thread so the block starts empty.
        std::thread::spawn(|| {
            let values: Vec<JsonValue> = (0..2_000)
                .map(|i| serde_json::json!({"n": i, "s": "x".repeat(i % 40)}))
                .collect();
            let payloads: Vec<Bytes> = values.iter().map(|v| serialize(v).unwrap()).collect();
            for (value, payload) in values.iter().zip(&payloads) {
                assert_eq!(payload[..], serde_json::to_vec(value).unwrap()[..]);
            }
            // Consecutive payloads of one block sit back to back.
            assert_eq!(
                payloads[0].as_ptr().wrapping_add(payloads[0].len()),
                payloads[1].as_ptr()
            );
            // Once every payload of the current block is gone, the block is reused in place.
            // The start of the current block: walk back over payloads that sit back to back.
            let mut first = payloads.len() - 1;
            while first > 0
                && payloads[first - 1]
                    .as_ptr()
                    .wrapping_add(payloads[first - 1].len())
                    == payloads[first].as_ptr()
            {
                first -= 1;
            }
            let block_start = payloads[first].as_ptr();
            let last = payloads.last().unwrap().as_ptr();
            drop(payloads);
            let mut next = serialize(&serde_json::json!({"n": 0})).unwrap();
            for _ in 0..BLOCK_BYTES {
                if next.as_ptr() <= last {
                    break;
                }
                drop(next);
                next = serialize(&serde_json::json!({"n": 0})).unwrap();
            }
            assert_eq!(next.as_ptr(), block_start, "the block was not reclaimed");
            // A value larger than a block is serialized whole, and the thread does not keep
            // the oversized buffer around.
            let big = serde_json::json!({"s": "y".repeat(5 * BLOCK_BYTES)});
            let payload = serialize(&big).unwrap();
            assert_eq!(payload[..], serde_json::to_vec(&big).unwrap()[..]);
            SERIALIZER.with(|cell| {
                let state = cell.borrow();
                assert!(state.block.capacity() <= 4 * BLOCK_BYTES);
                assert!(state.scratch.capacity() <= BLOCK_BYTES);
            });
        })
        .join()
        .unwrap();
    }

    #[test]
    fn keys_route_equal() {
        let a = RawEvent::with_key(&b"{\"n\":1}"[..], "user-7");
        let b = RawEvent::with_key(&b"{\"n\":2}"[..], "user-7");
        assert_eq!(a.hash(), b.hash());
        assert_ne!(
            RawEvent::from_bytes(&b"1"[..]).hash(),
            RawEvent::from_bytes(&b"2"[..]).hash()
        );
    }

    #[test]
    fn event_round_trip() {
        let e = Event::from_str("{\"a\":1}").unwrap();
        assert_eq!(e.as_value()["a"], 1);
        let raw = e.clone().into_raw();
        assert_eq!(Event::from_slice(raw.bytes()).unwrap(), e);
    }
}
