//! Integration tests of `JetStreamAdapter` against a real nats-server: dedup on retry and the
//! `Nats-Msg-Id` header, single-flight stream creation, bad input (incompatible streams,
//! unreachable servers, dangerous records), bounded reads, durable consumers and shutdown.

mod support;

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt;
use net_adapter::{conformance, Adapter, AdapterError, Batch, StoredEvent};
use net_adapter_jetstream::{
    DurableConsumerConfig, JetStreamAdapter, JetStreamAdapterConfig, ReadPath, RecordError,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::NatsServer;

/// A batch of `n` events of `shard` from sequence `start`, payloads `{"shard":..,"seq":..}`.
fn batch(shard: u16, nonce: u64, start: u64, n: u64) -> Arc<Batch> {
    let payloads = (start..start + n).map(|seq| format!(r#"{{"shard":{shard},"seq":{seq}}}"#));
    Arc::new(Batch {
        process_nonce: nonce,
        ..conformance::batch(shard, start, payloads)
    })
}

/// The `seq` field of a stored payload.
fn seq_of(event: &StoredEvent) -> u64 {
    let value: serde_json::Value = serde_json::from_slice(&event.raw).expect("JSON payload");
    value["seq"].as_u64().expect("seq field")
}

/// A config for `server` with fresh stream names and test-sized timeouts.
fn config(server: &NatsServer, what: &str) -> JetStreamAdapterConfig {
    JetStreamAdapterConfig::new(server.url(), support::unique_name(what))
        .request_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
}

/// Reads a whole shard page by page; returns the events and the number of pages.
async fn read_all(adapter: &JetStreamAdapter, shard: u16, limit: usize) -> (Vec<StoredEvent>, u64) {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = adapter
            .poll_shard(shard, cursor.as_deref(), limit)
            .await
            .expect("poll_shard");
        pages += 1;
        out.extend(page.events);
        cursor = Some(page.cursor);
        if !page.has_more {
            return (out, pages);
        }
        assert!(pages < 1_000_000, "paging does not end");
    }
}

/// A plain JetStream context on `server`, as an operator's tool would have.
async fn admin(server: &NatsServer) -> jetstream::Context {
    jetstream::new(
        async_nats::connect(server.url())
            .await
            .expect("connect the admin client"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_stored_once_and_every_message_carries_its_msg_id() {
    let Some(server) = NatsServer::start("retry_and_msg_id") else {
        return;
    };
    let config = config(&server, "retry");
    let adapter = JetStreamAdapter::connect(config.clone()).await.unwrap();
    let plain = async_nats::connect(server.url()).await.unwrap();
    let subject = config.subjects_for(3).remove(0);
    let mut watcher = plain.subscribe(subject).await.unwrap();
    plain.flush().await.unwrap();

    let first = batch(3, 0xfeed, 0, 50);
    let second = batch(3, 0xfeed, 50, 30);
    adapter.on_batch(first.clone()).await.unwrap();
    // The same value, an equal copy (as after a process restart) and a late redelivery.
    adapter.on_batch(first.clone()).await.unwrap();
    adapter
        .on_batch(Arc::new(Batch::clone(&first)))
        .await
        .unwrap();
    adapter.on_batch(second.clone()).await.unwrap();
    adapter.on_batch(first.clone()).await.unwrap();

    let counts = adapter.request_counts();
    assert_eq!(counts.published, 50 * 4 + 30);
    assert_eq!(counts.duplicates, 50 * 3, "{counts:?}");

    let (events, _) = read_all(&adapter, 3, 7).await;
    let seqs: Vec<u64> = events.iter().map(seq_of).collect();
    assert_eq!(seqs, (0..80).collect::<Vec<_>>());
    for event in &events {
        let seq = seq_of(event);
        let want = if seq < 50 {
            first.dedup_id(seq as usize)
        } else {
            second.dedup_id((seq - 50) as usize)
        };
        assert_eq!(event.dedup_id.as_deref(), Some(want.as_str()));
    }

    // A plain subscriber saw every publish, retries included, each with its Nats-Msg-Id.
    let mut seen_ids = Vec::new();
    for _ in 0..counts.published {
        let message = tokio::time::timeout(Duration::from_secs(5), watcher.next())
            .await
            .expect("the subscriber receives every publish")
            .expect("subscription open");
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_owned())
            .expect("every message carries Nats-Msg-Id");
        seen_ids.push(id);
    }
    let distinct: HashSet<&String> = seen_ids.iter().collect();
    assert_eq!(distinct.len(), 80);

    // Direct get, message by message, shows the header on what is stored.
    let stream = admin(&server)
        .await
        .get_stream(config.stream_for(3))
        .await
        .unwrap();
    for event in &events {
        let sequence: u64 = event.id.parse().unwrap();
        let stored = stream.direct_get(sequence).await.unwrap();
        let id = stored
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned());
        assert_eq!(id, event.dedup_id, "sequence {sequence}");
    }
    adapter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_that_are_not_plain_json_round_trip_byte_for_byte() {
    let Some(server) = NatsServer::start("odd_payloads") else {
        return;
    };
    let adapter = JetStreamAdapter::connect(config(&server, "odd"))
        .await
        .unwrap();
    let payloads: Vec<&[u8]> = vec![
        b"null",
        b"not json",
        b"",
        b"\xff\xfe",
        b" {\"a\":1} ",
        b"42",
    ];
    let batch = Arc::new(Batch {
        process_nonce: 1,
        ..conformance::batch(1, 0, payloads.iter().map(|raw| Bytes::copy_from_slice(raw)))
    });
    adapter.on_batch(batch).await.unwrap();
    let (stored, _) = read_all(&adapter, 1, 100).await;
    let got: Vec<&[u8]> = stored.iter().map(|e| &e.raw[..]).collect();
    assert_eq!(got, payloads);
    adapter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_batches_create_the_stream_once() {
    let Some(server) = NatsServer::start("single_flight") else {
        return;
    };
    let adapter = Arc::new(
        JetStreamAdapter::connect(config(&server, "flight"))
            .await
            .unwrap(),
    );
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8u64)
        .map(|nonce| {
            let adapter = adapter.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                adapter.on_batch(batch(5, nonce, 0, 10)).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(adapter.request_counts().streams_created, 1);
    let (events, _) = read_all(&adapter, 5, 1000).await;
    assert_eq!(events.len(), 80);
    adapter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_with_incompatible_settings_is_a_clear_fatal_error() {
    let Some(server) = NatsServer::start("incompatible_stream") else {
        return;
    };
    let config = config(&server, "incompat");
    let admin = admin(&server).await;
    // Shard 0: someone made the stream a work queue in memory.
    admin
        .create_stream(jetstream::stream::Config {
            name: config.stream_for(0),
            subjects: config.subjects_for(0),
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            storage: jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
    // Shard 1: right shape, but it captures another subject.
    admin
        .create_stream(jetstream::stream::Config {
            name: config.stream_for(1),
            subjects: vec!["elsewhere.1".into()],
            duplicate_window: config.duplicate_window,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let adapter = JetStreamAdapter::connect(config.clone()).await.unwrap();

    let error = adapter.on_batch(batch(0, 1, 0, 3)).await.unwrap_err();
    let text = error.to_string();
    assert!(error.is_fatal() && !error.is_retryable(), "{text}");
    for needle in [config.stream_for(0).as_str(), "retention", "storage"] {
        assert!(text.contains(needle), "{text}");
    }
    let error = adapter.provision(1).await.unwrap_err();
    assert!(error.is_fatal(), "{error}");
    assert!(error.to_string().contains("subjects"), "{error}");

    // Nothing was written into either stream.
    for shard in [0, 1] {
        let info = admin
            .get_stream(config.stream_for(shard))
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.state.messages, 0);
    }
    // A compatible shard still works.
    adapter.on_batch(batch(2, 1, 0, 3)).await.unwrap();
    adapter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_gives_connection_within_the_connect_timeout() {
    // A port nobody listens on: refused at once.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    // A port that accepts TCP but never speaks NATS: only the timeout ends the wait.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let timeout = Duration::from_millis(800);
    for port in [closed, silent_port] {
        let config =
            JetStreamAdapterConfig::new(format!("nats://user:hunter2@127.0.0.1:{port}"), "x")
                .connect_timeout(timeout);
        let started = Instant::now();
        let error = JetStreamAdapter::connect(config).await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            matches!(error, AdapterError::Connection(_)),
            "port {port}: {error:?}"
        );
        assert!(error.is_retryable());
        assert!(
            elapsed < timeout + Duration::from_millis(500),
            "port {port}: took {elapsed:?} with a connect timeout of {timeout:?}"
        );
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangerous_records_are_fatal_at_their_sequence_after_the_good_prefix() {
    let Some(server) = NatsServer::start("dangerous_records") else {
        return;
    };
    let config = config(&server, "danger");
    let adapter = JetStreamAdapter::connect(config.clone()).await.unwrap();
    let admin = admin(&server).await;
    let poison = [
        (0u16, r#"{"r":null,"t":1,"s":0}"#.to_owned(), "null"),
        (1, r#"{"r":1,"t":1,"s":70000}"#.to_owned(), "out of range"),
        (2, r#"{"r":1,"t":1,"s":9}"#.to_owned(), "shard 9"),
    ];
    for (shard, record, _) in &poison {
        adapter.on_batch(batch(*shard, 1, 0, 3)).await.unwrap();
        admin
            .publish(config.subjects_for(*shard).remove(0), record.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
        adapter.on_batch(batch(*shard, 1, 3, 2)).await.unwrap();
    }
    for (shard, _, reason) in poison {
        let page = adapter.poll_shard(shard, None, 100).await.unwrap();
        assert_eq!(
            page.events.iter().map(seq_of).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(page.has_more);
        assert_eq!(page.cursor, "3");
        for _ in 0..2 {
            let error = adapter
                .poll_shard(shard, Some(&page.cursor), 100)
                .await
                .unwrap_err();
            let text = error.to_string();
            assert!(error.is_fatal(), "{text}");
            assert!(
                text.contains("sequence 4") && text.contains(reason),
                "{text}"
            );
        }
        // Past the record, reading goes on.
        let rest = adapter.poll_shard(shard, Some("4"), 100).await.unwrap();
        assert_eq!(rest.events.iter().map(seq_of).collect::<Vec<_>>(), [3, 4]);
    }
    adapter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_is_fatal_for_the_batch_and_recreated_for_the_next() {
    let Some(server) = NatsServer::start("deleted_stream") else {
        return;
    };
    let config = config(&server, "deleted");
    let adapter = JetStreamAdapter::connect(config.clone()).await.unwrap();
    adapter.on_batch(batch(4, 1, 0, 2)).await.unwrap();
    admin(&server)
        .await
        .delete_stream(config.stream_for(4))
        .await
        .unwrap();
    let error = adapter.on_batch(batch(4, 1, 2, 2)).await.unwrap_err();
    assert!(error.is_fatal(), "{error}");
    assert!(error.to_string().contains("no stream"), "{error}");
    adapter.on_batch(batch(4, 1, 4, 2)).await.unwrap();
    let (events, _) = read_all(&adapter, 4, 10).await;
    assert_eq!(events.iter().map(seq_of).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(adapter.request_counts().streams_created, 2);
    adapter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_keep_their_meaning_at_the_edges() {
    let Some(server) = NatsServer::start("cursor_edges") else {
        return;
    };
    let config = config(&server, "edges").max_messages(5);
    let adapter = JetStreamAdapter::connect(config).await.unwrap();
    adapter.on_batch(batch(0, 1, 0, 12)).await.unwrap();
    // Retention by max messages kept 8..12 (sequences 8 to 12).
    let page = adapter.poll_shard(0, Some("2"), 10).await.unwrap();
    assert!(page.events.is_empty() && page.has_more);
    assert_eq!(page.cursor, "7");
    let page = adapter.poll_shard(0, None, usize::MAX).await.unwrap();
    assert_eq!(
        page.events.iter().map(seq_of).collect::<Vec<_>>(),
        [7, 8, 9, 10, 11]
    );
    assert_eq!(page.cursor, "12");
    assert!(!page.has_more);
    for bad in ["13", "18446744073709551615", "007", "+12"] {
        let error = adapter.poll_shard(0, Some(bad), 10).await.unwrap_err();
        assert!(
            matches!(error, AdapterError::InvalidCursor(_)),
            "{bad}: {error:?}"
        );
    }
    adapter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_consumers_share_a_shard_ack_and_redeliver() {
    let Some(server) = NatsServer::start("durable") else {
        return;
    };
    let config = config(&server, "durable");
    let adapter = JetStreamAdapter::connect(config.clone()).await.unwrap();
    adapter.on_batch(batch(2, 1, 0, 60)).await.unwrap();
    admin(&server)
        .await
        .publish(config.subjects_for(2).remove(0), "garbage".into())
        .await
        .unwrap()
        .await
        .unwrap();
    adapter.on_batch(batch(2, 1, 60, 40)).await.unwrap();

    let group = DurableConsumerConfig::new("workers").ack_wait(Duration::from_secs(30));
    let a = adapter.durable_consumer(2, group.clone()).await.unwrap();
    let b = adapter.durable_consumer(2, group).await.unwrap();
    let mut by_member: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut corrupt = Vec::new();
    let started = Instant::now();
    while by_member.values().map(Vec::len).sum::<usize>() < 100 {
        assert!(started.elapsed() < Duration::from_secs(20), "{by_member:?}");
        for (member, consumer) in [("a", &a), ("b", &b)] {
            let deliveries = consumer.fetch(7, Duration::from_millis(200)).await.unwrap();
            for delivery in &deliveries {
                match delivery.event() {
                    Ok(event) => by_member.entry(member).or_default().push(seq_of(event)),
                    Err(problem) => corrupt.push(problem.clone()),
                }
            }
            consumer.ack_all(&deliveries).await.unwrap();
        }
    }
    let mut all: Vec<u64> = by_member.values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..100).collect::<Vec<_>>(),
        "each event to exactly one member"
    );
    assert!(by_member.len() == 2, "both members got work: {by_member:?}");
    assert!(
        matches!(
            corrupt.as_slice(),
            [RecordError::Corrupt { sequence: 61, .. }]
        ),
        "{corrupt:?}"
    );

    // A message that is not acked comes back after the ack wait (one unacked message at a
    // time, so the redelivery is what the next fetch gets).
    let mut c = adapter
        .durable_consumer(
            2,
            DurableConsumerConfig::new("slow")
                .ack_wait(Duration::from_millis(500))
                .max_ack_pending(1),
        )
        .await
        .unwrap();
    let first = c.fetch(1, Duration::from_millis(200)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].delivered(), 1);
    let again = c.fetch(1, Duration::from_secs(3)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].sequence(), first[0].sequence());
    assert_eq!(again[0].delivered(), 2);
    again[0].ack_confirmed().await.unwrap();
    let state = c.state().await.unwrap();
    assert_eq!(state.ack_pending, 0, "{state:?}");
    adapter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_and_reports_a_failed_drain() {
    let Some(mut server) = NatsServer::start_private("shutdown_drain") else {
        return;
    };
    let drain = Duration::from_millis(700);
    let adapter = JetStreamAdapter::connect(config(&server, "drain").drain_timeout(drain))
        .await
        .unwrap();
    adapter.on_batch(batch(0, 1, 0, 5)).await.unwrap();
    server.kill();
    // The connection notices the loss; buffered work cannot be flushed any more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let result = adapter.shutdown().await;
    let elapsed = started.elapsed();
    assert!(elapsed < drain + Duration::from_millis(500), "{elapsed:?}");
    let error = result.expect_err("a drain against a dead server reports failure");
    assert!(error.to_string().contains("shutdown"), "{error}");
    assert!(matches!(
        adapter.on_batch(batch(0, 1, 5, 1)).await,
        Err(AdapterError::Shutdown)
    ));
    assert!(matches!(
        adapter.poll_shard(0, None, 1).await,
        Err(AdapterError::Shutdown)
    ));
    adapter.shutdown().await.unwrap();
    assert!(!adapter.is_healthy().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_read_paths_return_the_same_pages() {
    let Some(server) = NatsServer::start("read_paths") else {
        return;
    };
    let config = config(&server, "paths");
    let writer = JetStreamAdapter::connect(config.clone()).await.unwrap();
    writer.on_batch(batch(0, 1, 0, 1_100)).await.unwrap();
    admin(&server)
        .await
        .publish(config.subjects_for(0).remove(0), "torn".into())
        .await
        .unwrap()
        .await
        .unwrap();
    writer.on_batch(batch(0, 1, 1_100, 300)).await.unwrap();

    let consumer = JetStreamAdapter::connect(config.clone().read_path(ReadPath::PullConsumer))
        .await
        .unwrap();
    let direct = JetStreamAdapter::connect(config.clone().read_path(ReadPath::BatchDirectGet))
        .await
        .unwrap();
    let batched = direct
        .client()
        .is_some_and(|client| client.is_server_compatible(2, 11, 0));
    if !batched {
        // The server cannot read in batches: the forced path says so instead of misreading.
        let error = direct.poll_shard(0, None, 10).await.unwrap_err();
        assert!(error.is_fatal(), "{error}");
        assert!(error.to_string().contains("2.11"), "{error}");
    }
    for limit in [7, 64, 65, 1_000, 1_001, 5_000] {
        let (want, want_pages) = read_all(&consumer, 0, limit).await;
        assert_eq!(want.len(), 1_400, "limit {limit}");
        assert_eq!(
            want.iter().map(seq_of).collect::<Vec<_>>(),
            (0..1_400).collect::<Vec<_>>()
        );
        if batched {
            let (got, got_pages) = read_all(&direct, 0, limit).await;
            assert_eq!(got, want, "limit {limit}");
            assert_eq!(got_pages, want_pages, "limit {limit}");
        }
    }
    if batched {
        assert!(direct.request_counts().consumers_created == 0);
    }
    assert_eq!(consumer.request_counts().corrupt_skipped, 6);
    for adapter in [writer, consumer, direct] {
        adapter.shutdown().await.unwrap();
    }
}
