//! Checks of what is written: order, round trip, dedup ids, and writes on several shards at
//! once, with and without concurrent readers.

use crate::conformance::harness::{expected, label, label_of, labels, Core, Ctx, BASE_TS};
use crate::conformance::{ConformanceFailure, Fixture, Outcome, Property};
use crate::{Batch, BatchEvent};
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Checks [`Property::OrderWithinShard`]: batches of 1, 3, 7, 2 and 5 events delivered to
/// one shard come back, in pages of 4, in exactly the order they were written.
pub async fn order_within_shard(fixture: &dyn Fixture) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::OrderWithinShard, fixture);
    let mut seq = 0;
    for n in [1, 3, 7, 2, 5] {
        ctx.deliver(&ctx.batch(0, seq, n)).await?;
        seq += n;
    }
    let events = ctx.read_all(0, 4).await?;
    ctx.expect_events(
        "reading shard 0 in pages of 4",
        expected(0, 0..seq),
        &events,
    )?;
    Ok(ctx.passed())
}

/// The shard the round-trip check writes to: the largest id, where a narrowing conversion
/// would show.
const ROUND_TRIP_SHARD: u16 = u16::MAX;

/// Checks [`Property::EventsRoundTrip`]: three events with distinct timestamps and payloads
/// holding escapes and non-ASCII text, written to shard `u16::MAX`, come back with the same
/// bytes, timestamp and shard id, distinct non-empty ids, and no dedup id other than the
/// batch's.
pub async fn events_round_trip(fixture: &dyn Fixture) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::EventsRoundTrip, fixture);
    let shard = ROUND_TRIP_SHARD;
    let texts = [
        "plain",
        "quote \" backslash \\ newline \\n",
        "caf\u{e9} \u{1f980} \u{4e2d}",
    ];
    let events: Vec<BatchEvent> = texts
        .iter()
        .enumerate()
        .map(|(seq, text)| {
            let body = serde_json::json!({
                "conformance": Property::EventsRoundTrip.name(),
                "shard": shard,
                "seq": seq,
                "text": text,
            });
            BatchEvent {
                raw: Bytes::from(body.to_string()),
                insertion_ts: BASE_TS + 1_000 * seq as u64 + 7,
                shard_id: shard,
            }
        })
        .collect();
    let batch = Arc::new(Batch {
        shard_id: shard,
        events,
        sequence_start: 0,
        process_nonce: ctx.nonce,
    });
    ctx.deliver(&batch).await?;
    let stored = ctx.read_all(shard, 10).await?;

    let describe = |raw: &[u8], ts: u64, shard: u16| {
        format!(
            "[raw={} ts={ts} shard={shard}]",
            String::from_utf8_lossy(raw)
        )
    };
    let want: Vec<String> = batch
        .events
        .iter()
        .map(|e| describe(&e.raw, e.insertion_ts, e.shard_id))
        .collect();
    let got: Vec<String> = stored
        .iter()
        .map(|e| describe(&e.raw, e.insertion_ts, e.shard_id))
        .collect();
    if want != got {
        return Err(ctx
            .fail(format!(
                "events written to shard {shard} came back changed (payload bytes, insertion \
                 timestamp or shard id)"
            ))
            .with_evidence(want, got));
    }
    let mut ids = HashSet::new();
    for event in &stored {
        if event.id.is_empty() || !ids.insert(event.id.as_str()) {
            return Err(ctx
                .fail(format!(
                    "event ids must be non-empty and distinct; {} has id {:?}",
                    label(event),
                    event.id
                ))
                .with_evidence(Vec::new(), stored.iter().map(|e| e.id.clone()).collect()));
        }
    }
    for (index, event) in stored.iter().enumerate() {
        if let Some(id) = &event.dedup_id {
            let want = batch.dedup_id(index);
            if *id != want {
                return Err(ctx
                    .fail(format!(
                        "{} carries dedup id {id:?}, not the batch's {want:?}",
                        label(event)
                    ))
                    .with_evidence(vec![want], vec![id.clone()]));
            }
        }
    }
    Ok(ctx.passed())
}

/// Checks [`Property::DedupIdsRoundTrip`] (needs the `persists_dedup_ids` capability): every
/// event of two batches starting at sequence 1000 comes back carrying the dedup id of its own
/// position in its batch (`s1#1004=<nonce>:1:1003:1` in evidence).
pub async fn dedup_ids_round_trip(fixture: &dyn Fixture) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::DedupIdsRoundTrip, fixture);
    if !ctx.persists_dedup_ids {
        return Ok(ctx.skip_without_capability("persists_dedup_ids"));
    }
    let batches = [ctx.batch(1, 1_000, 3), ctx.batch(1, 1_003, 4)];
    let mut want = Vec::new();
    for batch in &batches {
        ctx.deliver(batch).await?;
        for index in 0..batch.len() {
            let seq = batch.sequence_start + index as u64;
            want.push(format!("{}={}", label_of(1, seq), batch.dedup_id(index)));
        }
    }
    let stored = ctx.read_all(1, 100).await?;
    let got: Vec<String> = stored
        .iter()
        .map(|e| {
            let id = e.dedup_id.as_deref().unwrap_or("<none>");
            format!("{}={id}", label(e))
        })
        .collect();
    if want != got {
        return Err(ctx
            .fail("stored events do not carry the dedup ids of their batch positions")
            .with_evidence(want, got));
    }
    Ok(ctx.passed())
}

/// Delivers `batches` batches to `shard`, sizes cycling through 1, 2, 3, 5 and 8, yielding
/// between them; returns the number of events written.
async fn write_shard(core: &Core, shard: u16, batches: usize) -> Result<u64, ConformanceFailure> {
    let mut seq = 0;
    for n in [1, 2, 3, 5, 8].into_iter().cycle().take(batches) {
        core.deliver(&core.batch(shard, seq, n)).await?;
        seq += n;
        tokio::task::yield_now().await;
    }
    Ok(seq)
}

/// Awaits a task the kit spawned; a panic there is a failure of the kit's own code path
/// (adapter calls inside it are already guarded).
async fn join<T>(
    core: &Core,
    handle: tokio::task::JoinHandle<Result<T, ConformanceFailure>>,
) -> Result<T, ConformanceFailure> {
    match handle.await {
        Ok(result) => result,
        Err(err) => Err(core.fail(format!("a task of the check did not complete: {err}"))),
    }
}

/// Checks [`Property::PerShardFifoUnderConcurrency`]: four tasks released together each
/// deliver 25 batches to their own shard (0 to 3); every shard then holds exactly its own
/// events, in order.
pub async fn per_shard_fifo_under_concurrency(
    fixture: &dyn Fixture,
) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::PerShardFifoUnderConcurrency, fixture);
    const SHARDS: [u16; 4] = [0, 1, 2, 3];
    let barrier = Arc::new(tokio::sync::Barrier::new(SHARDS.len()));
    let handles: Vec<_> = SHARDS
        .iter()
        .map(|&shard| {
            let core = ctx.core();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                write_shard(&core, shard, 25).await
            })
        })
        .collect();
    let mut written = Vec::new();
    for handle in handles {
        written.push(join(&ctx, handle).await?);
    }
    for (&shard, &count) in SHARDS.iter().zip(&written) {
        let events = ctx.read_all(shard, 16).await?;
        ctx.expect_events(
            &format!("reading shard {shard} after concurrent writes to shards 0-3"),
            expected(shard, 0..count),
            &events,
        )?;
    }
    Ok(ctx.passed())
}

/// Follows `shard` from the start while a writer appends `total` events, checking every page
/// as it arrives: each event must be the next one written (copies with a dedup id already
/// seen are dropped when the adapter persists dedup ids).
///
/// Stops once all `total` events were read; fails if nothing new shows up for a whole
/// deadline.
async fn follow(
    core: &Core,
    shard: u16,
    total: u64,
    writers_done: &AtomicBool,
) -> Result<(), ConformanceFailure> {
    let mut cursor: Option<String> = None;
    let mut next = 0u64;
    let mut dedup = HashSet::new();
    let started = Instant::now();
    let mut last_progress = started;
    while next < total {
        if started.elapsed() > core.deadline * 3 {
            return Err(core.fail(format!(
                "deadline hit: a reader of shard {shard} had read only {next} of {total} events \
                 after {:?} (three deadlines), although its cursor kept moving",
                core.deadline * 3
            )));
        }
        let writers_were_done = writers_done.load(Ordering::Acquire);
        let page = core.poll_ok(shard, cursor.as_deref(), 7).await?;
        let progressed = !page.events.is_empty() || cursor.as_deref() != Some(&page.cursor);
        for event in &page.events {
            if core.persists_dedup_ids {
                if let Some(id) = &event.dedup_id {
                    if !dedup.insert(id.clone()) {
                        continue;
                    }
                }
            }
            let want = label_of(shard, next);
            if label(event) != want {
                return Err(core
                    .fail(format!(
                        "a reader polling shard {shard} while batches were written saw an \
                         event out of place after {next} correct ones"
                    ))
                    .with_evidence(
                        expected(shard, next..(next + page.events.len() as u64).min(total)),
                        labels(&page.events),
                    ));
            }
            next += 1;
        }
        cursor = Some(page.cursor);
        if !progressed && !page.has_more && writers_were_done && next < total {
            // Every write was acknowledged before this poll started, yet the shard ends here.
            return Err(core
                .fail(format!(
                    "a reader of shard {shard} reached the end after reading {next} of {total}                      acknowledged events"
                ))
                .with_evidence(expected(shard, next..total), Vec::new()));
        }
        if progressed {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > core.deadline {
            let state = if writers_done.load(Ordering::Acquire) {
                "after the writers finished"
            } else {
                "while the writers were still running"
            };
            return Err(core.fail(format!(
                "deadline hit: a reader of shard {shard} saw nothing new for {:?} {state}, \
                 having read {next} of {total} events",
                core.deadline
            )));
        }
        if !page.has_more {
            // Caught up with the writer: give it a moment before polling again.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(())
}

/// Checks [`Property::ConcurrentBatchesAndPolls`]: two writers deliver 40 batches of 3 to
/// shards 0 and 1 while a reader of each shard follows it page by page; every reader sees its
/// shard's events once, in order, without gaps, and a final read finds everything.
pub async fn concurrent_batches_and_polls(
    fixture: &dyn Fixture,
) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::ConcurrentBatchesAndPolls, fixture);
    const SHARDS: [u16; 2] = [0, 1];
    const BATCHES: u64 = 40;
    const SIZE: u64 = 3;
    let total = BATCHES * SIZE;
    let writers_done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = SHARDS
        .iter()
        .map(|&shard| {
            let core = ctx.core();
            let done = writers_done.clone();
            tokio::spawn(async move { follow(&core, shard, total, &done).await })
        })
        .collect();
    let writers: Vec<_> = SHARDS
        .iter()
        .map(|&shard| {
            let core = ctx.core();
            tokio::spawn(async move {
                for b in 0..BATCHES {
                    core.deliver(&core.batch(shard, b * SIZE, SIZE)).await?;
                    tokio::task::yield_now().await;
                }
                Ok(())
            })
        })
        .collect();
    for writer in writers {
        if let Err(failure) = join(&ctx, writer).await {
            // The readers would wait for events that will never come.
            readers.iter().for_each(|reader| reader.abort());
            return Err(failure);
        }
    }
    writers_done.store(true, Ordering::Release);
    for reader in readers {
        join(&ctx, reader).await?;
    }
    for shard in SHARDS {
        let events = ctx.read_all(shard, 50).await?;
        ctx.expect_events(
            &format!("reading shard {shard} after the concurrent writers finished"),
            expected(shard, 0..total),
            &events,
        )?;
    }
    Ok(ctx.passed())
}
