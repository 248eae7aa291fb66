//! [`Event`] and [`RawEvent`]: what producers hand to the bus.

use bytes::Bytes;
use serde_json::Value as JsonValue;
use std::cell::RefCell;
use xxhash_rust::xxh3::xxh3_64;

thread_local! {
    /// A serialization buffer reused by each thread, so that serializing an event allocates
    /// once (the exact-size payload) instead of growing a fresh `Vec` step by step.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Serializes `value` into exactly-sized bytes.
///
/// `serde_json::to_vec` grows its buffer by reallocation and leaves it larger than the
/// payload, and turning such a `Vec` into `Bytes` costs a second allocation for the shared
/// header. Writing into a reused buffer and copying once avoids both.
pub(crate) fn serialize(value: &impl serde::Serialize) -> Result<Bytes, serde_json::Error> {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            serde_json::to_writer(&mut *buf, value)?;
            let bytes = Bytes::copy_from_slice(&buf);
            // Do not keep an unusually large buffer alive for the rest of the thread.
            if buf.capacity() > 64 * 1024 {
                *buf = Vec::new();
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

    /// Wraps bytes after checking they are one valid JSON document.
    pub fn from_bytes_validated(bytes: impl Into<Bytes>) -> Result<Self, serde_json::Error> {
        let bytes = bytes.into();
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)?;
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
        for good in ["{}", "[1,2]", "\"x\"", " {\"a\": [1, {\"b\": null}]} "] {
            assert!(
                RawEvent::from_bytes_validated(good.as_bytes().to_vec()).is_ok(),
                "{good:?}"
            );
        }
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
