//! The embedded durable log: a [`net_adapter::Adapter`] that keeps events in segment files on
//! local disk, so they survive a restart with no server at all.
//!
//! This crate depends on `net-adapter` alone among the workspace's crates (`cargo xtask
//! boundary` checks it): it never sees net-core or a broker client.
//!
//! # Layout on disk
//!
//! ```text
//! DIR/
//!   MANIFEST                  {"format":1,"shards":null|N}, replaced atomically
//!   LOCK                      held with an exclusive advisory lock while a process has DIR open
//!   shard-00003/              one directory per shard id (five digits)
//!     00000000000000000000.log   a segment: records from log offset 0 (20-digit base offset)
//!     00000000000000000000.idx   its sparse index, written when the segment is sealed
//!     00000000000000052341.log   the active segment: the only one ever appended to
//!     START                   the shard's log start offset, when retention or a trim set one
//! ```
//!
//! Every multi-byte integer is little-endian. `MANIFEST` and `START` are written to a temporary
//! file, synced, renamed over the old one, and the directory is synced: a reader sees the old
//! file or the new one, never a torn one.
//!
//! ## The record
//!
//! One record per event; a batch is its records, written back to back by one `write`.
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..4 | `magic` | `0x4C54454E` (`NETL` read as bytes), to find record starts after damage |
//! | 4..8 | `crc` | CRC32C (Castagnoli) of bytes 8..end of the record |
//! | 8..12 | `len` | payload length in bytes (at most 16 MiB) |
//! | 12..20 | `offset` | the record's log offset: per shard, 0, 1, 2, ... with no gap |
//! | 20..28 | `ts` | insertion timestamp, ns since the Unix epoch, as the bus stamped it |
//! | 28..36 | `nonce` | the producer nonce of the record's batch |
//! | 36..44 | `batch_start` | the batch's `sequence_start` |
//! | 44..48 | `index` | the record's position within its batch |
//! | 48..52 | `count` | how many events its batch has |
//! | 52..52+len | `payload` | the event's bytes, exactly as ingested |
//!
//! A record is *intact* when its magic matches, its length fits the file, and its CRC matches.
//! The dedup id of a record is `{nonce:x}:{shard}:{batch_start}:{index}`, as for every adapter.
//! The shard is not stored: it is the directory the segment lives in.
//!
//! ## The sparse index
//!
//! One entry every 32 KiB of segment: `(offset: u64, position: u32)`, the first record at or
//! after each 32 KiB boundary. The `.idx` file of a sealed segment holds the entries, the
//! segment's length, record count, first and last offset, newest timestamp, the highest
//! `batch_start` seen per producer nonce, and a trailing CRC32C of all of it:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | `magic` `0x4954454E` (`NETI`) |
//! | 4..8 | `version` = 1 |
//! | 8..16 | `len`: the segment's length in bytes when it was sealed |
//! | 16..24 | `records`: intact records in the segment |
//! | 24..32 | `first`: offset of the first intact record (0 when none) |
//! | 32..40 | `last`: offset of the last intact record (0 when none) |
//! | 40..48 | `newest_ts`: the newest insertion timestamp |
//! | 48..52 | `E`: number of index entries |
//! | 52..56 | `N`: number of producer nonces |
//! | 56.. | `E` entries of 12 bytes: `offset: u64`, `position: u32` |
//! | then | `N` entries of 20 bytes, sorted by nonce: `nonce: u64`, `batch_start: u64`, `count: u32` |
//! | last 4 | CRC32C of every byte before it |
//!
//! A missing or damaged `.idx`, or one whose `len` differs from the segment file's length, is
//! rebuilt by scanning its segment. The active segment's index lives in memory only.
//!
//! `START` is 12 bytes: the start offset (`u64`) and a CRC32C of those 8 bytes. A missing or
//! damaged `START` counts as the first segment's base offset.
//!
//! # Invariants
//!
//! 1. **All or nothing per batch.** `on_batch` appends a batch's records with one `write` at the
//!    end of the active segment. If the write fails or is short, the segment is truncated back
//!    to its length before the write (`set_len`) before the call returns its error, so no later
//!    batch is ever appended behind a torn one.
//! 2. **Acknowledged means durable, under the default policy.** With [`FsyncPolicy::EveryBatch`]
//!    `on_batch` returns `Ok` only after `fdatasync` of the segment (and, when it created a new
//!    segment, of the shard directory). With `Interval` a background task syncs dirty segments
//!    at that period; with `Never` the OS decides. Under those two policies sealing a segment
//!    does not sync it either: it stays dirty (at most four sealed segments per shard; sealing
//!    a fifth syncs the oldest) until the next sync. `flush` syncs every dirty segment, and
//!    the directories of segments created without a sync, under every policy, so a returned
//!    `flush` means durable.
//! 3. **Offsets are dense per shard.** Record `k` of a shard has offset `k`; the cursor is the
//!    offset of the next event to read (one past the last event delivered), written as
//!    decimal text, and an event's id is its offset plus one, so it resumes right after the
//!    event. `"0"` is the start of a shard that was never trimmed, so an empty shard has a
//!    cursor too; `None` reads from the log start. A cursor past the next offset to be
//!    written is `InvalidCursor`; a cursor equal to it is the end.
//! 4. **Recovery trusts only what it checked.** On open, sealed segments with an intact `.idx`
//!    are trusted as far as their index says; the active (last) segment is scanned from its
//!    start, record by record. A record that is not intact, or whose offset is not above the
//!    previous one, starts a damaged span; the scan resynchronises as readers do (invariant
//!    5). Damage followed by intact records is kept in place and counted (it was there
//!    before later acknowledged batches, which must not be lost); damage at the end is the
//!    torn tail. The scan then also drops the records of an incomplete batch at the end
//!    (fewer than `count` records of its last batch survived), truncates the file after the
//!    last complete batch, counts the bytes and records dropped, and logs them. Nothing after
//!    the cut point is kept.
//! 5. **Damage in the middle is skipped, never trusted.** A reader that meets a damaged record
//!    inside a sealed segment (or behind a later intact record) resynchronises: it scans forward
//!    for the next magic whose record is intact and whose offset is higher, returns the events
//!    it can, and its cursor moves past the damaged span (the offsets it covered are skipped).
//!    A page made only of damage still moves the cursor.
//! 6. **Idempotent across retries and restarts.** Each shard keeps, per producer nonce, the
//!    highest `batch_start` it stored and that batch's `count`. A batch whose
//!    `sequence_start` is at or below the stored one for its nonce was stored already (the bus
//!    never retries a batch out of order on a shard, and a bus that keeps its nonce across
//!    restarts starts each life's sequence numbers above the last one's) and is acknowledged
//!    without a write. This covers every redelivery: the same value, an equal copy, and a late
//!    copy after newer batches. The map is rebuilt on open from the `.idx` summaries and the
//!    scan of the active segment, so a process killed between the write and the
//!    acknowledgement stores the retry once. It remembers the 1024 nonces that wrote last per
//!    shard.
//! 7. **Memory does not grow with the log.** Reads use positioned reads (`read_at`) on segment
//!    files; RAM holds the sparse indexes (12 bytes per 32 KiB), a bounded set of open files
//!    (the active segment of each shard and at most 64 sealed ones per log, a deleted
//!    segment's handle closed with it), where the last 256 pages ended, and one page of
//!    events at a time. A page is read with one `read_at` per segment when it fits in 2 MiB
//!    (its size estimated from the sparse index), and its payloads are slices of that read,
//!    not copies, so an event kept after its page keeps that read's bytes alive.
//! 8. **Retention by whole segments, in the background.** A task checks every shard each
//!    `retention.check_interval`: while the shard would still hold at least `max_events`
//!    events or `max_bytes` bytes without its oldest sealed segment, or that segment's newest
//!    record is older than `max_age`, the segment is deleted and `START` moves past it.
//!    The segment goes first and `START` is written after: on a full disk the deletion makes
//!    room for the new `START`, and a crash in between loses nothing, because a `START`
//!    behind the first segment counts as that segment's base. A shard thus keeps at least its
//!    limit and at most its limit plus one segment.
//!    An active segment whose records are all older than `max_age` is sealed first. A cursor
//!    below `START` is stale (contract property 9): an empty page and the cursor moved to
//!    `START`.
//! 9. **One process per directory.** `LOCK` is held with an exclusive `File::try_lock` from open
//!    to shutdown (or drop); a second open fails with [`LogError::Locked`].
//!
//! # Where the code is
//!
//! - `record`: the frame and the forward scan with resynchronisation;
//! - `files`: `MANIFEST`, `START`, `LOCK`, `.idx` and atomic replacement;
//! - `shard`: one shard's state and the bookkeeping every part of it shares (fields, accessors,
//!   the producer nonces it remembers for dedup);
//! - `segment`: a segment's summary and sparse index;
//! - `recovery`: opening a shard from disk and cutting off what a crash tore;
//! - `append`: the write path (all-or-nothing appends, new segments, sealing);
//! - `sync`: what a shard wrote but has not synced yet, and syncing it;
//! - `retention`: moving the log start and deleting whole sealed segments;
//! - `page`: read plans taken under the shard's lock and pages read without it;
//! - `read_cache`: open read handles and page ends, shared by a log's shards;
//! - `adapter`: [`LogAdapter`], the [`net_adapter::Adapter`] implementation and the
//!   background thread (interval syncs, retention);
//! - `config` and `error`: [`LogAdapterConfig`] and [`LogError`].

mod adapter;
mod append;
mod config;
mod error;
mod files;
mod page;
mod read_cache;
mod record;
mod recovery;
mod retention;
mod segment;
mod shard;
mod sync;

#[cfg(feature = "test-hooks")]
pub use adapter::LogFault;
pub use adapter::{LogAdapter, ShardUsage};
pub use config::{
    FsyncPolicy, LogAdapterConfig, Retention, MAX_BATCH_BYTES, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES,
};
pub use error::LogError;
pub use recovery::Recovery;
