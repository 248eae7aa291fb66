//! The read path of a shard, in two steps so that a read never holds the shard's lock while
//! it touches the disk.
//!
//! [`Shard::plan`] runs under the lock: it checks the cursor and lists the segment files to
//! read, where to start in the first one (where the previous page ended, when the read cache
//! remembers it, else the sparse index entry before the cursor) and how much each is expected
//! to need. [`read`] then carries the plan out without the lock and builds the page's events,
//! their ids and dedup ids included.

use crate::files;
use crate::read_cache::Readers;
use crate::record::{Header, Item, Scanner};
use crate::shard::Shard;
use crate::LogError;
use net_adapter::{dedup_id, StoredEvent};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// The most one read of a page fetches from a segment at once.
const READ_MAX: usize = 2 << 20;

/// A plan for one read, taken under the shard's lock and carried out without it.
#[derive(Debug)]
pub(crate) enum ReadPlan {
    /// The answer needs no file: a stale cursor, an empty page, an empty shard.
    Done { cursor: u64, has_more: bool },
    /// Read these segments (of the shard directory `dir`) in order.
    Read {
        from: u64,
        next: u64,
        budget: usize,
        dir: PathBuf,
        segments: Vec<ReadSegment>,
    },
}

/// One segment of a [`ReadPlan`].
#[derive(Debug)]
pub(crate) struct ReadSegment {
    base: u64,
    /// The open handle, when the plan has one (the active segment's).
    file: Option<Arc<File>>,
    pos: u64,
    len: u64,
    /// How many bytes from `pos` the page is expected to need.
    want: u64,
    /// Offsets at or above this belong to the next segment.
    upper: u64,
}

/// One page, as [`read`] found it.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) events: Vec<StoredEvent>,
    pub(crate) cursor: u64,
    pub(crate) has_more: bool,
    /// Damaged spans the read passed over.
    pub(crate) damaged: u64,
    /// Sealed segments the read had to open, for [`Shard::adopt_readers`].
    pub(crate) opened: Vec<(u64, Arc<File>)>,
}

/// Why a cursor was refused.
#[derive(Debug)]
pub(crate) struct BadCursor(pub(crate) String);

impl Shard {
    /// Validates `cursor` and plans a read of up to `budget` events after it.
    pub(crate) fn plan(&self, cursor: Option<u64>, budget: usize) -> Result<ReadPlan, BadCursor> {
        let c = cursor.unwrap_or(self.start);
        if c > self.next {
            return Err(BadCursor(format!(
                "cursor {c} is past the end {} of shard {}",
                self.next, self.id
            )));
        }
        if c < self.start {
            // Stale: retention trimmed the position (SPEC §5, contract 9).
            return Ok(ReadPlan::Done {
                cursor: self.start,
                has_more: self.start < self.next,
            });
        }
        if budget == 0 || c == self.next {
            return Ok(ReadPlan::Done {
                cursor: c,
                has_more: c < self.next,
            });
        }
        let k = self
            .segments
            .partition_point(|s| s.base <= c)
            .saturating_sub(1);
        let upto = c.saturating_add(budget as u64);
        let last = self.segments.len() - 1;
        let segments = self.segments[k..]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let pos = if i == 0 {
                    // A page that ended right before `c` in this segment tells where `c` is;
                    // anything else starts at the sparse index entry before `c`.
                    let indexed = s.seek(c);
                    match self.readers.resume_at(self.id, c) {
                        Some((base, at))
                            if base == s.base && (indexed..=s.summary.len).contains(&at) =>
                        {
                            at
                        }
                        _ => indexed,
                    }
                } else {
                    0
                };
                ReadSegment {
                    base: s.base,
                    file: if k + i == last {
                        self.active.clone()
                    } else {
                        None
                    },
                    pos,
                    len: s.summary.len,
                    want: s.read_end(upto).saturating_sub(pos),
                    upper: self.segments.get(k + i + 1).map_or(self.next, |n| n.base),
                }
            })
            .collect();
        Ok(ReadPlan::Read {
            from: c,
            next: self.next,
            budget,
            dir: self.dir.clone(),
            segments,
        })
    }

    /// Keeps the read handles a read opened, for segments that still exist (checked under
    /// the shard's lock, which deletions hold too).
    pub(crate) fn adopt_readers(&self, opened: Vec<(u64, Arc<File>)>) {
        for (base, file) in opened {
            if self.segments.iter().any(|s| s.base == base) {
                self.readers.put(self.id, base, file);
            }
        }
    }
}

/// Carries out a [`ReadPlan`] without the shard's lock. `Ok(None)` means a segment vanished
/// under the read (retention deleted it): plan again.
///
/// Each segment is read with as few positioned reads as the plan's estimate allows (one, when
/// the page fits in [`READ_MAX`]), and payloads are slices of what was read.
pub(crate) fn read(
    shard: u16,
    plan: ReadPlan,
    readers: &Readers,
) -> Result<Option<Page>, LogError> {
    let (from, next, budget, dir, segments) = match plan {
        ReadPlan::Done { cursor, has_more } => {
            return Ok(Some(Page {
                events: Vec::new(),
                cursor,
                has_more,
                damaged: 0,
                opened: Vec::new(),
            }))
        }
        ReadPlan::Read {
            from,
            next,
            budget,
            dir,
            segments,
        } => (from, next, budget, dir, segments),
    };
    let mut events = Vec::with_capacity(budget.min(1024));
    let mut damaged = 0;
    let mut opened = Vec::new();
    let mut ids = DedupIds::new(shard);
    let mut end = None;
    for seg in segments {
        let file = match seg.file.or_else(|| readers.get(shard, seg.base)) {
            Some(f) => f,
            None => {
                let path = files::segment_path(&dir, seg.base);
                match File::open(&path) {
                    Ok(f) => {
                        let f = Arc::new(f);
                        opened.push((seg.base, f.clone()));
                        f
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(LogError::io("open", &path, e)),
                }
            }
        };
        let want = usize::try_from(seg.want).unwrap_or(READ_MAX).min(READ_MAX);
        let mut scan = Scanner::new(&file, seg.pos, seg.len, None).window(want);
        while let Some(item) = scan
            .next_item()
            .map_err(|e| LogError::io("read", files::segment_path(&dir, seg.base), e))?
        {
            let Item::Record {
                header,
                payload,
                pos,
                size,
            } = item
            else {
                damaged += 1;
                continue;
            };
            if header.offset >= seg.upper {
                break;
            }
            if header.offset < from {
                continue;
            }
            events.push(StoredEvent {
                id: decimal(header.offset + 1),
                raw: payload,
                insertion_ts: header.ts,
                shard_id: shard,
                dedup_id: Some(ids.of(&header)),
            });
            if events.len() == budget {
                let cursor = header.offset + 1;
                readers.ended(shard, cursor, seg.base, pos + size);
                return Ok(Some(Page {
                    events,
                    cursor,
                    has_more: cursor < next,
                    damaged,
                    opened,
                }));
            }
        }
        end = Some((seg.base, scan.position(), seg.len));
    }
    if let Some((base, at, len)) = end {
        if at == len {
            // The next page starts where the next append will go.
            readers.ended(shard, next, base, at);
        }
    }
    Ok(Some(Page {
        events,
        cursor: next,
        has_more: false,
        damaged,
        opened,
    }))
}

/// `v` in decimal, as `v.to_string()` writes it.
fn decimal(v: u64) -> String {
    let mut s = String::with_capacity(20);
    push_decimal(&mut s, v);
    s
}

/// Appends `v` in decimal.
fn push_decimal(s: &mut String, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // ASCII digits only: always UTF-8.
    s.push_str(std::str::from_utf8(&digits[i..]).unwrap_or_default());
}

/// Builds dedup ids ([`net_adapter::dedup_id`]) of consecutive records: the part shared by a
/// batch's records (`{nonce:x}:{shard}:{batch_start}:`) is formatted once per batch.
struct DedupIds {
    shard: u16,
    batch: Option<(u64, u64)>,
    prefix: String,
}

impl DedupIds {
    fn new(shard: u16) -> Self {
        DedupIds {
            shard,
            batch: None,
            prefix: String::new(),
        }
    }

    fn of(&mut self, h: &Header) -> String {
        if self.batch != Some((h.nonce, h.batch_start)) {
            self.batch = Some((h.nonce, h.batch_start));
            // The id of index 0 without its final "0": the shared part, formatted by the one
            // function every adapter uses.
            self.prefix = dedup_id(h.nonce, self.shard, h.batch_start, 0);
            self.prefix.pop();
        }
        let mut id = String::with_capacity(self.prefix.len() + 10);
        id.push_str(&self.prefix);
        push_decimal(&mut id, u64::from(h.index));
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_as_every_adapter_writes_them() {
        for v in [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(decimal(v), v.to_string());
        }
        let mut ids = DedupIds::new(7);
        let mut h = Header {
            offset: 0,
            ts: 0,
            nonce: 0xdead_beef,
            batch_start: 0,
            index: 0,
            count: 3,
        };
        for (nonce, batch_start, index) in [
            (0xdead_beef, 0, 0),
            (0xdead_beef, 0, 1),
            (0xdead_beef, 0, 10),
            (0xdead_beef, 1024, 0),
            (0, 1024, 5),
            (u64::MAX, u64::MAX, u32::MAX),
            (0xdead_beef, 0, 2),
        ] {
            h.nonce = nonce;
            h.batch_start = batch_start;
            h.index = index;
            assert_eq!(ids.of(&h), dedup_id(nonce, 7, batch_start, index as usize));
        }
    }
}
