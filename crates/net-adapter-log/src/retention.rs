//! Trimming a shard: moving its log start forward and deleting the sealed segments wholly
//! below it, either on request or by the retention limits of the log's configuration.
//!
//! Only whole sealed segments are ever deleted, never part of one, and never the active
//! segment: when age alone says the active segment should go, it is sealed first. A deleted
//! segment's read handle leaves the read cache with it.

use crate::config::{FsyncPolicy, Retention};
use crate::files;
use crate::shard::{now_ns, Shard};
use crate::LogError;
use std::fs;

impl Shard {
    /// Deletes the segments wholly below `start` (never the active one).
    pub(crate) fn drop_segments_below(&mut self, start: u64) {
        while self.segments.len() > 1 && self.segments[1].base <= start {
            let old = self.segments.remove(0);
            self.readers.forget(self.id, old.base);
            self.unsynced.retain(|(base, _)| *base != old.base);
            let _ = fs::remove_file(files::segment_path(&self.dir, old.base));
            let _ = fs::remove_file(files::index_path(&self.dir, old.base));
        }
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
}
