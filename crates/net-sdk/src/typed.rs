//! Typed events: [`IngestTyped`] serializes any `T: Serialize` into the bus, and
//! [`DecodeEvent`] reads a [`StoredEvent`] back as any `T: DeserializeOwned`.

use net_adapter::StoredEvent;
use net_core::{EventBus, IngestionError, IngestionResult, RawEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Ingests values of your own types: each is serialized to JSON once, into a block shared with
/// the payloads serialized before it on the same thread ([`RawEvent::from_serialize`], the
/// path [`EventBus::ingest`] takes), and handed to [`EventBus::ingest_raw`].
///
/// ```
/// use net_sdk::{AdapterConfig, ConsumeRequest, DecodeEvent, EventBus, EventBusConfig, IngestTyped};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct Click {
///     user: u64,
///     page: String,
/// }
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = EventBus::new(EventBusConfig::builder().adapter(AdapterConfig::memory()).build()?).await?;
/// let click = Click { user: 7, page: "/home".into() };
/// bus.ingest_typed(&click)?;
/// // Events with the same key keep their order (they share a shard).
/// bus.ingest_typed_with_key(&click, "user-7")?;
/// bus.flush().await?;
/// let page = bus.poll(ConsumeRequest::new(10)).await?;
/// let first: Click = page.events[0].decode()?;
/// assert_eq!(first, click);
/// bus.shutdown().await?;
/// # Ok(())
/// # }
/// ```
pub trait IngestTyped {
    /// Serializes `value` to JSON and ingests it, routed by the hash of its payload.
    ///
    /// A value that cannot be serialized (a map with non-string keys, a failing `Serialize`
    /// impl) is rejected with [`IngestionError::Serialization`] and never reaches the bus.
    fn ingest_typed<T: Serialize + ?Sized>(&self, value: &T) -> IngestionResult<()>;

    /// Like [`IngestTyped::ingest_typed`], routed by `key`: every event with the same key
    /// goes to the same shard and keeps its ingest order there.
    fn ingest_typed_with_key<T: Serialize + ?Sized>(
        &self,
        value: &T,
        key: impl AsRef<[u8]>,
    ) -> IngestionResult<()>;
}

/// The event `ingest_typed` hands to the bus (routed by `key` when there is one).
fn typed_event<T: Serialize + ?Sized>(
    value: &T,
    key: Option<&[u8]>,
) -> Result<RawEvent, IngestionError> {
    match key {
        None => RawEvent::from_serialize(value),
        Some(key) => RawEvent::from_serialize_with_key(value, key),
    }
    .map_err(IngestionError::Serialization)
}

impl IngestTyped for EventBus {
    fn ingest_typed<T: Serialize + ?Sized>(&self, value: &T) -> IngestionResult<()> {
        self.ingest_raw(typed_event(value, None)?)
    }

    fn ingest_typed_with_key<T: Serialize + ?Sized>(
        &self,
        value: &T,
        key: impl AsRef<[u8]>,
    ) -> IngestionResult<()> {
        self.ingest_raw(typed_event(value, Some(key.as_ref()))?)
    }
}

/// Reads the JSON payload of a stored event as a value of your own type.
///
/// ```
/// use net_sdk::{DecodeEvent, StoredEvent};
///
/// let event = StoredEvent {
///     id: "1".into(),
///     raw: r#"{"user":7}"#.into(),
///     insertion_ts: 0,
///     shard_id: 0,
///     dedup_id: None,
/// };
/// let value: serde_json::Value = event.decode()?;
/// assert_eq!(value["user"], 7);
/// # Ok::<(), serde_json::Error>(())
/// ```
pub trait DecodeEvent {
    /// Deserializes the payload; an error names the line and column where it failed.
    fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error>;
}

impl DecodeEvent for StoredEvent {
    fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::collections::HashMap;

    #[test]
    fn unserializable_values_are_rejected() {
        // JSON object keys must be strings: a map keyed by tuples cannot be serialized.
        let mut bad = HashMap::new();
        bad.insert((1, 2), "x");
        assert!(matches!(
            typed_event(&bad, None),
            Err(IngestionError::Serialization(_))
        ));
        let event = typed_event(&[1, 2], None).unwrap();
        assert_eq!(event.bytes(), &Bytes::from_static(b"[1,2]"));
        assert_eq!(event, RawEvent::from_bytes(&b"[1,2]"[..]));
        let keyed = typed_event(&[1, 2], Some(b"user-7")).unwrap();
        assert_eq!(keyed, RawEvent::with_key(&b"[1,2]"[..], "user-7"));
    }

    #[test]
    fn typed_payloads_share_a_block_instead_of_one_allocation_each() {
        // A fresh thread, so its serialization block starts empty.
        std::thread::spawn(|| {
            let first = typed_event(&("click", 1u32), None).unwrap();
            let second = typed_event(&("click", 2u32), Some(b"user-7")).unwrap();
            assert_eq!(first.bytes(), &Bytes::from_static(br#"["click",1]"#));
            assert_eq!(second.bytes(), &Bytes::from_static(br#"["click",2]"#));
            // Consecutive payloads sit back to back in one block; separate allocations
            // never do (every heap chunk carries its allocator's header).
            assert_eq!(
                first.bytes().as_ptr().wrapping_add(first.len()),
                second.bytes().as_ptr()
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn decode_reports_mismatches() {
        let event = StoredEvent {
            id: "1".into(),
            raw: Bytes::from_static(br#"{"a":"x"}"#),
            insertion_ts: 0,
            shard_id: 0,
            dedup_id: None,
        };
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Wants {
            a: u32,
        }
        assert!(event.decode::<Wants>().is_err());
        let ok: HashMap<String, String> = event.decode().unwrap();
        assert_eq!(ok["a"], "x");
    }
}
