//! Mesh rows: batches between two nodes over TCP on loopback, the same record framing with
//! and without encryption, and the raw ChaCha20-Poly1305 rate of one core.
//!
//! - `mesh on_batch`: a client `NetAdapter` in this process sends batches of [`BATCH`] events
//!   to a storage `NetAdapter` in a second process (this binary again, see
//!   [`storage_process_entry`]) which hands them to a Noop adapter, one batch in flight per
//!   shard as the bus does, each call returning after the storage node acknowledged it;
//! - `mesh framing`: this process encodes batch frames and writes them to a loopback socket,
//!   a second process reads, (decrypts,) reassembles and decodes them: the transport alone,
//!   with a Noise session and with the same records in plaintext;
//! - `ChaCha20-Poly1305`: sealing 64 KiB records in place with `ring` on one core, the bound
//!   the encrypted rows cannot pass.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use net_adapter::{Adapter, Batch, BatchEvent, NoopAdapter};
use net_mesh::frame::Frame;
use net_mesh::session::{Role, Session, SessionConfig, SessionEvent};
use net_mesh::{EntityKeypair, NetAdapter, NetAdapterConfig, ShardRange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::plan::{payload, Mode, Plan, Summary, PAYLOAD_BYTES};
use crate::report::{Row, Unit};

/// Events per batch.
const BATCH: usize = 1024;
/// Shards sending concurrently in the `on_batch` row.
const SHARDS: u16 = 16;
/// Largest plaintext of one record (a Noise message less its tag).
const RECORD_PLAINTEXT: usize = 65_535 - 16;
/// Bytes sealed per call in the ChaCha20-Poly1305 row.
const SEAL_BYTES: usize = 64 * 1024;

fn batches(events: u64) -> Vec<Arc<Batch>> {
    let count = (events as usize).div_ceil(BATCH);
    (0..count)
        .map(|b| {
            let shard = (b % SHARDS as usize) as u16;
            Arc::new(Batch {
                shard_id: shard,
                events: (0..BATCH)
                    .map(|i| BatchEvent {
                        raw: Bytes::from(payload(0, (b * BATCH + i) % 65_536)),
                        insertion_ts: 0,
                        shard_id: shard,
                    })
                    .collect(),
                sequence_start: (b / SHARDS as usize * BATCH) as u64,
                process_nonce: 1,
            })
        })
        .collect()
}

/// Environment variable that makes this binary run as the storage node of the mesh rows.
const STORAGE_ENV: &str = "NET_BENCH_MESH_STORAGE";

/// Runs the storage node when this process was started as one (the variable is set): listens
/// on loopback, prints `READY <addr>`, serves until its standard input closes. Returns `None`
/// in a normal run.
pub(crate) fn storage_process_entry() -> Option<ExitCode> {
    let role = std::env::var(STORAGE_ENV).ok()?;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the tokio runtime")
        .and_then(|runtime| {
            runtime.block_on(async {
                match role.split_once(':') {
                    Some((mode, expect)) => receiver_process(mode == "enc", expect.parse()?).await,
                    None => storage_process().await,
                }
            })
        });
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mesh storage process: {err:#}");
            ExitCode::FAILURE
        }
    })
}

/// The storage node of the `on_batch` row.
async fn storage_process() -> Result<()> {
    let storage = NetAdapter::new(
        NetAdapterConfig::default()
            .listen("127.0.0.1:0")
            .stores(ShardRange::ALL)
            .storage(Arc::new(NoopAdapter::new())),
    )?;
    storage.start().await?;
    let addr = storage.local_addr().context("storage node not bound")?;
    println!("READY {addr}");
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
    })
    .await?;
    storage.shutdown().await?;
    Ok(())
}

/// The receiving end of the framing rows: accepts one connection, (handshakes,) signals `G`,
/// receives `expect` events, answers `D`.
async fn receiver_process(encrypted: bool, expect: usize) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("READY {}", listener.local_addr()?);
    let (mut socket, _) = listener.accept().await?;
    socket.set_nodelay(true)?;
    let received = if encrypted {
        let mut session = Session::new(
            SessionConfig::new(EntityKeypair::generate()?),
            Role::Responder,
            Instant::now(),
        )?;
        handshake(&mut session, &mut socket).await?;
        socket.write_all(b"G").await?;
        encrypted_receive(&mut socket, &mut session, expect).await?
    } else {
        socket.write_all(b"G").await?;
        plain_receive(&mut socket, expect).await?
    };
    if received != expect {
        bail!("received {received} of {expect} events");
    }
    socket.write_all(b"D").await?;
    Ok(())
}

/// Runs a Noise handshake over `socket` until the session is established.
async fn handshake(session: &mut Session, socket: &mut TcpStream) -> Result<()> {
    let mut buf = vec![0u8; 4096];
    loop {
        let out = session.take_output();
        if !out.is_empty() {
            socket.write_all(&out).await?;
        }
        if session.is_established() {
            while session.poll_event().is_some() {}
            return Ok(());
        }
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            bail!("peer closed during the handshake");
        }
        session.handle_input(&buf[..n])?;
    }
}

/// Reads encrypted records, decodes batch frames; returns the events received.
async fn encrypted_receive(
    socket: &mut TcpStream,
    session: &mut Session,
    expect: usize,
) -> Result<usize> {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut events = 0;
    while events < expect {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            bail!("sender closed early");
        }
        session.handle_input(&chunk[..n])?;
        while let Some(event) = session.poll_event() {
            if let SessionEvent::Frame(Frame::Batch { batch, .. }) = event {
                events += batch.events.len();
            }
        }
    }
    Ok(events)
}

/// Starts this binary as a second process in `role`; returns it and the address it printed.
async fn spawn_peer(role: String) -> Result<(std::process::Child, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .env(STORAGE_ENV, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start the second process")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await??;
    let addr = line
        .strip_prefix("READY ")
        .with_context(|| format!("second process said {line:?}"))?
        .trim()
        .to_owned();
    Ok((child, addr))
}

/// One timed pass of `on_batch` from this process to a storage node in another; returns
/// events per second.
async fn on_batch_pass(batches: &[Arc<Batch>]) -> Result<f64> {
    let (mut child, addr) = spawn_peer("node".into()).await?;
    let result = client_pass(batches, &addr).await;
    drop(child.stdin.take());
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    result
}

/// The client half of [`on_batch_pass`].
async fn client_pass(batches: &[Arc<Batch>], addr: &str) -> Result<f64> {
    let client = Arc::new(NetAdapter::new(
        NetAdapterConfig::default()
            .peer(addr)
            .keypair(EntityKeypair::generate()?),
    )?);
    client.start().await?;
    if !client
        .wait_for_coverage(0, 1, Duration::from_secs(10))
        .await
    {
        bail!("the client never connected to the storage node");
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for shard in 0..SHARDS {
        let mine: Vec<Arc<Batch>> = batches
            .iter()
            .filter(|b| b.shard_id == shard)
            .cloned()
            .collect();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for batch in mine {
                client.on_batch(batch).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    client.shutdown().await?;
    let events = batches.iter().map(|b| b.events.len()).sum::<usize>() as f64;
    Ok(events / elapsed.as_secs_f64().max(1e-9))
}

/// Splits an encoded frame into plaintext records exactly as the session lays them out
/// (length prefix, record flag, chunk), without encryption.
fn plain_records(frame: &[u8], out: &mut Vec<u8>) {
    let mut push = |header: &[u8], body: &[u8]| {
        out.extend_from_slice(&((header.len() + body.len()) as u16).to_be_bytes());
        out.extend_from_slice(header);
        out.extend_from_slice(body);
    };
    if frame.len() < RECORD_PLAINTEXT {
        push(&[0], frame);
        return;
    }
    let total = (frame.len() as u32).to_be_bytes();
    let (first, mut rest) = frame.split_at(RECORD_PLAINTEXT - 5);
    push(&[1, total[0], total[1], total[2], total[3]], first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(RECORD_PLAINTEXT - 1));
        push(&[2], chunk);
        rest = tail;
    }
}

/// Reads plaintext records, reassembles and decodes frames; returns the events received.
async fn plain_receive(socket: &mut TcpStream, expect: usize) -> Result<usize> {
    let mut buf = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut frame: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut events = 0;
    while events < expect {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            bail!("sender closed early");
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        while buf.len() - pos >= 2 {
            let len = u16::from_be_bytes([buf[pos], buf[pos + 1]]) as usize;
            if buf.len() - pos < 2 + len {
                break;
            }
            let record = &buf[pos + 2..pos + 2 + len];
            pos += 2 + len;
            let complete = match record[0] {
                0 => Some(Bytes::copy_from_slice(&record[1..])),
                1 => {
                    total =
                        u32::from_be_bytes([record[1], record[2], record[3], record[4]]) as usize;
                    frame = Vec::with_capacity(total);
                    frame.extend_from_slice(&record[5..]);
                    None
                }
                _ => {
                    frame.extend_from_slice(&record[1..]);
                    (frame.len() == total).then(|| Bytes::from(std::mem::take(&mut frame)))
                }
            };
            if let Some(bytes) = complete {
                if let Frame::Batch { batch, .. } = Frame::decode(&bytes)? {
                    events += batch.events.len();
                }
            }
        }
        buf.drain(..pos);
    }
    Ok(events)
}

/// One timed pass of the framing rows, to a receiver in a second process; returns events
/// per second.
async fn framing_pass(batches: &[Arc<Batch>], encrypted: bool) -> Result<f64> {
    let expect: usize = batches.iter().map(|b| b.events.len()).sum();
    let mode = if encrypted { "enc" } else { "plain" };
    let (mut child, addr) = spawn_peer(format!("{mode}:{expect}")).await?;
    let frames: Vec<Vec<u8>> = batches
        .iter()
        .map(|b| {
            Frame::Batch {
                request: 0,
                batch: b.clone(),
            }
            .to_bytes()
        })
        .collect::<Result<_, _>>()?;
    let mut socket = TcpStream::connect(&addr).await?;
    socket.set_nodelay(true)?;
    let mut sender = Session::new(
        SessionConfig::new(EntityKeypair::generate()?),
        Role::Initiator,
        Instant::now(),
    )?;
    if encrypted {
        handshake(&mut sender, &mut socket).await?;
    }
    let mut signal = [0u8; 1];
    socket.read_exact(&mut signal).await?;
    let started = Instant::now();
    let mut out = Vec::with_capacity(256 * 1024);
    for frame in &frames {
        if encrypted {
            sender.send_encoded(frame)?;
            sender.drain_output_into(&mut out);
        } else {
            plain_records(frame, &mut out);
        }
        socket.write_all(&out).await?;
        out.clear();
    }
    socket.read_exact(&mut signal).await?;
    let elapsed = started.elapsed();
    drop(child.stdin.take());
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    if signal != *b"D" || !status.success() {
        bail!("the receiving process did not confirm all {expect} events ({status})");
    }
    Ok(expect as f64 / elapsed.as_secs_f64().max(1e-9))
}

/// Seals `iterations` records of [`SEAL_BYTES`] in place on this thread; returns records/s.
fn chacha_pass(iterations: usize) -> Result<f64> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    let key = LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32])
            .map_err(|_| anyhow::anyhow!("ring refused the key"))?,
    );
    let mut data = vec![0x5au8; SEAL_BYTES];
    let mut tags = 0u8;
    let started = Instant::now();
    for i in 0..iterations {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&(i as u64).to_le_bytes());
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut data,
            )
            .map_err(|_| anyhow::anyhow!("seal failed"))?;
        tags ^= tag.as_ref()[0];
    }
    std::hint::black_box(tags);
    Ok(iterations as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// The mesh rows.
pub(crate) async fn rows(plan: &Plan) -> Result<Vec<Row>> {
    eprintln!("  mesh: two processes on loopback, framing, ChaCha20-Poly1305");
    let events = plan.memory_events;
    let batches = batches(events);
    let seal_iterations = if plan.mode == Mode::Smoke {
        200
    } else {
        20_000
    };
    if plan.warm_up {
        on_batch_pass(&batches).await?;
        framing_pass(&batches, true).await?;
        framing_pass(&batches, false).await?;
    }
    let (mut mesh, mut enc, mut plain, mut seal) = (vec![], vec![], vec![], vec![]);
    for _ in 0..plan.repeats {
        mesh.push(on_batch_pass(&batches).await?);
        enc.push(framing_pass(&batches, true).await?);
        plain.push(framing_pass(&batches, false).await?);
        seal.push(tokio::task::block_in_place(|| {
            chacha_pass(seal_iterations)
        })?);
    }
    let summary = |v: Vec<f64>| Summary::of(v).context("no repeat was measured");
    let plain_name = "mesh framing, 2 processes on loopback, plaintext records";
    let enc_name = "mesh framing, 2 processes on loopback, Noise encrypted";
    Ok(vec![
        Row::new(
            "mesh on_batch, 2 processes on loopback (encrypted, acked)",
            Unit::EventsPerSec,
            summary(mesh)?,
        )
        .baseline(enc_name)
        .payload(PAYLOAD_BYTES)
        .note(format!(
            "{BATCH}-event batches, {SHARDS} shards with one batch in flight each"
        )),
        Row::new(enc_name, Unit::EventsPerSec, summary(enc)?)
            .baseline(plain_name)
            .payload(PAYLOAD_BYTES)
            .note(format!(
                "{BATCH}-event batch frames, one sender and one receiver task"
            )),
        Row::new(plain_name, Unit::EventsPerSec, summary(plain)?)
            .payload(PAYLOAD_BYTES)
            .note("the same records without encryption"),
        Row::new(
            "ChaCha20-Poly1305 seal (ring), 1 core, 64 KiB records",
            Unit::EventsPerSec,
            summary(seal)?,
        )
        .payload(SEAL_BYTES)
        .note("records/s; the MB/s column is the cipher's rate"),
    ])
}
