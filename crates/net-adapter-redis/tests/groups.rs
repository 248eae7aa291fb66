//! Consumer groups: two consumers share a shard, one dies holding unacknowledged entries,
//! the other reclaims them; a corrupt pending entry is acknowledged, dead-lettered and
//! reported instead of coming back forever.

mod support;

use net_adapter::{conformance, Adapter, AdapterError, Batch};
use net_adapter_redis::{RedisAdapter, RedisAdapterConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use support::Redis;

const SHARD: u16 = 1;
const IDLE: Duration = Duration::from_millis(200);

fn batch(start: u64, n: u64) -> Arc<Batch> {
    let payloads = (start..start + n).map(|i| format!(r#"{{"i":{i}}}"#));
    Arc::new(Batch {
        process_nonce: 7,
        ..conformance::batch(SHARD, start, payloads)
    })
}

#[tokio::test]
async fn a_dead_consumers_entries_are_reclaimed_and_everything_is_acked() {
    let Some(redis) = Redis::any("consumer_groups") else {
        return;
    };
    let dead_letter = format!("{}:dead", redis.prefix);
    let config = RedisAdapterConfig::new(redis.url(), redis.prefix.clone())
        .consumer_group("workers")
        .dead_letter_stream(&dead_letter);
    let mut adapter = RedisAdapter::new(config).expect("config");
    adapter.init().await.expect("init");
    let key = adapter.shard_key(SHARD);
    let mut con = redis.client().await;

    // Ten events, then a corrupt entry that a foreign consumer takes and never acks, then 20
    // more events.
    adapter.on_batch(batch(0, 10)).await.expect("write");
    let alice = adapter.group_consumer("alice").expect("consumer");
    let bob = adapter.group_consumer("bob").expect("consumer");
    let first = alice.read(SHARD, 10).await.expect("alice reads");
    assert_eq!(first.events.len(), 10);
    assert!(first.rejected.is_empty());
    drop(alice); // dies without acknowledging anything

    let corrupt: String = redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg("d")
        .arg("{torn")
        .query_async(&mut con)
        .await
        .expect("xadd");
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("ghost")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query_async(&mut con)
        .await
        .expect("ghost reads the corrupt entry");
    adapter.on_batch(batch(10, 20)).await.expect("write");

    let mut processed: HashMap<String, u32> = HashMap::new();
    fn process(
        processed: &mut HashMap<String, u32>,
        events: &[net_adapter::StoredEvent],
    ) -> Vec<String> {
        for event in events {
            *processed
                .entry(event.dedup_id.clone().expect("dedup id"))
                .or_default() += 1;
        }
        events.iter().map(|e| e.id.clone()).collect()
    }

    // Bob reads what is new, in pages, and acknowledges each page in one XACK.
    loop {
        let read = bob.read(SHARD, 7).await.expect("bob reads");
        assert!(read.rejected.is_empty(), "{:?}", read.rejected);
        if read.events.is_empty() {
            break;
        }
        let ids = process(&mut processed, &read.events);
        assert_eq!(bob.ack(SHARD, &ids).await.expect("ack"), ids.len() as u64);
    }
    assert_eq!(processed.len(), 20);

    // Once they are idle, Bob takes over Alice's ten and the ghost's corrupt entry.
    tokio::time::sleep(IDLE + Duration::from_millis(50)).await;
    let mut rejected = Vec::new();
    for _ in 0..10 {
        let claimed = bob.claim_idle(SHARD, IDLE, 4).await.expect("claim");
        rejected.extend(claimed.rejected);
        if claimed.events.is_empty() {
            break;
        }
        let ids = process(&mut processed, &claimed.events);
        assert_eq!(bob.ack(SHARD, &ids).await.expect("ack"), ids.len() as u64);
    }
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].id, corrupt);
    assert_eq!(rejected[0].shard_id, SHARD);

    // Every event was processed at least once, and nothing is left pending.
    assert_eq!(processed.len(), 30, "{processed:?}");
    for i in 0..30u64 {
        let (start, index) = if i < 10 { (0, i) } else { (10, i - 10) };
        let id = net_adapter::dedup_id(7, SHARD, start, index as usize);
        assert!(processed.contains_key(&id), "{id} was never processed");
    }
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(&key)
        .arg("workers")
        .query_async(&mut con)
        .await
        .expect("xpending");
    assert_eq!(pending.0, 0, "entries still pending: {pending:?}");
    let claimed = bob
        .claim_idle(SHARD, Duration::ZERO, 100)
        .await
        .expect("claim");
    assert!(claimed.events.is_empty() && claimed.rejected.is_empty());

    // The corrupt entry was copied to the dead-letter stream with why and where from.
    let dead: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(&dead_letter)
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .expect("xrange");
    assert_eq!(dead.len(), 1);
    let fields = &dead[0].1;
    assert_eq!(fields["id"], corrupt);
    assert_eq!(fields["stream"], key);
    assert_eq!(fields["d"], "{torn");
    assert!(!fields["reason"].is_empty());

    // A restarted consumer under an old name finds its own pending entries again.
    adapter.on_batch(batch(30, 2)).await.expect("write");
    let carol = adapter.group_consumer("carol").expect("consumer");
    assert_eq!(carol.read(SHARD, 10).await.expect("read").events.len(), 2);
    let carol = adapter.group_consumer("carol").expect("consumer");
    let again = carol.pending(SHARD, 10).await.expect("pending");
    assert_eq!(again.events.len(), 2);
    let ids: Vec<&str> = again.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(carol.ack(SHARD, &ids).await.expect("ack"), 2);
    assert!(carol
        .pending(SHARD, 10)
        .await
        .expect("pending")
        .events
        .is_empty());

    // Bad ids are refused before anything is sent; without a group there are no consumers.
    assert!(matches!(
        carol.ack(SHARD, &["nonsense"]).await,
        Err(AdapterError::InvalidCursor(_))
    ));
    let plain = RedisAdapter::new(RedisAdapterConfig::new(redis.url(), "no-group")).expect("c");
    assert!(plain.group_consumer("x").is_err());
    adapter.shutdown().await.expect("shutdown");
    assert!(matches!(
        carol.read(SHARD, 1).await,
        Err(AdapterError::Shutdown)
    ));
    if !redis.is_private() {
        support::delete_prefix(&mut con, &redis.prefix).await;
    }
}
