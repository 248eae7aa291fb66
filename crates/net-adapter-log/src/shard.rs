//! One shard's log: its segments, recovery on open, appends, reads, trimming and retention.
//!
//! A [`Shard`] lives behind a mutex in the adapter. Appends, trims, seals and retention run
//! with the mutex held; a read holds it only to take a [`ReadPlan`] (which segment files to
//! read, from which position, up to which length) and then reads the files without it, so
//! readers never wait for a writer's `fdatasync` and never block one.

use crate::config::{FsyncPolicy, Retention, MAX_BATCH_BYTES};
use crate::files::{self, Summary};
use crate::record::{self, Header, Item, Scanner, MAX_PAYLOAD};
use crate::LogError;
use bytes::Bytes;
use net_adapter::{dedup_id, Batch, StoredEvent};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// One sparse index entry per this many bytes of segment.
pub(crate) const INDEX_EVERY: u64 = 32 << 10;
/// How many producer nonces a shard remembers for retry dedup before forgetting the one
/// that wrote least recently.
const REMEMBERED_NONCES: usize = 1024;

/// What recovery found and did, summed over shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Shards opened.
    pub shards: u64,
    /// Segments opened.
    pub segments: u64,
    /// Sealed segments whose `.idx` was missing or damaged and was rebuilt by a scan.
    pub rebuilt_indexes: u64,
    /// Bytes cut off the end of active segments (torn or damaged tails, incomplete batches).
    pub truncated_bytes: u64,
    /// Intact records cut with them because their batch was incomplete.
    pub truncated_records: u64,
    /// Damaged spans kept in place because intact records follow them (readers skip them).
    pub damaged_spans: u64,
    /// Bytes in those spans.
    pub damaged_bytes: u64,
}

/// A segment file and what is known of it.
#[derive(Debug)]
struct Segment {
    base: u64,
    /// `summary.len` is the committed length (for the active segment, what writes made).
    summary: Summary,
    /// Where the next sparse index entry may start.
    next_boundary: u64,
}

impl Segment {
    fn new(base: u64) -> Self {
        Segment {
            base,
            summary: Summary::default(),
            next_boundary: 0,
        }
    }

    /// Accounts for an intact record at `pos` of `size` bytes.
    fn note(&mut self, pos: u64, size: u64, h: &Header) {
        let s = &mut self.summary;
        if pos >= self.next_boundary {
            s.entries.push((h.offset, pos as u32));
            self.next_boundary = (pos / INDEX_EVERY + 1) * INDEX_EVERY;
        }
        if s.records == 0 {
            s.first = h.offset;
        }
        s.records += 1;
        s.last = h.offset;
        s.newest_ts = s.newest_ts.max(h.ts);
        let e = s.batches.entry(h.nonce).or_insert((h.batch_start, h.count));
        if h.batch_start >= e.0 {
            *e = (h.batch_start, h.count);
        }
        s.len = s.len.max(pos + size);
    }

    /// The position to start reading offset `c` from: the last index entry at or below it.
    fn seek(&self, c: u64) -> u64 {
        let e = &self.summary.entries;
        match e.partition_point(|&(offset, _)| offset <= c) {
            0 => 0,
            i => u64::from(e[i - 1].1),
        }
    }
}

/// Per producer nonce: the highest `batch_start` stored and the offset it was stored at
/// (which orders nonces for forgetting).
#[derive(Clone, Copy, Debug)]
struct Stored {
    batch_start: u64,
    at: u64,
}

/// The log of one shard.
#[derive(Debug)]
pub(crate) struct Shard {
    id: u16,
    dir: PathBuf,
    /// Oldest first; the last one is the active segment. Empty until the first write.
    segments: Vec<Segment>,
    /// Read-write handle of the active segment.
    active: Option<File>,
    /// The log start offset: offsets below it are trimmed.
    start: u64,
    /// The offset the next record gets.
    next: u64,
    dedup: HashMap<u64, Stored>,
    /// The active segment holds writes not yet synced.
    dirty: bool,
    /// A failed write could not be undone: refuse writes until reopened.
    failed: bool,
    /// The shard directory exists and is synced into the log directory.
    created: bool,
}

/// A plan for one read, taken under the shard's lock and carried out without it.
#[derive(Debug)]
pub(crate) enum ReadPlan {
    /// The answer needs no file: a stale cursor, an empty page, an empty shard.
    Done { cursor: u64, has_more: bool },
    /// Read these segments in order.
    Read {
        from: u64,
        next: u64,
        budget: usize,
        segments: Vec<ReadSegment>,
    },
}

/// One segment of a [`ReadPlan`].
#[derive(Debug)]
pub(crate) struct ReadSegment {
    path: PathBuf,
    pos: u64,
    len: u64,
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
}

/// Why a cursor was refused.
#[derive(Debug)]
pub(crate) struct BadCursor(pub(crate) String);

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Shard {
    /// A shard with no files yet.
    pub(crate) fn empty(root: &Path, id: u16) -> Self {
        Shard {
            id,
            dir: files::shard_dir(root, id),
            segments: Vec::new(),
            active: None,
            start: 0,
            next: 0,
            dedup: HashMap::new(),
            dirty: false,
            failed: false,
            created: false,
        }
    }

    /// The offset the next record gets.
    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    /// The log start offset.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// Bytes in the shard's segment files.
    pub(crate) fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.summary.len).sum()
    }

    /// Opens the shard stored in `root/shard-NNNNN`, recovering it (see the crate docs).
    pub(crate) fn open(root: &Path, id: u16, report: &mut Recovery) -> Result<Self, LogError> {
        let mut shard = Shard::empty(root, id);
        shard.created = true;
        let dir = shard.dir.clone();
        let mut bases = Vec::new();
        let listing = fs::read_dir(&dir).map_err(|e| LogError::io("list", &dir, e))?;
        for entry in listing {
            let entry = entry.map_err(|e| LogError::io("list", &dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = files::parse_segment_name(&name) {
                bases.push(base);
            } else if name.ends_with(".tmp") {
                // A replace that never completed.
                let _ = fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();
        report.shards += 1;
        report.segments += bases.len() as u64;
        let start_file = files::load_start(&dir.join("START"));
        let count = bases.len();
        for (i, &base) in bases.iter().enumerate() {
            let path = files::segment_path(&dir, base);
            let active = i + 1 == count;
            let segment = if active {
                shard.recover_active(base, &path, report)?
            } else {
                shard.load_sealed(base, &path, report)?
            };
            shard.segments.push(segment);
        }
        if let Some(last) = shard.segments.last() {
            let path = files::segment_path(&dir, last.base);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| LogError::io("open", &path, e))?;
            shard.active = Some(file);
            shard.next = if last.summary.records > 0 {
                last.summary.last + 1
            } else {
                last.base
            };
        } else {
            shard.next = start_file.unwrap_or(0);
        }
        let first = shard.segments.first().map_or(shard.next, |s| s.base);
        shard.start = start_file.unwrap_or(0).max(first).min(shard.next);
        let known: Vec<_> = shard
            .segments
            .iter()
            .flat_map(|s| {
                s.summary
                    .batches
                    .iter()
                    .map(|(&nonce, &(start, _))| (nonce, start, s.summary.last))
            })
            .collect();
        for (nonce, batch_start, at) in known {
            shard.remember(nonce, batch_start, at);
        }
        // Segments wholly below the start (a deletion a crash interrupted).
        shard.drop_segments_below(shard.start);
        Ok(shard)
    }

    /// A sealed segment: its `.idx` if intact and matching the file, else a scan.
    fn load_sealed(
        &self,
        base: u64,
        path: &Path,
        report: &mut Recovery,
    ) -> Result<Segment, LogError> {
        let file = File::open(path).map_err(|e| LogError::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| LogError::io("stat", path, e))?
            .len();
        let idx = files::index_path(&self.dir, base);
        if let Some(summary) = fs::read(&idx).ok().and_then(|b| Summary::decode(&b)) {
            if summary.len == len {
                return Ok(Segment {
                    base,
                    summary,
                    next_boundary: 0,
                });
            }
        }
        report.rebuilt_indexes += 1;
        let (segment, scan) = scan_segment(base, &file, len, path)?;
        report.damaged_spans += scan.spans.len() as u64;
        report.damaged_bytes += scan.spans.iter().map(|(a, b)| b - a).sum::<u64>();
        tracing::warn!(
            shard = self.id,
            segment = %path.display(),
            damaged_spans = scan.spans.len(),
            "rebuilt the index of a sealed segment by scanning it"
        );
        if let Err(e) = files::replace(&idx, &segment.summary.encode()) {
            tracing::warn!(shard = self.id, error = %e, "could not write a rebuilt index");
        }
        Ok(segment)
    }

    /// The active segment: scanned record by record, its damaged or incomplete tail cut off.
    fn recover_active(
        &self,
        base: u64,
        path: &Path,
        report: &mut Recovery,
    ) -> Result<Segment, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| LogError::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| LogError::io("stat", path, e))?
            .len();
        let (segment, scan) = scan_segment(base, &file, len, path)?;
        let mid: Vec<_> = scan
            .spans
            .iter()
            .filter(|&&(_, to)| to <= scan.cut)
            .collect();
        report.damaged_spans += mid.len() as u64;
        report.damaged_bytes += mid.iter().map(|(a, b)| b - a).sum::<u64>();
        if !mid.is_empty() {
            tracing::warn!(
                shard = self.id,
                segment = %path.display(),
                spans = mid.len(),
                "damaged records inside the active segment; readers skip them"
            );
        }
        if scan.cut < len {
            file.set_len(scan.cut)
                .and_then(|()| file.sync_all())
                .map_err(|e| LogError::io("truncate the torn tail of", path, e))?;
            report.truncated_bytes += len - scan.cut;
            report.truncated_records += scan.dropped_records;
            tracing::warn!(
                shard = self.id,
                segment = %path.display(),
                bytes = len - scan.cut,
                records = scan.dropped_records,
                "cut a torn or damaged tail off the active segment"
            );
        }
        Ok(segment)
    }

    /// Deletes the segments wholly below `start` (never the active one).
    fn drop_segments_below(&mut self, start: u64) {
        while self.segments.len() > 1 && self.segments[1].base <= start {
            let old = self.segments.remove(0);
            let _ = fs::remove_file(files::segment_path(&self.dir, old.base));
            let _ = fs::remove_file(files::index_path(&self.dir, old.base));
        }
    }

    fn remember(&mut self, nonce: u64, batch_start: u64, at: u64) {
        let e = self
            .dedup
            .entry(nonce)
            .or_insert(Stored { batch_start, at });
        if batch_start >= e.batch_start {
            *e = Stored {
                batch_start,
                at: at.max(e.at),
            };
        }
        if self.dedup.len() > REMEMBERED_NONCES {
            if let Some((&oldest, _)) = self.dedup.iter().min_by_key(|(_, s)| s.at) {
                self.dedup.remove(&oldest);
            }
        }
    }

    /// True when a batch `(nonce, sequence_start)` was stored already (invariant 6).
    fn stored_already(&self, nonce: u64, sequence_start: u64) -> bool {
        self.dedup
            .get(&nonce)
            .is_some_and(|s| sequence_start <= s.batch_start)
    }

    /// Creates the shard directory and the first segment.
    fn create(&mut self, root: &Path, sync: bool) -> Result<(), LogError> {
        if !self.created {
            fs::create_dir_all(&self.dir).map_err(|e| LogError::io("create", &self.dir, e))?;
            if sync {
                files::sync_dir(root)?;
            }
            self.created = true;
        }
        if self.segments.is_empty() {
            self.new_segment(sync)?;
        }
        Ok(())
    }

    /// Starts a new active segment at `next` (the old one, if any, must be sealed first).
    fn new_segment(&mut self, sync: bool) -> Result<(), LogError> {
        let path = files::segment_path(&self.dir, self.next);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LogError::io("create", &path, e))?;
        if sync {
            files::sync_dir(&self.dir)?;
        }
        self.segments.push(Segment::new(self.next));
        self.active = Some(file);
        Ok(())
    }

    /// Seals the active segment: syncs it, starts a new one, writes the old one's `.idx`.
    fn roll(&mut self, sync: bool) -> Result<(), LogError> {
        self.sync()?;
        let old = self.segments.len() - 1;
        let sealed_base = self.segments[old].base;
        self.new_segment(sync)?;
        let idx = files::index_path(&self.dir, sealed_base);
        if let Err(e) = files::replace(&idx, &self.segments[old].summary.encode()) {
            // The index is rebuilt from the segment when missing; the data is safe.
            tracing::warn!(shard = self.id, error = %e, "could not write a segment index");
        }
        Ok(())
    }

    /// Syncs the active segment if it holds unsynced writes.
    pub(crate) fn sync(&mut self) -> Result<(), LogError> {
        if !self.dirty {
            return Ok(());
        }
        if let (Some(file), Some(seg)) = (&self.active, self.segments.last()) {
            file.sync_data()
                .map_err(|e| LogError::io("sync", files::segment_path(&self.dir, seg.base), e))?;
        }
        self.dirty = false;
        Ok(())
    }

    /// A handle to sync outside the lock, when the active segment is dirty; marks it clean
    /// (the caller marks it dirty again if the sync fails).
    pub(crate) fn take_dirty(&mut self) -> Option<File> {
        if !self.dirty {
            return None;
        }
        let file = self.active.as_ref()?.try_clone().ok()?;
        self.dirty = false;
        Some(file)
    }

    /// Marks the active segment dirty again (after a failed background sync).
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Appends `batch` (all or nothing, invariant 1) unless it was stored already.
    pub(crate) fn append(
        &mut self,
        root: &Path,
        batch: &Batch,
        segment_bytes: u64,
        fsync: FsyncPolicy,
        io: &dyn WriteLayer,
    ) -> Result<(), LogError> {
        if self.failed {
            return Err(LogError::ShardFailed { shard: self.id });
        }
        if self.stored_already(batch.process_nonce, batch.sequence_start) {
            return Ok(());
        }
        let count = u32::try_from(batch.events.len()).map_err(|_| LogError::BatchTooLarge {
            shard: self.id,
            size: u64::MAX,
            max: MAX_BATCH_BYTES,
        })?;
        let size: u64 = batch
            .events
            .iter()
            .map(|e| record::framed(e.raw.len()))
            .sum();
        if size > MAX_BATCH_BYTES {
            return Err(LogError::BatchTooLarge {
                shard: self.id,
                size,
                max: MAX_BATCH_BYTES,
            });
        }
        if let Some(e) = batch.events.iter().find(|e| e.raw.len() > MAX_PAYLOAD) {
            return Err(LogError::BatchTooLarge {
                shard: self.id,
                size: record::framed(e.raw.len()),
                max: record::framed(MAX_PAYLOAD),
            });
        }
        let sync = fsync == FsyncPolicy::EveryBatch;
        self.create(root, sync)?;
        let active_len = self.segments.last().map_or(0, |s| s.summary.len);
        if active_len > 0 && active_len + size > segment_bytes {
            self.roll(sync)?;
        }
        let mut buf = Vec::with_capacity(size as usize);
        let mut headers = Vec::with_capacity(batch.events.len());
        for (i, event) in batch.events.iter().enumerate() {
            let h = Header {
                offset: self.next + i as u64,
                ts: event.insertion_ts,
                nonce: batch.process_nonce,
                batch_start: batch.sequence_start,
                index: i as u32,
                count,
            };
            record::encode(&mut buf, &h, &event.raw);
            headers.push((h, record::framed(event.raw.len())));
        }
        self.write(&buf, sync, io)?;
        let seg = self.segments.last_mut().expect("created above");
        let mut pos = seg.summary.len;
        for (h, size) in &headers {
            seg.note(pos, *size, h);
            pos += size;
        }
        let last = self.next + u64::from(count) - 1;
        self.next += u64::from(count);
        self.remember(batch.process_nonce, batch.sequence_start, last);
        Ok(())
    }

    /// Writes `buf` at the end of the active segment with one positioned write, syncing it
    /// when `sync`; on any failure the segment is cut back to its length before the write.
    fn write(&mut self, buf: &[u8], sync: bool, io: &dyn WriteLayer) -> Result<(), LogError> {
        let seg = self.segments.last().expect("an active segment");
        let path = files::segment_path(&self.dir, seg.base);
        let at = seg.summary.len;
        let file = self.active.as_ref().expect("an active segment is open");
        let result = io
            .write_at(file, buf, at)
            .map_err(|e| LogError::io("append to", &path, e))
            .and_then(|()| {
                if sync {
                    file.sync_data().map_err(|e| LogError::io("sync", &path, e))
                } else {
                    Ok(())
                }
            });
        match result {
            Ok(()) => {
                self.dirty = !sync;
                Ok(())
            }
            Err(e) => {
                if let Err(undo) = file.set_len(at) {
                    tracing::error!(
                        shard = self.id,
                        segment = %path.display(),
                        error = %undo,
                        "could not cut a failed write back; the shard refuses writes until reopened"
                    );
                    self.failed = true;
                }
                Err(e)
            }
        }
    }

    /// Appends one damaged record (intact frame, wrong checksum) that takes the next offset.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn append_corrupt(&mut self, root: &Path) -> Result<u64, LogError> {
        self.create(root, true)?;
        let mut buf = Vec::new();
        let h = Header {
            offset: self.next,
            ts: now_ns(),
            nonce: 0,
            batch_start: 0,
            index: 0,
            count: 1,
        };
        record::encode(&mut buf, &h, b"damaged by a test hook");
        buf[4] ^= 0xff;
        self.write(&buf, true, &Direct)?;
        let seg = self.segments.last_mut().expect("created above");
        seg.summary.len += buf.len() as u64;
        let offset = self.next;
        self.next += 1;
        Ok(offset)
    }

    /// The path of the active segment and its committed length (for tests that damage it).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments
            .iter()
            .map(|s| files::segment_path(&self.dir, s.base))
            .collect()
    }

    /// Moves the log start to `start` (never backwards, never past `next`): offsets below it
    /// are trimmed, and segments wholly below it are deleted.
    ///
    /// The segments go first, then `START` is written: deleting frees room on a full disk for
    /// the new `START`, and a crash in between loses nothing, since a `START` behind the first
    /// segment counts as that segment's base. If `START` cannot be written, the start moves
    /// only as far as the first remaining segment (what a reopen would find) and the error is
    /// returned.
    pub(crate) fn set_start(&mut self, start: u64) -> Result<(), LogError> {
        let start = start.min(self.next);
        if start <= self.start {
            return Ok(());
        }
        self.drop_segments_below(start);
        let first = self.segments.first().map_or(start, |s| s.base.min(start));
        self.start = self.start.max(first);
        if self.created {
            files::replace(&self.dir.join("START"), &files::encode_start(start))?;
        }
        self.start = start;
        Ok(())
    }

    /// Applies `retention` (invariant 8); returns how many segments it deleted.
    pub(crate) fn enforce(
        &mut self,
        retention: &Retention,
        fsync: FsyncPolicy,
    ) -> Result<u64, LogError> {
        let mut deleted = 0;
        let sync = fsync == FsyncPolicy::EveryBatch;
        let now = now_ns();
        loop {
            if self.segments.is_empty() {
                return Ok(deleted);
            }
            let oldest = &self.segments[0];
            let sealed = self.segments.len() > 1;
            let aged = retention.max_age.is_some_and(|age| {
                let old = oldest.summary.newest_ts < now.saturating_sub(age.as_nanos() as u64);
                if sealed {
                    // A sealed segment without an intact record holds nothing worth keeping.
                    oldest.summary.records == 0 || old
                } else {
                    oldest.summary.records > 0 && old
                }
            });
            if self.segments.len() == 1 {
                if aged {
                    // Seal the active segment so it can go as a whole.
                    self.roll(sync)?;
                    continue;
                }
                return Ok(deleted);
            }
            let after = &self.segments[1];
            let events_left = self.next - after.base;
            let bytes_left = self.bytes() - oldest.summary.len;
            let over_events = retention.max_events.is_some_and(|m| events_left >= m);
            let over_bytes = retention.max_bytes.is_some_and(|m| bytes_left >= m);
            if !(aged || over_events || over_bytes) {
                return Ok(deleted);
            }
            let base = after.base;
            self.set_start(base)?;
            self.drop_segments_below(base);
            deleted += 1;
        }
    }

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
        let segments = self.segments[k..]
            .iter()
            .enumerate()
            .map(|(i, s)| ReadSegment {
                path: files::segment_path(&self.dir, s.base),
                pos: if i == 0 { s.seek(c) } else { 0 },
                len: s.summary.len,
                upper: self.segments.get(k + i + 1).map_or(self.next, |n| n.base),
            })
            .collect();
        Ok(ReadPlan::Read {
            from: c,
            next: self.next,
            budget,
            segments,
        })
    }
}

/// Carries out a [`ReadPlan`] without the shard's lock. `Ok(None)` means a segment vanished
/// under the read (retention deleted it): plan again.
pub(crate) fn read(shard: u16, plan: ReadPlan) -> Result<Option<Page>, LogError> {
    let (from, next, budget, segments) = match plan {
        ReadPlan::Done { cursor, has_more } => {
            return Ok(Some(Page {
                events: Vec::new(),
                cursor,
                has_more,
                damaged: 0,
            }))
        }
        ReadPlan::Read {
            from,
            next,
            budget,
            segments,
        } => (from, next, budget, segments),
    };
    let mut events = Vec::with_capacity(budget.min(1024));
    let mut damaged = 0;
    for seg in segments {
        let file = match File::open(&seg.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LogError::io("open", &seg.path, e)),
        };
        let mut scan = Scanner::new(&file, seg.pos, seg.len, None);
        while let Some(item) = scan
            .next_item()
            .map_err(|e| LogError::io("read", &seg.path, e))?
        {
            let Item::Record {
                header, payload, ..
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
                id: (header.offset + 1).to_string(),
                raw: Bytes::from(payload),
                insertion_ts: header.ts,
                shard_id: shard,
                dedup_id: Some(dedup_id(
                    header.nonce,
                    shard,
                    header.batch_start,
                    header.index as usize,
                )),
            });
            if events.len() == budget {
                let cursor = header.offset + 1;
                return Ok(Some(Page {
                    events,
                    cursor,
                    has_more: cursor < next,
                    damaged,
                }));
            }
        }
    }
    Ok(Some(Page {
        events,
        cursor: next,
        has_more: false,
        damaged,
    }))
}

/// What a scan of a whole segment found besides its records.
struct ScanResult {
    /// Damaged spans, in order.
    spans: Vec<(u64, u64)>,
    /// Where the segment's trustworthy content ends: after the last record of the last
    /// complete batch.
    cut: u64,
    /// Intact records after `cut` (of an incomplete last batch).
    dropped_records: u64,
}

/// Scans a whole segment (invariant 4): its summary up to the cut point, and what was found.
fn scan_segment(
    base: u64,
    file: &File,
    len: u64,
    path: &Path,
) -> Result<(Segment, ScanResult), LogError> {
    let mut seg = Segment::new(base);
    let mut spans = Vec::new();
    let mut scanner = Scanner::new(file, 0, len, base.checked_sub(1)).without_payloads();
    // The last batch seen: its key, how many of its records were seen, where the records
    // before it ended, and the summary as it was before it.
    let mut batch: Option<(u64, u64)> = None;
    let mut seen = 0u64;
    let mut count = 0u64;
    let mut before_end = 0u64;
    let mut before = (seg.summary.clone(), seg.next_boundary);
    let mut end = 0u64;
    while let Some(item) = scanner
        .next_item()
        .map_err(|e| LogError::io("scan", path, e))?
    {
        match item {
            Item::Damage { from, to } => spans.push((from, to)),
            Item::Record {
                pos, size, header, ..
            } => {
                let key = (header.nonce, header.batch_start);
                if batch != Some(key) || header.index == 0 {
                    batch = Some(key);
                    seen = 0;
                    count = u64::from(header.count);
                    before_end = end;
                    before = (seg.summary.clone(), seg.next_boundary);
                }
                seen += 1;
                seg.note(pos, size, &header);
                end = pos + size;
            }
        }
    }
    let _ = scanner.position();
    let mut cut = end;
    let mut dropped_records = 0;
    if batch.is_some() && seen < count {
        cut = before_end;
        dropped_records = seen;
        (seg.summary, seg.next_boundary) = before;
    }
    seg.summary.len = cut;
    Ok((
        seg,
        ScanResult {
            spans,
            cut,
            dropped_records,
        },
    ))
}

/// How appends reach the file; the fault switch of the test hooks replaces it.
pub(crate) trait WriteLayer: Send + Sync {
    /// Writes all of `buf` at `at`.
    fn write_at(&self, file: &File, buf: &[u8], at: u64) -> io::Result<()>;
}

/// Plain positioned writes.
pub(crate) struct Direct;

impl WriteLayer for Direct {
    fn write_at(&self, file: &File, buf: &[u8], at: u64) -> io::Result<()> {
        file.write_all_at(buf, at)
    }
}
