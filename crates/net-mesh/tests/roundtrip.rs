//! Every payload the bus accepts comes back byte for byte through the mesh: a bus on a client
//! node that stores nothing, writing over loopback to a storage node that keeps the events in
//! a `MemoryAdapter` (see `roundtrip_kit` for the property and payloads).

#[path = "../../net-core/tests/roundtrip_kit/mod.rs"]
mod roundtrip_kit;
mod support;

use net_mesh::NetAdapter;
use roundtrip_kit::{check, ingest_and_read, large, regressions};
use std::sync::Arc;

/// A client node connected to a fresh storage node. The storage node must outlive the bus
/// over the client, which shuts the client down; it is left running until the test's runtime
/// ends.
async fn client() -> Arc<NetAdapter> {
    let (client, storage, _memory) = support::pair().await;
    std::mem::forget(storage);
    Arc::new(client)
}

#[test]
fn every_accepted_payload_round_trips_through_the_mesh() {
    roundtrip_kit::run_property(16, client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_payloads_round_trip_and_match_the_empty_filter() {
    let outcome = ingest_and_read(client().await, &regressions(), 4)
        .await
        .unwrap();
    check(&outcome, |_| false).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_up_to_the_bus_limit_round_trip_through_the_mesh() {
    let outcome = ingest_and_read(client().await, &large(), 1).await.unwrap();
    assert_eq!(
        outcome.refused_at_ingest.len(),
        1,
        "only the payload over 1 MiB"
    );
    check(&outcome, |_| false).unwrap();
}
