//! The kit run against [`MemoryAdapter`], the reference adapter: once through the macro (one
//! test per property, as an adapter crate runs it), and through [`run_all`] with and without
//! hooks, to check what gets reported.

use super::{run_all, AdapterOnly, Capabilities, Fixture, HookResult, Outcome, Property};
use crate::{async_trait, Adapter, MemoryAdapter, MemoryFault};
use std::sync::Arc;

/// A fresh memory adapter with every hook wired to its test hooks.
pub(super) struct MemoryFixture(pub(super) Arc<MemoryAdapter>);

#[async_trait]
impl Fixture for MemoryFixture {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.0.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .persists_dedup_ids(true)
            .records_layout(true)
    }

    async fn inject_corrupt(&self, shard_id: u16) -> HookResult {
        self.0.inject_corrupt(shard_id);
        Ok(())
    }

    async fn trim(&self, shard_id: u16, keep: usize) -> HookResult {
        self.0.trim(shard_id, keep);
        Ok(())
    }

    async fn fail_next_batch_permanently(&self, shard_id: u16) -> HookResult {
        self.0.inject_fault(shard_id, MemoryFault::Fatal);
        Ok(())
    }

    async fn fail_next_batch_after_write(&self, shard_id: u16) -> HookResult {
        self.0
            .inject_fault(shard_id, MemoryFault::TransientAfterWrite);
        Ok(())
    }

    async fn time_out_next_batch_after_write(&self, shard_id: u16) -> HookResult {
        self.0.inject_fault(shard_id, MemoryFault::StallAfterWrite);
        Ok(())
    }
}

/// The factory the suite uses.
async fn memory() -> MemoryFixture {
    MemoryFixture(Arc::new(MemoryAdapter::new()))
}

/// One test per property, exactly as an adapter crate gets them.
mod memory_suite {
    crate::conformance_suite!(super::memory);

    #[test]
    fn the_macro_covers_every_property_once() {
        let names: Vec<&str> = __NET_CONFORMANCE_SUITE.iter().map(|(n, _)| *n).collect();
        let all: Vec<&str> = crate::conformance::Property::ALL
            .iter()
            .map(|p| p.name())
            .collect();
        assert_eq!(names, all);
        for (name, property) in __NET_CONFORMANCE_SUITE {
            assert_eq!(*name, property.name());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_passes_every_property_with_all_hooks() {
    let report = run_all(memory).await;
    println!("{report}");
    assert!(report.is_success(), "{report}");
    assert_eq!(report.passed(), Property::ALL.to_vec(), "{report}");
    assert!(report.skipped().is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_hooks_are_reported_as_skipped_by_name_never_as_passed() {
    let report = run_all(|| async { AdapterOnly::new(MemoryAdapter::new()) }).await;
    println!("{report}");
    assert!(report.is_success(), "{report}");
    let needs_something: Vec<Property> = Property::ALL
        .iter()
        .copied()
        .filter(|p| p.requires().is_some())
        .collect();
    let skipped: Vec<Property> = report.skipped().iter().map(|(p, _)| *p).collect();
    assert_eq!(skipped, needs_something, "{report}");
    for (property, reason) in report.skipped() {
        let wanted = property.requires().unwrap_or_default();
        let named = wanted.split('`').nth(1).unwrap_or_default();
        assert!(reason.contains(named), "{property}: {reason}");
        assert!(!report.passed().contains(&property));
    }
    let rendered = report.to_string();
    assert!(rendered.contains("corrupt_entries_skipped: SKIPPED: the fixture does not provide the `inject_corrupt` hook"), "{rendered}");
}

#[test]
fn property_names_are_unique_and_round_trip() {
    for &property in Property::ALL {
        assert_eq!(Property::from_name(property.name()), Some(property));
    }
    let mut names: Vec<&str> = Property::ALL.iter().map(|p| p.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Property::ALL.len());
    assert_eq!(Property::from_name("no_such_property"), None);
}

#[test]
fn outcomes_render_their_property() {
    let passed = Outcome::Passed {
        property: Property::PagingLimits,
        notes: vec!["a note".to_owned()],
    };
    assert_eq!(
        passed.to_string(),
        "paging_limits: passed\n    note: a note"
    );
    let skipped = Outcome::Skipped {
        property: Property::StaleCursorAfterRetention,
        reason: "no trim".to_owned(),
    };
    assert_eq!(
        skipped.to_string(),
        "stale_cursor_after_retention: SKIPPED: no trim"
    );
}

#[test]
fn evidence_shows_the_first_difference_and_what_is_missing_or_extra() {
    let failure = super::ConformanceFailure::new(Property::OrderWithinShard, "x", "out of order")
        .with_evidence(
            vec!["s0#0".into(), "s0#1".into(), "s0#2".into()],
            vec!["s0#0".into(), "s0#2".into(), "s0#2".into()],
        );
    let text = failure.to_string();
    assert!(
        text.starts_with(
            "conformance property `order_within_shard` failed on adapter \"x\": out of order"
        ),
        "{text}"
    );
    assert!(
        text.contains("first difference at position 1: expected s0#1, seen s0#2"),
        "{text}"
    );
    assert!(text.contains("missing:    (1) s0#1"), "{text}");
    assert!(text.contains("unexpected: (1) s0#2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_outside_the_guarded_calls_fails_the_property() {
    /// A fixture that cannot even produce its adapter.
    struct Unbuildable;

    #[async_trait]
    impl Fixture for Unbuildable {
        fn adapter(&self) -> Arc<dyn Adapter> {
            panic!("no adapter today")
        }
    }

    let result = super::run_property(Property::PagingLimits, Unbuildable).await;
    let failure = result.expect_err("a panicking fixture cannot pass");
    assert_eq!(failure.property, Property::PagingLimits);
    assert!(failure.message.contains("no adapter today"), "{failure}");
}
