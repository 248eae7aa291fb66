//! `FileAdapter`: a small adapter for the net event bus that keeps one append-only log file
//! per shard, using nothing but `std::fs`.
//!
//! It is the worked example of `docs/writing-an-adapter.md` in the net repository, and passes
//! the net-adapter conformance kit (see `tests/conformance.rs`).
//!
//! # Layout
//!
//! Shard `n` lives in `<root>/shard-<n>.log`, one entry per line:
//!
//! ```text
//! #first=41                                               optional header, see retention
//! <insertion_ts> <dedup_id> <payload as hex> <checksum>   one line per event
//! ```
//!
//! The checksum is FNV-1a (64 bits, hexadecimal) over the rest of the line, so a torn or
//! altered line is recognised as corrupt and skipped.
//!
//! # Ids and cursors
//!
//! Entries are numbered 1, 2, 3, ... per shard in append order, and a number is never reused:
//! the header records the number of the first line still in the file after retention removed
//! older ones. The id of a stored event, and every cursor, is the decimal number of the last
//! entry the reader has seen; `"0"` is the position before the first entry ever written.
//! Corrupt lines are numbered like any other, which is what lets the cursor move past them.
//!
//! # Retries
//!
//! Every event is stored with its dedup id. On top of that the adapter remembers, per shard
//! and producer nonce, the first sequence number not yet stored (rebuilt from the dedup ids
//! in the file the first time a shard is touched), and acknowledges a redelivered batch
//! without writing it again.
//!
//! # Blocking
//!
//! The trait's methods are async but the file operations here are synchronous: fine for an
//! example and for small local logs. An adapter for slow storage should move them to a
//! blocking thread pool so it does not hold up the runtime's workers.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use net_adapter::{
    async_trait, Adapter, AdapterError, Batch, ShardPollResult, StoredEvent, MAX_PAGE,
};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The prefix of the optional header line that numbers the first line of a log.
const HEADER: &str = "#first=";

/// An adapter that stores each shard as an append-only log file under one directory.
#[derive(Debug)]
pub struct FileAdapter {
    root: PathBuf,
    shards: Mutex<HashMap<u16, Arc<Mutex<ShardState>>>>,
    shut_down: AtomicBool,
}

/// What the adapter remembers about one shard. Its mutex also serialises every file
/// operation on the shard, so a reader never sees half of an append.
#[derive(Debug, Default)]
struct ShardState {
    /// Per producer nonce, the first sequence number not yet stored; `None` until loaded
    /// from the file.
    high_water: Option<HashMap<u64, u64>>,
}

/// One decoded log line.
struct Entry {
    insertion_ts: u64,
    dedup_id: String,
    raw: Vec<u8>,
}

/// A shard's log as read from disk.
struct Log {
    /// The number of the first entry line.
    first: u64,
    /// The entry lines, without their line ends.
    lines: Vec<String>,
}

impl Log {
    /// The number of the last entry line (`first - 1` when there is none).
    fn last(&self) -> u64 {
        self.first - 1 + self.lines.len() as u64
    }
}

impl FileAdapter {
    /// An adapter storing its logs under `root`, which is created if missing.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        Ok(Self {
            root,
            shards: Mutex::new(HashMap::new()),
            shut_down: AtomicBool::new(false),
        })
    }

    /// The log file of `shard_id`.
    pub fn log_path(&self, shard_id: u16) -> PathBuf {
        self.root.join(format!("shard-{shard_id}.log"))
    }

    /// Retention: removes the oldest entries of `shard_id` until at most `keep` remain.
    ///
    /// The file is rewritten to a temporary file and renamed over the old one, so a crash
    /// leaves either the old log or the new one. Entry numbers do not change.
    pub fn retain_newest(&self, shard_id: u16, keep: usize) -> Result<(), AdapterError> {
        let state = self.shard(shard_id);
        let _guard = lock(&state);
        let Some(log) = read_log(&self.log_path(shard_id), shard_id)? else {
            return Ok(());
        };
        let drop = log.lines.len().saturating_sub(keep);
        if drop == 0 {
            return Ok(());
        }
        let mut text = format!("{HEADER}{}\n", log.first + drop as u64);
        for line in &log.lines[drop..] {
            text.push_str(line);
            text.push('\n');
        }
        let path = self.log_path(shard_id);
        let temporary = path.with_extension("log.tmp");
        fs::write(&temporary, text).map_err(|e| io_error("trim", shard_id, e))?;
        fs::rename(&temporary, &path).map_err(|e| io_error("trim", shard_id, e))
    }

    fn check_open(&self) -> Result<(), AdapterError> {
        if self.shut_down.load(Ordering::Acquire) {
            Err(AdapterError::Shutdown)
        } else {
            Ok(())
        }
    }

    fn shard(&self, shard_id: u16) -> Arc<Mutex<ShardState>> {
        lock(&self.shards).entry(shard_id).or_default().clone()
    }
}

/// Locks a mutex; a panic in another thread while it held the lock cannot leave the state
/// inconsistent here (the files are the state), so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Classifies an I/O failure for the bus: interruptions and timeouts are worth retrying, a
/// full disk is backpressure, and everything else (permissions, a directory where the log
/// should be, a missing root) will not fix itself, so it is fatal.
fn io_error(operation: &str, shard_id: u16, err: io::Error) -> AdapterError {
    let message = format!("file: {operation} on shard {shard_id}: {err}");
    match err.kind() {
        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            AdapterError::Transient(message)
        }
        ErrorKind::StorageFull => AdapterError::Backpressure,
        _ => AdapterError::Fatal(message),
    }
}

/// Reads the log at `path`; `None` when the shard was never written.
fn read_log(path: &Path, shard_id: u16) -> Result<Option<Log>, AdapterError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) if err.kind() == ErrorKind::InvalidData => {
            // Not UTF-8: read it lossily; the damaged lines fail their checksum.
            let bytes = fs::read(path).map_err(|e| io_error("read", shard_id, e))?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Err(err) => return Err(io_error("read", shard_id, err)),
    };
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut first = 1;
    if let Some(header) = lines.first().and_then(|l| l.strip_prefix(HEADER)) {
        first = header
            .parse::<u64>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| {
                AdapterError::Fatal(format!("file: shard {shard_id} has a damaged header"))
            })?;
        lines.remove(0);
    }
    Ok(Some(Log { first, lines }))
}

/// FNV-1a, 64 bits.
fn checksum(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The log line of one event, with its line end.
fn encode(insertion_ts: u64, dedup_id: &str, raw: &[u8]) -> String {
    let mut body = format!("{insertion_ts} {dedup_id} ");
    for byte in raw {
        // Writing into a String cannot fail.
        let _ = write!(body, "{byte:02x}");
    }
    let sum = checksum(&body);
    format!("{body} {sum:016x}\n")
}

/// Decodes one log line; `None` when it is corrupt.
fn decode(line: &str) -> Option<Entry> {
    let (body, sum) = line.rsplit_once(' ')?;
    if u64::from_str_radix(sum, 16).ok()? != checksum(body) {
        return None;
    }
    let mut fields = body.split(' ');
    let insertion_ts = fields.next()?.parse().ok()?;
    let dedup_id = fields.next()?.to_owned();
    let hex = fields.next()?;
    if fields.next().is_some() || hex.len() % 2 != 0 {
        return None;
    }
    let raw = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(Entry {
        insertion_ts,
        dedup_id,
        raw,
    })
}

/// The nonce and sequence number a dedup id names (`"{nonce:x}:{shard}:{start}:{index}"`).
fn sequence_of(dedup_id: &str) -> Option<(u64, u64)> {
    let mut parts = dedup_id.split(':');
    let nonce = u64::from_str_radix(parts.next()?, 16).ok()?;
    let _shard = parts.next()?;
    let start: u64 = parts.next()?.parse().ok()?;
    let index: u64 = parts.next()?.parse().ok()?;
    Some((nonce, start.checked_add(index)?))
}

/// Parses a cursor: the decimal number of an entry, nothing else.
fn parse_cursor(cursor: &str) -> Result<u64, AdapterError> {
    let digits = !cursor.is_empty() && cursor.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| cursor.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| {
            let shown: String = cursor.chars().take(32).collect();
            AdapterError::InvalidCursor(format!("file: {shown:?} is not an entry number"))
        })
}

#[async_trait]
impl Adapter for FileAdapter {
    async fn init(&mut self) -> Result<(), AdapterError> {
        fs::create_dir_all(&self.root)
            .map_err(|e| AdapterError::Fatal(format!("file: cannot create the log directory: {e}")))
    }

    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        self.check_open()?;
        if batch.is_empty() {
            return Ok(());
        }
        let shard_id = batch.shard_id;
        let path = self.log_path(shard_id);
        let state = self.shard(shard_id);
        let mut state = lock(&state);

        // Load what was already stored, once per shard.
        if state.high_water.is_none() {
            let mut high_water = HashMap::new();
            if let Some(log) = read_log(&path, shard_id)? {
                for entry in log.lines.iter().filter_map(|line| decode(line)) {
                    if let Some((nonce, seq)) = sequence_of(&entry.dedup_id) {
                        let next = high_water.entry(nonce).or_insert(0);
                        *next = (*next).max(seq + 1);
                    }
                }
            }
            state.high_water = Some(high_water);
        }
        let high_water = state.high_water.get_or_insert_with(HashMap::new);

        let end = batch.sequence_start.saturating_add(batch.len() as u64);
        let stored = high_water.get(&batch.process_nonce).copied().unwrap_or(0);
        if end <= stored {
            // Redelivered: every event of this batch is already in the log.
            return Ok(());
        }
        let skip = stored.saturating_sub(batch.sequence_start) as usize;
        let mut text = String::new();
        for (index, event) in batch.events.iter().enumerate().skip(skip) {
            text.push_str(&encode(
                event.insertion_ts,
                &batch.dedup_id(index),
                &event.raw,
            ));
        }
        // One write of the whole batch: a crash can only tear its last line, which then
        // fails its checksum and is skipped.
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(|e| io_error("append", shard_id, e))?;
        high_water.insert(batch.process_nonce, end);
        Ok(())
    }

    async fn poll_shard(
        &self,
        shard_id: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        self.check_open()?;
        let after = cursor.map(parse_cursor).transpose()?;
        let state = self.shard(shard_id);
        let _guard = lock(&state);
        let log = read_log(&self.log_path(shard_id), shard_id)?.unwrap_or(Log {
            first: 1,
            lines: Vec::new(),
        });
        let before_first = log.first - 1;
        let last = log.last();
        let after = after.unwrap_or(before_first);
        if after > last {
            return Err(AdapterError::InvalidCursor(format!(
                "file: cursor {after} is past the last entry {last} of shard {shard_id}"
            )));
        }
        if after < before_first {
            // Retention removed this position: an empty page moved to the earliest entry.
            return Ok(ShardPollResult {
                events: Vec::new(),
                cursor: before_first.to_string(),
                has_more: last > before_first,
            });
        }
        let start = (after - before_first) as usize;
        let mut position = after;
        let mut events = Vec::new();
        for line in log.lines[start..].iter().take(limit.min(MAX_PAGE)) {
            position += 1;
            // A corrupt line is skipped, but `position` has moved past it all the same.
            if let Some(entry) = decode(line) {
                events.push(StoredEvent {
                    id: position.to_string(),
                    raw: entry.raw.into(),
                    insertion_ts: entry.insertion_ts,
                    shard_id,
                    dedup_id: Some(entry.dedup_id),
                });
            }
        }
        Ok(ShardPollResult {
            events,
            cursor: position.to_string(),
            has_more: position < last,
        })
    }

    async fn flush(&self) -> Result<(), AdapterError> {
        self.check_open()?;
        let shards: Vec<u16> = lock(&self.shards).keys().copied().collect();
        for shard_id in shards {
            let state = self.shard(shard_id);
            let _guard = lock(&state);
            match fs::File::open(self.log_path(shard_id)) {
                Ok(file) => file
                    .sync_all()
                    .map_err(|e| io_error("flush", shard_id, e))?,
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(io_error("flush", shard_id, err)),
            }
        }
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), AdapterError> {
        self.shut_down.store(true, Ordering::Release);
        // Wait for appends in progress: each holds its shard's lock.
        let shards: Vec<_> = lock(&self.shards).values().cloned().collect();
        for state in shards {
            drop(lock(&state));
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use net_adapter::dedup_id;

    #[test]
    fn lines_round_trip_and_damage_is_detected() {
        let line = encode(42, "ab:1:0:3", b"{\"k\":\"v\"}");
        let entry = decode(line.trim_end()).expect("decodes");
        assert_eq!(entry.insertion_ts, 42);
        assert_eq!(entry.dedup_id, "ab:1:0:3");
        assert_eq!(entry.raw, b"{\"k\":\"v\"}");
        let damaged = line.trim_end().replacen("42", "43", 1);
        assert!(decode(&damaged).is_none());
        assert!(decode("").is_none());
        assert!(decode("torn").is_none());
    }

    #[test]
    fn cursors_are_plain_entry_numbers() {
        assert_eq!(parse_cursor("0").ok(), Some(0));
        assert_eq!(parse_cursor("17").ok(), Some(17));
        for bad in ["", "-1", "+1", " 1", "1.0", "x", "18446744073709551616"] {
            assert!(parse_cursor(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dedup_ids_name_their_sequence() {
        assert_eq!(sequence_of(&dedup_id(0xff, 3, 10, 2)), Some((0xff, 12)));
        assert_eq!(sequence_of("garbage"), None);
    }
}
