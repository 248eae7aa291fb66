//! The storing side: a peer's batch stored once per `(nonce, shard, sequence_start)` in this
//! node's own adapter, with retries while that adapter answers with retryable errors, and
//! pages read for peers.

use super::counters::Counters;
use crate::frame::Capabilities;
use net_adapter::{Adapter, AdapterError, Batch, ShardPollResult};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

/// Batches remembered for dedup by `(nonce, shard, sequence_start)`.
const DEDUP_CAPACITY: usize = 65_536;
/// First pause between attempts to store a batch while the storage is failing.
const STORAGE_RETRY_MIN: Duration = Duration::from_millis(50);
/// Longest pause between attempts to store a batch.
const STORAGE_RETRY_MAX: Duration = Duration::from_secs(2);

/// Identifies a batch for dedup: `(process nonce, shard, sequence_start)`.
type BatchKey = (u64, u16, u64);

/// Recently stored batches, bounded, oldest forgotten first.
#[derive(Default)]
struct Dedup {
    set: HashSet<(u64, u16, u64)>,
    order: VecDeque<(u64, u16, u64)>,
}

impl Dedup {
    fn contains(&self, key: &(u64, u16, u64)) -> bool {
        self.set.contains(key)
    }

    fn insert(&mut self, key: (u64, u16, u64)) {
        if self.set.insert(key) {
            self.order.push_back(key);
            if self.order.len() > DEDUP_CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// This node's storage as its peers use it.
pub(super) struct Store {
    adapter: Option<Arc<dyn Adapter>>,
    capabilities: Capabilities,
    timeout: Duration,
    retry_window: Duration,
    dedup: Mutex<Dedup>,
    /// Batches being stored, by dedup key: a copy that arrives meanwhile waits for the first.
    storing: Mutex<HashMap<BatchKey, Arc<tokio::sync::Mutex<()>>>>,
    counters: Arc<Counters>,
}

impl Store {
    pub(super) fn new(
        adapter: Option<Arc<dyn Adapter>>,
        capabilities: Capabilities,
        timeout: Duration,
        retry_window: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            adapter,
            capabilities,
            timeout,
            retry_window,
            dedup: Mutex::new(Dedup::default()),
            storing: Mutex::new(HashMap::new()),
            counters,
        }
    }

    /// The adapter behind this store, if the node stores anything.
    pub(super) fn adapter(&self) -> Option<Arc<dyn Adapter>> {
        self.adapter.clone()
    }

    /// Stores a peer's batch in this node's storage, once per `(nonce, shard, sequence_start)`.
    /// Retries stop early once `closing` is set.
    pub(super) async fn store(
        &self,
        batch: Arc<Batch>,
        closing: &AtomicBool,
    ) -> Result<(), AdapterError> {
        let Some(storage) = &self.adapter else {
            return Err(AdapterError::Fatal("this node stores no shards".into()));
        };
        if !self.capabilities.stores(batch.shard_id) {
            return Err(AdapterError::Fatal(format!(
                "this node does not store shard {}",
                batch.shard_id
            )));
        }
        let key = (batch.process_nonce, batch.shard_id, batch.sequence_start);
        // A copy of a batch still being stored (the sender gave up waiting and retried)
        // waits for the first attempt, then finds it in the dedup set.
        let gate = self
            .storing
            .lock()
            .entry(key)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        let result = {
            let _held = gate.lock().await;
            self.store_once(storage, batch, key, closing).await
        };
        {
            let mut storing = self.storing.lock();
            // Only the map and this call still hold the gate: nobody waits on it.
            if Arc::strong_count(&gate) == 2 {
                storing.remove(&key);
            }
        }
        result
    }

    /// Stores a batch unless it was stored before, retrying retryable storage errors with
    /// backoff for up to the storage retry window.
    async fn store_once(
        &self,
        storage: &Arc<dyn Adapter>,
        batch: Arc<Batch>,
        key: (u64, u16, u64),
        closing: &AtomicBool,
    ) -> Result<(), AdapterError> {
        if self.dedup.lock().contains(&key) {
            self.counters
                .duplicate_batches
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let window_ends = tokio::time::Instant::now() + self.retry_window;
        let mut pause = STORAGE_RETRY_MIN;
        loop {
            let attempt = tokio::time::timeout(self.timeout, storage.on_batch(batch.clone()))
                .await
                .unwrap_or_else(|_| Err(AdapterError::Transient("storage timed out".into())));
            let error = match attempt {
                Ok(()) => {
                    self.dedup.lock().insert(key);
                    self.counters.stored_batches.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => e,
            };
            let now = tokio::time::Instant::now();
            if !error.is_retryable() || now >= window_ends || closing.load(Ordering::SeqCst) {
                self.counters.storage_errors.fetch_add(1, Ordering::Relaxed);
                return Err(error);
            }
            debug!(shard = key.1, error = %error, "storage failed; retrying the batch");
            self.counters
                .storage_retries
                .fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep_until((now + pause).min(window_ends)).await;
            pause = (pause * 2).min(STORAGE_RETRY_MAX);
        }
    }

    /// Reads a page of `shard` for a peer.
    pub(super) async fn read(
        &self,
        shard: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        let Some(storage) = &self.adapter else {
            return Err(AdapterError::Fatal("this node stores no shards".into()));
        };
        if !self.capabilities.stores(shard) {
            return Err(AdapterError::Fatal(format!(
                "this node does not store shard {shard}"
            )));
        }
        match tokio::time::timeout(self.timeout, storage.poll_shard(shard, cursor, limit)).await {
            Ok(result) => result,
            Err(_) => Err(AdapterError::Transient("storage timed out".into())),
        }
    }
}
