//! [`EventBus::ingest_raw_batch`] and [`EventBus::ingest_batch`]: many events in one call, for
//! callers that cross a boundary once per batch (the language bindings, a file reader).
//!
//! A batch call keeps every guarantee of the single-event calls, event by event: each event is
//! accepted or refused on its own, in order, with the same [`IngestionError`] the single call
//! would return, and the same counters move. It does not stop at the first refusal: a full ring
//! under `DropNewest` refuses some events of a batch and accepts the rest, as the same events
//! sent one at a time would be. Once the bus is shutting down, every later event of the batch is
//! refused with [`IngestionError::ShuttingDown`].

use crate::bus::EventBus;
use crate::error::IngestionError;
use crate::event::{Event, RawEvent};

/// What a batch ingest did: how many events were accepted, and which were refused, why.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct BatchIngest {
    /// Events accepted into a ring (counted in `events_ingested`).
    pub accepted: usize,
    /// The position in the batch of every refused event, with its reason, in batch order.
    pub refused: Vec<(usize, IngestionError)>,
}

impl BatchIngest {
    /// Whether every event of the batch was accepted.
    pub fn all_accepted(&self) -> bool {
        self.refused.is_empty()
    }
}

impl EventBus {
    /// Ingests every event of `events`, in order, each as [`EventBus::ingest_raw`] would, and
    /// reports how many were accepted and which were refused.
    ///
    /// The whole call routes with one snapshot of the routing table (reloaded only if a resize
    /// races it) and stamps its events with one insertion timestamp; a shard's worker is woken
    /// at most once for the events of one call, as for single calls.
    pub fn ingest_raw_batch(&self, events: impl IntoIterator<Item = RawEvent>) -> BatchIngest {
        let inner = self.inner();
        let mut outcome = BatchIngest::default();
        let mut routing = inner.routing.load();
        let now = inner.clock.now_ns();
        for (index, event) in events.into_iter().enumerate() {
            let result = self.ingest_routed(event, &mut routing, Some(now));
            record(&mut outcome, index, result);
        }
        outcome
    }

    /// Serializes and ingests every event of `events`, in order, each as
    /// [`EventBus::ingest`] would, and reports how many were accepted and which were refused.
    pub fn ingest_batch(&self, events: impl IntoIterator<Item = Event>) -> BatchIngest {
        let mut outcome = BatchIngest::default();
        for (index, event) in events.into_iter().enumerate() {
            record(&mut outcome, index, self.ingest(event));
        }
        outcome
    }
}

/// Adds the result of the event at `index` to `outcome`.
fn record(outcome: &mut BatchIngest, index: usize, result: Result<(), IngestionError>) {
    match result {
        Ok(()) => outcome.accepted += 1,
        Err(error) => outcome.refused.push((index, error)),
    }
}
