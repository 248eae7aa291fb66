//! The mesh on real sockets: refused peers, what crosses the wire, and hostile bytes.
//!
//! A tapping proxy sits between a client node and a storage node. It records every byte in
//! both directions and can replay or alter one record of the client's stream, as an active
//! attacker on the path would.

mod support;

use bytes::Bytes;
use net_adapter::{Adapter, AdapterError, Batch, BatchEvent, MemoryAdapter};
use net_mesh::{EntityKeypair, NetAdapter, NoPeerPolicy, ShardRange};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{client_node, pair, storage_node, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn batch(shard: u16, seq: u64, payloads: &[&str]) -> Arc<Batch> {
    Arc::new(Batch {
        shard_id: shard,
        events: payloads
            .iter()
            .map(|p| BatchEvent {
                raw: Bytes::copy_from_slice(p.as_bytes()),
                insertion_ts: 1,
                shard_id: shard,
            })
            .collect(),
        sequence_start: seq,
        process_nonce: 0xfeed,
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tamper {
    None,
    ReplayNext,
    FlipNext,
}

/// A TCP proxy that records both directions and tampers with the client's records on demand.
struct Tap {
    addr: SocketAddr,
    wire: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
    tamper: Arc<Mutex<Tamper>>,
    /// While set, the tap stops reading in both directions (a peer gone silent).
    frozen: Arc<AtomicBool>,
}

/// Waits while `frozen` is set.
async fn thaw(frozen: &AtomicBool) {
    while frozen.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Tap {
    async fn start(upstream: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tap = Tap {
            addr: listener.local_addr().unwrap(),
            wire: Arc::default(),
            connections: Arc::default(),
            tamper: Arc::new(Mutex::new(Tamper::None)),
            frozen: Arc::default(),
        };
        let (wire, connections, tamper, frozen) = (
            tap.wire.clone(),
            tap.connections.clone(),
            tap.tamper.clone(),
            tap.frozen.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let (wire_up, tamper, frozen_up) = (wire.clone(), tamper.clone(), frozen.clone());
                tokio::spawn(async move {
                    // Client to server, record by record.
                    let mut pending = Vec::new();
                    let mut buf = vec![0u8; 70_000];
                    loop {
                        thaw(&frozen_up).await;
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        wire_up.lock().extend_from_slice(&buf[..n]);
                        pending.extend_from_slice(&buf[..n]);
                        while pending.len() >= 2 {
                            let len = u16::from_be_bytes([pending[0], pending[1]]) as usize;
                            if pending.len() < 2 + len {
                                break;
                            }
                            let mut record: Vec<u8> = pending.drain(..2 + len).collect();
                            let mode = std::mem::replace(&mut *tamper.lock(), Tamper::None);
                            if mode == Tamper::FlipNext {
                                let at = record.len() / 2;
                                record[at] ^= 0x20;
                            }
                            if sw.write_all(&record).await.is_err() {
                                return;
                            }
                            if mode == Tamper::ReplayNext && sw.write_all(&record).await.is_err() {
                                return;
                            }
                        }
                    }
                    let _ = sw.shutdown().await;
                });
                let (wire_down, frozen_down) = (wire.clone(), frozen.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 70_000];
                    loop {
                        thaw(&frozen_down).await;
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        wire_down.lock().extend_from_slice(&buf[..n]);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = cw.shutdown().await;
                });
            }
        });
        tap
    }

    fn saw(&self, needle: &[u8]) -> bool {
        self.wire.lock().windows(needle.len()).any(|w| w == needle)
    }
}

/// Retries `on_batch` until it succeeds, as the bus does.
async fn deliver(node: &NetAdapter, batch: Arc<Batch>) {
    for _ in 0..200 {
        if node.on_batch(batch.clone()).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("batch never delivered");
}

async fn tapped_pair() -> (NetAdapter, NetAdapter, Arc<MemoryAdapter>, Tap) {
    let memory = Arc::new(MemoryAdapter::new());
    let storage = storage_node(memory.clone()).await;
    let tap = Tap::start(storage.local_addr().unwrap()).await;
    let client = client_node(tap.addr).await;
    assert!(client.wait_for_coverage(0, 1, Duration::from_secs(5)).await);
    (client, storage, memory, tap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_the_mesh_and_no_plaintext_crosses_the_wire() {
    let (client, storage, _memory, tap) = tapped_pair().await;
    let marker = "{\"secret\":\"plaintext-marker-7f3a\"}";
    deliver(&client, batch(3, 0, &[marker, marker])).await;
    let page = client.poll_shard(3, None, 10).await.unwrap();
    assert_eq!(page.events.len(), 2);
    assert_eq!(&page.events[0].raw[..], marker.as_bytes());
    assert!(!tap.saw(b"plaintext-marker-7f3a"));
    assert!(!tap.saw(b"secret"));
    // Node ids travel only inside the encrypted part of the handshake.
    assert!(!tap.saw(client.node_id().as_bytes()));
    assert!(!tap.saw(storage.node_id().as_bytes()));
    assert!(!tap.wire.lock().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_record_ends_the_session_and_the_client_recovers() {
    let (client, _storage, memory, tap) = tapped_pair().await;
    deliver(&client, batch(1, 0, &["1"])).await;
    *tap.tamper.lock() = Tamper::ReplayNext;
    let _ = client.on_batch(batch(1, 1, &["2"])).await;
    // The storage node drops the session; the client redials through the tap.
    for _ in 0..200 {
        if tap.connections.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tap.connections.load(Ordering::SeqCst) >= 2);
    deliver(&client, batch(1, 1, &["2"])).await;
    deliver(&client, batch(1, 2, &["3"])).await;
    let page = client.poll_shard(1, None, 10).await.unwrap();
    let got: Vec<&[u8]> = page.events.iter().map(|e| &e.raw[..]).collect();
    assert_eq!(got, vec![&b"1"[..], b"2", b"3"]);
    assert_eq!(memory.len(1), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bit_ends_the_session_and_nothing_is_stored_from_it() {
    let (client, _storage, memory, tap) = tapped_pair().await;
    *tap.tamper.lock() = Tamper::FlipNext;
    let result = client.on_batch(batch(2, 0, &["x"])).await;
    assert!(result.is_err(), "a tampered batch must not be acknowledged");
    assert!(result.unwrap_err().is_retryable());
    for _ in 0..200 {
        if tap.connections.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    deliver(&client, batch(2, 0, &["x"])).await;
    assert_eq!(memory.len(2), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_close_the_connection_and_cost_the_listener_nothing() {
    let (client, storage, _memory) = pair().await;
    let addr = storage.local_addr().unwrap();
    let cases: Vec<Vec<u8>> = vec![
        vec![0xff, 0xff, 1, 2, 3], // oversized handshake length prefix
        vec![0, 0],                // empty record
        vec![0, 32, 9, 9, 9, 9],   // truncated record, then silence
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
    ];
    for bytes in cases {
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(&bytes).await.unwrap();
        let mut buf = [0u8; 64];
        // Either closed at once, or at the handshake deadline; never an answer.
        let read = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            other => panic!("listener answered hostile bytes {bytes:?}: {other:?}"),
        }
    }
    // The real peer is unaffected.
    deliver(&client, batch(0, 0, &["ok"])).await;
    assert_eq!(client.peers().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_psk_is_refused() {
    let memory = Arc::new(MemoryAdapter::new());
    let mut config = test_config()
        .psk([1; 32])
        .stores(ShardRange::ALL)
        .storage(memory as Arc<dyn Adapter>);
    config.keypair = Some(EntityKeypair::generate().unwrap());
    let storage = NetAdapter::new(config).unwrap();
    storage.start().await.unwrap();
    let addr = storage.local_addr().unwrap().to_string();

    let wrong = NetAdapter::new(test_config().peer(&addr).psk([2; 32])).unwrap();
    wrong.start().await.unwrap();
    assert!(
        !wrong
            .wait_for_coverage(0, 1, Duration::from_millis(800))
            .await
    );
    assert!(storage.peers().is_empty());
    let err = wrong.on_batch(batch(0, 0, &["x"])).await.unwrap_err();
    assert!(matches!(err, AdapterError::Connection(_)), "{err:?}");

    let none = NetAdapter::new(test_config().peer(&addr)).unwrap();
    none.start().await.unwrap();
    assert!(
        !none
            .wait_for_coverage(0, 1, Duration::from_millis(500))
            .await
    );

    let right = NetAdapter::new(test_config().peer(&addr).psk([1; 32])).unwrap();
    right.start().await.unwrap();
    assert!(right.wait_for_coverage(0, 1, Duration::from_secs(5)).await);
    deliver(&right, batch(0, 0, &["y"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_refuses_unknown_node_ids() {
    let friend = EntityKeypair::generate().unwrap();
    let stranger = EntityKeypair::generate().unwrap();
    let memory = Arc::new(MemoryAdapter::new());
    let storage = NetAdapter::new(
        test_config()
            .stores(ShardRange::ALL)
            .storage(memory as Arc<dyn Adapter>)
            .allow([friend.node_id()]),
    )
    .unwrap();
    storage.start().await.unwrap();
    let addr = storage.local_addr().unwrap().to_string();

    let refused = NetAdapter::new(test_config().peer(&addr).keypair(stranger)).unwrap();
    refused.start().await.unwrap();
    assert!(
        !refused
            .wait_for_coverage(0, 1, Duration::from_millis(800))
            .await
    );

    let accepted = NetAdapter::new(test_config().peer(&addr).keypair(friend.clone())).unwrap();
    accepted.start().await.unwrap();
    assert!(
        accepted
            .wait_for_coverage(0, 1, Duration::from_secs(5))
            .await
    );
    // The listener registers the session once it has the dialer's Hello, which may come a
    // moment after the dialer has the listener's.
    for _ in 0..250 {
        if !storage.peers().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(storage.peers().len(), 1);
    assert_eq!(storage.peers()[0].id, friend.node_id());

    // A dialer with an allow-list refuses a listener it does not know.
    let picky = NetAdapter::new(
        test_config()
            .peer(&addr)
            .allow([EntityKeypair::generate().unwrap().node_id()]),
    )
    .unwrap();
    picky.start().await.unwrap();
    assert!(
        !picky
            .wait_for_coverage(0, 1, Duration::from_millis(500))
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_covering_peer_follows_the_policy() {
    let retry = NetAdapter::new(test_config()).unwrap();
    retry.start().await.unwrap();
    let err = retry.on_batch(batch(0, 0, &["x"])).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(retry
        .poll_shard(0, None, 1)
        .await
        .unwrap_err()
        .is_retryable());

    let fatal = NetAdapter::new(test_config().no_peer(NoPeerPolicy::Fatal)).unwrap();
    fatal.start().await.unwrap();
    assert!(fatal
        .on_batch(batch(0, 0, &["x"]))
        .await
        .unwrap_err()
        .is_fatal());

    // A storage node that covers other shards only is no cover.
    let memory = Arc::new(MemoryAdapter::new());
    let partial = NetAdapter::new(
        test_config()
            .stores(ShardRange::new(10, 19))
            .storage(memory as Arc<dyn Adapter>),
    )
    .unwrap();
    partial.start().await.unwrap();
    let client = client_node(partial.local_addr().unwrap()).await;
    assert!(
        client
            .wait_for_coverage(10, 1, Duration::from_secs(5))
            .await
    );
    assert!(client
        .on_batch(batch(3, 0, &["x"]))
        .await
        .unwrap_err()
        .is_retryable());
    client.on_batch(batch(12, 0, &["x"])).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_stores_on_every_replica_and_receivers_dedup() {
    let (m1, m2) = (
        Arc::new(MemoryAdapter::new()),
        Arc::new(MemoryAdapter::new()),
    );
    let s1 = storage_node(m1.clone()).await;
    let s2 = storage_node(m2.clone()).await;
    let client = NetAdapter::new(
        test_config()
            .peer(s1.local_addr().unwrap().to_string())
            .peer(s2.local_addr().unwrap().to_string())
            .replication(2),
    )
    .unwrap();
    client.start().await.unwrap();
    assert!(client.wait_for_coverage(5, 2, Duration::from_secs(5)).await);
    let b = batch(5, 0, &["a", "b"]);
    client.on_batch(b.clone()).await.unwrap();
    client.on_batch(b).await.unwrap();
    assert_eq!((m1.len(5), m2.len(5)), (2, 2));
    assert_eq!(s1.stored_counts(), (1, 1));
    assert_eq!(s2.stored_counts(), (1, 1));

    // With one replica gone the batch cannot reach its replication factor: retryable.
    s2.shutdown().await.unwrap();
    for _ in 0..100 {
        if client.peers().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = client.on_batch(batch(5, 2, &["c"])).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_are_fragmented_across_records() {
    let (client, _storage, memory) = pair().await;
    let payload = format!("\"{}\"", "z".repeat(4000));
    let payloads: Vec<&str> = (0..300).map(|_| payload.as_str()).collect();
    client.on_batch(batch(7, 0, &payloads)).await.unwrap(); // about 1.2 MB
    assert_eq!(memory.len(7), 300);
    let mut cursor = None;
    let mut total = 0;
    loop {
        let page = client.poll_shard(7, cursor.as_deref(), 128).await.unwrap();
        total += page.events.len();
        cursor = Some(page.cursor);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(total, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_idle_sessions_up_and_silent_peers_are_dropped() {
    let memory = Arc::new(MemoryAdapter::new());
    let mut config = test_config()
        .stores(ShardRange::ALL)
        .storage(memory.clone() as Arc<dyn Adapter>);
    config.ping_interval = Duration::from_millis(100);
    config.idle_timeout = Duration::from_millis(500);
    let storage = NetAdapter::new(config).unwrap();
    storage.start().await.unwrap();
    let tap = Tap::start(storage.local_addr().unwrap()).await;
    let mut config = test_config().peer(tap.addr.to_string());
    config.ping_interval = Duration::from_millis(100);
    config.idle_timeout = Duration::from_millis(500);
    let client = NetAdapter::new(config).unwrap();
    client.start().await.unwrap();
    assert!(client.wait_for_coverage(0, 1, Duration::from_secs(5)).await);

    // Idle for several liveness timeouts: pings keep the one session up.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(tap.connections.load(Ordering::SeqCst), 1);
    assert_eq!(client.peers().len(), 1);

    // The path goes silent: both sides drop the session.
    tap.frozen.store(true, Ordering::SeqCst);
    for _ in 0..100 {
        if client.peers().is_empty() && storage.peers().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(client.peers().is_empty() && storage.peers().is_empty());
    // The path comes back: the client redials and works again.
    tap.frozen.store(false, Ordering::SeqCst);
    assert!(client.wait_for_coverage(0, 1, Duration::from_secs(5)).await);
    assert!(tap.connections.load(Ordering::SeqCst) >= 2);
    deliver(&client, batch(0, 0, &["back"])).await;
    assert_eq!(memory.len(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_above_the_frame_limit_is_refused_as_fatal_and_the_session_lives() {
    let (client, _storage, memory) = pair().await;
    let big = "x".repeat(1 << 20);
    let payloads: Vec<&str> = (0..70).map(|_| big.as_str()).collect();
    let err = client.on_batch(batch(4, 0, &payloads)).await.unwrap_err();
    assert!(err.is_fatal(), "{err:?}");
    client.on_batch(batch(4, 0, &["small"])).await.unwrap();
    assert_eq!(memory.len(4), 1);
    assert_eq!(client.peers().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_rekey_every_few_records_and_keep_working() {
    let memory = Arc::new(MemoryAdapter::new());
    let mut config = test_config()
        .stores(ShardRange::ALL)
        .storage(memory.clone() as Arc<dyn Adapter>);
    config.rekey_after = 3;
    let storage = NetAdapter::new(config).unwrap();
    storage.start().await.unwrap();
    let mut config = test_config().peer(storage.local_addr().unwrap().to_string());
    config.rekey_after = 2;
    let client = NetAdapter::new(config).unwrap();
    client.start().await.unwrap();
    assert!(client.wait_for_coverage(0, 1, Duration::from_secs(5)).await);
    let big = "r".repeat(30_000);
    for seq in 0..60u64 {
        // Every fifth batch spans several records.
        let payloads: Vec<&str> = if seq % 5 == 0 {
            vec![big.as_str(); 5]
        } else {
            vec!["e"]
        };
        client
            .on_batch(batch(6, seq * 10, &payloads))
            .await
            .unwrap();
    }
    let page = client.poll_shard(6, None, 10_000).await.unwrap();
    assert_eq!(page.events.len(), 12 * 5 + 48);
    assert_eq!(memory.len(6), 108);
}
