//! The consume path: [`ConsumeRequest`], [`ConsumeResponse`] and the poll merge.
//!
//! # Cursor exactness
//! A poll fetches one page per requested shard (concurrently), then walks the pages in the
//! requested [`Ordering`]. Each walked event is either returned (it matches the filter) or
//! skipped (it does not); both move that shard's position to the event's id. The walk stops
//! when `limit` events were returned. The response cursor then holds, per shard:
//! - the id of the last walked event, when the walk stopped inside that shard's page, or
//! - the page's own cursor, when the whole page was walked (it may lie past trailing entries
//!   the adapter skipped as corrupt).
//!
//! So the cursor never passes an event that was fetched but not returned, and it always
//! covers events skipped by the filter: resuming yields every event exactly once.
//!
//! # Orderings
//! - `Sequence`: round-robin across shards (ascending shard id), one event at a time; each
//!   shard's own order is kept.
//! - `Timestamp`: k-way merge by insertion timestamp (ties by shard id, then position). The
//!   walk stops when a shard that has more data runs out of fetched events, because its next
//!   event could be older than anything still to be returned. Within a page the timestamps
//!   never decrease.
//!
//! # Bounds
//! `limit` is clamped to [`MAX_POLL_LIMIT`]. Each shard is asked for its fair share of
//! `limit` (at least 16), so a page can hold fewer than `limit` events while `has_more` is
//! true. `limit == 0` fetches nothing but still reports whether data is waiting. A page without events whose cursor moved (retention trimmed the
//! position, or only corrupt entries were found) is recorded as a [`ShardGap`] and the shard is
//! polled again from the new position, a few times at most.

use crate::cursor::BusCursor;
use crate::error::{ConsumerError, ConsumerResult};
use crate::filter::Filter;
use net_adapter::{Adapter, ShardPollResult, StoredEvent};
use std::collections::VecDeque;
use std::sync::Arc;

/// The most events one poll returns, whatever `limit` asks for.
pub const MAX_POLL_LIMIT: usize = 10_000;

/// How many times one poll follows a moved cursor on an empty page before giving up for now.
const GAP_FOLLOWS: usize = 4;

/// How events of different shards are interleaved in a response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ordering {
    /// Per-shard order, shards interleaved round-robin (the default).
    #[default]
    Sequence,
    /// By ingestion timestamp across shards.
    Timestamp,
}

/// What to read. Build it with [`ConsumeRequest::new`] and the setters.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ConsumeRequest {
    /// The most events to return (clamped to [`MAX_POLL_LIMIT`]).
    pub limit: usize,
    /// A cursor from a previous response (`None`: from the earliest retained event).
    pub from_id: Option<String>,
    /// Only events whose payload matches are returned; the others are skipped but still
    /// move the cursor.
    pub filter: Option<Filter>,
    /// How shards are interleaved.
    pub ordering: Ordering,
    /// Only these shards (default: every shard the bus ever had, retired ones included, so
    /// that their unread events are still delivered).
    pub shards: Option<Vec<u16>>,
}

impl ConsumeRequest {
    /// A request for up to `limit` events from the start.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            from_id: None,
            filter: None,
            ordering: Ordering::default(),
            shards: None,
        }
    }

    /// Resumes from `cursor`.
    pub fn from(mut self, cursor: impl Into<String>) -> Self {
        self.from_id = Some(cursor.into());
        self
    }

    /// Filters events.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Sets the ordering.
    pub fn ordering(mut self, ordering: Ordering) -> Self {
        self.ordering = ordering;
        self
    }

    /// Restricts the shards read.
    pub fn shards(mut self, shards: Vec<u16>) -> Self {
        self.shards = Some(shards);
        self
    }
}

/// A stretch of a shard that the cursor moved over without returning events: entries trimmed
/// by retention, or entries the adapter could not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardGap {
    /// The shard.
    pub shard_id: u16,
    /// The adapter cursor asked for (`None`: the start).
    pub from: Option<String>,
    /// The adapter cursor it moved to.
    pub to: String,
}

/// A page of events.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumeResponse {
    /// The events, in the requested ordering.
    pub events: Vec<StoredEvent>,
    /// Pass it back with [`ConsumeRequest::from`] to resume right after these events.
    pub cursor: String,
    /// True when more events were waiting at the time of the call.
    pub has_more: bool,
    /// Stretches skipped without events (see [`ShardGap`]).
    pub gaps: Vec<ShardGap>,
}

struct ShardPage {
    shard_id: u16,
    events: VecDeque<StoredEvent>,
    end_cursor: String,
    adapter_has_more: bool,
}

async fn fetch(
    adapter: Arc<dyn Adapter>,
    shard_id: u16,
    mut cursor: Option<String>,
    limit: usize,
) -> ConsumerResult<(ShardPage, Vec<ShardGap>)> {
    let mut gaps = Vec::new();
    let mut follows = 0;
    loop {
        let ShardPollResult {
            events,
            cursor: next,
            has_more,
        } = adapter
            .poll_shard(shard_id, cursor.as_deref(), limit)
            .await
            .map_err(|e| match ConsumerError::from(e) {
                ConsumerError::InvalidCursor(r) => {
                    ConsumerError::InvalidCursor(format!("shard {shard_id}: {r}"))
                }
                other => other,
            })?;
        let moved = cursor.as_deref() != Some(next.as_str());
        if events.is_empty() && moved && limit > 0 {
            gaps.push(ShardGap {
                shard_id,
                from: cursor.clone(),
                to: next.clone(),
            });
            if has_more && follows < GAP_FOLLOWS {
                follows += 1;
                cursor = Some(next);
                continue;
            }
        }
        let page = ShardPage {
            shard_id,
            events: events.into(),
            end_cursor: next,
            adapter_has_more: has_more,
        };
        return Ok((page, gaps));
    }
}

/// Polls `adapter` for `request` on a bus of `shard_count` shards (ids `0..shard_count`,
/// retired ones included).
pub(crate) async fn poll(
    adapter: &Arc<dyn Adapter>,
    shard_count: usize,
    request: ConsumeRequest,
) -> ConsumerResult<ConsumeResponse> {
    let mut cursor = match request.from_id.as_deref() {
        None => BusCursor::new(),
        Some(s) => BusCursor::decode(s).map_err(|e| ConsumerError::InvalidCursor(e.to_string()))?,
    };
    if let Some(unknown) = cursor.shards().find(|&s| usize::from(s) >= shard_count) {
        return Err(ConsumerError::InvalidCursor(format!(
            "the cursor names shard {unknown}, but the bus has {shard_count} shards"
        )));
    }
    let shards: Vec<u16> = match request.shards {
        Some(mut list) => {
            list.sort_unstable();
            list.dedup();
            if let Some(&bad) = list.iter().find(|&&s| usize::from(s) >= shard_count) {
                return Err(ConsumerError::UnknownShard(bad));
            }
            list
        }
        None => (0..shard_count as u16).collect(),
    };
    let limit = request.limit.min(MAX_POLL_LIMIT);
    let per_shard = per_shard_limit(limit, shards.len());

    let mut tasks = tokio::task::JoinSet::new();
    for &shard in &shards {
        let from = cursor.get(shard).map(str::to_owned);
        tasks.spawn(fetch(adapter.clone(), shard, from, per_shard));
    }
    let mut pages = Vec::with_capacity(shards.len());
    let mut gaps = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (page, shard_gaps) = joined.map_err(|e| {
            ConsumerError::Adapter(net_adapter::AdapterError::Fatal(format!(
                "poll task failed: {e}"
            )))
        })??;
        pages.push(page);
        gaps.extend(shard_gaps);
    }
    pages.sort_unstable_by_key(|p| p.shard_id);
    gaps.sort_by_key(|g| g.shard_id);

    let events = walk(&mut pages, limit, request.filter.as_ref(), request.ordering);
    // An adapter cursor too long to encode is the adapter's fault, not the caller's.
    let unencodable = |e: crate::cursor::CursorError| {
        ConsumerError::Adapter(net_adapter::AdapterError::Fatal(format!(
            "{}: {e}",
            adapter.name()
        )))
    };
    let mut has_more = false;
    for page in pages {
        if page.events.is_empty() {
            cursor
                .set(page.shard_id, page.end_cursor)
                .map_err(unencodable)?;
            has_more |= page.adapter_has_more;
        } else {
            has_more = true;
        }
    }
    for (shard, id) in events.positions {
        cursor.set(shard, id).map_err(unencodable)?;
    }
    Ok(ConsumeResponse {
        events: events.returned,
        cursor: cursor.encode(),
        has_more,
        gaps,
    })
}

/// How many events to fetch from each shard for a poll of `limit` over `shards` shards.
///
/// Fetching `limit` from every shard would read `shards` times more than one page can hold,
/// and every event fetched but not returned is read again by the next poll (a round trip on
/// a broker). So each shard is asked for its fair share, at least 16. A page can therefore
/// hold fewer than `limit` events while `has_more` is true, when the shards are uneven.
fn per_shard_limit(limit: usize, shards: usize) -> usize {
    if shards <= 1 {
        return limit;
    }
    limit.div_ceil(shards).max(16).min(limit)
}

struct Walked {
    returned: Vec<StoredEvent>,
    /// Last walked id of shards whose page was not walked to the end.
    positions: Vec<(u16, String)>,
}

/// Walks the pages in `ordering`, returning up to `limit` matching events. Walked events are
/// removed from their page, so a page left non-empty was cut short.
fn walk(
    pages: &mut [ShardPage],
    limit: usize,
    filter: Option<&Filter>,
    ordering: Ordering,
) -> Walked {
    let mut returned = Vec::with_capacity(limit.min(1024));
    let mut last: Vec<Option<String>> = vec![None; pages.len()];
    let mut round_robin = 0usize;
    while returned.len() < limit {
        let next = match ordering {
            Ordering::Sequence => {
                let n = pages.len();
                let found = (0..n)
                    .map(|k| (round_robin + k) % n)
                    .find(|&i| !pages[i].events.is_empty());
                if let Some(i) = found {
                    round_robin = i + 1;
                }
                found
            }
            Ordering::Timestamp => {
                // A drained shard that has more data blocks the merge: its next event is
                // unknown and may be older than every event still fetched.
                if pages
                    .iter()
                    .any(|p| p.events.is_empty() && p.adapter_has_more)
                {
                    None
                } else {
                    pages
                        .iter()
                        .enumerate()
                        .filter_map(|(i, p)| p.events.front().map(|e| (e.insertion_ts, i)))
                        .min()
                        .map(|(_, i)| i)
                }
            }
        };
        let Some(i) = next else { break };
        let Some(event) = pages[i].events.pop_front() else {
            break;
        };
        last[i] = Some(event.id.clone());
        if filter.is_none_or(|f| f.matches_bytes(&event.raw)) {
            returned.push(event);
        }
    }
    let positions = pages
        .iter()
        .zip(last)
        .filter(|(p, _)| !p.events.is_empty())
        .filter_map(|(p, id)| id.map(|id| (p.shard_id, id)))
        .collect();
    Walked {
        returned,
        positions,
    }
}
