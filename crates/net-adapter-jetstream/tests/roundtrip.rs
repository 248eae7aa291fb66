//! Every payload the bus accepts comes back byte for byte from JetStream, through a real
//! `EventBus`, and every filter sees it (see `roundtrip_kit` for the property and payloads);
//! a payload too big for the server once framed is refused at write with a typed error and
//! counted dropped, never retried forever.

#[path = "../../net-core/tests/roundtrip_kit/mod.rs"]
mod roundtrip_kit;
mod support;

use base64::Engine as _;
use bytes::Bytes;
use net_adapter::{Adapter, AdapterError, Batch, BatchEvent, MAX_PAGE};
use net_adapter_jetstream::{JetStreamAdapter, JetStreamAdapterConfig};
use roundtrip_kit::{check, ingest_and_read, large, regressions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{unique_name, NatsServer};

async fn adapter(url: &str) -> JetStreamAdapter {
    let config = JetStreamAdapterConfig::new(url, unique_name("roundtrip"))
        .request_timeout(Duration::from_secs(5));
    JetStreamAdapter::connect(config).await.expect("connect")
}

/// The `max_payload` the server announces.
async fn max_payload(url: &str) -> usize {
    let client = async_nats::connect(url).await.expect("connect");
    client.server_info().max_payload
}

/// Bytes a payload takes in its record, roughly (the envelope is under 100 bytes).
fn record_len(payload: &[u8]) -> usize {
    if payload != b"null" && net_adapter::payload::embeddable(payload) {
        payload.len()
    } else {
        base64::engine::general_purpose::STANDARD
            .encode(payload)
            .len()
    }
}

#[test]
fn every_accepted_payload_round_trips_through_jetstream() {
    let Some(server) = NatsServer::any("every_accepted_payload_round_trips_through_jetstream")
    else {
        return;
    };
    let url = server.url().to_owned();
    roundtrip_kit::run_property(16, || {
        let url = url.clone();
        async move { adapter(&url).await }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_payloads_round_trip_and_match_the_empty_filter() {
    let Some(server) = NatsServer::any("regression_payloads_round_trip") else {
        return;
    };
    let outcome = ingest_and_read(adapter(server.url()).await, &regressions(), 4)
        .await
        .unwrap();
    check(&outcome, |_| false).unwrap();
}

/// Near 1 MiB, the bus accepts what the server cannot take once framed: those events are
/// refused at write, counted dropped and as `TooLarge`, and the others come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_records_are_refused_at_write_and_the_rest_round_trip() {
    let Some(server) = NatsServer::any("oversized_records_are_refused_at_write") else {
        return;
    };
    let max = max_payload(server.url()).await;
    let started = Instant::now();
    let outcome = ingest_and_read(adapter(server.url()).await, &large(), 1)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        outcome.refused_at_ingest.len(),
        1,
        "only the payload over 1 MiB"
    );
    let refused = |p: &[u8]| record_len(p) + 100 > max;
    assert!(
        outcome
            .accepted
            .iter()
            .any(|p| p.len() == 1_048_500 && refused(p)),
        "the 1,048,500-byte event must be one the server cannot take"
    );
    assert!(
        outcome.accepted.iter().any(|p| !refused(p)),
        "and some must fit"
    );
    check(&outcome, refused).unwrap();
}

/// The size the adapter checks is the size the server counts: a record of exactly
/// `max_payload` bytes with its header block is stored, one byte more is `TooLarge` (and not
/// the client library's own refusal, which would come after part of a batch was published).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_limit_is_exact() {
    let Some(server) = NatsServer::any("the_size_limit_is_exact") else {
        return;
    };
    let max = max_payload(server.url()).await;
    let adapter = adapter(server.url()).await;
    // `{"r":"xx..x","t":1000,"s":0}` with `Nats-Msg-Id: abc:0:<seq>:0`.
    let batch = |seq: u64, payload_len: usize| {
        let mut raw = vec![b'x'; payload_len];
        raw[0] = b'"';
        raw[payload_len - 1] = b'"';
        Arc::new(Batch {
            shard_id: 0,
            events: vec![BatchEvent {
                raw: Bytes::from(raw),
                insertion_ts: 1000,
                shard_id: 0,
            }],
            sequence_start: seq,
            process_nonce: 0xabc,
        })
    };
    let id_len = "abc:0:1:0".len();
    let envelope = r#"{"r":,"t":1000,"s":0}"#.len();
    let headers = "NATS/1.0\r\nNats-Msg-Id: \r\n\r\n".len() + id_len;
    let fits = max - envelope - headers;
    adapter
        .on_batch(batch(1, fits))
        .await
        .expect("exactly max_payload");
    match adapter.on_batch(batch(2, fits + 1)).await {
        Err(AdapterError::TooLarge {
            size,
            max: limit,
            what,
        }) => {
            assert_eq!((size, limit), (max + 1, max), "{what}");
            assert!(what.contains("shard 0"), "{what}");
        }
        other => panic!("one byte over max_payload: {other:?}"),
    }
    let page = adapter.poll_shard(0, None, MAX_PAGE).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].raw.len(), fits);
    adapter.shutdown().await.unwrap();
}
