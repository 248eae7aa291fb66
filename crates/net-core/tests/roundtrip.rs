//! Every payload the bus accepts comes back byte for byte from the in-memory adapter, and
//! every filter sees it (see `roundtrip_kit` for the property and the payloads).

mod roundtrip_kit;

use net_adapter::MemoryAdapter;
use net_core::{Filter, RawEvent};
use roundtrip_kit::{check, ingest_and_read, large, regressions, show};

#[test]
fn every_accepted_payload_round_trips_through_memory() {
    roundtrip_kit::run_property(64, || async { MemoryAdapter::new() });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_payloads_round_trip_and_match_the_empty_filter() {
    let outcome = ingest_and_read(MemoryAdapter::new(), &regressions(), 4)
        .await
        .unwrap();
    check(&outcome, |_| false).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_up_to_the_bus_limit_round_trip() {
    let outcome = ingest_and_read(MemoryAdapter::new(), &large(), 1)
        .await
        .unwrap();
    assert_eq!(
        outcome.refused_at_ingest.len(),
        1,
        "only the payload over 1 MiB"
    );
    check(&outcome, |_| false).unwrap();
}

/// The validated path refuses exactly what the filter evaluator cannot read, so an event it
/// accepts is never seen by a filter as a value without fields.
#[test]
fn validation_and_the_filter_evaluator_agree() {
    let has_a = Filter::parse(r#"{"a":{"$exists":true}}"#).unwrap();
    for payload in regressions() {
        let validated = RawEvent::from_bytes_validated(payload.clone()).is_ok();
        assert_eq!(
            validated,
            net_adapter::payload::parse(&payload).is_ok(),
            "{}",
            show(&payload)
        );
        if !validated {
            assert!(!has_a.matches_bytes(&payload), "{}", show(&payload));
        }
    }
    assert!(RawEvent::from_bytes_validated(&b"{\"a\":\"\xff\xfe\"}"[..]).is_err());
    assert!(RawEvent::from_bytes_validated(&br#"{"a":"\ud800"}"#[..]).is_err());
    assert!(RawEvent::from_bytes_validated(roundtrip_kit::nested(129)).is_err());
    assert!(RawEvent::from_bytes_validated(roundtrip_kit::nested_objects(129)).is_err());
}
