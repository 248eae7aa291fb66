//! Checks of failures and retries: fatal classification, and idempotence after a success, an
//! error, a cancelled call and a timeout.

use crate::conformance::harness::{describe_batch, describe_error, expected, Ctx, PollOnce};
use crate::conformance::{ConformanceFailure, Fixture, Outcome, Property};
use crate::{AdapterError, Batch};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Checks [`Property::FatalErrorsClassified`] (needs the `fail_next_batch_permanently` hook):
/// the failing `on_batch` returns within the deadline with an error that is fatal and not
/// retryable (so the bus does not retry it forever), and the batch is then visible entirely
/// or not at all.
pub async fn fatal_errors_classified(fixture: &dyn Fixture) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::FatalErrorsClassified, fixture);
    let hook = "fail_next_batch_permanently";
    if !ctx
        .hook(hook, ctx.fixture().fail_next_batch_permanently(0))
        .await?
    {
        return Ok(ctx.skip_without_hook(hook));
    }
    let batch = ctx.batch(0, 0, 4);
    match ctx.on_batch(&batch).await? {
        Ok(()) => {
            return Err(ctx.fail(format!(
                "{} succeeded after the `{hook}` hook; expected a fatal error",
                describe_batch(&batch)
            )))
        }
        Err(error) if error.is_retryable() => {
            return Err(ctx.fail(format!(
                "{} met a permanent failure but returned a retryable {}; the bus would retry \
                 it until its budget runs out",
                describe_batch(&batch),
                describe_error(&error)
            )))
        }
        Err(AdapterError::Shutdown) => {
            return Err(ctx.fail(format!(
                "{} met a permanent failure but reported that the adapter is shut down",
                describe_batch(&batch)
            )))
        }
        Err(error) if !error.is_fatal() => {
            return Err(ctx.fail(format!(
                "{} met a permanent failure but returned {}, which is neither retryable nor \
                 fatal",
                describe_batch(&batch),
                describe_error(&error)
            )))
        }
        Err(_) => {}
    }
    match ctx.poll(0, None, usize::MAX).await? {
        Ok(page) => {
            let (seen, _) = ctx.view(&page.events);
            if !seen.is_empty() && seen != expected(0, 0..4) {
                return Err(ctx
                    .fail(format!(
                        "a batch rejected as fatal is partly stored: {} of its 4 events are \
                         visible",
                        seen.len()
                    ))
                    .with_evidence(expected(0, 0..4), seen));
            }
        }
        Err(error) => ctx.note(format!(
            "after the permanent failure, polling shard 0 failed too ({})",
            describe_error(&error)
        )),
    }
    Ok(ctx.passed())
}

/// Checks [`Property::IdempotentRetryAfterOk`]: a stored batch delivered again — the same
/// value, an equal copy (as after a restart), and late after a newer batch — succeeds each
/// time and a consumer still sees every event once, in order.
pub async fn idempotent_retry_after_ok(
    fixture: &dyn Fixture,
) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::IdempotentRetryAfterOk, fixture);
    let a = ctx.batch(0, 0, 4);
    let b = ctx.batch(0, 4, 3);
    let c = ctx.batch(0, 7, 2);
    ctx.deliver(&a).await?;
    ctx.deliver(&a).await?;
    ctx.deliver(&Arc::new(Batch::clone(&a))).await?;
    ctx.deliver(&b).await?;
    ctx.deliver(&a).await?;
    ctx.deliver(&c).await?;
    ctx.deliver(&c).await?;
    let events = ctx.read_all(0, 100).await?;
    ctx.expect_events(
        "reading shard 0 after delivering a batch 3 times, a newer one, the first again, and \
         a last one twice",
        expected(0, 0..9),
        &events,
    )?;
    Ok(ctx.passed())
}

/// Checks [`Property::IdempotentRetryAfterError`] (needs the `fail_next_batch_after_write`
/// hook): the first delivery stores the batch but returns a retryable error; retrying it until
/// it succeeds, then delivering the next batch, leaves every event once, in order.
pub async fn idempotent_retry_after_error(
    fixture: &dyn Fixture,
) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::IdempotentRetryAfterError, fixture);
    let hook = "fail_next_batch_after_write";
    if !ctx
        .hook(hook, ctx.fixture().fail_next_batch_after_write(0))
        .await?
    {
        return Ok(ctx.skip_without_hook(hook));
    }
    let a = ctx.batch(0, 0, 5);
    let b = ctx.batch(0, 5, 2);
    match ctx.on_batch(&a).await? {
        Ok(()) => {
            return Err(ctx.fail(format!(
                "{} succeeded after the `{hook}` hook; expected a retryable error",
                describe_batch(&a)
            )))
        }
        Err(error) if !error.is_retryable() => {
            return Err(ctx.fail(format!(
                "{} failed after writing with a non-retryable {}; a write whose outcome is \
                 unknown must be retryable",
                describe_batch(&a),
                describe_error(&error)
            )))
        }
        Err(_) => {}
    }
    ctx.deliver(&a).await?;
    ctx.deliver(&b).await?;
    let events = ctx.read_all(0, 100).await?;
    ctx.expect_events(
        "reading shard 0 after a batch failed after writing and was retried",
        expected(0, 0..7),
        &events,
    )?;
    Ok(ctx.passed())
}

/// Checks [`Property::IdempotentRetryAfterCancel`]: three batches each have their `on_batch`
/// future dropped after one, two and three polls (as a caller's timeout drops it), then
/// delivered again; with a batch before and after, a consumer sees every event once, in
/// order.
pub async fn idempotent_retry_after_cancel(
    fixture: &dyn Fixture,
) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::IdempotentRetryAfterCancel, fixture);
    ctx.deliver(&ctx.batch(0, 0, 3)).await?;
    let mut seq = 3;
    let mut interrupted = 0;
    for (polls, n) in [(1u32, 2u64), (2, 3), (3, 4)] {
        let batch = ctx.batch(0, seq, n);
        let adapter = ctx.adapter.clone();
        let cancelled = batch.clone();
        let what = format!("{} dropped after {polls} poll(s)", describe_batch(&batch));
        let finished = ctx
            .run(&what, async move {
                let mut call = std::pin::pin!(adapter.on_batch(cancelled));
                for _ in 0..polls {
                    if let Some(result) = PollOnce(call.as_mut()).await {
                        return Some(result);
                    }
                    tokio::task::yield_now().await;
                }
                None
            })
            .await?;
        match finished {
            None => interrupted += 1,
            Some(Ok(())) => {}
            Some(Err(error)) if error.is_retryable() => {}
            Some(Err(error)) => {
                return Err(ctx.fail(format!(
                    "{what}: the call completed with a non-retryable {}",
                    describe_error(&error)
                )))
            }
        }
        ctx.deliver(&batch).await?;
        seq += n;
    }
    ctx.deliver(&ctx.batch(0, seq, 2)).await?;
    seq += 2;
    if interrupted == 0 {
        ctx.note(
            "every on_batch call completed within the polls allowed, so no call was \
             interrupted mid-way",
        );
    }
    let events = ctx.read_all(0, 100).await?;
    ctx.expect_events(
        "reading shard 0 after three cancelled and redelivered batches",
        expected(0, 0..seq),
        &events,
    )?;
    Ok(ctx.passed())
}

/// How often the timeout check looks at the shard while a stalled call is pending.
const WATCH_INTERVAL: Duration = Duration::from_millis(2);

/// Checks [`Property::IdempotentRetryAfterTimeout`] (needs the
/// `time_out_next_batch_after_write` hook): the first delivery stores the batch and then either
/// returns a retryable error or stalls; a stalled call is dropped once the batch is visible.
/// Retrying the batch, then delivering the next one, leaves every event once, in order.
pub async fn idempotent_retry_after_timeout(
    fixture: &dyn Fixture,
) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::IdempotentRetryAfterTimeout, fixture);
    let hook = "time_out_next_batch_after_write";
    if !ctx
        .hook(hook, ctx.fixture().time_out_next_batch_after_write(0))
        .await?
    {
        return Ok(ctx.skip_without_hook(hook));
    }
    let a = ctx.batch(0, 0, 4);
    let b = ctx.batch(0, 4, 3);
    let adapter = ctx.adapter.clone();
    let call = a.clone();
    let mut handle = tokio::spawn(async move { adapter.on_batch(call).await });
    let started = Instant::now();
    loop {
        if handle.is_finished() {
            let result = match (&mut handle).await {
                Ok(result) => result,
                Err(join) if join.is_panic() => {
                    return Err(ctx.fail(format!(
                        "the adapter panicked in {} after the `{hook}` hook",
                        describe_batch(&a)
                    )))
                }
                Err(join) => return Err(ctx.fail(format!("{}: {join}", describe_batch(&a)))),
            };
            match result {
                Ok(()) => {
                    return Err(ctx.fail(format!(
                        "{} succeeded after the `{hook}` hook; expected a retryable error or a \
                         call that does not complete",
                        describe_batch(&a)
                    )))
                }
                Err(error) if !error.is_retryable() => {
                    return Err(ctx.fail(format!(
                        "{} timed out after writing but returned a non-retryable {}",
                        describe_batch(&a),
                        describe_error(&error)
                    )))
                }
                Err(_) => break,
            }
        }
        let page = ctx.poll_ok(0, None, usize::MAX).await?;
        let (seen, _) = ctx.view(&page.events);
        if expected(0, 0..4).iter().all(|label| seen.contains(label)) {
            handle.abort();
            ctx.note(
                "the timed-out call did not complete; it was dropped once its batch was visible",
            );
            break;
        }
        if started.elapsed() > ctx.deadline {
            handle.abort();
            return Err(ctx.fail(format!(
                "deadline hit: after the `{hook}` hook, {} neither returned nor made its \
                 events visible within {:?}",
                describe_batch(&a),
                ctx.deadline
            )));
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
    ctx.deliver(&a).await?;
    ctx.deliver(&b).await?;
    let events = ctx.read_all(0, 100).await?;
    ctx.expect_events(
        "reading shard 0 after a batch timed out after writing and was retried",
        expected(0, 0..7),
        &events,
    )?;
    Ok(ctx.passed())
}
