//! Checks of the adapter's life: bounded calls under load, and what shutdown leaves behind.

use crate::conformance::harness::{
    describe_batch, describe_error, describe_poll, expected, labels, Ctx,
};
use crate::conformance::{ConformanceFailure, Fixture, Outcome, Property};
use crate::{AdapterError, LayoutWrite, StreamLayout};

/// The shards the flood writes to.
const FLOOD_SHARDS: [u16; 4] = [0, 1, 2, 3];
/// Batches per shard in the flood.
const FLOOD_BATCHES: u64 = 50;
/// Events per batch in the flood.
const FLOOD_BATCH_SIZE: u64 = 20;

/// Checks [`Property::NeverBlocksIndefinitely`]: 50 batches of 20 events per shard, on four
/// shards at once, are each accepted or answered with a retryable error (retried like the
/// bus does) within the deadline; `flush`, `is_healthy` and a poll of an empty shard return
/// within the deadline too, and every event is readable in order afterwards.
///
/// Which call hit the deadline is named in the failure.
pub async fn never_blocks_indefinitely(
    fixture: &dyn Fixture,
) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::NeverBlocksIndefinitely, fixture);
    let writers: Vec<_> = FLOOD_SHARDS
        .iter()
        .map(|&shard| {
            let core = ctx.core();
            tokio::spawn(async move {
                for b in 0..FLOOD_BATCHES {
                    let batch = core.batch(shard, b * FLOOD_BATCH_SIZE, FLOOD_BATCH_SIZE);
                    core.deliver(&batch).await?;
                }
                Ok::<_, ConformanceFailure>(())
            })
        })
        .collect();
    for writer in writers {
        match writer.await {
            Ok(result) => result?,
            Err(err) => return Err(ctx.fail(format!("a writer task did not complete: {err}"))),
        }
    }
    let adapter = ctx.adapter.clone();
    if let Err(error) = ctx
        .run("flush()", async move { adapter.flush().await })
        .await?
    {
        return Err(ctx.fail(format!(
            "flush() after the flood failed with {}",
            describe_error(&error)
        )));
    }
    let adapter = ctx.adapter.clone();
    ctx.run("is_healthy()", async move { adapter.is_healthy().await })
        .await?;
    ctx.poll_ok(7, None, 10).await?;
    for shard in FLOOD_SHARDS {
        let events = ctx.read_all(shard, 400).await?;
        ctx.expect_events(
            &format!("reading shard {shard} after the flood"),
            expected(shard, 0..FLOOD_BATCHES * FLOOD_BATCH_SIZE),
            &events,
        )?;
    }
    Ok(ctx.passed())
}

/// Calls `shutdown` twice: the first must succeed, the second must be harmless (succeed or
/// report that the adapter is already shut down).
async fn shut_down(ctx: &Ctx<'_>) -> Result<(), ConformanceFailure> {
    for attempt in ["first", "second"] {
        let adapter = ctx.adapter.clone();
        let what = format!("the {attempt} shutdown()");
        match ctx
            .run(&what, async move { adapter.shutdown().await })
            .await?
        {
            Ok(()) => {}
            Err(AdapterError::Shutdown) if attempt == "second" => {}
            Err(error) => {
                return Err(ctx.fail(format!("{what} failed with {}", describe_error(&error))))
            }
        }
    }
    Ok(())
}

/// Checks [`Property::ShutdownRejectsOnBatch`]: after a stored batch and two `shutdown`
/// calls, `on_batch` returns `AdapterError::Shutdown` for the shard used before and for one
/// never used.
pub async fn shutdown_rejects_on_batch(
    fixture: &dyn Fixture,
) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::ShutdownRejectsOnBatch, fixture);
    ctx.deliver(&ctx.batch(0, 0, 3)).await?;
    shut_down(&ctx).await?;
    for batch in [ctx.batch(0, 3, 2), ctx.batch(5, 0, 1)] {
        let result = ctx.on_batch(&batch).await?;
        ctx.expect_shutdown(&describe_batch(&batch), result, |()| {
            "it returned Ok".to_owned()
        })?;
    }
    Ok(ctx.passed())
}

/// Checks [`Property::ShutdownRejectsPollShard`]: after a stored batch and two `shutdown`
/// calls, `poll_shard` returns `AdapterError::Shutdown` from the start, from a cursor the
/// adapter returned before, and on a shard never used.
pub async fn shutdown_rejects_poll_shard(
    fixture: &dyn Fixture,
) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::ShutdownRejectsPollShard, fixture);
    ctx.deliver(&ctx.batch(0, 0, 3)).await?;
    let first = ctx.poll_ok(0, None, 1).await?;
    shut_down(&ctx).await?;
    for (shard, cursor) in [(0, None), (0, Some(first.cursor.as_str())), (5, None)] {
        let result = ctx.poll(shard, cursor, 10).await?;
        ctx.expect_shutdown(&describe_poll(shard, cursor, 10), result, |page| {
            format!("it returned a page of {:?}", labels(&page.events))
        })?;
    }
    Ok(ctx.passed())
}

/// Checks [`Property::LayoutRecordedOnce`] (needs the `records_layout` capability): four
/// `IfAbsent` writes racing on a new stream are all told the same layout, one of theirs; a
/// later `IfAbsent` write with another shard count is told that layout; a `Replace` write
/// replaces it, and `IfAbsent` then reports the replacement.
pub async fn layout_recorded_once(fixture: &dyn Fixture) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::LayoutRecordedOnce, fixture);
    if !ctx.records_layout {
        return Ok(ctx.skip_without_capability("records_layout"));
    }
    let racers = [2u16, 3, 4, 5];
    let calls: Vec<_> = racers
        .iter()
        .map(|&shards| {
            let adapter = ctx.adapter.clone();
            let call = tokio::spawn(async move {
                adapter
                    .record_layout(StreamLayout::new(shards), LayoutWrite::IfAbsent)
                    .await
            });
            (shards, call)
        })
        .collect();
    let mut answers = Vec::new();
    for (shards, call) in calls {
        let what = format!("record_layout({shards} shards, IfAbsent) racing three others");
        let result = ctx.run(&what, call).await?;
        match result {
            Ok(result) => answers.push(recorded(&ctx, &what, result)?),
            Err(join) => return Err(ctx.fail(format!("{what} did not complete: {join}"))),
        }
    }
    let winner = answers[0];
    if !racers.contains(&winner) || answers.iter().any(|&a| a != winner) {
        return Err(ctx.fail(format!(
            "buses racing to record {racers:?} shards on a new stream were told {answers:?}: \
             all must be told the same one of theirs"
        )));
    }
    let later = record(&ctx, winner + 10, LayoutWrite::IfAbsent).await?;
    if later != winner {
        return Err(ctx.fail(format!(
            "a bus recording {} shards after {winner} were recorded was told {later}",
            winner + 10
        )));
    }
    let replaced = record(&ctx, 7, LayoutWrite::Replace).await?;
    let after = record(&ctx, winner, LayoutWrite::IfAbsent).await?;
    if replaced != 7 || after != 7 {
        return Err(ctx.fail(format!(
            "replacing the layout with 7 shards returned {replaced}, and the next IfAbsent \
             write was told {after}: both should be 7"
        )));
    }
    Ok(ctx.passed())
}

/// Records a layout of `shards` shards and returns the shard count the adapter reports.
async fn record(ctx: &Ctx<'_>, shards: u16, write: LayoutWrite) -> Result<u16, ConformanceFailure> {
    let adapter = ctx.adapter.clone();
    let what = format!("record_layout({shards} shards, {write:?})");
    let result = ctx
        .run(&what, async move {
            adapter
                .record_layout(StreamLayout::new(shards), write)
                .await
        })
        .await?;
    recorded(ctx, &what, result)
}

/// The shard count of a `record_layout` answer, or the failure it shows.
fn recorded(
    ctx: &Ctx<'_>,
    what: &str,
    result: Result<Option<StreamLayout>, AdapterError>,
) -> Result<u16, ConformanceFailure> {
    match result {
        Ok(Some(layout)) => Ok(layout.shards),
        Ok(None) => Err(ctx.fail(format!(
            "{what} returned None although the fixture declares `records_layout`"
        ))),
        Err(error) => Err(ctx.fail(format!("{what} failed with {}", describe_error(&error)))),
    }
}
