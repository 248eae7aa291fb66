//! What reads keep from one call to the next, shared by every shard of a log: open handles
//! of sealed segments, so a page does not reopen its file, and where recent pages ended, so
//! the following page starts exactly there. The cache drops a segment's handle when the
//! segment is deleted, so it never keeps a deleted file's disk space in use.

use parking_lot::Mutex;
use std::fs::File;
use std::sync::Arc;

/// Sealed segment files a log keeps open for reads, over all its shards.
const READERS: usize = 64;
/// Page ends a log remembers, over all its shards (see [`Readers`]).
const RESUMES: usize = 256;

/// What reads keep between calls, shared by the shards of one log: read handles of sealed
/// segments (at most [`READERS`], the least recently used closed first) and where recent
/// pages ended (at most [`RESUMES`]), so that the next page of a reader starts right there
/// instead of at the sparse index entry before it.
#[derive(Debug, Default)]
pub(crate) struct Readers {
    /// `(shard, base, file)`, the most recently used last.
    pub(crate) open: Mutex<Vec<(u16, u64, Arc<File>)>>,
    /// `(shard, offset, base, position)`: a page that ended before `offset` ended at
    /// `position` of segment `base`, the end of an intact record or of the segment's
    /// committed bytes. The newest last.
    resume: Mutex<Vec<(u16, u64, u64, u64)>>,
}

impl Readers {
    /// Where a page ending before `offset` of `shard` ended: `(base, position)`.
    pub(crate) fn resume_at(&self, shard: u16, offset: u64) -> Option<(u64, u64)> {
        let resume = self.resume.lock();
        resume
            .iter()
            .rev()
            .find(|e| e.0 == shard && e.1 == offset)
            .map(|e| (e.2, e.3))
    }

    pub(crate) fn ended(&self, shard: u16, offset: u64, base: u64, position: u64) {
        let mut resume = self.resume.lock();
        resume.retain(|e| !(e.0 == shard && e.1 == offset));
        if resume.len() >= RESUMES {
            resume.remove(0);
        }
        resume.push((shard, offset, base, position));
    }

    pub(crate) fn get(&self, shard: u16, base: u64) -> Option<Arc<File>> {
        let mut open = self.open.lock();
        let i = open.iter().rposition(|e| e.0 == shard && e.1 == base)?;
        let entry = open.remove(i);
        let file = entry.2.clone();
        open.push(entry);
        Some(file)
    }

    pub(crate) fn put(&self, shard: u16, base: u64, file: Arc<File>) {
        let mut open = self.open.lock();
        if open.iter().any(|e| e.0 == shard && e.1 == base) {
            return;
        }
        if open.len() >= READERS {
            open.remove(0);
        }
        open.push((shard, base, file));
    }

    pub(crate) fn forget(&self, shard: u16, base: u64) {
        self.open.lock().retain(|e| !(e.0 == shard && e.1 == base));
    }
}
