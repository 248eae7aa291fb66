//! [`Fixture`]: what an adapter author hands the kit — the adapter, what it declares about
//! itself, and hooks for what the kit cannot do through the trait.

use crate::Adapter;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// How long the kit waits for any one call to the adapter or a hook unless
/// [`Fixture::deadline`] says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// What a hook returns.
pub type HookResult = Result<(), HookError>;

/// Why a hook did not do what it was asked.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HookError {
    /// The fixture does not offer this hook; the properties that need it are skipped.
    #[error("hook not provided by the fixture")]
    Unsupported,
    /// The hook exists but failed; the property fails with this reason.
    #[error("hook failed: {0}")]
    Failed(String),
}

/// What an adapter declares about itself.
///
/// Build it from [`Capabilities::default`] (nothing declared) with the setters, so new
/// capabilities can be added without breaking existing fixtures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The adapter stores each event's dedup id and returns it on
    /// [`StoredEvent::dedup_id`](crate::StoredEvent::dedup_id).
    ///
    /// When declared, the kit checks the ids, and the retry properties judge what a consumer
    /// sees after dropping events whose dedup id it has already seen (the contract allows
    /// an adapter to store a redelivered batch again if its dedup ids make the copies
    /// filterable). When not declared, redelivered copies must not be stored at all.
    pub persists_dedup_ids: bool,
    /// The adapter records the stream layout in its backend
    /// ([`Adapter::record_layout`](crate::Adapter::record_layout) returns `Some`).
    pub records_layout: bool,
}

impl Capabilities {
    /// Declares whether the adapter records the stream layout.
    pub fn records_layout(mut self, yes: bool) -> Self {
        self.records_layout = yes;
        self
    }

    /// Declares whether the adapter persists dedup ids.
    pub fn persists_dedup_ids(mut self, yes: bool) -> Self {
        self.persists_dedup_ids = yes;
        self
    }
}

/// One fresh, isolated adapter under test, with its capabilities and test hooks.
///
/// A factory builds one fixture per property, so the adapter it returns must be initialised
/// ([`Adapter::init`] already called), empty, and share no state with any other fixture (use
/// [`unique_namespace`](super::unique_namespace) for key prefixes, stream or directory names).
/// Every shard the kit uses (ids 0 to 7 and `u16::MAX`) must have room for at least 10 000
/// events.
///
/// Every hook has a default that answers [`HookError::Unsupported`]; implement the ones the
/// backend can honour. A hook applies to the fixture's own adapter and must have taken effect
/// when it returns.
///
/// [`AdapterOnly`] is a fixture with no hooks and no declared capability.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// The adapter under test. Called once per property; return handles to the same adapter.
    fn adapter(&self) -> Arc<dyn Adapter>;

    /// What the adapter declares about itself. Nothing by default.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// How long the kit waits for any one call before failing the property with the deadline
    /// named. [`DEFAULT_DEADLINE`] (ten seconds) by default; raise it for a slow remote backend.
    fn deadline(&self) -> Duration {
        DEFAULT_DEADLINE
    }

    /// Appends one stored entry to `shard_id` that the adapter cannot decode, after every entry
    /// already there, as a torn write or a foreign writer would leave it.
    async fn inject_corrupt(&self, _shard_id: u16) -> HookResult {
        Err(HookError::Unsupported)
    }

    /// Applies retention to `shard_id`: removes its oldest entries until only the newest
    /// `keep` remain.
    async fn trim(&self, _shard_id: u16, _keep: usize) -> HookResult {
        Err(HookError::Unsupported)
    }

    /// Makes the next `on_batch` for `shard_id` meet a failure that retrying cannot fix (for
    /// example a missing permission, a wrong key type, a path that is not a file), as the real
    /// backend would produce it.
    async fn fail_next_batch_permanently(&self, _shard_id: u16) -> HookResult {
        Err(HookError::Unsupported)
    }

    /// Makes the next `on_batch` for `shard_id` store its batch and then fail with a retryable
    /// error, as when the reply of a write that happened is lost.
    async fn fail_next_batch_after_write(&self, _shard_id: u16) -> HookResult {
        Err(HookError::Unsupported)
    }

    /// Makes the next `on_batch` for `shard_id` store its batch and then take the adapter's
    /// timeout path: return the retryable error its own timeout produces, or never complete
    /// (the kit then drops the call once the batch is visible, as a caller's timeout would).
    async fn time_out_next_batch_after_write(&self, _shard_id: u16) -> HookResult {
        Err(HookError::Unsupported)
    }

    /// Called after the property's check, whatever its result: remove what the fixture
    /// created outside the process (keys, streams, files). Nothing by default.
    async fn cleanup(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A fixture made of the adapter alone: no hooks, no declared capability.
///
/// The quickest way to run the kit; the properties that need a hook or a capability are
/// reported as skipped.
#[derive(Clone)]
pub struct AdapterOnly(pub Arc<dyn Adapter>);

impl AdapterOnly {
    /// Wraps `adapter`.
    pub fn new(adapter: impl Adapter + 'static) -> Self {
        Self(Arc::new(adapter))
    }
}

#[async_trait]
impl Fixture for AdapterOnly {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.0.clone()
    }
}
