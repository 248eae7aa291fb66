//! The round trip every adapter owes the bus: each payload the bus accepts comes back byte for
//! byte, and one an adapter cannot store is refused at write, counted, and not stored at all.
//!
//! The payloads are hostile on purpose: bytes that are not UTF-8 (inside JSON strings too),
//! NUL bytes, lone surrogate escapes, nesting around the JSON depth limit, whitespace around
//! JSON, `null`, the empty payload, and payloads up to the bus's 1 MiB limit. They are ingested
//! through a real `EventBus` on its raw path (which accepts any bytes) and read back through
//! `poll` with the filter `{}` and with filters every payload satisfies or fails.
//!
//! The adapter crates include this file from their own tests, so one definition of "round
//! trip" holds for memory, Redis, JetStream and the mesh.
#![allow(dead_code, unreachable_pub)]

use net_adapter::Adapter;
use net_core::{
    BatchConfig, ConsumeRequest, EventBus, EventBusConfig, Filter, RawEvent, MAX_POLL_LIMIT,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::future::Future;

/// Any error of the bus, the filter parser or the adapter.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bus's default `max_event_bytes`.
pub const BUS_LIMIT: usize = 1 << 20;

/// `levels` nested arrays around `1`.
pub fn nested(levels: usize) -> Vec<u8> {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels)).into_bytes()
}

/// `levels` nested objects around `1`.
pub fn nested_objects(levels: usize) -> Vec<u8> {
    format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels)).into_bytes()
}

/// The payloads that were accepted and then lost, or never matched a filter, before every
/// layer shared one JSON rule.
pub fn regressions() -> Vec<Vec<u8>> {
    let depth = net_adapter::payload::MAX_DEPTH;
    vec![
        b"{\"a\":\"\xff\xfe\"}".to_vec(),
        br#"{"a":"\ud800"}"#.to_vec(),
        br#"{"\udfff":"x"}"#.to_vec(),
        nested(129),
        nested_objects(129),
        nested(depth),
        nested(depth + 1),
        nested(depth - 1),
        b"1e400".to_vec(),
        b"null".to_vec(),
        Vec::new(),
        b"\x00".to_vec(),
        b"{\"a\":\"\\u0000\"}".to_vec(),
        b" {\"a\":1}\n".to_vec(),
    ]
}

/// One hostile payload of at most a few kilobytes.
pub fn payload() -> impl Strategy<Value = Vec<u8>> {
    let hex = |range: std::ops::RangeInclusive<u32>| range.prop_map(|u| format!("\\u{u:04x}"));
    prop_oneof![
        // Anything at all.
        prop::collection::vec(any::<u8>(), 0..64),
        // Valid JSON text with arbitrary Unicode.
        "[^\"\\\\]{0,24}".prop_map(|s| format!("{{\"s\":\"{s}\",\"n\":1}}").into_bytes()),
        // A JSON-looking object whose string holds arbitrary bytes.
        prop::collection::vec(any::<u8>(), 0..24).prop_map(|bytes| {
            let mut out = b"{\"a\":\"".to_vec();
            out.extend(bytes.into_iter().filter(|b| *b != b'"' && *b != b'\\'));
            out.extend_from_slice(b"\"}");
            out
        }),
        // Escapes: lone or paired surrogates, NUL.
        (
            hex(0xd800..=0xdfff),
            prop::option::of(hex(0xdc00..=0xdfff)),
            any::<bool>()
        )
            .prop_map(|(high, low, key)| {
                let text = format!("{high}{}", low.unwrap_or_default());
                if key {
                    format!("{{\"{text}\":\"\\u0000\"}}").into_bytes()
                } else {
                    format!("{{\"a\":\"{text}\"}}").into_bytes()
                }
            }),
        // Nesting on both sides of the limit.
        (100usize..200, any::<bool>()).prop_map(|(levels, arrays)| if arrays {
            nested(levels)
        } else {
            nested_objects(levels)
        }),
        // JSON with whitespace around it, NUL bytes outside strings, `null`.
        prop::sample::select(vec![
            b" {}".to_vec(),
            b"{}\r\n".to_vec(),
            b"\x00{}".to_vec(),
            b"null".to_vec(),
            b"".to_vec(),
            b"\"\"".to_vec(),
        ]),
        // Something large-ish, not JSON.
        (1usize..4096, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}

/// A run of payloads, as one producer would ingest them.
pub fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(payload(), 1..24)
}

/// The large payloads: JSON and binary around the bus's 1 MiB limit. `1,048,500` bytes is
/// under the limit, but too big for a NATS server's default `max_payload` once framed.
pub fn large() -> Vec<Vec<u8>> {
    let json = |len: usize| {
        let mut out = vec![b'"'];
        out.resize(len - 1, b'x');
        out.push(b'"');
        out
    };
    let binary = |len: usize| {
        (0..len)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect::<Vec<u8>>()
    };
    vec![
        json(1_000_000),
        binary(1_000_000),
        json(1_048_500),
        binary(BUS_LIMIT),
        json(BUS_LIMIT + 1),
    ]
}

/// What one ingest-and-read-back produced.
#[derive(Debug)]
pub struct Outcome {
    /// Payloads `ingest_raw` accepted, in ingest order.
    pub accepted: Vec<Vec<u8>>,
    /// Payloads `ingest_raw` refused.
    pub refused_at_ingest: Vec<Vec<u8>>,
    /// Payloads read back with the filter `{}`, in order.
    pub stored: Vec<Vec<u8>>,
    /// Payloads read back with a filter every payload satisfies.
    pub matched_missing: Vec<Vec<u8>>,
    /// How many payloads a filter no payload satisfies returned.
    pub matched_present: usize,
    /// `events_dropped` after shutdown.
    pub dropped: u64,
    /// `events_dispatched` after shutdown.
    pub dispatched: u64,
    /// `events_ingested` after shutdown.
    pub ingested: u64,
    /// Rejections counted as `TooLarge` at ingest.
    pub rejected_too_large: u64,
    /// Adapter errors counted as `TooLarge`.
    pub adapter_too_large: u64,
}

/// Reads every event the bus can see, with `filter`.
async fn read_all(bus: &EventBus, filter: &str) -> Result<Vec<Vec<u8>>, BoxError> {
    let filter = Filter::parse(filter)?;
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = ConsumeRequest::new(MAX_POLL_LIMIT).filter(filter.clone());
        if let Some(cursor) = cursor.take() {
            request = request.from(cursor);
        }
        let page = bus.poll(request).await?;
        out.extend(page.events.into_iter().map(|e| e.raw.to_vec()));
        cursor = Some(page.cursor);
        if !page.has_more {
            return Ok(out);
        }
    }
}

/// Ingests `payloads` on one shard (so their order is the stored order) through a bus over
/// `adapter`, in batches of at most `max_events`, and reads everything back.
pub async fn ingest_and_read(
    adapter: impl Adapter + 'static,
    payloads: &[Vec<u8>],
    max_events: usize,
) -> Result<Outcome, BoxError> {
    let config = EventBusConfig::builder()
        .shards(1)
        .batch(
            BatchConfig::default()
                .max_events(max_events)
                .max_delay_ms(2),
        )
        .adapter_instance(adapter)
        .build()?;
    let bus = EventBus::new(config).await?;
    let mut accepted = Vec::new();
    let mut refused_at_ingest = Vec::new();
    for payload in payloads {
        match bus.ingest_raw(RawEvent::from_bytes(payload.clone())) {
            Ok(()) => accepted.push(payload.clone()),
            Err(_) => refused_at_ingest.push(payload.clone()),
        }
    }
    // A batch the adapter refuses makes `flush` report the error; what matters here is what
    // was stored and counted.
    let _ = bus.flush().await;
    let stored = read_all(&bus, "{}").await?;
    let matched_missing = read_all(&bus, r#"{"no.such.field":{"$exists":false}}"#).await?;
    let matched_present = read_all(&bus, r#"{"no.such.field":{"$exists":true}}"#)
        .await?
        .len();
    bus.shutdown_via_ref().await?;
    let stats = bus.stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::SeqCst);
    Ok(Outcome {
        accepted,
        refused_at_ingest,
        stored,
        matched_missing,
        matched_present,
        dropped: load(&stats.events_dropped),
        dispatched: load(&stats.events_dispatched),
        ingested: load(&stats.events_ingested),
        rejected_too_large: load(&stats.rejected.too_large),
        adapter_too_large: load(&stats.adapter_errors.too_large),
    })
}

/// Short text for a payload in failure messages.
pub fn show(payload: &[u8]) -> String {
    let head = String::from_utf8_lossy(&payload[..payload.len().min(48)]).into_owned();
    format!("{head:?} ({} bytes)", payload.len())
}

/// Checks the round trip. `refused_at_write` says which payloads the adapter cannot store;
/// with one event per batch, exactly those must be missing and counted dropped.
pub fn check(outcome: &Outcome, refused_at_write: impl Fn(&[u8]) -> bool) -> Result<(), String> {
    for payload in &outcome.refused_at_ingest {
        if payload.len() <= BUS_LIMIT {
            return Err(format!("ingest refused {}", show(payload)));
        }
    }
    if outcome.rejected_too_large != outcome.refused_at_ingest.len() as u64 {
        return Err(format!(
            "{} payloads refused at ingest, {} counted too large",
            outcome.refused_at_ingest.len(),
            outcome.rejected_too_large
        ));
    }
    let expected: Vec<&Vec<u8>> = outcome
        .accepted
        .iter()
        .filter(|p| !refused_at_write(p))
        .collect();
    let refused = (outcome.accepted.len() - expected.len()) as u64;
    if outcome.stored.len() != expected.len() {
        let missing: Vec<String> = expected
            .iter()
            .filter(|p| !outcome.stored.contains(p))
            .map(|p| show(p))
            .collect();
        return Err(format!(
            "{} payloads expected back, {} read; missing: {missing:?}",
            expected.len(),
            outcome.stored.len()
        ));
    }
    for (i, (want, got)) in expected.iter().zip(&outcome.stored).enumerate() {
        if *want != got {
            return Err(format!(
                "payload {i} came back as {} instead of {}",
                show(got),
                show(want)
            ));
        }
    }
    if outcome.matched_missing != outcome.stored {
        return Err(format!(
            "`$exists: false` matched {} of {} stored payloads",
            outcome.matched_missing.len(),
            outcome.stored.len()
        ));
    }
    if outcome.matched_present != 0 {
        return Err(format!(
            "`$exists: true` on a missing field matched {} payloads",
            outcome.matched_present
        ));
    }
    if outcome.dropped != refused || outcome.adapter_too_large != refused {
        return Err(format!(
            "{refused} payloads refused at write, {} counted dropped, {} adapter errors too large",
            outcome.dropped, outcome.adapter_too_large
        ));
    }
    if outcome.ingested != outcome.accepted.len() as u64
        || outcome.dispatched + outcome.dropped != outcome.ingested
    {
        return Err(format!(
            "stats disagree: {} accepted, ingested {}, dispatched {}, dropped {}",
            outcome.accepted.len(),
            outcome.ingested,
            outcome.dispatched,
            outcome.dropped
        ));
    }
    Ok(())
}

/// Runs the property over `cases` generated runs of payloads; `adapter` builds a fresh,
/// isolated adapter for each run.
pub fn run_property<A, F, Fut>(cases: u32, adapter: F)
where
    A: Adapter + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = A>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&payloads(), |payloads| {
        runtime.block_on(async {
            let outcome = ingest_and_read(adapter().await, &payloads, 8)
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            check(&outcome, |_| false).map_err(TestCaseError::fail)
        })
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
