//! What polls and batch ingests return, as plain objects (`index.js` wraps the events).

use napi::bindgen_prelude::{BigInt, Buffer};
use napi_derive::napi;
use net_sdk::{ConsumeResponse, StoredEvent};

/// An event read back from the bus, as the native layer hands it over.
#[napi(object)]
pub struct EventRecord {
    /// The adapter's position of the event (a stream entry id, a sequence, an offset).
    pub id: String,
    /// The payload as ingested.
    pub raw: Buffer,
    /// Ingestion time in nanoseconds since the Unix epoch.
    pub insertion_ts: BigInt,
    /// The shard the event was stored under.
    pub shard_id: u32,
    /// The dedup id written with the event, when the adapter keeps one.
    pub dedup_id: Option<String>,
}

impl From<StoredEvent> for EventRecord {
    fn from(event: StoredEvent) -> Self {
        Self {
            id: event.id,
            raw: Buffer::from(event.raw.to_vec()),
            insertion_ts: BigInt::from(event.insertion_ts),
            shard_id: u32::from(event.shard_id),
            dedup_id: event.dedup_id,
        }
    }
}

/// A page of events returned by `poll`.
#[napi(object)]
pub struct PageRecord {
    /// The events, in the requested ordering.
    pub events: Vec<EventRecord>,
    /// Pass it back as `cursor` to resume right after these events.
    pub cursor: String,
    /// True when more events were waiting at the time of the poll.
    pub has_more: bool,
}

impl From<ConsumeResponse> for PageRecord {
    fn from(response: ConsumeResponse) -> Self {
        Self {
            events: response.events.into_iter().map(EventRecord::from).collect(),
            cursor: response.cursor,
            has_more: response.has_more,
        }
    }
}

/// One refused event of a batch ingest.
#[napi(object)]
pub struct Refusal {
    /// Its position in the batch.
    pub index: u32,
    /// The error's code (`ERR_BACKPRESSURE`, `ERR_TOO_LARGE`, ...).
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// What a batch ingest did.
#[napi(object)]
pub struct BatchRecord {
    /// Events accepted into a ring.
    pub accepted: u32,
    /// Every refused event, in batch order.
    pub refused: Vec<Refusal>,
}
