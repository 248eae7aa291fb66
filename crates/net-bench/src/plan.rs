//! What a run measures and how much: the three modes, the payloads and the repeat summary.

use bytes::Bytes;
use net_core::RawEvent;
use serde_json::{json, Value};

/// Size of every payload, in bytes (a small JSON object padded to this length).
pub(crate) const PAYLOAD_BYTES: usize = 100;

/// Distinct payloads per producer, cycled through. Distinct payloads spread over the shards
/// (the routing hash is the payload's), and give the reference counts of the shared buffers
/// many cache lines instead of one.
const POOL: usize = 4096;

/// How thorough a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A few thousand events per row, once, to check that every row runs (debug builds).
    Smoke,
    /// Enough events for stable ratios in well under a minute.
    Quick,
    /// Longer runs and more repeats, for the numbers people quote.
    Full,
}

impl Mode {
    /// The mode's name as written in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Smoke => "smoke",
            Mode::Quick => "quick",
            Mode::Full => "full",
        }
    }
}

/// The sizes of one run, derived from its [`Mode`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// The mode the sizes come from.
    pub(crate) mode: Mode,
    /// Timed measurements per row; the report gives their median, minimum and maximum.
    pub(crate) repeats: usize,
    /// Whether each throughput row first runs once untimed (touching rings and caches).
    pub(crate) warm_up: bool,
    /// Events per measurement of the `ingest_raw` and queue/channel rows.
    pub(crate) raw_events: u64,
    /// Events per measurement of the JSON rows.
    pub(crate) json_events: u64,
    /// Events per timed chunk of the JSON rows: the bus row flushes once per chunk.
    pub(crate) json_chunk: usize,
    /// Events per measurement of the MemoryAdapter rows.
    pub(crate) memory_events: u64,
    /// Offered load of the latency rows, in events per second.
    pub(crate) latency_rate: u64,
    /// How long the latency producer offers that load, in milliseconds.
    pub(crate) latency_ms: u64,
    /// Ring capacity per shard of the heap rows (the rings are filled completely).
    pub(crate) heap_ring: usize,
    /// Events per measurement of the JetStream rows (written, then read back).
    pub(crate) jetstream_events: u64,
    /// Batches of 1,024 events per measurement of the log rows that sync every batch.
    pub(crate) log_sync_batches: u64,
    /// Batches of 1,024 events per measurement of the log rows that never sync.
    pub(crate) log_nosync_batches: u64,
    /// Events written to the log, then read back through `bus.poll`, per measurement.
    pub(crate) log_read_events: u64,
    /// Size of the log reopened after its writer was killed, in bytes.
    pub(crate) log_reopen_bytes: u64,
    /// Size of the log opened and read whole while the heap is counted, in bytes.
    pub(crate) log_heap_bytes: u64,
    /// Batches per writer of the group-commit rows (16 writers).
    pub(crate) group_batches: u64,
}

impl Plan {
    /// The sizes of `mode`.
    pub(crate) fn new(mode: Mode) -> Self {
        match mode {
            Mode::Smoke => Self {
                mode,
                repeats: 1,
                warm_up: false,
                raw_events: 20_000,
                json_events: 5_000,
                json_chunk: 5_000,
                memory_events: 20_000,
                latency_rate: 20_000,
                latency_ms: 200,
                heap_ring: 1024,
                jetstream_events: 5_000,
                log_sync_batches: 8,
                log_nosync_batches: 16,
                log_read_events: 20_000,
                log_reopen_bytes: 4 << 20,
                log_heap_bytes: 8 << 20,
                group_batches: 2,
            },
            Mode::Quick => Self {
                mode,
                repeats: 3,
                warm_up: true,
                raw_events: 2_000_000,
                json_events: 200_000,
                json_chunk: 50_000,
                memory_events: 500_000,
                latency_rate: 200_000,
                latency_ms: 1_000,
                heap_ring: 4096,
                jetstream_events: 100_000,
                log_sync_batches: 200,
                log_nosync_batches: 1_000,
                log_read_events: 500_000,
                log_reopen_bytes: 128 << 20,
                log_heap_bytes: 256 << 20,
                group_batches: 16,
            },
            Mode::Full => Self {
                mode,
                repeats: 7,
                warm_up: true,
                raw_events: 4_000_000,
                json_events: 1_000_000,
                json_chunk: 100_000,
                memory_events: 1_000_000,
                latency_rate: 1_000_000,
                latency_ms: 3_000,
                heap_ring: 4096,
                jetstream_events: 200_000,
                log_sync_batches: 500,
                log_nosync_batches: 3_000,
                log_read_events: 1_000_000,
                log_reopen_bytes: 1 << 30,
                log_heap_bytes: 2 << 30,
                group_batches: 64,
            },
        }
    }
}

/// One payload: a JSON object of exactly [`PAYLOAD_BYTES`] bytes, distinct per
/// `(producer, index)`, in a vector without spare capacity (so `Bytes::from` takes it over
/// without allocating again).
pub(crate) fn payload(producer: usize, index: usize) -> Vec<u8> {
    let head = format!(r#"{{"producer":{producer},"seq":{index},"kind":"bench.event","pad":""#);
    let mut text = Vec::with_capacity(PAYLOAD_BYTES.max(head.len() + 2));
    text.extend_from_slice(head.as_bytes());
    let pad = text.capacity() - text.len() - 2;
    text.extend(std::iter::repeat_n(b'x', pad));
    text.extend_from_slice(br#""}"#);
    text
}

/// The events producer `producer` cycles through: pre-built, so that ingesting one is a
/// reference-count increment and nothing else on the producer's side.
pub(crate) fn raw_pool(producer: usize) -> Vec<RawEvent> {
    (0..POOL)
        .map(|index| {
            let event = RawEvent::from_bytes(Bytes::from(payload(producer, index)));
            // The first clone of a `Bytes` made from a `Vec` moves it to a shared buffer (an
            // allocation); do it now so the timed clones are plain reference-count bumps.
            drop(event.clone());
            event
        })
        .collect()
}

/// A JSON value that serializes to about [`PAYLOAD_BYTES`] bytes, distinct per `index`.
pub(crate) fn json_value(index: u64) -> Value {
    json!({
        "producer": 0,
        "seq": index,
        "kind": "bench.event",
        "ok": true,
        "tags": ["a", "b"],
        "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    })
}

/// The median, minimum and maximum of a row's repeated measurements.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Summary {
    /// The middle value (the mean of the two middle ones for an even count).
    pub(crate) median: f64,
    /// The smallest value.
    pub(crate) min: f64,
    /// The largest value.
    pub(crate) max: f64,
    /// Every value, in measurement order.
    pub(crate) samples: Vec<f64>,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none.
    pub(crate) fn of(samples: Vec<f64>) -> Option<Self> {
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        Some(Self {
            median,
            min,
            max,
            samples,
        })
    }

    /// A summary of one fixed value (a configured bound, not a measurement).
    pub(crate) fn fixed(value: f64) -> Self {
        Self {
            median: value,
            min: value,
            max: value,
            samples: vec![value],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{json_value, payload, raw_pool, Summary, PAYLOAD_BYTES};

    /// Summarises `samples` and compares `(median, min, max)`.
    fn check(samples: &[f64], expected: Option<(f64, f64, f64)>) {
        let got = Summary::of(samples.to_vec()).map(|s| (s.median, s.min, s.max));
        assert_eq!(got, expected, "samples {samples:?}");
    }

    #[test]
    fn summaries() {
        check(&[], None);
        check(&[4.0], Some((4.0, 4.0, 4.0)));
        check(&[3.0, 1.0, 2.0], Some((2.0, 1.0, 3.0)));
        check(&[4.0, 1.0, 3.0, 2.0], Some((2.5, 1.0, 4.0)));
    }

    #[test]
    fn payloads_are_valid_json_of_the_advertised_size() {
        for (producer, index) in [(0, 0), (1, 4095), (7, 123_456)] {
            let bytes = payload(producer, index);
            assert_eq!(bytes.len(), PAYLOAD_BYTES);
            assert_eq!(bytes.capacity(), PAYLOAD_BYTES);
            let value: serde_json::Value = serde_json::from_slice(&bytes).expect("valid JSON");
            assert_eq!(value["seq"], index);
        }
        let pool = raw_pool(0);
        assert_ne!(pool[0].hash(), pool[1].hash());
        let json = serde_json::to_vec(&json_value(123_456)).expect("serializes");
        assert!((80..=120).contains(&json.len()), "{} bytes", json.len());
    }
}
