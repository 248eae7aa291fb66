//! Deliberately broken adapters, each breaking one rule of the contract, and tests that the
//! kit reports each one under the property it breaks.

use super::tests::MemoryFixture;
use super::{run_all, Capabilities, ConformanceFailure, Fixture, HookResult, Outcome, Property};
use crate::{
    async_trait, Adapter, AdapterError, Batch, LayoutWrite, MemoryAdapter, ShardPollResult,
    StreamLayout,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The one thing a [`Broken`] adapter gets wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flaw {
    /// Stores the events of each batch in reverse order.
    Reorders,
    /// Stores every delivery again (no dedup) and keeps no dedup ids.
    DuplicatesOnRetry,
    /// Moves the cursor only to the last event it returns, so a page of only corrupt entries
    /// hands back the cursor it was given.
    WedgesOnCorrupt,
    /// Keeps accepting batches after shutdown.
    AcceptsAfterShutdown,
    /// Always says there is nothing more.
    LiesAboutHasMore,
    /// Panics on a cursor that is not a number.
    PanicsOnGarbageCursor,
    /// Never completes a write.
    HangsOnBatch,
    /// Records every layout it is given, so the last bus to open a stream wins.
    OverwritesLayout,
}

/// A memory adapter with one [`Flaw`].
struct Broken {
    inner: Arc<MemoryAdapter>,
    flaw: Flaw,
    shut_down: AtomicBool,
    deliveries: AtomicU64,
}

#[async_trait]
impl Adapter for Broken {
    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        match self.flaw {
            Flaw::Reorders => {
                let mut reversed = Batch::clone(&batch);
                reversed.events.reverse();
                self.inner.on_batch(Arc::new(reversed)).await
            }
            Flaw::DuplicatesOnRetry => {
                // A fresh nonce per delivery defeats the memory adapter's dedup.
                let mut copy = Batch::clone(&batch);
                copy.process_nonce = self.deliveries.fetch_add(1, Ordering::Relaxed);
                self.inner.on_batch(Arc::new(copy)).await
            }
            Flaw::AcceptsAfterShutdown => self.inner.on_batch(batch).await,
            Flaw::HangsOnBatch => std::future::pending().await,
            _ if self.shut_down.load(Ordering::Acquire) => Err(AdapterError::Shutdown),
            _ => self.inner.on_batch(batch).await,
        }
    }

    async fn poll_shard(
        &self,
        shard_id: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(AdapterError::Shutdown);
        }
        if self.flaw == Flaw::PanicsOnGarbageCursor {
            if let Some(cursor) = cursor {
                let _: u64 = cursor.parse().expect("cursor is a number");
            }
        }
        let mut page = self.inner.poll_shard(shard_id, cursor, limit).await?;
        match self.flaw {
            Flaw::DuplicatesOnRetry => page.events.iter_mut().for_each(|e| e.dedup_id = None),
            Flaw::WedgesOnCorrupt => {
                page.cursor = match page.events.last() {
                    Some(event) => event.id.clone(),
                    None => cursor.unwrap_or("0").to_owned(),
                };
            }
            Flaw::LiesAboutHasMore => page.has_more = false,
            _ => {}
        }
        Ok(page)
    }

    async fn flush(&self) -> Result<(), AdapterError> {
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), AdapterError> {
        self.shut_down.store(true, Ordering::Release);
        Ok(())
    }

    fn name(&self) -> &str {
        "broken"
    }

    async fn record_layout(
        &self,
        layout: StreamLayout,
        write: LayoutWrite,
    ) -> Result<Option<StreamLayout>, AdapterError> {
        let write = match self.flaw {
            Flaw::OverwritesLayout => LayoutWrite::Replace,
            _ => write,
        };
        self.inner.record_layout(layout, write).await
    }
}

/// The fixture of a [`Broken`] adapter: the memory fixture's hooks, applied to the inner log.
struct BrokenFixture {
    adapter: Arc<Broken>,
    hooks: MemoryFixture,
    deadline: Duration,
}

#[async_trait]
impl Fixture for BrokenFixture {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.adapter.clone()
    }

    fn capabilities(&self) -> Capabilities {
        // The duplicating adapter keeps no dedup ids, so it cannot lean on them.
        Capabilities::default()
            .persists_dedup_ids(self.adapter.flaw != Flaw::DuplicatesOnRetry)
            .records_layout(true)
    }

    fn deadline(&self) -> Duration {
        self.deadline
    }

    async fn inject_corrupt(&self, shard_id: u16) -> HookResult {
        self.hooks.inject_corrupt(shard_id).await
    }

    async fn trim(&self, shard_id: u16, keep: usize) -> HookResult {
        self.hooks.trim(shard_id, keep).await
    }

    async fn fail_next_batch_permanently(&self, shard_id: u16) -> HookResult {
        self.hooks.fail_next_batch_permanently(shard_id).await
    }

    async fn fail_next_batch_after_write(&self, shard_id: u16) -> HookResult {
        self.hooks.fail_next_batch_after_write(shard_id).await
    }

    async fn time_out_next_batch_after_write(&self, shard_id: u16) -> HookResult {
        self.hooks.time_out_next_batch_after_write(shard_id).await
    }
}

fn broken(flaw: Flaw) -> BrokenFixture {
    let inner = Arc::new(MemoryAdapter::new());
    BrokenFixture {
        adapter: Arc::new(Broken {
            inner: inner.clone(),
            flaw,
            shut_down: AtomicBool::new(false),
            deliveries: AtomicU64::new(0),
        }),
        hooks: MemoryFixture(inner),
        deadline: super::DEFAULT_DEADLINE,
    }
}

/// Runs `property` against an adapter with `flaw` and returns the failure the kit reports.
async fn caught(flaw: Flaw, property: Property) -> ConformanceFailure {
    match property.check(&broken(flaw)).await {
        Err(failure) => {
            println!("{failure}");
            assert_eq!(failure.property, property, "{failure}");
            assert_eq!(failure.adapter, "broken");
            failure
        }
        Ok(outcome) => panic!("{flaw:?} was not caught by {property}: {outcome}"),
    }
}

/// Runs the whole kit against an adapter with `flaw` and checks that `property` is among the
/// failures.
async fn caught_by_run_all(flaw: Flaw, property: Property) {
    let report = run_all(|| async move { broken(flaw) }).await;
    println!("{report}");
    assert!(
        report.failure(property).is_some(),
        "{flaw:?} was not caught by {property}:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_that_reorders_is_caught() {
    let failure = caught(Flaw::Reorders, Property::OrderWithinShard).await;
    let evidence = failure.evidence.expect("order evidence");
    assert_eq!(evidence.expected[..3], ["s0#0", "s0#1", "s0#2"]);
    assert_eq!(evidence.seen[..3], ["s0#0", "s0#3", "s0#2"]);
    caught_by_run_all(Flaw::Reorders, Property::OrderWithinShard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_that_duplicates_on_retry_is_caught() {
    let failure = caught(Flaw::DuplicatesOnRetry, Property::IdempotentRetryAfterOk).await;
    let evidence = failure.evidence.expect("duplicate evidence");
    assert!(
        evidence.seen.len() > evidence.expected.len(),
        "{evidence:?}"
    );
    caught_by_run_all(Flaw::DuplicatesOnRetry, Property::IdempotentRetryAfterOk).await;
    caught(Flaw::DuplicatesOnRetry, Property::IdempotentRetryAfterError).await;
    caught(
        Flaw::DuplicatesOnRetry,
        Property::IdempotentRetryAfterTimeout,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_that_wedges_on_corrupt_entries_is_caught() {
    let failure = caught(Flaw::WedgesOnCorrupt, Property::CorruptEntriesSkipped).await;
    assert!(failure.message.starts_with("wedged:"), "{failure}");
    caught_by_run_all(Flaw::WedgesOnCorrupt, Property::CorruptEntriesSkipped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_that_accepts_batches_after_shutdown_is_caught() {
    let failure = caught(Flaw::AcceptsAfterShutdown, Property::ShutdownRejectsOnBatch).await;
    assert!(
        failure.message.contains("after shutdown succeeded"),
        "{failure}"
    );
    caught_by_run_all(Flaw::AcceptsAfterShutdown, Property::ShutdownRejectsOnBatch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_whose_has_more_lies_is_caught() {
    let failure = caught(Flaw::LiesAboutHasMore, Property::PagingHasMoreTruthful).await;
    assert!(failure.message.contains("has_more = false"), "{failure}");
    caught_by_run_all(Flaw::LiesAboutHasMore, Property::PagingHasMoreTruthful).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_whose_last_layout_wins_is_caught() {
    let failure = caught(Flaw::OverwritesLayout, Property::LayoutRecordedOnce).await;
    assert!(failure.message.contains("told"), "{failure}");
    caught_by_run_all(Flaw::OverwritesLayout, Property::LayoutRecordedOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_that_panics_fails_the_property_instead_of_the_kit() {
    let failure = caught(
        Flaw::PanicsOnGarbageCursor,
        Property::HostileCursorsRejected,
    )
    .await;
    assert!(failure.message.contains("panicked"), "{failure}");
    assert!(failure.message.contains("cursor is a number"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_that_hangs_hits_the_deadline_by_name() {
    let mut fixture = broken(Flaw::HangsOnBatch);
    // The adapter never answers, so the deadline is always hit; a short one keeps this fast.
    fixture.deadline = Duration::from_millis(200);
    let failure = match Property::NeverBlocksIndefinitely.check(&fixture).await {
        Err(failure) => failure,
        Ok(outcome) => panic!("a hanging adapter passed: {outcome}"),
    };
    println!("{failure}");
    assert_eq!(failure.property, Property::NeverBlocksIndefinitely);
    assert!(
        failure.message.starts_with("deadline hit: on_batch("),
        "{failure}"
    );
    assert!(failure.message.contains("200ms"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaw_is_reported_under_its_own_property_only() {
    // The panicking flaw only shows on cursors that are not numbers, so every other property
    // must hold: the wrapper itself breaks nothing, and a failure names the rule broken.
    let report = run_all(|| async { broken(Flaw::PanicsOnGarbageCursor) }).await;
    let failed: Vec<Property> = report.failures().iter().map(|f| f.property).collect();
    assert_eq!(failed, [Property::HostileCursorsRejected], "{report}");
    assert!(report
        .results()
        .iter()
        .all(|r| !matches!(r, Ok(Outcome::Skipped { .. }))));
}
