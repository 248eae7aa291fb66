//! Every payload the bus accepts comes back byte for byte from Redis, through a real
//! `EventBus`, and every filter sees it (see `roundtrip_kit` for the property and payloads).

#[path = "../../net-core/tests/roundtrip_kit/mod.rs"]
mod roundtrip_kit;
mod support;

use net_adapter::{Adapter, MAX_PAGE};
use net_adapter_redis::{RedisAdapter, RedisAdapterConfig};
use roundtrip_kit::{check, ingest_and_read, large, regressions};
use support::{unique_prefix, Redis};

async fn adapter(url: &str, prefix: &str) -> RedisAdapter {
    let mut adapter = RedisAdapter::new(RedisAdapterConfig::new(url, prefix)).expect("config");
    adapter.init().await.expect("init");
    adapter
}

/// Stream entries as `XRANGE` returns them: ids and field/value pairs.
type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// The `d` fields of every entry of shard 0's stream, read behind the adapter.
async fn stored_d_fields(redis: &Redis, prefix: &str) -> Vec<Vec<u8>> {
    let mut con = redis.client().await;
    let entries: Entries = redis::cmd("XRANGE")
        .arg(format!("{prefix}:shard:0"))
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .expect("xrange");
    entries
        .into_iter()
        .flat_map(|(_, fields)| fields.into_iter().filter(|(f, _)| f == "d").map(|(_, v)| v))
        .collect()
}

#[test]
fn every_accepted_payload_round_trips_through_redis() {
    let Some(redis) = Redis::any("every_accepted_payload_round_trips_through_redis") else {
        return;
    };
    let url = redis.url().to_owned();
    roundtrip_kit::run_property(24, || {
        let url = url.clone();
        async move { adapter(&url, &unique_prefix()).await }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_inside_a_json_string_is_stored_and_read_back() {
    let Some(redis) = Redis::any("invalid_utf8_inside_a_json_string") else {
        return;
    };
    let line = b"{\"a\":\"\xff\xfe\"}".to_vec();
    let outcome = ingest_and_read(
        adapter(redis.url(), &redis.prefix).await,
        std::slice::from_ref(&line),
        1,
    )
    .await
    .unwrap();
    check(&outcome, |_| false).unwrap();
    assert_eq!(outcome.stored, vec![line]);
    // The stored entry stays readable JSON: the payload is kept as base64, not embedded.
    let d = stored_d_fields(&redis, &redis.prefix).await;
    assert_eq!(d.len(), 1);
    let text = std::str::from_utf8(&d[0]).expect("the `d` field is UTF-8");
    let value: serde_json::Value = serde_json::from_str(text).expect("the `d` field is JSON");
    assert_eq!(value["b"], "eyJhIjoi//4ifQ==", "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_payloads_round_trip_and_match_the_empty_filter() {
    let Some(redis) = Redis::any("regression_payloads_round_trip") else {
        return;
    };
    let outcome = ingest_and_read(adapter(redis.url(), &redis.prefix).await, &regressions(), 4)
        .await
        .unwrap();
    check(&outcome, |_| false).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_up_to_the_bus_limit_round_trip_through_redis() {
    let Some(redis) = Redis::any("payloads_up_to_the_bus_limit") else {
        return;
    };
    let outcome = ingest_and_read(adapter(redis.url(), &redis.prefix).await, &large(), 1)
        .await
        .unwrap();
    assert_eq!(
        outcome.refused_at_ingest.len(),
        1,
        "only the payload over 1 MiB"
    );
    check(&outcome, |_| false).unwrap();
}

/// Entries written before payloads outside the JSON rule took the base64 form still read:
/// embedded JSON and the `b` form side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stored_forms_read_back() {
    let Some(redis) = Redis::any("both_stored_forms_read_back") else {
        return;
    };
    let prefix = unique_prefix();
    let key = format!("{prefix}:shard:0");
    let mut con = redis.client().await;
    for d in [
        r#"{"r":{"k":[1,"v"]},"t":5,"s":0}"#,
        r#"{"b":"/wA=","t":6,"s":0}"#,
        r#"{"s":0,"t":7,"r":"\ud800"}"#,
    ] {
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("d")
            .arg(d)
            .arg("dedup_id")
            .arg("1:0:0:0")
            .query_async(&mut con)
            .await
            .expect("xadd");
    }
    let adapter = adapter(redis.url(), &prefix).await;
    let page = adapter.poll_shard(0, None, MAX_PAGE).await.unwrap();
    let raws: Vec<&[u8]> = page.events.iter().map(|e| &e.raw[..]).collect();
    assert_eq!(
        raws,
        vec![&br#"{"k":[1,"v"]}"#[..], b"\xff\x00", br#""\ud800""#]
    );
    adapter.shutdown().await.unwrap();
}
