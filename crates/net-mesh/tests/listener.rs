//! The listener under hostile load: floods of idle and half-open connections from the same
//! loopback address an honest peer uses must not keep that peer from its handshake, and
//! must not make the listener hold more than its admission limits.

mod support;

use net_adapter::{Adapter, Batch, BatchEvent, MemoryAdapter};
use net_mesh::{EntityKeypair, NetAdapter, Role, Session, SessionConfig, ShardRange};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::test_config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PSK: [u8; 32] = [0x42; 32];

/// Raises this process's open-file limit so a test can hold `n` sockets.
fn allow_open_files(n: u64) {
    let got = rlimit::increase_nofile_limit(n + 256).expect("raise RLIMIT_NOFILE");
    assert!(
        got >= n + 64,
        "the open-file limit ({got}) is too low to hold {n} connections"
    );
}

async fn storage(
    memory: Arc<MemoryAdapter>,
    tune: impl FnOnce(&mut net_mesh::NetAdapterConfig),
) -> NetAdapter {
    let mut config = test_config()
        .keypair(EntityKeypair::generate().unwrap())
        .psk(PSK)
        .stores(ShardRange::ALL)
        .storage(memory as Arc<dyn Adapter>);
    tune(&mut config);
    let node = NetAdapter::new(config).unwrap();
    node.start().await.unwrap();
    node
}

/// The three kinds of connection a flood holds open.
#[derive(Clone, Copy)]
enum Stall {
    /// Connects and sends nothing.
    Idle,
    /// Sends a genuine first handshake message, then nothing (the node answers and waits).
    AfterFirstMessage,
    /// Sends a record header and part of its body, then nothing.
    PartialRecord,
}

/// Connects to `addr` from `from` (any port).
async fn connect_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

async fn hostile(addr: SocketAddr, stall: Stall) -> std::io::Result<TcpStream> {
    hostile_from(IpAddr::from([127, 0, 0, 1]), addr, stall).await
}

async fn hostile_from(from: IpAddr, addr: SocketAddr, stall: Stall) -> std::io::Result<TcpStream> {
    let mut stream = connect_from(from, addr).await?;
    match stall {
        Stall::Idle => {}
        Stall::AfterFirstMessage => {
            let mut config = SessionConfig::new(EntityKeypair::generate().unwrap());
            config.psk = Some([0u8; 32]);
            let mut session = Session::new(config, Role::Initiator, Instant::now()).unwrap();
            stream.write_all(&session.take_output()).await?;
        }
        Stall::PartialRecord => stream.write_all(&[0x00, 0x30, 1, 2, 3]).await?,
    }
    Ok(stream)
}

/// Opens `n` stalled connections from `from`, a mix of the three kinds.
async fn flood_from(from: IpAddr, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let kinds = [Stall::Idle, Stall::AfterFirstMessage, Stall::PartialRecord];
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let stream = hostile_from(from, addr, kinds[i % 3]).await;
        held.push(stream.expect("open a flood connection"));
    }
    held
}

async fn flood(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    flood_from(IpAddr::from([127, 0, 0, 1]), addr, n).await
}

fn batch(seq: u64) -> Arc<Batch> {
    Arc::new(Batch {
        shard_id: 0,
        events: vec![BatchEvent {
            raw: format!(r#"{{"n":{seq}}}"#).into(),
            insertion_ts: 1,
            shard_id: 0,
        }],
        sequence_start: seq,
        process_nonce: 7,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_peer_gets_through_a_flood_of_stalled_connections_from_its_own_address() {
    allow_open_files(1_000);
    let memory = Arc::new(MemoryAdapter::new());
    let node = storage(memory.clone(), |_| {}).await;
    let addr = node.local_addr().unwrap();
    let held = flood(addr, 1_000).await;

    // The node never holds more stalled handshakes than one address may have.
    let stats = node.stats();
    assert!(
        stats.handshakes_in_progress <= 32,
        "{} handshakes held for one address",
        stats.handshakes_in_progress
    );

    let started = Instant::now();
    let client = NetAdapter::new(
        test_config()
            .peer(addr.to_string())
            .psk(PSK)
            .allow([node.node_id()]),
    )
    .unwrap();
    client.start().await.unwrap();
    assert!(
        client.wait_for_coverage(0, 1, Duration::from_secs(5)).await,
        "the honest peer never completed its handshake"
    );
    let handshake = started.elapsed();
    assert!(
        handshake < Duration::from_secs(1),
        "the honest handshake took {handshake:?} under the flood"
    );
    for seq in 0..100 {
        client.on_batch(batch(seq)).await.unwrap();
    }
    assert_eq!(
        memory.poll_shard(0, None, 1000).await.unwrap().events.len(),
        100
    );

    let stats = node.stats();
    let evicted = stats
        .handshake_failures
        .iter()
        .find(|(r, _)| *r == "evicted")
        .map_or(0, |(_, n)| *n);
    assert!(evicted >= 1_000 - 32, "only {evicted} evictions counted");
    assert_eq!(stats.sessions_open, 1);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_cannot_evict_other_addresses() {
    allow_open_files(300);
    let memory = Arc::new(MemoryAdapter::new());
    let node = storage(memory, |c| {
        c.max_handshakes = 40;
        c.max_handshakes_per_addr = 30;
    })
    .await;
    let addr = node.local_addr().unwrap();
    let mut quiet = Vec::new();
    for _ in 0..10 {
        quiet.push(hostile(addr, Stall::AfterFirstMessage).await.unwrap());
    }
    // 127.0.0.2 is another address of the loopback interface.
    let flooding = flood_from(IpAddr::from([127, 0, 0, 2]), addr, 200).await;
    assert!(node.stats().handshakes_in_progress <= 40);
    // The quiet address's connections are all still open: the node answered their first
    // message (message 2 is waiting to be read) and has not closed them.
    for stream in &mut quiet {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
            .await
            .expect("message 2 arrives")
            .unwrap();
        assert!(n > 0, "a quiet address's connection was closed");
    }
    for stream in &mut quiet {
        let mut buf = [0u8; 512];
        let still_open =
            tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await;
        assert!(
            still_open.is_err(),
            "a quiet connection was closed: {still_open:?}"
        );
    }
    drop(flooding);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_at_the_first_message_deadline() {
    let memory = Arc::new(MemoryAdapter::new());
    let node = storage(memory, |c| {
        c.first_message_timeout = Duration::from_millis(300);
        c.handshake_timeout = Duration::from_secs(30);
    })
    .await;
    let addr = node.local_addr().unwrap();
    let started = Instant::now();
    let mut idle = hostile(addr, Stall::Idle).await.unwrap();
    let mut partial = hostile(addr, Stall::PartialRecord).await.unwrap();
    for stream in [&mut idle, &mut partial] {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the node closes the connection")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "closed only after {waited:?}"
    );
    let timeouts = node
        .stats()
        .handshake_failures
        .iter()
        .find(|(r, _)| *r == "timeout")
        .map_or(0, |(_, n)| *n);
    assert_eq!(timeouts, 2);
}
