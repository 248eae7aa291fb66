//! The machinery the checks share: calls to the adapter in their own task under a deadline
//! (a panic or a hang becomes a failure naming the call), hook calls with the same care,
//! batches with recognisable payloads, paging helpers that detect a wedged cursor, and the
//! comparison of what came back with what was written.

use super::outcome::window;
use super::{ConformanceFailure, Fixture, HookError, HookResult, Outcome, Property};
use crate::{Adapter, AdapterError, Batch, ShardPollResult, StoredEvent};
use bytes::Bytes;
use parking_lot::Mutex;
use std::any::Any;
use std::collections::HashSet;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::ops::{Deref, Range};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Insertion timestamp of sequence 0 (nanoseconds since the epoch, late 2023); the event of
/// sequence `n` gets `BASE_TS + n`, so timestamps never decrease within a shard.
pub(crate) const BASE_TS: u64 = 1_700_000_000_000_000_000;

/// The most polls one paging loop makes before it gives up on reaching the end.
const MAX_POLLS: usize = 20_000;

/// The longest pause between two retries of a batch that got a retryable error.
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// 64 bits that differ from run to run and call to call (std's hasher keys are random).
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// The payload of the event of sequence `seq` on `shard`, written while checking `property`.
pub(crate) fn payload(property: Property, shard: u16, seq: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"conformance":"{}","shard":{shard},"seq":{seq}}}"#,
        property.name()
    ))
}

/// The label of the event of sequence `seq` on `shard`, as evidence shows it.
pub(crate) fn label_of(shard: u16, seq: u64) -> String {
    format!("s{shard}#{seq}")
}

/// The labels of sequences `seqs` on `shard`.
pub(crate) fn expected(shard: u16, seqs: Range<u64>) -> Vec<String> {
    seqs.map(|seq| label_of(shard, seq)).collect()
}

/// The label of a returned event, read from the payload the kit wrote; an event the kit did
/// not write is shown by its payload.
pub(crate) fn label(event: &StoredEvent) -> String {
    let parsed = serde_json::from_slice::<serde_json::Value>(&event.raw).ok();
    let field = |name: &str| parsed.as_ref().and_then(|v| v.get(name)?.as_u64());
    match (field("shard"), field("seq")) {
        (Some(shard), Some(seq)) => format!("s{shard}#{seq}"),
        _ => format!(
            "<foreign payload {}>",
            shorten(&String::from_utf8_lossy(&event.raw))
        ),
    }
}

/// The labels of `events`, in order.
pub(crate) fn labels(events: &[StoredEvent]) -> Vec<String> {
    events.iter().map(label).collect()
}

/// `text` cut to a readable length, with its full length when cut.
pub(crate) fn shorten(text: &str) -> String {
    const KEEP: usize = 40;
    if text.chars().count() <= KEEP {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(KEEP).collect();
        format!("{head:?}... ({} bytes)", text.len())
    }
}

/// `poll_shard(shard 0, cursor "12", limit 5)`, for messages.
pub(crate) fn describe_poll(shard: u16, cursor: Option<&str>, limit: usize) -> String {
    let cursor = cursor.map_or_else(|| "none".to_owned(), shorten);
    format!("poll_shard(shard {shard}, cursor {cursor}, limit {limit})")
}

/// `on_batch(shard 0, sequence_start 5, 3 events)`, for messages.
pub(crate) fn describe_batch(batch: &Batch) -> String {
    format!(
        "on_batch(shard {}, sequence_start {}, {} events)",
        batch.shard_id,
        batch.sequence_start,
        batch.events.len()
    )
}

/// `invalid_cursor (invalid cursor: ...)`, for messages.
pub(crate) fn describe_error(error: &AdapterError) -> String {
    format!("{} error ({error})", error.kind())
}

/// What a panic carried, as text.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}

/// Polls a future and turns a panic during any poll into an `Err` with the panic payload.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Polls a future exactly once: `Some(output)` if it completed, `None` if it was pending.
pub(crate) struct PollOnce<'a, F>(pub(crate) Pin<&'a mut F>);

impl<F: Future> Future for PollOnce<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.0.as_mut().poll(cx) {
            Poll::Ready(value) => Poll::Ready(Some(value)),
            Poll::Pending => Poll::Ready(None),
        }
    }
}

/// Awaits `future`, turning a panic while polling it into `Err` with the panic's message.
pub(crate) async fn catch_panic<F: Future>(future: F) -> Result<F::Output, String> {
    CatchUnwind(Box::pin(future))
        .await
        .map_err(|payload| panic_message(&*payload))
}

/// Runs the fixture's cleanup under its deadline, catching a panic.
pub(crate) async fn cleanup(fixture: &dyn Fixture) -> Result<(), String> {
    let deadline = fixture.deadline();
    match tokio::time::timeout(deadline, CatchUnwind(Box::pin(fixture.cleanup()))).await {
        Ok(Ok(result)) => result,
        Ok(Err(payload)) => Err(format!("cleanup panicked: {}", panic_message(&*payload))),
        Err(_) => Err(format!(
            "deadline hit: cleanup did not complete within {deadline:?}"
        )),
    }
}

/// The part of a check's context that tasks the check spawns can own.
pub(crate) struct Core {
    /// The property being checked (named in every failure).
    pub(crate) property: Property,
    /// The adapter under test.
    pub(crate) adapter: Arc<dyn Adapter>,
    /// The adapter's name, for messages.
    pub(crate) adapter_name: String,
    /// How long any one call may take.
    pub(crate) deadline: Duration,
    /// The producer nonce of every batch of this check (random, so runs never collide).
    pub(crate) nonce: u64,
    /// Whether the adapter declares that it persists dedup ids.
    pub(crate) persists_dedup_ids: bool,
    /// Whether the adapter declares that it records the stream layout.
    pub(crate) records_layout: bool,
    /// Retryable errors `deliver` retried.
    retried: AtomicU64,
    /// Observations for the outcome.
    notes: Mutex<Vec<String>>,
}

/// Everything a check needs: the shared [`Core`] and the fixture's hooks.
pub(crate) struct Ctx<'a> {
    core: Arc<Core>,
    fixture: &'a dyn Fixture,
}

impl Deref for Ctx<'_> {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl<'a> Ctx<'a> {
    /// The context for checking `property` against `fixture`.
    pub(crate) fn new(property: Property, fixture: &'a dyn Fixture) -> Self {
        let adapter = fixture.adapter();
        let adapter_name = adapter.name().to_owned();
        let core = Core {
            property,
            adapter,
            adapter_name,
            deadline: fixture.deadline(),
            nonce: random_u64(),
            persists_dedup_ids: fixture.capabilities().persists_dedup_ids,
            records_layout: fixture.capabilities().records_layout,
            retried: AtomicU64::new(0),
            notes: Mutex::new(Vec::new()),
        };
        Self {
            core: Arc::new(core),
            fixture,
        }
    }

    /// A handle on the core for a spawned task.
    pub(crate) fn core(&self) -> Arc<Core> {
        self.core.clone()
    }

    /// The fixture, to call its hooks through [`Ctx::hook`].
    pub(crate) fn fixture(&self) -> &'a dyn Fixture {
        self.fixture
    }

    /// Runs a hook call under the deadline: `Ok(true)` when it took effect, `Ok(false)` when the
    /// fixture does not provide it, a failure when it failed, panicked or hung.
    pub(crate) async fn hook<F>(&self, name: &str, call: F) -> Result<bool, ConformanceFailure>
    where
        F: Future<Output = HookResult>,
    {
        match tokio::time::timeout(self.deadline, CatchUnwind(Box::pin(call))).await {
            Ok(Ok(Ok(()))) => Ok(true),
            Ok(Ok(Err(HookError::Unsupported))) => Ok(false),
            Ok(Ok(Err(HookError::Failed(why)))) => {
                Err(self.fail(format!("hook `{name}` failed: {why}")))
            }
            Ok(Err(payload)) => Err(self.fail(format!(
                "hook `{name}` panicked: {}",
                panic_message(&*payload)
            ))),
            Err(_) => Err(self.fail(format!(
                "deadline hit: hook `{name}` did not complete within {:?}",
                self.deadline
            ))),
        }
    }

    /// The outcome of a property whose hook the fixture lacks.
    pub(crate) fn skip_without_hook(&self, hook: &str) -> Outcome {
        Outcome::Skipped {
            property: self.property,
            reason: format!("the fixture does not provide the `{hook}` hook"),
        }
    }

    /// The outcome of a property whose capability the fixture does not declare.
    pub(crate) fn skip_without_capability(&self, capability: &str) -> Outcome {
        Outcome::Skipped {
            property: self.property,
            reason: format!("the fixture does not declare the `{capability}` capability"),
        }
    }

    /// The outcome of a property that holds, with the notes gathered on the way.
    pub(crate) fn passed(&self) -> Outcome {
        let retried = self.retried.load(Ordering::Relaxed);
        if retried > 0 {
            self.note(format!(
                "{retried} retryable error(s) (such as backpressure) were retried"
            ));
        }
        Outcome::Passed {
            property: self.property,
            notes: std::mem::take(&mut *self.notes.lock()),
        }
    }
}

impl Core {
    /// A failure of this property described by `message`.
    pub(crate) fn fail(&self, message: impl Into<String>) -> ConformanceFailure {
        ConformanceFailure::new(self.property, self.adapter_name.clone(), message)
    }

    /// Records an observation for the outcome.
    pub(crate) fn note(&self, note: impl Into<String>) {
        self.notes.lock().push(note.into());
    }

    /// A batch of `n` events on `shard` with sequences `start..start + n`.
    pub(crate) fn batch(&self, shard: u16, start: u64, n: u64) -> Arc<Batch> {
        let payloads = (start..start + n).map(|seq| payload(self.property, shard, seq));
        Arc::new(Batch {
            process_nonce: self.nonce,
            ..super::batch(shard, start, payloads)
        })
    }

    /// Runs `call` in its own task under the deadline. A panic inside it, or the deadline,
    /// becomes a failure naming `what`.
    pub(crate) async fn run<T, F>(&self, what: &str, call: F) -> Result<T, ConformanceFailure>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let mut handle = tokio::spawn(call);
        match tokio::time::timeout(self.deadline, &mut handle).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(join)) if join.is_panic() => Err(self.fail(format!(
                "the adapter panicked in {what}: {}",
                panic_message(&*join.into_panic())
            ))),
            Ok(Err(_)) => Err(self.fail(format!("{what} was cancelled before it completed"))),
            Err(_) => {
                handle.abort();
                Err(self.fail(format!(
                    "deadline hit: {what} did not complete within {:?}",
                    self.deadline
                )))
            }
        }
    }

    /// Calls `on_batch` once and returns what it returned.
    pub(crate) async fn on_batch(
        &self,
        batch: &Arc<Batch>,
    ) -> Result<Result<(), AdapterError>, ConformanceFailure> {
        let adapter = self.adapter.clone();
        let batch = batch.clone();
        let what = describe_batch(&batch);
        self.run(&what, async move { adapter.on_batch(batch).await })
            .await
    }

    /// Delivers `batch` as the bus does: retries the same value on retryable errors (with a
    /// growing pause, for at most the deadline) and fails on any other error.
    pub(crate) async fn deliver(&self, batch: &Arc<Batch>) -> Result<(), ConformanceFailure> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match self.on_batch(batch).await? {
                Ok(()) => return Ok(()),
                Err(error) if error.is_retryable() => {
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    if started.elapsed() >= self.deadline {
                        return Err(self.fail(format!(
                            "deadline hit: {} kept failing with retryable errors for {:?} \
                             ({attempts} attempts); the last was {}",
                            describe_batch(batch),
                            self.deadline,
                            describe_error(&error)
                        )));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
                Err(error) => {
                    return Err(self.fail(format!(
                        "{} failed with a non-retryable {}",
                        describe_batch(batch),
                        describe_error(&error)
                    )))
                }
            }
        }
    }

    /// Calls `poll_shard` once. A page with more events than `limit` is a failure.
    pub(crate) async fn poll(
        &self,
        shard: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Result<ShardPollResult, AdapterError>, ConformanceFailure> {
        let adapter = self.adapter.clone();
        let owned = cursor.map(str::to_owned);
        let what = describe_poll(shard, cursor, limit);
        let result = self
            .run(&what, async move {
                adapter.poll_shard(shard, owned.as_deref(), limit).await
            })
            .await?;
        if let Ok(page) = &result {
            if page.events.len() > limit {
                return Err(self.fail(format!(
                    "{what} returned more events than the limit: {}",
                    window(&labels(&page.events), 0)
                )));
            }
        }
        Ok(result)
    }

    /// Calls `poll_shard` once; any error is a failure.
    pub(crate) async fn poll_ok(
        &self,
        shard: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, ConformanceFailure> {
        match self.poll(shard, cursor, limit).await? {
            Ok(page) => Ok(page),
            Err(error) => Err(self.fail(format!(
                "{} failed with {}",
                describe_poll(shard, cursor, limit),
                describe_error(&error)
            ))),
        }
    }

    /// Pages through `shard` from `start` with `limit` (at least 1) until `has_more` is false,
    /// returning every event and the last cursor.
    ///
    /// A page with no events that hands back the cursor it was given while claiming more is a
    /// wedge (a consumer would poll forever) and fails.
    pub(crate) async fn read_from(
        &self,
        shard: u16,
        start: Option<String>,
        limit: usize,
    ) -> Result<(Vec<StoredEvent>, String), ConformanceFailure> {
        let limit = limit.max(1);
        let mut cursor = start;
        let mut events = Vec::new();
        for _ in 0..MAX_POLLS {
            let page = self.poll_ok(shard, cursor.as_deref(), limit).await?;
            let moved = cursor.as_deref() != Some(page.cursor.as_str());
            let progressed = moved || !page.events.is_empty();
            events.extend(page.events);
            if !page.has_more {
                return Ok((events, page.cursor));
            }
            if !progressed {
                return Err(self.fail(format!(
                    "wedged: {} returned no events, handed back the same cursor and claimed \
                     has_more = true, so a consumer would poll forever; events read before: {}",
                    describe_poll(shard, cursor.as_deref(), limit),
                    window(&labels(&events), 0)
                )));
            }
            cursor = Some(page.cursor);
        }
        Err(self.fail(format!(
            "paging through shard {shard} with limit {limit} did not reach the end \
             (has_more = false) within {MAX_POLLS} polls; events read: {}",
            window(&labels(&events), 0)
        )))
    }

    /// Every event of `shard`, read from the start in pages of `limit`.
    pub(crate) async fn read_all(
        &self,
        shard: u16,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, ConformanceFailure> {
        Ok(self.read_from(shard, None, limit).await?.0)
    }

    /// What a consumer sees of `events`: their labels, after dropping events whose dedup id
    /// was already seen when the adapter declares that it persists dedup ids. Also returns
    /// how many copies were dropped.
    pub(crate) fn view(&self, events: &[StoredEvent]) -> (Vec<String>, usize) {
        if !self.persists_dedup_ids {
            return (labels(events), 0);
        }
        let mut seen = HashSet::new();
        let mut view = Vec::with_capacity(events.len());
        let mut dropped = 0;
        for event in events {
            match &event.dedup_id {
                Some(id) if !seen.insert(id.as_str()) => dropped += 1,
                _ => view.push(label(event)),
            }
        }
        (view, dropped)
    }

    /// Fails unless a consumer sees exactly `expected` in `events` (see [`Core::view`]).
    pub(crate) fn expect_events(
        &self,
        what: &str,
        expected: Vec<String>,
        events: &[StoredEvent],
    ) -> Result<(), ConformanceFailure> {
        let (seen, dropped) = self.view(events);
        if seen != expected {
            let mut message = format!("{what}: the events differ from what was written");
            if self.persists_dedup_ids {
                message.push_str(" (after dropping copies by dedup id)");
            }
            return Err(self.fail(message).with_evidence(expected, seen));
        }
        if dropped > 0 {
            self.note(format!(
                "{what}: {dropped} redelivered copies were stored; consumers must drop them by \
                 dedup id"
            ));
        }
        Ok(())
    }

    /// Fails unless `result` is exactly `AdapterError::Shutdown`.
    pub(crate) fn expect_shutdown<T>(
        &self,
        what: &str,
        result: Result<T, AdapterError>,
        describe_ok: impl FnOnce(T) -> String,
    ) -> Result<(), ConformanceFailure> {
        match result {
            Err(AdapterError::Shutdown) => Ok(()),
            Err(other) => Err(self.fail(format!(
                "{what} after shutdown returned {} instead of a shutdown error",
                describe_error(&other)
            ))),
            Ok(value) => Err(self.fail(format!(
                "{what} after shutdown succeeded ({}) instead of returning a shutdown error",
                describe_ok(value)
            ))),
        }
    }
}
