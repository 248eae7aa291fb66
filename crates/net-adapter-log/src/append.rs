//! The write path of a shard: appending a batch all or nothing, creating the shard's
//! directory and segments on first use, and sealing the active segment when it is full.
//!
//! A batch's records are encoded into one buffer and written with one positioned write at the
//! end of the active segment; a failed write is cut back before the error is returned, and a
//! shard whose cut fails refuses further writes. [`WriteLayer`] is the seam the fault switch
//! of the test hooks plugs into.

use crate::config::{FsyncPolicy, MAX_BATCH_BYTES};
use crate::files;
use crate::record::{self, Header, MAX_PAYLOAD};
use crate::segment::{Segment, INDEX_EVERY};
use crate::shard::Shard;
use crate::sync::UNSYNCED_SEALED;
use crate::LogError;
use net_adapter::Batch;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

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

impl Shard {
    /// Creates the shard directory and the first segment.
    pub(crate) fn create(&mut self, root: &Path, sync: bool) -> Result<(), LogError> {
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
    pub(crate) fn new_segment(&mut self, sync: bool) -> Result<(), LogError> {
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
    pub(crate) fn roll(&mut self, sync: bool) -> Result<(), LogError> {
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
            ts: crate::shard::now_ns(),
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
    pub(crate) fn segment_paths(&self) -> Vec<std::path::PathBuf> {
        self.segments
            .iter()
            .map(|s| files::segment_path(&self.dir, s.base))
            .collect()
    }
}
