//! Checks of the read side: paging, cursors (event ids, hostile ones, stale ones) and corrupt
//! entries.

use crate::conformance::harness::{describe_error, describe_poll, expected, labels, shorten, Ctx};
use crate::conformance::{ConformanceFailure, Fixture, Outcome, Property};
use crate::{AdapterError, ShardPollResult, StoredEvent};

/// Delivers batches of the given sizes to `shard` from sequence `start`; returns the next
/// sequence.
async fn write(
    ctx: &Ctx<'_>,
    shard: u16,
    start: u64,
    sizes: &[u64],
) -> Result<u64, ConformanceFailure> {
    let mut seq = start;
    for &n in sizes {
        ctx.deliver(&ctx.batch(shard, seq, n)).await?;
        seq += n;
    }
    Ok(seq)
}

/// Fails unless `page` holds exactly `want` and has `has_more == more`.
fn expect_page(
    ctx: &Ctx<'_>,
    call: &str,
    page: &ShardPollResult,
    want: Vec<String>,
    more: bool,
) -> Result<(), ConformanceFailure> {
    let seen = labels(&page.events);
    if seen != want {
        return Err(ctx
            .fail(format!("{call} returned the wrong events"))
            .with_evidence(want, seen));
    }
    if page.has_more != more {
        return Err(ctx.fail(format!(
            "{call} returned {} event(s) and has_more = {}, but {}",
            seen.len(),
            page.has_more,
            if more {
                "entries remain after its cursor"
            } else {
                "nothing remains after its cursor"
            }
        )));
    }
    Ok(())
}

/// Polls once and checks the page with [`expect_page`]; returns the page.
async fn poll_expect(
    ctx: &Ctx<'_>,
    shard: u16,
    cursor: Option<&str>,
    limit: usize,
    want: Vec<String>,
    more: bool,
) -> Result<ShardPollResult, ConformanceFailure> {
    let page = ctx.poll_ok(shard, cursor, limit).await?;
    expect_page(ctx, &describe_poll(shard, cursor, limit), &page, want, more)?;
    Ok(page)
}

/// Checks [`Property::PagingNoOverlapNoGap`]: 23 events in batches of 5, 1, 9 and 8, paged
/// with limits 1, 2, 3, 5, 7, 22, 23, 24 and 100, come back whole each time, with no page over
/// its limit; polling the same cursor twice returns the same page (reads do not consume).
pub async fn paging_no_overlap_no_gap(
    fixture: &dyn Fixture,
) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::PagingNoOverlapNoGap, fixture);
    let total = write(&ctx, 0, 0, &[5, 1, 9, 8]).await?;
    for limit in [1, 2, 3, 5, 7, 22, 23, 24, 100] {
        let events = ctx.read_all(0, limit).await?;
        ctx.expect_events(
            &format!("paging through shard 0 with limit {limit}"),
            expected(0, 0..total),
            &events,
        )?;
    }
    let first = ctx.poll_ok(0, None, 5).await?;
    let again = ctx.poll_ok(0, None, 5).await?;
    if labels(&first.events) != labels(&again.events) {
        return Err(ctx
            .fail(format!(
                "{} returned different events the second time; reading must not consume",
                describe_poll(0, None, 5)
            ))
            .with_evidence(labels(&first.events), labels(&again.events)));
    }
    let next = ctx.poll_ok(0, Some(&first.cursor), 5).await?;
    let next_again = ctx.poll_ok(0, Some(&first.cursor), 5).await?;
    if labels(&next.events) != labels(&next_again.events) {
        return Err(ctx
            .fail(format!(
                "{} returned different events the second time; reading must not consume",
                describe_poll(0, Some(&first.cursor), 5)
            ))
            .with_evidence(labels(&next.events), labels(&next_again.events)));
    }
    Ok(ctx.passed())
}

/// Checks [`Property::EventIdResumesAfterEvent`]: for each of 12 events, polling with its
/// `id` as the cursor returns exactly the events after it; ids read in pages of 3 equal ids
/// read in one page.
pub async fn event_id_resumes_after_event(
    fixture: &dyn Fixture,
) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::EventIdResumesAfterEvent, fixture);
    let total = write(&ctx, 0, 0, &[4, 4, 4]).await?;
    let events = ctx.read_all(0, 100).await?;
    ctx.expect_events("reading shard 0", expected(0, 0..total), &events)?;
    let ids = |events: &[StoredEvent]| events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    let paged = ctx.read_all(0, 3).await?;
    if ids(&paged) != ids(&events) {
        return Err(ctx
            .fail("event ids differ between a read in pages of 3 and a read in one page")
            .with_evidence(ids(&events), ids(&paged)));
    }
    let all = labels(&events);
    for (i, event) in events.iter().enumerate() {
        poll_expect(&ctx, 0, Some(&event.id), 100, all[i + 1..].to_vec(), false).await?;
    }
    Ok(ctx.passed())
}

/// Checks [`Property::PagingHasMoreTruthful`]: an empty shard says no more and its cursor
/// later yields the first events; with 4 events, limits 3, 4 and 5 give has_more true, false
/// and false; the end cursor gives an empty page, then exactly the events written after it.
pub async fn paging_has_more_truthful(
    fixture: &dyn Fixture,
) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::PagingHasMoreTruthful, fixture);
    let shard = 3;
    let empty = poll_expect(&ctx, shard, None, 10, Vec::new(), false).await?;
    write(&ctx, shard, 0, &[4]).await?;
    poll_expect(
        &ctx,
        shard,
        Some(&empty.cursor),
        10,
        expected(shard, 0..4),
        false,
    )
    .await?;
    poll_expect(&ctx, shard, None, 3, expected(shard, 0..3), true).await?;
    let end = poll_expect(&ctx, shard, None, 4, expected(shard, 0..4), false).await?;
    poll_expect(&ctx, shard, None, 5, expected(shard, 0..4), false).await?;
    poll_expect(&ctx, shard, Some(&end.cursor), 10, Vec::new(), false).await?;
    write(&ctx, shard, 4, &[2]).await?;
    poll_expect(
        &ctx,
        shard,
        Some(&end.cursor),
        1,
        expected(shard, 4..5),
        true,
    )
    .await?;
    poll_expect(
        &ctx,
        shard,
        Some(&end.cursor),
        10,
        expected(shard, 4..6),
        false,
    )
    .await?;
    Ok(ctx.passed())
}

/// Checks [`Property::PagingLimits`]: on 6 events, limit 0 returns nothing, claims more and
/// moves past nothing (from the start and from the middle); limit 1 pages one event at a
/// time; `usize::MAX` returns everything after the cursor and an empty page at the end; on an
/// empty shard limits 0 and `usize::MAX` return empty pages.
pub async fn paging_limits(fixture: &dyn Fixture) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::PagingLimits, fixture);
    let total = write(&ctx, 0, 0, &[2, 4]).await?;
    let all = expected(0, 0..total);

    let zero = poll_expect(&ctx, 0, None, 0, Vec::new(), true).await?;
    poll_expect(&ctx, 0, Some(&zero.cursor), 10, all.clone(), false).await?;

    let events = ctx.read_all(0, 100).await?;
    ctx.expect_events("reading shard 0", all.clone(), &events)?;
    let middle = events[2].id.clone();
    let zero = poll_expect(&ctx, 0, Some(&middle), 0, Vec::new(), true).await?;
    poll_expect(&ctx, 0, Some(&zero.cursor), 10, all[3..].to_vec(), false).await?;

    let mut cursor = None;
    for i in 0..all.len() {
        let more = i + 1 < all.len();
        let page = poll_expect(&ctx, 0, cursor.as_deref(), 1, all[i..=i].to_vec(), more).await?;
        cursor = Some(page.cursor);
    }

    poll_expect(&ctx, 0, None, usize::MAX, all.clone(), false).await?;
    let rest = poll_expect(&ctx, 0, Some(&middle), usize::MAX, all[3..].to_vec(), false).await?;
    poll_expect(&ctx, 0, Some(&rest.cursor), usize::MAX, Vec::new(), false).await?;

    poll_expect(&ctx, 6, None, 0, Vec::new(), false).await?;
    poll_expect(&ctx, 6, None, usize::MAX, Vec::new(), false).await?;
    Ok(ctx.passed())
}

/// Checks [`Property::HostileCursorsRejected`]: on a shard of 5 events and on an empty shard,
/// cursors that are empty, garbage, a NUL byte, non-ASCII, negative, `u64::MAX`, past
/// `u128`, 100 000 digits, a mebibyte of text, or positions from a longer shard (its end
/// cursor and its last event id) are each rejected with `AdapterError::InvalidCursor` — not a
/// panic, not another error, not a page — and the adapter still reads normally afterwards.
pub async fn hostile_cursors_rejected(
    fixture: &dyn Fixture,
) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::HostileCursorsRejected, fixture);
    let short = write(&ctx, 0, 0, &[5]).await?;
    let long = write(&ctx, 1, 0, &[10, 10]).await?;
    let (long_events, long_end) = ctx.read_from(1, None, 100).await?;
    ctx.expect_events("reading shard 1", expected(1, 0..long), &long_events)?;
    let long_last_id = long_events.last().map(|e| e.id.clone()).unwrap_or_default();

    let hostile: Vec<(&str, String)> = vec![
        ("the empty string", String::new()),
        ("garbage text", "not-a-cursor".to_owned()),
        ("a NUL byte", "\0".to_owned()),
        ("non-ASCII text", "\u{1f980}\u{1f4a5}".to_owned()),
        ("a negative number", "-1".to_owned()),
        ("u64::MAX", u64::MAX.to_string()),
        (
            "a number past u128::MAX",
            "340282366920938463463374607431768211456".to_owned(),
        ),
        ("100 000 digits", "9".repeat(100_000)),
        ("a mebibyte of text", "x".repeat(1 << 20)),
        (
            "the end cursor of a longer shard (shard 1, 20 events)",
            long_end,
        ),
        (
            "the id of the last event of a longer shard (shard 1, 20 events)",
            long_last_id,
        ),
    ];
    for shard in [0u16, 2] {
        for (what, cursor) in &hostile {
            let call = describe_poll(shard, Some(cursor), 10);
            match ctx.poll(shard, Some(cursor), 10).await? {
                Err(AdapterError::InvalidCursor(_)) => {}
                Err(error) => {
                    return Err(ctx.fail(format!(
                        "{call} with {what} as cursor returned {} instead of an invalid cursor \
                         error",
                        describe_error(&error)
                    )))
                }
                Ok(page) => {
                    return Err(ctx
                        .fail(format!(
                            "{call} accepted {what} as cursor: it returned {} event(s), \
                             has_more = {} and cursor {} instead of an invalid cursor error{}",
                            page.events.len(),
                            page.has_more,
                            shorten(&page.cursor),
                            if page.events.is_empty() {
                                ""
                            } else {
                                " (a silent restart)"
                            }
                        ))
                        .with_evidence(Vec::new(), labels(&page.events)))
                }
            }
        }
    }
    let events = ctx.read_all(0, 100).await?;
    ctx.expect_events(
        "reading shard 0 after the hostile cursors",
        expected(0, 0..short),
        &events,
    )?;
    Ok(ctx.passed())
}

/// Calls the `inject_corrupt` hook `count` times on `shard`.
async fn corrupt(ctx: &Ctx<'_>, shard: u16, count: usize) -> Result<bool, ConformanceFailure> {
    for _ in 0..count {
        if !ctx
            .hook("inject_corrupt", ctx.fixture().inject_corrupt(shard))
            .await?
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Checks [`Property::CorruptEntriesSkipped`] (needs the `inject_corrupt` hook):
///
/// - a shard holding only 3 corrupt entries reads as empty, and its final cursor later
///   yields exactly the events written after them;
/// - a shard of 3 events, 3 corrupt entries, 2 events and 2 corrupt entries reads as its 5
///   events with limits 1, 2, 3 and 100 — a page made only of corrupt entries must move the
///   cursor (a consumer that gets no events and the same cursor back is wedged);
/// - from the last good event, the trailing corrupt entries are passed and the cursor then
///   yields exactly the next event written.
pub async fn corrupt_entries_skipped(fixture: &dyn Fixture) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::CorruptEntriesSkipped, fixture);
    if !corrupt(&ctx, 1, 3).await? {
        return Ok(ctx.skip_without_hook("inject_corrupt"));
    }
    let (events, end) = ctx.read_from(1, None, 10).await?;
    ctx.expect_events(
        "reading shard 1, made only of corrupt entries",
        Vec::new(),
        &events,
    )?;
    write(&ctx, 1, 0, &[2]).await?;
    let (events, _) = ctx.read_from(1, Some(end), 10).await?;
    ctx.expect_events(
        "reading shard 1 from the cursor past its corrupt entries",
        expected(1, 0..2),
        &events,
    )?;

    write(&ctx, 0, 0, &[3]).await?;
    corrupt(&ctx, 0, 3).await?;
    write(&ctx, 0, 3, &[2]).await?;
    corrupt(&ctx, 0, 2).await?;
    for limit in [1, 2, 3, 100] {
        let events = ctx.read_all(0, limit).await?;
        ctx.expect_events(
            &format!("paging with limit {limit} through shard 0, which holds corrupt entries"),
            expected(0, 0..5),
            &events,
        )?;
    }
    let events = ctx.read_all(0, 100).await?;
    ctx.expect_events("reading shard 0", expected(0, 0..5), &events)?;
    let after_first_batch = events[2].id.clone();
    for limit in [1, 2, 3] {
        let (events, _) = ctx
            .read_from(0, Some(after_first_batch.clone()), limit)
            .await?;
        ctx.expect_events(
            &format!("paging with limit {limit} from the last event before 3 corrupt entries"),
            expected(0, 3..5),
            &events,
        )?;
    }
    let last_good = events[4].id.clone();
    let (tail, end) = ctx.read_from(0, Some(last_good), 10).await?;
    ctx.expect_events("reading the corrupt tail of shard 0", Vec::new(), &tail)?;
    write(&ctx, 0, 5, &[1]).await?;
    let (events, _) = ctx.read_from(0, Some(end), 10).await?;
    ctx.expect_events(
        "reading from the cursor past the corrupt tail of shard 0",
        expected(0, 5..6),
        &events,
    )?;
    Ok(ctx.passed())
}

/// Checks [`Property::StaleCursorAfterRetention`] (needs the `trim` hook): after 10 events are
/// trimmed to the newest 4, the cursor after the second event gives an empty page (not an
/// error) with a moved cursor and has_more = true; that cursor, like a read from the start,
/// yields exactly the 4 retained events, and appends continue after them.
pub async fn stale_cursor_after_retention(
    fixture: &dyn Fixture,
) -> Result<Outcome, ConformanceFailure> {
    let ctx = Ctx::new(Property::StaleCursorAfterRetention, fixture);
    write(&ctx, 0, 0, &[5, 5]).await?;
    let events = ctx.read_all(0, 100).await?;
    ctx.expect_events("reading shard 0", expected(0, 0..10), &events)?;
    let stale = events[1].id.clone();
    if !ctx.hook("trim", ctx.fixture().trim(0, 4)).await? {
        return Ok(ctx.skip_without_hook("trim"));
    }
    let call = describe_poll(0, Some(&stale), 10);
    let page = match ctx.poll(0, Some(&stale), 10).await? {
        Ok(page) => page,
        Err(error) => {
            return Err(ctx.fail(format!(
                "{call} with a cursor whose position retention trimmed returned {} instead of \
                 an empty page with a moved cursor",
                describe_error(&error)
            )))
        }
    };
    if !page.events.is_empty() {
        return Err(ctx
            .fail(format!(
                "{call} with a stale cursor returned events; expected an empty page with a \
                 moved cursor, so the consumer can see the gap"
            ))
            .with_evidence(Vec::new(), labels(&page.events)));
    }
    if page.cursor == stale || !page.has_more {
        return Err(ctx.fail(format!(
            "{call} with a stale cursor returned cursor {} and has_more = {}; expected a moved \
             cursor and has_more = true",
            shorten(&page.cursor),
            page.has_more
        )));
    }
    let (events, end) = ctx.read_from(0, Some(page.cursor), 10).await?;
    ctx.expect_events(
        "reading from the cursor a stale cursor moved to",
        expected(0, 6..10),
        &events,
    )?;
    let events = ctx.read_all(0, 10).await?;
    ctx.expect_events(
        "reading shard 0 from the start after trimming",
        expected(0, 6..10),
        &events,
    )?;
    write(&ctx, 0, 10, &[2]).await?;
    let (events, _) = ctx.read_from(0, Some(end), 10).await?;
    ctx.expect_events(
        "reading the events appended after trimming",
        expected(0, 10..12),
        &events,
    )?;
    Ok(ctx.passed())
}
