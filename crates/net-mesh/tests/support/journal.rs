//! A durable storage for a test node: every accepted batch is appended to a journal file
//! before it is acknowledged, and the journal is replayed into a `MemoryAdapter` on start,
//! so ids and cursors are the same after a restart.
//!
//! Record: nonce u64, shard u16, sequence_start u64, count u32, then per event
//! insertion_ts u64, length u32, bytes (all big-endian). A torn record at the end of the
//! file (a kill in the middle of a write) is cut off on replay.

#![allow(dead_code)]

use bytes::Bytes;
use net_adapter::{
    async_trait, Adapter, AdapterError, Batch, BatchEvent, MemoryAdapter, ShardPollResult,
};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) struct Journal {
    path: PathBuf,
    state: tokio::sync::Mutex<State>,
    memory: MemoryAdapter,
}

struct State {
    file: std::fs::File,
    /// Per (nonce, shard), the first sequence number not yet stored.
    high_water: HashMap<(u64, u16), u64>,
}

fn encode(batch: &Batch, out: &mut Vec<u8>) {
    out.extend_from_slice(&batch.process_nonce.to_be_bytes());
    out.extend_from_slice(&batch.shard_id.to_be_bytes());
    out.extend_from_slice(&batch.sequence_start.to_be_bytes());
    out.extend_from_slice(&(batch.events.len() as u32).to_be_bytes());
    for e in &batch.events {
        out.extend_from_slice(&e.insertion_ts.to_be_bytes());
        out.extend_from_slice(&(e.raw.len() as u32).to_be_bytes());
        out.extend_from_slice(&e.raw);
    }
}

fn decode(bytes: &[u8]) -> Option<(Batch, usize)> {
    let mut pos = 0;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(pos..pos + n)?;
        pos += n;
        Some(s)
    };
    let nonce = u64::from_be_bytes(take(8)?.try_into().ok()?);
    let shard = u16::from_be_bytes(take(2)?.try_into().ok()?);
    let seq = u64::from_be_bytes(take(8)?.try_into().ok()?);
    let n = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
    let mut events = Vec::with_capacity(n.min(100_000));
    for _ in 0..n {
        let ts = u64::from_be_bytes(take(8)?.try_into().ok()?);
        let len = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        let raw = Bytes::copy_from_slice(take(len)?);
        events.push(BatchEvent {
            raw,
            insertion_ts: ts,
            shard_id: shard,
        });
    }
    Some((
        Batch {
            shard_id: shard,
            events,
            sequence_start: seq,
            process_nonce: nonce,
        },
        pos,
    ))
}

impl Journal {
    /// Opens (replaying) or creates the journal in `dir`.
    pub(crate) async fn open(dir: &Path) -> Arc<Journal> {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("journal.bin");
        let bytes = std::fs::read(&path).unwrap_or_default();
        let memory = MemoryAdapter::new();
        let mut high_water = HashMap::new();
        let mut pos = 0;
        while let Some((batch, used)) = decode(&bytes[pos..]) {
            pos += used;
            high_water.insert(
                (batch.process_nonce, batch.shard_id),
                batch.sequence_start + batch.events.len() as u64,
            );
            memory.on_batch(Arc::new(batch)).await.unwrap();
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        // Cut a torn tail.
        file.set_len(pos as u64).unwrap();
        let mut file = file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).unwrap();
        Arc::new(Journal {
            path,
            state: tokio::sync::Mutex::new(State { file, high_water }),
            memory,
        })
    }

    /// Every batch in the journal file, in order.
    pub(crate) fn read_all(dir: &Path) -> Vec<Batch> {
        let bytes = std::fs::read(dir.join("journal.bin")).unwrap_or_default();
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some((batch, used)) = decode(&bytes[pos..]) {
            pos += used;
            out.push(batch);
        }
        out
    }
}

#[async_trait]
impl Adapter for Journal {
    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        let mut state = self.state.lock().await;
        let key = (batch.process_nonce, batch.shard_id);
        if state
            .high_water
            .get(&key)
            .is_some_and(|&hw| batch.sequence_start < hw)
        {
            return Ok(());
        }
        let mut record = Vec::new();
        encode(&batch, &mut record);
        state.file.write_all(&record).map_err(|e| {
            AdapterError::Transient(format!("journal {}: {e}", self.path.display()))
        })?;
        state
            .high_water
            .insert(key, batch.sequence_start + batch.events.len() as u64);
        self.memory.on_batch(batch).await
    }

    async fn poll_shard(
        &self,
        shard_id: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        self.memory.poll_shard(shard_id, cursor, limit).await
    }

    async fn flush(&self) -> Result<(), AdapterError> {
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), AdapterError> {
        self.memory.shutdown().await
    }

    fn name(&self) -> &str {
        "journal"
    }
}
