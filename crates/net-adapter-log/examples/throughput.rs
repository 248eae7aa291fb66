//! Measures appends of 1,024-event batches to one shard under each sync policy, against a
//! bare `write` + `fdatasync` loop writing the same bytes, and the cost of handing one call to
//! `spawn_blocking`. Run with `cargo run --release -p net-adapter-log --example throughput
//! [DIR]`; DIR defaults to a temporary directory (put it on the disk you care about).

use bytes::Bytes;
use net_adapter::{Adapter, Batch, BatchEvent};
use net_adapter_log::{FsyncPolicy, LogAdapter, LogAdapterConfig};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

const EVENTS: usize = 1024;
const PAYLOAD: usize = 100;
const BATCHES: u64 = 300;

fn batch(seq: u64) -> Arc<Batch> {
    let raw = Bytes::from(format!("{{\"v\":\"{}\"}}", "x".repeat(PAYLOAD - 8)));
    Arc::new(Batch {
        shard_id: 0,
        events: (0..EVENTS)
            .map(|_| BatchEvent {
                raw: raw.clone(),
                insertion_ts: 1,
                shard_id: 0,
            })
            .collect(),
        sequence_start: seq,
        process_nonce: 1,
    })
}

fn main() {
    let base = std::env::args().nth(1).map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir_in(base.unwrap_or_else(std::env::temp_dir)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let per_batch = EVENTS * (52 + PAYLOAD);

    // A bare loop: the same bytes, one write and one fdatasync per batch.
    let path = tmp.path().join("bare");
    let file = std::fs::File::create(&path).unwrap();
    let buf = vec![7u8; per_batch];
    let t = Instant::now();
    for i in 0..BATCHES {
        file.write_all_at(&buf, i * per_batch as u64).unwrap();
        file.sync_data().unwrap();
    }
    report("bare write + fdatasync", t.elapsed().as_secs_f64());

    for (name, policy) in [
        ("log, fsync every batch", FsyncPolicy::EveryBatch),
        ("log, fsync never", FsyncPolicy::Never),
    ] {
        let dir = tmp.path().join(name.replace([' ', ','], "-"));
        let log = LogAdapter::open(LogAdapterConfig::new(&dir).fsync(policy)).unwrap();
        let batches: Vec<_> = (0..BATCHES).map(|i| batch(i * EVENTS as u64)).collect();
        let t = Instant::now();
        rt.block_on(async {
            for b in batches {
                log.on_batch(b).await.unwrap();
            }
            log.flush().await.unwrap();
        });
        report(name, t.elapsed().as_secs_f64());
    }

    // What handing a call to the blocking pool costs, next to the work itself.
    let n = 20_000;
    let t = Instant::now();
    rt.block_on(async {
        for _ in 0..n {
            tokio::task::spawn_blocking(|| ()).await.unwrap();
        }
    });
    let per_call = t.elapsed().as_secs_f64() / f64::from(n) * 1e6;
    let mut out = std::io::stdout().lock();
    writeln!(out, "spawn_blocking round trip: {per_call:.1} µs per call").unwrap();
}

fn report(name: &str, secs: f64) {
    let events = BATCHES as f64 * EVENTS as f64;
    println!(
        "{name:<28} {:>10.0} events/s  {:>7.3} ms per 1,024-event batch",
        events / secs,
        secs * 1e3 / BATCHES as f64
    );
}
