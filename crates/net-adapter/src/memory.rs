//! [`MemoryAdapter`]: a bounded in-memory log per shard.
//!
//! Layout: one log per shard, created on the first batch for that shard. Entries get ids
//! 1, 2, 3, ... per shard, in append order; an id is never reused. A cursor is the decimal id
//! of the last entry the reader has seen ("0" means before the first entry ever written).
//!
//! Retention keeps the newest `max_events_per_shard` entries; a cursor pointing before the
//! earliest retained entry is stale and is answered with an empty page whose cursor moves to
//! just before that entry.
//!
//! Test hooks let a test shape what the log holds ([`MemoryAdapter::inject_corrupt`],
//! [`MemoryAdapter::trim`]) and make the next `on_batch` of a shard fail in a chosen way
//! ([`MemoryAdapter::inject_fault`]); the conformance kit drives the adapter through them.
//!
//! Retries are deduplicated with a per-shard high-water mark of sequence numbers per producer
//! nonce: a batch whose sequence range was already appended is acknowledged without being
//! written again. This relies on the bus's guarantee that one nonce's batches for a shard
//! arrive in sequence order (per-shard FIFO).

use crate::types::{dedup_id, MAX_PAGE};
use crate::{
    Adapter, AdapterError, Batch, LayoutWrite, ShardPollResult, StoredEvent, StreamLayout,
};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How many producer nonces a shard remembers for retry dedup before forgetting the oldest.
const REMEMBERED_NONCES: usize = 1024;

/// A failure the next [`Adapter::on_batch`] call of one shard simulates (a test hook).
///
/// Set with [`MemoryAdapter::inject_fault`]; it applies once, to the next batch of that shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemoryFault {
    /// Reject the batch with [`AdapterError::Fatal`] without storing any of it, as a
    /// misconfigured backend would.
    Fatal,
    /// Store the batch, then return [`AdapterError::Transient`], as when the reply of a write
    /// that did happen is lost.
    TransientAfterWrite,
    /// Store the batch, then never complete, as a call whose reply never arrives; the caller
    /// gives up on it (drops the future) and retries.
    StallAfterWrite,
}

/// Settings of a [`MemoryAdapter`]. Start from [`MemoryAdapterConfig::default`] and use the
/// setters.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryAdapterConfig {
    /// Retention: the newest entries kept per shard. Older entries are trimmed on append.
    pub max_events_per_shard: usize,
}

impl Default for MemoryAdapterConfig {
    fn default() -> Self {
        Self {
            max_events_per_shard: 1_000_000,
        }
    }
}

impl MemoryAdapterConfig {
    /// Sets the per-shard retention (at least 1).
    pub fn max_events_per_shard(mut self, n: usize) -> Self {
        self.max_events_per_shard = n.max(1);
        self
    }
}

#[derive(Debug)]
enum Entry {
    Event {
        raw: Bytes,
        insertion_ts: u64,
        nonce: u64,
        sequence_start: u64,
        index: u32,
    },
    /// A stored entry that cannot be decoded (only produced by [`MemoryAdapter::inject_corrupt`]).
    Corrupt,
}

#[derive(Debug)]
struct ShardLog {
    entries: VecDeque<Entry>,
    /// Id of `entries[0]` (or of the next append when empty).
    first_id: u64,
    /// Per nonce, the first sequence number not yet appended.
    high_water: HashMap<u64, u64>,
    nonce_order: VecDeque<u64>,
}

impl ShardLog {
    fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            first_id: 1,
            high_water: HashMap::new(),
            nonce_order: VecDeque::new(),
        }
    }

    /// Id the next appended entry gets.
    fn next_id(&self) -> u64 {
        self.first_id + self.entries.len() as u64
    }

    fn push(&mut self, entry: Entry, retention: usize) {
        self.entries.push_back(entry);
        while self.entries.len() > retention {
            self.entries.pop_front();
            self.first_id += 1;
        }
    }

    fn remember(&mut self, nonce: u64, next_seq: u64) {
        if self.high_water.insert(nonce, next_seq).is_none() {
            self.nonce_order.push_back(nonce);
            if self.nonce_order.len() > REMEMBERED_NONCES {
                if let Some(old) = self.nonce_order.pop_front() {
                    self.high_water.remove(&old);
                }
            }
        }
    }
}

/// A real, bounded in-memory event log per shard with retry dedup.
///
/// The embedded default for trying the API, for tests and for the CLI. Nothing survives the
/// process. See the module documentation for ids, cursors and retention.
#[derive(Debug, Default)]
pub struct MemoryAdapter {
    config: MemoryAdapterConfig,
    shards: RwLock<HashMap<u16, Arc<Mutex<ShardLog>>>>,
    faults: Mutex<HashMap<u16, MemoryFault>>,
    /// The layout recorded by the first bus (see [`Adapter::record_layout`]).
    layout: Mutex<Option<StreamLayout>>,
    shut_down: AtomicBool,
}

impl MemoryAdapter {
    /// A memory adapter with default retention.
    pub fn new() -> Self {
        Self::with_config(MemoryAdapterConfig::default())
    }

    /// A memory adapter with the given settings.
    pub fn with_config(config: MemoryAdapterConfig) -> Self {
        Self {
            config,
            shards: RwLock::new(HashMap::new()),
            faults: Mutex::new(HashMap::new()),
            layout: Mutex::new(None),
            shut_down: AtomicBool::new(false),
        }
    }

    fn check_open(&self) -> Result<(), AdapterError> {
        if self.shut_down.load(Ordering::Acquire) {
            Err(AdapterError::Shutdown)
        } else {
            Ok(())
        }
    }

    fn shard(&self, shard_id: u16) -> Option<Arc<Mutex<ShardLog>>> {
        self.shards.read().get(&shard_id).cloned()
    }

    fn shard_or_create(&self, shard_id: u16) -> Arc<Mutex<ShardLog>> {
        if let Some(log) = self.shard(shard_id) {
            return log;
        }
        self.shards
            .write()
            .entry(shard_id)
            .or_insert_with(|| Arc::new(Mutex::new(ShardLog::new())))
            .clone()
    }

    /// Number of entries currently retained for `shard_id` (corrupt ones included).
    pub fn len(&self, shard_id: u16) -> usize {
        self.shard(shard_id).map_or(0, |s| s.lock().entries.len())
    }

    /// Number of entries retained over all shards.
    pub fn total_len(&self) -> usize {
        self.shards
            .read()
            .values()
            .map(|s| s.lock().entries.len())
            .sum()
    }

    /// True when no shard holds any entry.
    pub fn is_empty(&self) -> bool {
        self.total_len() == 0
    }

    /// Appends an entry that cannot be decoded to `shard_id` and returns its id.
    ///
    /// A test hook: polls skip the entry and advance the cursor past it.
    pub fn inject_corrupt(&self, shard_id: u16) -> String {
        let log = self.shard_or_create(shard_id);
        let mut log = log.lock();
        let id = log.next_id();
        log.push(Entry::Corrupt, self.config.max_events_per_shard);
        id.to_string()
    }

    /// Trims `shard_id` so that only its newest `keep` entries remain.
    pub fn trim(&self, shard_id: u16, keep: usize) {
        if let Some(log) = self.shard(shard_id) {
            let mut log = log.lock();
            while log.entries.len() > keep {
                log.entries.pop_front();
                log.first_id += 1;
            }
        }
    }
}

impl MemoryAdapter {
    /// Makes the next `on_batch` call for `shard_id` fail as `fault` describes (a test hook).
    ///
    /// Replaces a fault already waiting for that shard. Shutdown still takes precedence: a
    /// shut-down adapter returns [`AdapterError::Shutdown`] and keeps the fault waiting.
    pub fn inject_fault(&self, shard_id: u16, fault: MemoryFault) {
        self.faults.lock().insert(shard_id, fault);
    }

    /// Appends `batch` to its shard's log unless a previous delivery already did.
    fn append(&self, batch: &Batch) {
        let log = self.shard_or_create(batch.shard_id);
        let mut log = log.lock();
        let end = batch
            .sequence_start
            .saturating_add(batch.events.len() as u64);
        let already = log
            .high_water
            .get(&batch.process_nonce)
            .copied()
            .unwrap_or(0);
        if end <= already {
            // A retry of a batch that is already stored.
            return;
        }
        // Skip a prefix that a previous delivery already appended (cannot happen with the
        // bus's whole-batch retries, but keeps the log duplicate-free regardless).
        let skip = already.saturating_sub(batch.sequence_start) as usize;
        let retention = self.config.max_events_per_shard;
        for (index, event) in batch.events.iter().enumerate().skip(skip) {
            log.push(
                Entry::Event {
                    raw: event.raw.clone(),
                    insertion_ts: event.insertion_ts,
                    nonce: batch.process_nonce,
                    sequence_start: batch.sequence_start,
                    index: index as u32,
                },
                retention,
            );
        }
        log.remember(batch.process_nonce, end);
    }
}

fn parse_cursor(cursor: &str) -> Result<u64, AdapterError> {
    cursor
        .parse::<u64>()
        .map_err(|_| AdapterError::InvalidCursor(format!("memory: {cursor:?} is not an entry id")))
}

#[async_trait]
impl Adapter for MemoryAdapter {
    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        self.check_open()?;
        if batch.events.is_empty() {
            return Ok(());
        }
        if batch.events.len() > u32::MAX as usize {
            return Err(AdapterError::Fatal(format!(
                "memory: batch of {} events on shard {} is too large",
                batch.events.len(),
                batch.shard_id
            )));
        }
        let fault = self.faults.lock().remove(&batch.shard_id);
        match fault {
            None => {
                self.append(&batch);
                Ok(())
            }
            Some(MemoryFault::Fatal) => Err(AdapterError::Fatal(format!(
                "memory: injected permanent failure on shard {}",
                batch.shard_id
            ))),
            Some(MemoryFault::TransientAfterWrite) => {
                self.append(&batch);
                Err(AdapterError::Transient(format!(
                    "memory: injected failure after writing to shard {}",
                    batch.shard_id
                )))
            }
            Some(MemoryFault::StallAfterWrite) => {
                self.append(&batch);
                std::future::pending::<()>().await;
                Ok(())
            }
        }
    }

    async fn poll_shard(
        &self,
        shard_id: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        self.check_open()?;
        let after = cursor.map(parse_cursor).transpose()?;
        let Some(log) = self.shard(shard_id) else {
            // Nothing was ever written to this shard: only the start position exists.
            return match after {
                None | Some(0) => Ok(ShardPollResult {
                    events: Vec::new(),
                    cursor: "0".to_owned(),
                    has_more: false,
                }),
                Some(id) => Err(AdapterError::InvalidCursor(format!(
                    "memory: cursor {id} is beyond the end of empty shard {shard_id}"
                ))),
            };
        };
        let log = log.lock();
        let last_id = log.next_id() - 1;
        let before_first = log.first_id - 1;
        let after = after.unwrap_or(before_first);
        if after > last_id {
            return Err(AdapterError::InvalidCursor(format!(
                "memory: cursor {after} is beyond the last entry {last_id} of shard {shard_id}"
            )));
        }
        if after < before_first {
            // Stale: retention trimmed the position. Move to just before the earliest entry.
            return Ok(ShardPollResult {
                events: Vec::new(),
                cursor: before_first.to_string(),
                has_more: !log.entries.is_empty(),
            });
        }
        let start = (after - before_first) as usize;
        let budget = limit.min(MAX_PAGE);
        let mut events = Vec::with_capacity(budget.min(log.entries.len() - start));
        let mut position = after;
        for entry in log.entries.iter().skip(start).take(budget) {
            position += 1;
            match entry {
                Entry::Event {
                    raw,
                    insertion_ts,
                    nonce,
                    sequence_start,
                    index,
                } => events.push(StoredEvent {
                    id: position.to_string(),
                    raw: raw.clone(),
                    insertion_ts: *insertion_ts,
                    shard_id,
                    dedup_id: Some(dedup_id(*nonce, shard_id, *sequence_start, *index as usize)),
                }),
                Entry::Corrupt => {}
            }
        }
        Ok(ShardPollResult {
            events,
            cursor: position.to_string(),
            has_more: position < last_id,
        })
    }

    async fn flush(&self) -> Result<(), AdapterError> {
        self.check_open()
    }

    async fn shutdown(&self) -> Result<(), AdapterError> {
        self.shut_down.store(true, Ordering::Release);
        Ok(())
    }

    fn name(&self) -> &str {
        "memory"
    }

    async fn record_layout(
        &self,
        layout: StreamLayout,
        write: LayoutWrite,
    ) -> Result<Option<StreamLayout>, AdapterError> {
        self.check_open()?;
        let mut recorded = self.layout.lock();
        match (write, *recorded) {
            (LayoutWrite::IfAbsent, Some(earlier)) => Ok(Some(earlier)),
            _ => {
                *recorded = Some(layout);
                Ok(Some(layout))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn batch(shard_id: u16, nonce: u64, sequence_start: u64, n: usize) -> Arc<Batch> {
        let payloads =
            (sequence_start..sequence_start + n as u64).map(|i| format!("{{\"i\":{i}}}"));
        Arc::new(Batch {
            process_nonce: nonce,
            ..crate::conformance::batch(shard_id, sequence_start, payloads)
        })
    }

    async fn all(a: &MemoryAdapter, shard: u16, page: usize) -> Vec<StoredEvent> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let r = a.poll_shard(shard, cursor.as_deref(), page).await.unwrap();
            out.extend(r.events);
            cursor = Some(r.cursor);
            if !r.has_more {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn retry_is_stored_once() {
        let a = MemoryAdapter::new();
        a.on_batch(batch(0, 7, 0, 3)).await.unwrap();
        a.on_batch(batch(0, 7, 0, 3)).await.unwrap();
        a.on_batch(batch(0, 7, 3, 2)).await.unwrap();
        a.on_batch(batch(0, 8, 0, 1)).await.unwrap();
        let got = all(&a, 0, 2).await;
        let ids: Vec<_> = got.iter().map(|e| e.dedup_id.clone().unwrap()).collect();
        assert_eq!(
            ids,
            ["7:0:0:0", "7:0:0:1", "7:0:0:2", "7:0:3:0", "7:0:3:1", "8:0:0:0"]
        );
    }

    #[tokio::test]
    async fn paging_and_hostile_cursors() {
        let a = MemoryAdapter::new();
        a.on_batch(batch(1, 1, 0, 5)).await.unwrap();
        let r = a.poll_shard(1, None, 0).await.unwrap();
        assert!(r.events.is_empty() && r.has_more);
        let r = a.poll_shard(1, Some("2"), usize::MAX).await.unwrap();
        assert_eq!(r.events.len(), 3);
        assert_eq!(r.events[0].id, "3");
        assert!(!r.has_more);
        for bad in ["x", "-1", "6", "18446744073709551616", ""] {
            let e = a.poll_shard(1, Some(bad), 10).await.unwrap_err();
            assert!(matches!(e, AdapterError::InvalidCursor(_)), "{bad}: {e:?}");
        }
        let e = a.poll_shard(9, Some("1"), 10).await.unwrap_err();
        assert!(matches!(e, AdapterError::InvalidCursor(_)));
    }

    #[tokio::test]
    async fn corrupt_entries_advance_the_cursor() {
        let a = MemoryAdapter::new();
        a.inject_corrupt(0);
        a.inject_corrupt(0);
        a.on_batch(batch(0, 1, 0, 1)).await.unwrap();
        let r = a.poll_shard(0, None, 2).await.unwrap();
        assert!(r.events.is_empty());
        assert_eq!(r.cursor, "2");
        assert!(r.has_more);
        let r = a.poll_shard(0, Some(&r.cursor), 2).await.unwrap();
        assert_eq!(r.events.len(), 1);
    }

    #[tokio::test]
    async fn retention_and_stale_cursor() {
        let a = MemoryAdapter::with_config(MemoryAdapterConfig::default().max_events_per_shard(3));
        a.on_batch(batch(0, 1, 0, 5)).await.unwrap();
        assert_eq!(a.len(0), 3);
        let r = a.poll_shard(0, Some("1"), 10).await.unwrap();
        assert!(r.events.is_empty());
        assert_eq!(r.cursor, "2");
        assert!(r.has_more);
        let r = a.poll_shard(0, Some(&r.cursor), 10).await.unwrap();
        assert_eq!(
            r.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["3", "4", "5"]
        );
    }

    #[tokio::test]
    async fn shutdown_rejects() {
        let a = MemoryAdapter::new();
        a.shutdown().await.unwrap();
        a.shutdown().await.unwrap();
        assert!(matches!(
            a.on_batch(batch(0, 1, 0, 1)).await,
            Err(AdapterError::Shutdown)
        ));
        assert!(matches!(
            a.poll_shard(0, None, 1).await,
            Err(AdapterError::Shutdown)
        ));
    }
}
