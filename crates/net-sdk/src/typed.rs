//! Typed events: [`IngestTyped`] serializes any `T: Serialize` into the bus, and
//! [`DecodeEvent`] reads a [`StoredEvent`] back as any `T: DeserializeOwned`.

use bytes::Bytes;
use net_adapter::StoredEvent;
use net_core::{EventBus, IngestionError, IngestionResult, RawEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Ingests values of your own types: each is serialized to JSON once and handed to
/// [`EventBus::ingest_raw`].
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

fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, IngestionError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(IngestionError::Serialization)
}

impl IngestTyped for EventBus {
    fn ingest_typed<T: Serialize + ?Sized>(&self, value: &T) -> IngestionResult<()> {
        self.ingest_raw(RawEvent::from_bytes(to_bytes(value)?))
    }

    fn ingest_typed_with_key<T: Serialize + ?Sized>(
        &self,
        value: &T,
        key: impl AsRef<[u8]>,
    ) -> IngestionResult<()> {
        self.ingest_raw(RawEvent::with_key(to_bytes(value)?, key))
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
    use std::collections::HashMap;

    #[test]
    fn unserializable_values_are_rejected() {
        // JSON object keys must be strings: a map keyed by tuples cannot be serialized.
        let mut bad = HashMap::new();
        bad.insert((1, 2), "x");
        assert!(matches!(
            to_bytes(&bad),
            Err(IngestionError::Serialization(_))
        ));
        assert_eq!(to_bytes(&[1, 2]).unwrap(), Bytes::from_static(b"[1,2]"));
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
