//! One shard's log: its segments, recovery on open, appends, reads, trimming and retention.
//!
//! A [`Shard`] lives behind a mutex in the adapter. Appends, trims, seals and retention run
//! with the mutex held; a read holds it only to take a [`ReadPlan`] (which segment files to
//! read, from which position, up to which length) and then reads the files without it, so
//! readers never wait for a writer's `fdatasync` and never block one.
//!
//! Reads keep files open between calls: the active segment's handle is shared with readers,
//! and sealed segments' read handles sit in [`Readers`], a small cache shared by the log's
//! shards. A segment's handle leaves the cache when the segment is deleted, so the cache never
//! holds on to the disk space of a deleted file.

use crate::config::{FsyncPolicy, Retention, MAX_BATCH_BYTES};
use crate::files::{self, Summary};
use crate::record::{self, Header, Item, Scanner, MAX_PAYLOAD};
use crate::LogError;
use net_adapter::{dedup_id, Batch, StoredEvent};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// One sparse index entry per this many bytes of segment.
pub(crate) const INDEX_EVERY: u64 = 32 << 10;
/// How many producer nonces a shard remembers for retry dedup before forgetting the one
/// that wrote least recently.
const REMEMBERED_NONCES: usize = 1024;
/// Sealed segment files a log keeps open for reads, over all its shards.
const READERS: usize = 64;
/// Sealed segments with unsynced writes a shard may have before the oldest one is synced
/// on the next seal (policies other than every batch; see [`Shard::roll`]).
const UNSYNCED_SEALED: usize = 4;
/// The most one read of a page fetches from a segment at once.
const READ_MAX: usize = 2 << 20;
/// Page ends a log remembers, over all its shards (see [`Readers`]).
const RESUMES: usize = 256;

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

    /// A position at or after the end of every record below offset `upto`: the first index
    /// entry at or above it, else the segment's length. Only sizes a read; never trusted as a
    /// record boundary.
    fn read_end(&self, upto: u64) -> u64 {
        let e = &self.summary.entries;
        e.get(e.partition_point(|&(offset, _)| offset < upto))
            .map_or(self.summary.len, |&(_, pos)| u64::from(pos))
            .min(self.summary.len)
    }
}

/// What reads keep between calls, shared by the shards of one log: read handles of sealed
/// segments (at most [`READERS`], the least recently used closed first) and where recent
/// pages ended (at most [`RESUMES`]), so that the next page of a reader starts right there
/// instead of at the sparse index entry before it.
#[derive(Debug, Default)]
pub(crate) struct Readers {
    /// `(shard, base, file)`, the most recently used last.
    open: Mutex<Vec<(u16, u64, Arc<File>)>>,
    /// `(shard, offset, base, position)`: a page that ended before `offset` ended at
    /// `position` of segment `base`, the end of an intact record or of the segment's
    /// committed bytes. The newest last.
    resume: Mutex<Vec<(u16, u64, u64, u64)>>,
}

impl Readers {
    /// Where a page ending before `offset` of `shard` ended: `(base, position)`.
    fn resume_at(&self, shard: u16, offset: u64) -> Option<(u64, u64)> {
        let resume = self.resume.lock();
        resume
            .iter()
            .rev()
            .find(|e| e.0 == shard && e.1 == offset)
            .map(|e| (e.2, e.3))
    }

    fn ended(&self, shard: u16, offset: u64, base: u64, position: u64) {
        let mut resume = self.resume.lock();
        resume.retain(|e| !(e.0 == shard && e.1 == offset));
        if resume.len() >= RESUMES {
            resume.remove(0);
        }
        resume.push((shard, offset, base, position));
    }

    fn get(&self, shard: u16, base: u64) -> Option<Arc<File>> {
        let mut open = self.open.lock();
        let i = open.iter().rposition(|e| e.0 == shard && e.1 == base)?;
        let entry = open.remove(i);
        let file = entry.2.clone();
        open.push(entry);
        Some(file)
    }

    fn put(&self, shard: u16, base: u64, file: Arc<File>) {
        let mut open = self.open.lock();
        if open.iter().any(|e| e.0 == shard && e.1 == base) {
            return;
        }
        if open.len() >= READERS {
            open.remove(0);
        }
        open.push((shard, base, file));
    }

    fn forget(&self, shard: u16, base: u64) {
        self.open.lock().retain(|e| !(e.0 == shard && e.1 == base));
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
    /// Read-write handle of the active segment, shared with readers.
    active: Option<Arc<File>>,
    /// Sealed segments (base, handle) whose writes were not synced yet: only under policies
    /// other than every batch, at most [`UNSYNCED_SEALED`].
    unsynced: Vec<(u64, Arc<File>)>,
    /// Read handles of sealed segments, shared by the log's shards.
    readers: Arc<Readers>,
    /// The log start offset: offsets below it are trimmed.
    start: u64,
    /// The offset the next record gets.
    next: u64,
    dedup: HashMap<u64, Stored>,
    /// The active segment holds writes not yet synced.
    dirty: bool,
    /// A failed write could not be undone: refuse writes until reopened.
    failed: bool,
    /// The shard directory exists (and is synced into the log directory, unless
    /// `dirs_unsynced`).
    created: bool,
    /// A directory entry (the shard directory, a segment) was created without syncing its
    /// directory: the next `sync` does it.
    dirs_unsynced: bool,
}

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

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Shard {
    /// A shard with no files yet.
    pub(crate) fn empty(root: &Path, id: u16, readers: Arc<Readers>) -> Self {
        Shard {
            id,
            dir: files::shard_dir(root, id),
            segments: Vec::new(),
            active: None,
            unsynced: Vec::new(),
            readers,
            start: 0,
            next: 0,
            dedup: HashMap::new(),
            dirty: false,
            failed: false,
            created: false,
            dirs_unsynced: false,
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
    pub(crate) fn open(
        root: &Path,
        id: u16,
        report: &mut Recovery,
        readers: Arc<Readers>,
    ) -> Result<Self, LogError> {
        let mut shard = Shard::empty(root, id, readers);
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
            shard.active = Some(Arc::new(file));
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
            self.readers.forget(self.id, old.base);
            self.unsynced.retain(|(base, _)| *base != old.base);
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
            } else {
                self.dirs_unsynced = true;
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
        } else {
            self.dirs_unsynced = true;
        }
        self.segments.push(Segment::new(self.next));
        let old = self.active.replace(Arc::new(file));
        if let (Some(old), Some(sealed)) = (old, self.segments.iter().rev().nth(1)) {
            // The sealed segment is the likeliest to be read next: keep its handle.
            self.readers.put(self.id, sealed.base, old);
        }
        Ok(())
    }

    /// Seals the active segment: starts a new one and writes the old one's `.idx`.
    ///
    /// When `sync` (every batch), everything is synced first, as every write already was.
    /// Otherwise the sealed segment's unsynced writes are left to the OS, as its policy
    /// allows, and the segment joins `unsynced`, which `sync` (that is, `flush` and the
    /// interval task) drains; when [`UNSYNCED_SEALED`] wait there already, the oldest is
    /// synced now, so a shard never holds many open handles for it.
    fn roll(&mut self, sync: bool) -> Result<(), LogError> {
        if sync {
            self.sync()?;
        }
        while self.unsynced.len() >= UNSYNCED_SEALED {
            let (base, file) = &self.unsynced[0];
            file.sync_data()
                .map_err(|e| LogError::io("sync", files::segment_path(&self.dir, *base), e))?;
            self.unsynced.remove(0);
        }
        let old = self.segments.len() - 1;
        let sealed_base = self.segments[old].base;
        if self.dirty {
            if let Some(file) = &self.active {
                self.unsynced.push((sealed_base, file.clone()));
            }
            self.dirty = false;
        }
        self.new_segment(sync)?;
        let idx = files::index_path(&self.dir, sealed_base);
        if let Err(e) = files::replace(&idx, &self.segments[old].summary.encode()) {
            // The index is rebuilt from the segment when missing; the data is safe.
            tracing::warn!(shard = self.id, error = %e, "could not write a segment index");
        }
        Ok(())
    }

    /// Syncs every segment that holds unsynced writes (sealed ones waiting in `unsynced`,
    /// then the active one) and the directories of entries created without a sync.
    pub(crate) fn sync(&mut self) -> Result<(), LogError> {
        if self.dirs_unsynced {
            if let Some(root) = self.dir.parent() {
                files::sync_dir(root)?;
            }
            files::sync_dir(&self.dir)?;
            self.dirs_unsynced = false;
        }
        while let Some((base, file)) = self.unsynced.first() {
            file.sync_data()
                .map_err(|e| LogError::io("sync", files::segment_path(&self.dir, *base), e))?;
            self.unsynced.remove(0);
        }
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

    /// Handles to sync outside the lock: the sealed segments waiting in `unsynced` and the
    /// active one when dirty; marks them clean (the caller hands back with
    /// [`Shard::unsynced_again`] any whose sync failed).
    pub(crate) fn take_dirty(&mut self) -> Vec<(u64, Arc<File>)> {
        if self.dirs_unsynced {
            // Rare (a new segment or shard directory) and quick: done here, under the lock.
            let synced = self
                .dir
                .parent()
                .map_or(Ok(()), files::sync_dir)
                .and_then(|()| files::sync_dir(&self.dir));
            match synced {
                Ok(()) => self.dirs_unsynced = false,
                Err(error) => tracing::error!(shard = self.id, %error, "background sync failed"),
            }
        }
        let mut out = std::mem::take(&mut self.unsynced);
        if self.dirty {
            if let (Some(file), Some(seg)) = (&self.active, self.segments.last()) {
                out.push((seg.base, file.clone()));
            }
            self.dirty = false;
        }
        out
    }

    /// Takes back a segment whose background sync failed: the next sync tries it again.
    pub(crate) fn unsynced_again(&mut self, base: u64, file: Arc<File>) {
        if self.segments.iter().any(|s| s.base == base) {
            self.unsynced.push((base, file));
        }
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

    /// Appends `batch` (all or nothing, invariant 1) unless it was stored already; `buf` is
    /// scratch space for the encoded records, reused from call to call.
    pub(crate) fn append(
        &mut self,
        root: &Path,
        batch: &Batch,
        segment_bytes: u64,
        fsync: FsyncPolicy,
        io: &dyn WriteLayer,
        buf: &mut Vec<u8>,
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
        let (size, largest) = batch.events.iter().fold((0, 0), |(size, largest), e| {
            (size + record::framed(e.raw.len()), e.raw.len().max(largest))
        });
        if size > MAX_BATCH_BYTES {
            return Err(LogError::BatchTooLarge {
                shard: self.id,
                size,
                max: MAX_BATCH_BYTES,
            });
        }
        if largest > MAX_PAYLOAD {
            return Err(LogError::BatchTooLarge {
                shard: self.id,
                size: record::framed(largest),
                max: record::framed(MAX_PAYLOAD),
            });
        }
        let sync = fsync == FsyncPolicy::EveryBatch;
        self.create(root, sync)?;
        let active_len = self.segments.last().map_or(0, |s| s.summary.len);
        if active_len > 0 && active_len + size > segment_bytes {
            self.roll(sync)?;
        }
        buf.clear();
        buf.reserve(size as usize);
        let mut newest_ts = 0;
        for (i, event) in batch.events.iter().enumerate() {
            let h = Header {
                offset: self.next + i as u64,
                ts: event.insertion_ts,
                nonce: batch.process_nonce,
                batch_start: batch.sequence_start,
                index: i as u32,
                count,
            };
            record::encode(buf, &h, &event.raw);
            newest_ts = newest_ts.max(event.insertion_ts);
        }
        self.write(buf, sync, io)?;
        let seg = self.segments.last_mut().expect("created above");
        let first = self.next;
        let last = first + u64::from(count) - 1;
        // What `Segment::note` does per record, done once for the batch.
        let mut pos = seg.summary.len;
        for (i, event) in batch.events.iter().enumerate() {
            if pos >= seg.next_boundary {
                seg.summary.entries.push((first + i as u64, pos as u32));
                seg.next_boundary = (pos / INDEX_EVERY + 1) * INDEX_EVERY;
            }
            pos += record::framed(event.raw.len());
        }
        let s = &mut seg.summary;
        if s.records == 0 {
            s.first = first;
        }
        s.records += u64::from(count);
        s.last = last;
        s.newest_ts = s.newest_ts.max(newest_ts);
        let e = s
            .batches
            .entry(batch.process_nonce)
            .or_insert((batch.sequence_start, count));
        if batch.sequence_start >= e.0 {
            *e = (batch.sequence_start, count);
        }
        s.len = pos;
        self.next = last + 1;
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

    fn batch(start: u64, n: u64) -> Batch {
        Batch {
            shard_id: 3,
            events: (start..start + n)
                .map(|q| net_adapter::BatchEvent {
                    raw: bytes::Bytes::from(format!("event {q:04} {}", "x".repeat(200))),
                    insertion_ts: 1_000 + q,
                    shard_id: 3,
                })
                .collect(),
            sequence_start: start,
            process_nonce: 42,
        }
    }

    /// Reads the whole shard page by page; returns the payloads' first words.
    fn read_all(shard: &Shard, page: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let plan = shard.plan(cursor, page).unwrap();
            let p = read(shard.id, plan, &shard.readers).unwrap().unwrap();
            shard.adopt_readers(p.opened);
            out.extend(
                p.events
                    .iter()
                    .map(|e| String::from_utf8_lossy(&e.raw[..10]).into_owned()),
            );
            cursor = Some(p.cursor);
            if !p.has_more {
                return out;
            }
        }
    }

    #[test]
    fn unsynced_seals_stay_bounded_and_sync_drains_them() {
        let dir = tempfile::tempdir().unwrap();
        let readers = Arc::new(Readers::default());
        let mut shard = Shard::empty(dir.path(), 3, readers);
        let mut buf = Vec::new();
        // About 5.3 KB per batch into 8 KiB segments: a seal every other batch or so.
        for b in 0..40 {
            shard
                .append(
                    dir.path(),
                    &batch(b * 20, 20),
                    8 << 10,
                    FsyncPolicy::Never,
                    &Direct,
                    &mut buf,
                )
                .unwrap();
            assert!(shard.unsynced.len() <= UNSYNCED_SEALED);
        }
        assert!(shard.segments.len() > 10);
        assert!(!shard.unsynced.is_empty());
        assert!(shard.dirty && shard.dirs_unsynced);
        shard.sync().unwrap();
        assert!(shard.unsynced.is_empty() && !shard.dirty && !shard.dirs_unsynced);
        // Pages of every size read the same events, whether they resume where the last page
        // ended or start from the sparse index.
        let all: Vec<String> = (0..800).map(|q| format!("event {q:04}")).collect();
        for page in [1, 7, 20, 333, 10_000] {
            assert_eq!(read_all(&shard, page), all, "pages of {page}");
        }
        assert!(!shard.readers.open.lock().is_empty());

        // Trimming deletes sealed segments and drops their read handles; a read after the
        // trim sees what is left.
        let first_kept = shard.segments[5].base;
        shard.set_start(first_kept).unwrap();
        let bases: Vec<u64> = shard.segments.iter().map(|s| s.base).collect();
        assert!(shard
            .readers
            .open
            .lock()
            .iter()
            .all(|(_, base, _)| bases.contains(base)));
        assert_eq!(read_all(&shard, 50), all[first_kept as usize..]);
    }

    #[test]
    fn read_end_bounds_every_record_below_it() {
        let mut s = Segment::new(100);
        s.summary.entries = vec![(100, 0), (300, 32_800), (500, 65_600)];
        s.summary.len = 90_000;
        assert_eq!(s.read_end(100), 0);
        assert_eq!(s.read_end(101), 32_800);
        assert_eq!(s.read_end(300), 32_800);
        assert_eq!(s.read_end(301), 65_600);
        assert_eq!(s.read_end(501), 90_000);
        assert_eq!(s.read_end(u64::MAX), 90_000);
    }
}
