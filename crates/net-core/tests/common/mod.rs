//! Test adapters and helpers shared by the bus's integration tests.
#![allow(dead_code, unreachable_pub)]

use net_core::net_adapter::{
    async_trait, Adapter, AdapterError, Batch, MemoryAdapter, ShardPollResult, StoredEvent,
};
use net_core::{ConsumeRequest, EventBus, Ordering};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

/// What a [`ScriptedAdapter`] does on each `on_batch` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Store and succeed.
    Ok,
    /// Fail with `Transient` without storing.
    Transient,
    /// Store, then fail with `Transient` (the write happened; the caller does not know).
    TransientAfterWrite,
    /// Fail with `Fatal` without storing.
    Fatal,
    /// Sleep, then store and succeed.
    Slow(u64),
    /// Wait until [`ScriptedAdapter::open_gate`] was called, then store and succeed.
    Gated,
}

/// A memory adapter whose `on_batch` follows a script (repeated cyclically), recording calls.
pub struct ScriptedAdapter {
    pub memory: MemoryAdapter,
    script: Vec<Step>,
    next: AtomicU64,
    pub calls: Mutex<Vec<(u64, u16, u64, usize)>>,
    gate: tokio::sync::watch::Sender<bool>,
    healthy: AtomicBool,
}

impl ScriptedAdapter {
    pub fn new(script: Vec<Step>) -> Arc<Self> {
        assert!(!script.is_empty());
        Arc::new(Self {
            memory: MemoryAdapter::new(),
            script,
            next: AtomicU64::new(0),
            calls: Mutex::new(Vec::new()),
            gate: tokio::sync::watch::Sender::new(false),
            healthy: AtomicBool::new(true),
        })
    }

    /// Sets what `is_healthy` answers from now on (healthy at first).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, AtomicOrdering::Relaxed);
    }

    /// Lets every `Step::Gated` call through, now and from then on.
    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }
}

#[async_trait]
impl Adapter for ScriptedAdapter {
    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        self.calls.lock().push((
            batch.process_nonce,
            batch.shard_id,
            batch.sequence_start,
            batch.events.len(),
        ));
        let i = self.next.fetch_add(1, AtomicOrdering::Relaxed) as usize;
        match self.script[i % self.script.len()] {
            Step::Ok => self.memory.on_batch(batch).await,
            Step::Transient => Err(AdapterError::Transient("scripted".into())),
            Step::TransientAfterWrite => {
                self.memory.on_batch(batch).await?;
                Err(AdapterError::Transient("scripted after write".into()))
            }
            Step::Fatal => Err(AdapterError::Fatal("scripted".into())),
            Step::Slow(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                self.memory.on_batch(batch).await
            }
            Step::Gated => {
                let _ = self.gate.subscribe().wait_for(|open| *open).await;
                self.memory.on_batch(batch).await
            }
        }
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
        self.memory.flush().await
    }

    async fn shutdown(&self) -> Result<(), AdapterError> {
        self.memory.shutdown().await
    }

    fn name(&self) -> &str {
        "scripted"
    }

    async fn is_healthy(&self) -> bool {
        self.healthy.load(AtomicOrdering::Relaxed)
    }
}

/// Pages through the whole bus with `limit`, returning every event and the number of pages.
pub async fn poll_all(
    bus: &EventBus,
    limit: usize,
    ordering: Ordering,
    filter: Option<net_core::Filter>,
) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000_000 {
        let mut request = ConsumeRequest::new(limit).ordering(ordering);
        if let Some(f) = &filter {
            request = request.filter(f.clone());
        }
        if let Some(c) = cursor.take() {
            request = request.from(c);
        }
        let page = bus.poll(request).await.expect("poll");
        assert!(page.events.len() <= limit, "page larger than limit");
        if ordering == Ordering::Timestamp {
            assert!(
                page.events
                    .windows(2)
                    .all(|w| w[0].insertion_ts <= w[1].insertion_ts),
                "timestamp page out of order"
            );
        }
        out.extend(page.events);
        cursor = Some(page.cursor);
        if !page.has_more {
            return out;
        }
    }
    panic!("poll did not finish");
}

/// `events_dispatched + events_dropped == events_ingested`.
pub fn assert_balanced(bus_stats: &net_core::EventBusStats) {
    let s = bus_stats.snapshot();
    assert_eq!(
        s.events_dispatched + s.events_dropped,
        s.events_ingested,
        "stats invariant broken: {s:?}"
    );
}
