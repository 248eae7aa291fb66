//! Resizing a running bus: `add_shards`, `remove_shards`, the hand-off fences between them,
//! the suggestion of the scaling rule (in `scaling`) on live stats, and the monitor that applies
//! it on a timer.
//!
//! A resize holds the scaling lock, publishes a new routing table and bumps the state word's
//! version; see `routing` for which keys move and `state` for the handshake with producers.

use crate::inner::Inner;
use crate::routing;
use crate::scaling::{self, ScalingDecision, ScalingError, ScalingPolicy};
use crate::shard::Shard;
use crate::worker::run_worker;
use net_adapter::{LayoutWrite, StreamLayout};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Applies the scaling policy on a timer. Holds the bus only weakly, so it never keeps a
/// dropped bus alive, and ends when the bus closes.
pub(crate) async fn run_monitor(bus: Weak<Inner>, policy: ScalingPolicy) {
    loop {
        tokio::time::sleep(policy.check_interval).await;
        let Some(inner) = bus.upgrade() else { return };
        if inner.closing() {
            return;
        }
        let decision = inner.suggest(&policy).await;
        let applied = match &decision {
            ScalingDecision::ScaleUp(n) => inner.add_shards(*n).await.map(|_| ()),
            ScalingDecision::ScaleDown(ids) => inner.remove_shards(ids.clone()).await,
            ScalingDecision::NoChange(_) => continue,
        };
        match applied {
            Ok(()) => tracing::info!(?decision, "scaling monitor applied a decision"),
            Err(e) => {
                tracing::warn!(?decision, error = %e, "scaling monitor could not apply a decision")
            }
        }
    }
}

impl Inner {
    pub(crate) async fn suggest(&self, policy: &ScalingPolicy) -> ScalingDecision {
        let active: Vec<(u16, u64)> = self
            .all_shards()
            .iter()
            .filter(|s| !s.retiring.load(SeqCst))
            .map(|s| (s.id, s.counters.depth()))
            .collect();
        let mut state = self.scaling.lock().await;
        scaling::decide(
            policy,
            &mut state,
            &scaling::Observation {
                active: &active,
                ring_capacity: self.config.ring_capacity,
                backpressure: self.stats.rejected.backpressure.load(Relaxed),
                now: Instant::now(),
            },
        )
    }

    pub(crate) async fn add_shards(self: &Arc<Self>, count: u16) -> Result<Vec<u16>, ScalingError> {
        if count == 0 {
            return Err(ScalingError::ZeroCount);
        }
        let mut scaling = self.scaling.lock().await;
        if self.closing() {
            return Err(ScalingError::ShuttingDown);
        }
        let max = self
            .config
            .scaling
            .map_or(routing::SLOTS, |p| usize::from(p.max_shards));
        let current = self.routing.load_full();
        let active = self.active_ids().len();
        let total = current.shards.len();
        if active + usize::from(count) > max || total + usize::from(count) > usize::from(u16::MAX) {
            return Err(ScalingError::AboveMaximum { max });
        }
        let mut table = current.table.to_vec();
        let mut shards = current.shards.to_vec();
        let mut added = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let id = shards.len() as u16;
            let shard = Arc::new(Shard::new(id, self.config.ring_capacity));
            let donors = routing::add_shard(&mut table, id);
            shards.push(shard.clone());
            added.push((shard, donors));
        }
        let old_parity = (current.version & 1) as usize;
        self.publish(table.into_boxed_slice(), shards.into_boxed_slice());
        // Every producer that routed with the old table to a donor is either counted in the
        // donor's old-parity reservations now or will route again with the new table. Wait until the
        // counted ones have pushed: then every event of a moved key that any producer pushed
        // before its first event to a new shard sits in the donor's ring at a position below
        // the donor's `reserved`.
        for (_, donors) in &added {
            for &donor in donors {
                if let Some(donor) = current.shards.get(usize::from(donor)) {
                    while donor.counters.pushing(old_parity) != 0 {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                }
            }
        }
        for (shard, donors) in &added {
            for &donor in donors {
                let donor = current.shards.get(usize::from(donor)).cloned().or_else(|| {
                    added
                        .iter()
                        .find(|(s, _)| s.id == donor)
                        .map(|(s, _)| s.clone())
                });
                if let Some(donor) = donor {
                    let count = donor.counters.reserved();
                    shard.add_fence(donor, Some(count));
                }
            }
        }
        let runtime = tokio::runtime::Handle::current();
        {
            let mut workers = self.workers.lock();
            for (shard, _) in &added {
                workers.push(runtime.spawn(run_worker(self.clone(), shard.clone())));
            }
        }
        self.stats.shards_added.fetch_add(u64::from(count), Relaxed);
        scaling.last_change = Some(Instant::now());
        let ids: Vec<u16> = added.iter().map(|(s, _)| s.id).collect();
        if self.config.check_layout {
            self.record_grown_layout(total + usize::from(count)).await;
        }
        tracing::info!(?ids, "shards added");
        Ok(ids)
    }

    /// Records that the stream now has `shards` shard ids, so buses opened later agree with
    /// this one. A failure is logged, not returned: the shards exist and route events already.
    pub(crate) async fn record_grown_layout(&self, shards: usize) {
        let Ok(shards) = u16::try_from(shards) else {
            return;
        };
        let layout = StreamLayout::new(shards);
        if let Err(error) = self
            .adapter
            .record_layout(layout, LayoutWrite::Replace)
            .await
        {
            tracing::warn!(
                %error,
                shards,
                "could not record the new shard count in the backend; buses opened with it \
                 will be refused until it is recorded"
            );
        }
    }

    pub(crate) async fn remove_shards(&self, mut ids: Vec<u16>) -> Result<(), ScalingError> {
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        let removed: Vec<Arc<Shard>> = {
            let mut scaling = self.scaling.lock().await;
            if self.closing() {
                return Err(ScalingError::ShuttingDown);
            }
            let current = self.routing.load_full();
            let mut removed = Vec::with_capacity(ids.len());
            for &id in &ids {
                match current.shards.get(usize::from(id)) {
                    Some(s) if !s.retiring.load(SeqCst) => removed.push(s.clone()),
                    _ => return Err(ScalingError::UnknownShard(id)),
                }
            }
            let min = self.config.scaling.map_or(1, |p| p.min_shards);
            if self.active_ids().len() < ids.len() + usize::from(min) {
                return Err(ScalingError::BelowMinimum { min });
            }
            // A shard added recently may still wait on its donors, and a donor may be among
            // its heirs: fencing the heirs on it now could make two shards wait on each
            // other. Once its own fences are clear it waits on nothing, and being retired it
            // never gets a fence again, so fences only ever point from newer shards to older
            // ones or to retired shards and cannot form a cycle.
            while removed.iter().any(|s| s.fenced()) {
                let progress = self.progress.notified();
                let _ = tokio::time::timeout(Duration::from_millis(5), progress).await;
            }
            let mut table = current.table.to_vec();
            for shard in &removed {
                for heir in routing::remove_shard(&mut table, shard.id) {
                    // Before the new table is visible: the heir must not dispatch a moved
                    // key's event until the removed shard has drained.
                    if let Some(heir) = current.shards.get(usize::from(heir)) {
                        heir.add_fence(shard.clone(), None);
                    }
                }
            }
            self.publish(table.into_boxed_slice(), current.shards.clone());
            for shard in &removed {
                shard.retiring.store(true, SeqCst);
                shard.wake_worker();
            }
            self.stats
                .shards_removed
                .fetch_add(removed.len() as u64, Relaxed);
            scaling.last_change = Some(Instant::now());
            removed
        };
        tracing::info!(?ids, "shards retiring");
        let deadline = tokio::time::Instant::now() + self.config.shutdown_timeout;
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if removed.iter().all(|s| s.finished.load(SeqCst)) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ScalingError::DrainTimeout(self.config.shutdown_timeout));
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), progress).await;
        }
    }
}
