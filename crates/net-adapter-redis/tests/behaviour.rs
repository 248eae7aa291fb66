//! What the adapter does against a real server beyond the conformance kit: the stored
//! format as a plain client sees it, a write whose reply comes too late, bad input
//! (passwords, key types, stored entries), retention by `MAXLEN`, reconnection and the
//! health check.

mod support;

use net_adapter::{conformance, Adapter, AdapterError, Batch};
use net_adapter_redis::{RedisAdapter, RedisAdapterConfig, WriteMode};
use net_core::{BackpressureMode, BatchConfig, EventBus, EventBusConfig, RawEvent, RetryPolicy};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Options, Redis};

const NONCE: u64 = conformance::BATCH_NONCE;

fn batch(shard: u16, start: u64, n: u64) -> Arc<Batch> {
    let payloads = (start..start + n).map(|i| format!(r#"{{"i":{i}}}"#));
    Arc::new(conformance::batch(shard, start, payloads))
}

async fn adapter(
    redis: &Redis,
    config: impl FnOnce(RedisAdapterConfig) -> RedisAdapterConfig,
) -> RedisAdapter {
    let mut adapter = RedisAdapter::new(config(RedisAdapterConfig::new(
        redis.url(),
        redis.prefix.clone(),
    )))
    .expect("config");
    adapter.init().await.expect("init");
    adapter
}

async fn xlen(redis: &Redis, key: &str) -> u64 {
    let mut con = redis.client().await;
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut con)
        .await
        .expect("xlen")
}

async fn raw_xadd(redis: &Redis, key: &str, fields: &[(&str, &str)]) -> String {
    let mut con = redis.client().await;
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key).arg("*");
    for (field, value) in fields {
        cmd.arg(*field).arg(*value);
    }
    cmd.query_async(&mut con).await.expect("xadd")
}

fn label(event: &net_adapter::StoredEvent) -> String {
    String::from_utf8_lossy(&event.raw).into_owned()
}

#[tokio::test]
async fn a_plain_redis_client_reads_the_stored_fields() {
    let Some(redis) = Redis::private("plain_client", Options::default()) else {
        return;
    };
    let adapter = adapter(&redis, |c| c).await;
    adapter.on_batch(batch(3, 10, 2)).await.expect("write");
    let key = adapter.shard_key(3);
    assert_eq!(key, format!("{}:shard:3", redis.prefix));

    let out = redis.cli(&["XRANGE", &key, "-", "+"]);
    let lines: Vec<&str> = out.lines().collect();
    // redis-cli prints per entry: the id, then field, value, field, value.
    assert_eq!(lines.len(), 10, "{out}");
    for (n, entry) in lines.chunks(5).enumerate() {
        assert_eq!(entry[1], "d", "{out}");
        let d: serde_json::Value = serde_json::from_str(entry[2]).expect("d is JSON");
        let i = 10 + n as u64;
        assert_eq!(
            d,
            serde_json::json!({"r": {"i": i}, "t": 1_700_000_000_000_000_000u64 + i, "s": 3})
        );
        assert_eq!(entry[3], "dedup_id", "{out}");
        assert_eq!(entry[4], net_adapter::dedup_id(NONCE, 3, 10, n), "{out}");
    }
    // The event ids the adapter returns are the entry ids redis-cli shows.
    let page = adapter.poll_shard(3, None, 10).await.expect("poll");
    assert_eq!(page.events[0].id, lines[0]);
    assert_eq!(page.events[1].id, lines[5]);
}

/// Writes `batch` until it succeeds, as the bus retries, and returns the failures seen.
async fn deliver(adapter: &RedisAdapter, batch: &Arc<Batch>) -> Vec<AdapterError> {
    let mut failures = Vec::new();
    let started = Instant::now();
    loop {
        match adapter.on_batch(batch.clone()).await {
            Ok(()) => return failures,
            Err(err) if err.is_retryable() => failures.push(err),
            Err(err) => panic!("non-retryable failure: {err}"),
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{failures:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Holds every write on the server for `pause`, then writes a batch with a command timeout
/// shorter than the pause and retries it until it succeeds. Returns the entries stored.
async fn write_through_a_pause(mode: WriteMode) -> Option<(u64, u64)> {
    let redis = Redis::private("reply_after_timeout", Options::default())?;
    let timeout = Duration::from_millis(300);
    let adapter = adapter(&redis, |c| c.write_mode(mode).command_timeout(timeout)).await;
    let key = adapter.shard_key(0);
    adapter.on_batch(batch(0, 0, 3)).await.expect("first batch");
    redis.cli(&["CLIENT", "PAUSE", "700", "WRITE"]);
    let second = batch(0, 3, 5);
    let started = Instant::now();
    let failures = deliver(&adapter, &second).await;
    assert!(
        !failures.is_empty(),
        "the write was not held past the command timeout"
    );
    for failure in &failures {
        assert!(
            matches!(failure, AdapterError::Transient(m) if m.contains("command timeout")),
            "{failure}"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(600));
    adapter
        .on_batch(batch(0, 8, 1))
        .await
        .expect("a later batch");
    Some((xlen(&redis, &key).await, failures.len() as u64))
}

#[tokio::test]
async fn a_batch_retried_after_its_reply_timed_out_is_stored_once() {
    let Some((stored, timeouts)) = write_through_a_pause(WriteMode::Script).await else {
        return;
    };
    assert_eq!(
        stored, 9,
        "{timeouts} timed-out attempts ran on the server after the pause"
    );
}

#[tokio::test]
async fn the_transaction_path_stores_copies_after_a_timeout() {
    // The reason the script path exists: the same scenario stores the batch more than once
    // with MULTI/EXEC (the copies share dedup ids, so consumers can still drop them).
    let Some((stored, timeouts)) = write_through_a_pause(WriteMode::Transaction).await else {
        return;
    };
    assert!(timeouts >= 1);
    assert!(stored > 9, "expected copies, found {stored} entries");
}

#[tokio::test]
async fn a_wrong_password_is_fatal_and_redacted() {
    let Some(redis) = Redis::private(
        "wrong_password",
        Options {
            password: Some("right-horse-battery".to_owned()),
            ..Options::default()
        },
    ) else {
        return;
    };
    let secret = "wrong-staple-guess";
    let url = format!("redis://default:{secret}@127.0.0.1:{}", redis.port());
    let mut adapter = RedisAdapter::new(RedisAdapterConfig::new(&url, "auth")).expect("config");
    for text in [format!("{adapter:?}"), adapter.to_string()] {
        assert!(!text.contains(secret), "{text}");
        assert!(text.contains("default:***@127.0.0.1"), "{text}");
    }
    let started = Instant::now();
    let err = adapter
        .init()
        .await
        .expect_err("init with a wrong password");
    assert!(err.is_fatal(), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(secret), "{err:?}");
    let err = adapter.on_batch(batch(0, 0, 1)).await.expect_err("write");
    assert!(err.is_fatal() && !err.is_retryable(), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(secret), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "auth failures must be prompt"
    );

    // No password at all: NOAUTH, fatal too.
    let url = format!("redis://127.0.0.1:{}", redis.port());
    let adapter = RedisAdapter::new(RedisAdapterConfig::new(url, "auth")).expect("config");
    let err = adapter.on_batch(batch(0, 0, 1)).await.expect_err("write");
    assert!(err.is_fatal(), "{err:?}");

    // The right one works.
    let adapter = RedisAdapter::new(RedisAdapterConfig::new(redis.url(), "auth")).expect("config");
    adapter.on_batch(batch(0, 0, 1)).await.expect("write");
}

#[tokio::test]
async fn a_key_of_the_wrong_type_is_fatal_not_a_retry_storm() {
    let Some(redis) = Redis::private("wrong_type", Options::default()) else {
        return;
    };
    for mode in [WriteMode::Script, WriteMode::Transaction] {
        let prefix = format!("wt-{mode:?}");
        let probe = RedisAdapter::new(RedisAdapterConfig::new(redis.url(), &prefix)).expect("c");
        let key = probe.shard_key(0);
        redis.cli(&["SET", &key, "a string"]);
        let config = RedisAdapterConfig::new(redis.url(), &prefix).write_mode(mode);
        let adapter = RedisAdapter::new(config).expect("config");
        let err = adapter.on_batch(batch(0, 0, 3)).await.expect_err("write");
        assert!(err.is_fatal() && !err.is_retryable(), "{mode:?}: {err:?}");
        assert!(err.to_string().contains("WRONGTYPE"), "{err}");
        let err = adapter.poll_shard(0, None, 10).await.expect_err("poll");
        assert!(err.is_fatal(), "{err:?}");
        assert_eq!(redis.cli(&["GET", &key]).trim(), "a string");

        // Through a bus: the batch is dropped at once, not retried.
        let config = RedisAdapterConfig::new(redis.url(), &prefix).write_mode(mode);
        let bus = EventBus::new(
            EventBusConfig::builder()
                .shards(1)
                .batch(BatchConfig::default().max_events(10).max_delay_ms(1))
                .backpressure(BackpressureMode::Block)
                .retry(RetryPolicy::default().max_retries(1_000))
                .adapter_instance(RedisAdapter::new(config).expect("config"))
                .build()
                .expect("bus config"),
        )
        .await
        .expect("bus");
        for i in 0..5 {
            bus.ingest_raw(RawEvent::from_bytes(format!(r#"{{"i":{i}}}"#)))
                .expect("ingest");
        }
        let started = Instant::now();
        let _ = bus.flush().await;
        bus.shutdown_via_ref().await.expect("shutdown");
        let stats = bus.stats().snapshot();
        assert_eq!(stats.batches_retried, 0, "{mode:?}: {stats:?}");
        assert_eq!(stats.events_dropped, 5, "{mode:?}: {stats:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test]
async fn garbage_entries_are_skipped_and_the_cursor_moves_past_them() {
    let Some(redis) = Redis::any("garbage_entries") else {
        return;
    };
    let adapter = adapter(&redis, |c| c).await;
    let key = adapter.shard_key(0);
    adapter.on_batch(batch(0, 0, 2)).await.expect("write");
    let garbage = [
        raw_xadd(&redis, &key, &[("d", "{{{ not json"), ("dedup_id", "x")]).await,
        raw_xadd(&redis, &key, &[("d", r#"{"r":1,"t":"soon","s":0}"#)]).await,
        raw_xadd(&redis, &key, &[("other", "field")]).await,
        raw_xadd(&redis, &key, &[("d", "\u{1f980}")]).await,
    ];
    let page = adapter.poll_shard(0, None, 100).await.expect("poll");
    assert_eq!(
        page.events.iter().map(label).collect::<Vec<_>>(),
        [r#"{"i":0}"#, r#"{"i":1}"#]
    );
    assert_eq!(page.cursor, garbage[3], "the cursor must pass the garbage");
    assert!(!page.has_more);

    // A page made only of garbage still moves the cursor.
    let first_good = page.events[1].id.clone();
    let page = adapter
        .poll_shard(0, Some(&first_good), 2)
        .await
        .expect("poll");
    assert!(page.events.is_empty());
    assert_eq!(page.cursor, garbage[1]);
    assert!(page.has_more);
    adapter.on_batch(batch(0, 2, 1)).await.expect("write");
    let page = adapter
        .poll_shard(0, Some(&garbage[3]), 10)
        .await
        .expect("poll");
    assert_eq!(
        page.events.iter().map(label).collect::<Vec<_>>(),
        [r#"{"i":2}"#]
    );
    if !redis.is_private() {
        support::delete_prefix(&mut redis.client().await, &redis.prefix).await;
    }
}

#[tokio::test]
async fn an_out_of_range_shard_id_is_fatal_exactly_at_its_entry() {
    let Some(redis) = Redis::any("out_of_range_shard") else {
        return;
    };
    let adapter = adapter(&redis, |c| c).await;
    let key = adapter.shard_key(2);
    adapter.on_batch(batch(2, 0, 3)).await.expect("write");
    let corrupt = raw_xadd(&redis, &key, &[("d", r#"{"r":{},"t":1,"s":70000}"#)]).await;
    adapter.on_batch(batch(2, 3, 2)).await.expect("write");

    // The good prefix comes out once, and the page stops right before the bad entry.
    let page = adapter.poll_shard(2, None, 100).await.expect("poll");
    assert_eq!(page.events.len(), 3);
    assert!(page.has_more);
    assert_eq!(page.cursor, page.events[2].id);
    let err = adapter
        .poll_shard(2, Some(&page.cursor), 100)
        .await
        .expect_err("the bad entry must stop the reader");
    assert!(err.is_fatal(), "{err:?}");
    assert!(err.to_string().contains(&corrupt), "{err}");
    assert!(err.to_string().contains("70000"), "{err}");
    // Every page that reaches the entry stops there, with the same prefix and no more.
    let page = adapter
        .poll_shard(2, Some(&page.events[0].id), 100)
        .await
        .expect("poll");
    assert_eq!(page.events.len(), 2);
    // An entry claiming a different, valid shard is just as dangerous.
    raw_xadd(
        &redis,
        &adapter.shard_key(4),
        &[("d", r#"{"r":{},"t":1,"s":5}"#)],
    )
    .await;
    let err = adapter
        .poll_shard(4, None, 10)
        .await
        .expect_err("wrong shard");
    assert!(err.is_fatal(), "{err:?}");
    if !redis.is_private() {
        support::delete_prefix(&mut redis.client().await, &redis.prefix).await;
    }
}

#[tokio::test]
async fn maxlen_retention_turns_old_cursors_stale_not_invalid() {
    let Some(redis) = Redis::any("maxlen_retention") else {
        return;
    };
    let adapter = adapter(&redis, |c| c.max_len(10)).await;
    let key = adapter.shard_key(0);
    adapter.on_batch(batch(0, 0, 5)).await.expect("write");
    let early = adapter.poll_shard(0, None, 1).await.expect("poll").cursor;
    for b in 0..40 {
        adapter
            .on_batch(batch(0, 5 + b * 5, 5))
            .await
            .expect("write");
    }
    let len = xlen(&redis, &key).await;
    assert!(
        (10..=205).contains(&len) && len < 205,
        "MAXLEN ~ did not trim: {len}"
    );
    let page = adapter
        .poll_shard(0, Some(&early), 10)
        .await
        .expect("stale cursor");
    assert!(page.events.is_empty());
    assert!(page.has_more);
    assert_ne!(page.cursor, early);
    let next = adapter
        .poll_shard(0, Some(&page.cursor), 1_000)
        .await
        .expect("poll");
    assert_eq!(next.events.len() as u64, len);
    assert_eq!(label(next.events.last().unwrap()), r#"{"i":204}"#);
    if !redis.is_private() {
        support::delete_prefix(&mut redis.client().await, &redis.prefix).await;
    }
}

#[tokio::test]
async fn restart_reconnects_and_reloads_the_script() {
    let Some(mut redis) = Redis::private("restart", Options::default()) else {
        return;
    };
    let mut adapter = adapter(&redis, |c| c.command_timeout(Duration::from_millis(500))).await;
    assert!(adapter.is_healthy().await);
    adapter.on_batch(batch(0, 0, 1)).await.expect("write");
    redis.kill();
    let started = Instant::now();
    assert!(!adapter.is_healthy().await);
    let err = adapter
        .on_batch(batch(0, 1, 1))
        .await
        .expect_err("server down");
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "calls must stay bounded"
    );
    redis.restart();
    // The new server has no data and no cached script: the next write sends the source.
    deliver(&adapter, &batch(0, 1, 1)).await;
    assert!(adapter.is_healthy().await);
    redis.cli(&["SCRIPT", "FLUSH"]);
    adapter
        .on_batch(batch(0, 2, 1))
        .await
        .expect("write after SCRIPT FLUSH");
    assert_eq!(
        adapter
            .poll_shard(0, None, 10)
            .await
            .expect("poll")
            .events
            .len(),
        2
    );
    // A second init is a no-op; shutdown closes the gate for good.
    adapter.init().await.expect("second init");
    adapter.shutdown().await.expect("shutdown");
    adapter.shutdown().await.expect("second shutdown");
    assert!(matches!(
        adapter.on_batch(batch(0, 3, 1)).await,
        Err(AdapterError::Shutdown)
    ));
    assert!(matches!(
        adapter.poll_shard(0, None, 1).await,
        Err(AdapterError::Shutdown)
    ));
    assert!(!adapter.is_healthy().await);
}

#[tokio::test]
async fn an_unreachable_server_is_retryable_and_bounded() {
    // A port nothing listens on: the connection is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = RedisAdapterConfig::new(format!("redis://127.0.0.1:{port}"), "down")
        .command_timeout(Duration::from_millis(300));
    let mut adapter = RedisAdapter::new(config).expect("config");
    adapter
        .init()
        .await
        .expect("init tolerates an unreachable server");
    let started = Instant::now();
    let err = adapter.on_batch(batch(0, 0, 1)).await.expect_err("down");
    assert!(err.is_retryable(), "{err:?}");
    let err = adapter.poll_shard(0, None, 1).await.expect_err("down");
    assert!(err.is_retryable(), "{err:?}");
    assert!(!adapter.is_healthy().await);
    assert!(started.elapsed() < Duration::from_secs(2));
}
