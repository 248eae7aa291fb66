//! Helpers shared by the log's integration tests: batches, whole-shard reads, copies of a log
//! directory, and a small seeded random generator.

#![allow(dead_code)]

use bytes::Bytes;
use net_adapter::{Adapter, Batch, BatchEvent, StoredEvent};
use std::path::Path;
use std::sync::Arc;

/// A batch of `n` events on `shard` from sequence `start`; payload `{"s":shard,"q":seq}`.
pub(crate) fn batch(shard: u16, nonce: u64, start: u64, n: u64) -> Arc<Batch> {
    Arc::new(Batch {
        shard_id: shard,
        events: (start..start + n)
            .map(|q| BatchEvent {
                raw: Bytes::from(format!("{{\"s\":{shard},\"q\":{q}}}")),
                insertion_ts: 1_000 + q,
                shard_id: shard,
            })
            .collect(),
        sequence_start: start,
        process_nonce: nonce,
    })
}

/// The sequence number a payload written by [`batch`] carries.
pub(crate) fn seq_of(event: &StoredEvent) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&event.raw).expect("a JSON payload");
    v["q"].as_u64().expect("a sequence number")
}

/// Reads all of `shard` in pages of `limit`, checking that every empty page with
/// `has_more` moves the cursor forward (a consumer is never wedged).
pub(crate) async fn read_all(adapter: &dyn Adapter, shard: u16, limit: usize) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000_000 {
        let page = adapter
            .poll_shard(shard, cursor.as_deref(), limit)
            .await
            .expect("poll");
        if let Some(old) = &cursor {
            let (a, b): (u64, u64) = (old.parse().unwrap(), page.cursor.parse().unwrap());
            assert!(b >= a, "the cursor went back from {a} to {b}");
            if page.has_more {
                assert!(
                    b > a,
                    "a page with has_more did not move the cursor from {a}"
                );
            }
        }
        out.extend(page.events);
        cursor = Some(page.cursor);
        if !page.has_more {
            return out;
        }
    }
    panic!("reading shard {shard} did not end");
}

/// Copies the files of the log directory `from` into `to` (one level of shard directories).
pub(crate) fn copy_log(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            for inner in std::fs::read_dir(entry.path()).unwrap() {
                let inner = inner.unwrap();
                std::fs::copy(inner.path(), target.join(inner.file_name())).unwrap();
            }
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `(position, size, offset)` of every record of an undamaged segment file.
pub(crate) fn records_of(bytes: &[u8]) -> Vec<(usize, usize, u64)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 52 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let offset = u64::from_le_bytes(bytes[pos + 12..pos + 20].try_into().unwrap());
        out.push((pos, 52 + len, offset));
        pos += 52 + len;
    }
    assert_eq!(pos, bytes.len(), "an undamaged segment parses to its end");
    out
}

/// xorshift64*: a small seeded generator, so a failing case can be replayed from its seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A multi-threaded runtime for tests that drive the adapter from plain `#[test]`s.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
