//! The state of one shard's log and the few operations every part of it shares.
//!
//! A [`Shard`] lives behind a mutex in the adapter. Appends, trims, seals and retention run
//! with the mutex held; a read holds it only to take a plan of which segment files to read
//! and then reads them without it, so readers never wait for a writer's `fdatasync` and never
//! block one.
//!
//! This file holds the shard's fields, its constructor and accessors, and the memory of which
//! batches each producer already stored. The rest of `impl Shard` is split by what it does:
//! opening and repairing (`recovery`), appending and sealing (`append`), syncing (`sync`),
//! trimming and retention (`retention`) and planning reads (`page`). Each of those files
//! builds on this one; this one needs none of them.

use crate::files;
use crate::read_cache::Readers;
use crate::segment::Segment;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// How many producer nonces a shard remembers for retry dedup before forgetting the one
/// that wrote least recently.
const REMEMBERED_NONCES: usize = 1024;

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
    pub(crate) id: u16,
    pub(crate) dir: PathBuf,
    /// Oldest first; the last one is the active segment. Empty until the first write.
    pub(crate) segments: Vec<Segment>,
    /// Read-write handle of the active segment, shared with readers.
    pub(crate) active: Option<Arc<File>>,
    /// Sealed segments (base, handle) whose writes were not synced yet: only under policies
    /// other than every batch, at most [`UNSYNCED_SEALED`](crate::sync::UNSYNCED_SEALED).
    pub(crate) unsynced: Vec<(u64, Arc<File>)>,
    /// Read handles of sealed segments, shared by the log's shards.
    pub(crate) readers: Arc<Readers>,
    /// The log start offset: offsets below it are trimmed.
    pub(crate) start: u64,
    /// The offset the next record gets.
    pub(crate) next: u64,
    dedup: HashMap<u64, Stored>,
    /// The active segment holds writes not yet synced.
    pub(crate) dirty: bool,
    /// A failed write could not be undone: refuse writes until reopened.
    pub(crate) failed: bool,
    /// The shard directory exists (and is synced into the log directory, unless
    /// `dirs_unsynced`).
    pub(crate) created: bool,
    /// A directory entry (the shard directory, a segment) was created without syncing its
    /// directory: the next `sync` does it.
    pub(crate) dirs_unsynced: bool,
}

/// Now, in nanoseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ns() -> u64 {
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

    pub(crate) fn remember(&mut self, nonce: u64, batch_start: u64, at: u64) {
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
    pub(crate) fn stored_already(&self, nonce: u64, sequence_start: u64) -> bool {
        self.dedup
            .get(&nonce)
            .is_some_and(|s| sequence_start <= s.batch_start)
    }
}
