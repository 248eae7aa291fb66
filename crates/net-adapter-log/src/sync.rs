//! Sync bookkeeping of a shard under the policies that do not sync every batch.
//!
//! A shard remembers what it wrote but did not sync yet: the active segment (`dirty`), sealed
//! segments still holding unsynced writes (at most [`UNSYNCED_SEALED`]), and directory
//! entries created without syncing their directory. [`Shard::sync`] does all of it under the
//! lock; [`Shard::take_dirty`] hands the file handles out so the interval task can sync them
//! without holding the lock, and [`Shard::unsynced_again`] takes back the ones that failed.

use crate::files;
use crate::shard::Shard;
use crate::LogError;
use std::fs::File;
use std::sync::Arc;

/// Sealed segments with unsynced writes a shard may have before the oldest one is synced
/// on the next seal (policies other than every batch; see [`Shard::roll`]).
pub(crate) const UNSYNCED_SEALED: usize = 4;

impl Shard {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::append::Direct;
    use crate::config::FsyncPolicy;
    use crate::page::read;
    use crate::read_cache::Readers;
    use net_adapter::Batch;

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
}
