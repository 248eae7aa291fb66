//! Checks of the adapter's life: bounded calls under load, and what shutdown leaves behind.

use crate::conformance::harness::{
    describe_batch, describe_error, describe_poll, expected, labels, Ctx,
};
use crate::conformance::{ConformanceFailure, Fixture, Outcome, Property};
use crate::AdapterError;

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
