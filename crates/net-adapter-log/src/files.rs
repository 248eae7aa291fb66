//! The small files beside the segments: `MANIFEST`, `START`, `LOCK` and the sealed segments'
//! `.idx` summaries, plus the atomic replace they share and the file names.

use crate::LogError;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The manifest format this version writes and reads.
pub(crate) const FORMAT: u64 = 1;
/// `NETI` read as bytes: the first four bytes of a `.idx` file.
const IDX_MAGIC: u32 = 0x4954_454E;
/// The version of the `.idx` layout.
const IDX_VERSION: u32 = 1;

/// The directory of `shard`.
pub(crate) fn shard_dir(root: &Path, shard: u16) -> PathBuf {
    root.join(format!("shard-{shard:05}"))
}

/// The shard id of a directory name `shard-NNNNN`.
pub(crate) fn parse_shard_dir(name: &str) -> Option<u16> {
    let digits = name.strip_prefix("shard-")?;
    if digits.len() != 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment file of base offset `base`.
pub(crate) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// The index file of base offset `base`.
pub(crate) fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.idx"))
}

/// The base offset of a segment file name `NNNNNNNNNNNNNNNNNNNN.log`.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Syncs a directory, so a file created, renamed or removed in it stays so after a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("sync directory", dir, e))
}

/// Replaces `path` with `bytes`: a temporary file is written and synced, renamed over `path`,
/// and the directory synced, so a reader sees the old content or the new, never a mix.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let tmp = path.with_extension("tmp");
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(LogError::io("write", &tmp, e));
    }
    fs::rename(&tmp, path).map_err(|e| LogError::io("rename into place", path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// What `MANIFEST` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// The shard count recorded by the first bus, if any.
    pub(crate) shards: Option<u16>,
}

impl Manifest {
    pub(crate) fn encode(&self) -> String {
        match self.shards {
            Some(n) => format!("{{\"format\":{FORMAT},\"shards\":{n}}}"),
            None => format!("{{\"format\":{FORMAT},\"shards\":null}}"),
        }
    }

    pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<Self, LogError> {
        let bad = |reason: String| LogError::Manifest {
            path: path.to_owned(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON ({e})")))?;
        let format = value
            .get("format")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad("`format` is missing or not a number".into()))?;
        if format > FORMAT {
            return Err(LogError::FutureFormat {
                path: path.to_owned(),
                found: format,
                supported: FORMAT,
            });
        }
        if format != FORMAT {
            return Err(bad(format!(
                "format {format} is not one this version reads"
            )));
        }
        let shards = match value.get("shards") {
            None | Some(serde_json::Value::Null) => None,
            Some(n) => Some(
                n.as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad(format!("`shards` {n} is not a count from 1 to 65535")))?,
            ),
        };
        Ok(Manifest { shards })
    }

    /// Reads `path`, or `None` when it does not exist.
    pub(crate) fn load(path: &Path) -> Result<Option<Self>, LogError> {
        match fs::read(path) {
            Ok(bytes) => Self::decode(&bytes, path).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LogError::io("read", path, e)),
        }
    }

    pub(crate) fn store(&self, path: &Path) -> Result<(), LogError> {
        replace(path, self.encode().as_bytes())
    }
}

/// `START`: the log start offset (8 bytes) and a CRC32C of them (4 bytes).
pub(crate) fn encode_start(start: u64) -> [u8; 12] {
    let mut b = [0; 12];
    b[..8].copy_from_slice(&start.to_le_bytes());
    let crc = crc32c::crc32c(&b[..8]);
    b[8..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Reads a `START` file; `None` when it is missing or damaged (the caller then falls back to
/// the first segment's base, which hides nothing that was kept).
pub(crate) fn load_start(path: &Path) -> Option<u64> {
    let b = fs::read(path).ok()?;
    if b.len() != 12 {
        tracing::warn!(path = %path.display(), "START file has the wrong size; ignored");
        return None;
    }
    let crc = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if crc != crc32c::crc32c(&b[..8]) {
        tracing::warn!(path = %path.display(), "START file fails its checksum; ignored");
        return None;
    }
    let mut v = [0; 8];
    v.copy_from_slice(&b[..8]);
    Some(u64::from_le_bytes(v))
}

/// Opens (creating) `LOCK` in `dir` and takes an exclusive advisory lock on it.
pub(crate) fn lock(dir: &Path) -> Result<File, LogError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(LogError::Locked {
            path: dir.to_owned(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(LogError::io("lock", &path, e)),
    }
}

/// The summary of a sealed segment, as its `.idx` file stores it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// The segment's length in bytes when it was sealed.
    pub(crate) len: u64,
    /// Intact records in the segment.
    pub(crate) records: u64,
    /// Offsets of the first and last intact record (both 0 when there is none).
    pub(crate) first: u64,
    pub(crate) last: u64,
    /// The newest insertion timestamp in the segment.
    pub(crate) newest_ts: u64,
    /// The sparse index: `(offset, position)` of the first record at or after each boundary.
    pub(crate) entries: Vec<(u64, u32)>,
    /// Per producer nonce, the highest `batch_start` in the segment and that batch's count.
    pub(crate) batches: HashMap<u64, (u64, u32)>,
}

impl Summary {
    /// The `.idx` bytes: see the crate docs for the layout.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(60 + self.entries.len() * 12 + self.batches.len() * 20);
        b.extend_from_slice(&IDX_MAGIC.to_le_bytes());
        b.extend_from_slice(&IDX_VERSION.to_le_bytes());
        for v in [
            self.len,
            self.records,
            self.first,
            self.last,
            self.newest_ts,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.batches.len() as u32).to_le_bytes());
        for &(offset, pos) in &self.entries {
            b.extend_from_slice(&offset.to_le_bytes());
            b.extend_from_slice(&pos.to_le_bytes());
        }
        let mut nonces: Vec<_> = self.batches.iter().collect();
        nonces.sort();
        for (&nonce, &(start, count)) in nonces {
            b.extend_from_slice(&nonce.to_le_bytes());
            b.extend_from_slice(&start.to_le_bytes());
            b.extend_from_slice(&count.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads `.idx` bytes; `None` when they are not an intact index.
    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < 60 {
            return None;
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?))
        };
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?))
        };
        if u32_at(0)? != IDX_MAGIC || u32_at(4)? != IDX_VERSION {
            return None;
        }
        let n_entries = u32_at(48)? as usize;
        let n_batches = u32_at(52)? as usize;
        if body.len() != 56 + n_entries * 12 + n_batches * 20 {
            return None;
        }
        let mut s = Summary {
            len: u64_at(8)?,
            records: u64_at(16)?,
            first: u64_at(24)?,
            last: u64_at(32)?,
            newest_ts: u64_at(40)?,
            entries: Vec::with_capacity(n_entries),
            batches: HashMap::with_capacity(n_batches),
        };
        let mut at = 56;
        for _ in 0..n_entries {
            s.entries.push((u64_at(at)?, u32_at(at + 8)?));
            at += 12;
        }
        for _ in 0..n_batches {
            s.batches
                .insert(u64_at(at)?, (u64_at(at + 8)?, u32_at(at + 16)?));
            at += 20;
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_manifest(text: &str, expected: Result<Option<u16>, &str>) {
        match (Manifest::decode(text.as_bytes(), Path::new("M")), expected) {
            (Ok(m), Ok(shards)) => assert_eq!(m.shards, shards, "{text}"),
            (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{text}: {e}"),
            (got, want) => panic!("{text}: got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn manifests() {
        check_manifest(r#"{"format":1,"shards":null}"#, Ok(None));
        check_manifest(r#"{"format":1}"#, Ok(None));
        check_manifest(r#"{"format":1,"shards":16}"#, Ok(Some(16)));
        check_manifest(r#"{"format":2,"shards":16}"#, Err("format 2"));
        check_manifest(r#"{"format":0,"shards":16}"#, Err("format 0"));
        check_manifest(r#"{"shards":16}"#, Err("`format`"));
        check_manifest(r#"{"format":1,"shards":0}"#, Err("`shards`"));
        check_manifest(r#"{"format":1,"shards":70000}"#, Err("`shards`"));
        check_manifest("", Err("not JSON"));
        assert!(matches!(
            Manifest::decode(br#"{"format":7}"#, Path::new("M")),
            Err(LogError::FutureFormat { found: 7, .. })
        ));
        for m in [Manifest { shards: None }, Manifest { shards: Some(9) }] {
            assert_eq!(
                Manifest::decode(m.encode().as_bytes(), Path::new("M")).unwrap(),
                m
            );
        }
        // The manifest with shards is exactly the stream layout record.
        assert_eq!(
            Manifest { shards: Some(16) }.encode(),
            net_adapter::StreamLayout::new(16).encode()
        );
    }

    #[test]
    fn names() {
        assert_eq!(parse_shard_dir("shard-00003"), Some(3));
        assert_eq!(parse_shard_dir("shard-65535"), Some(65535));
        assert_eq!(parse_shard_dir("shard-65536"), None);
        assert_eq!(parse_shard_dir("shard-3"), None);
        let p = segment_path(Path::new("d"), 52341);
        assert_eq!(p, Path::new("d/00000000000000052341.log"));
        assert_eq!(parse_segment_name("00000000000000052341.log"), Some(52341));
        assert_eq!(parse_segment_name("0000000000000005234.log"), None);
        assert_eq!(parse_segment_name("00000000000000052341.idx"), None);
    }

    #[test]
    fn start_and_summary_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("START");
        replace(&p, &encode_start(42)).unwrap();
        assert_eq!(load_start(&p), Some(42));
        let mut b = fs::read(&p).unwrap();
        b[0] ^= 1;
        fs::write(&p, &b).unwrap();
        assert_eq!(load_start(&p), None);

        let s = Summary {
            len: 1000,
            records: 3,
            first: 10,
            last: 12,
            newest_ts: 99,
            entries: vec![(10, 0), (12, 40000)],
            batches: [(7, (5, 2)), (8, (0, 1))].into_iter().collect(),
        };
        let bytes = s.encode();
        assert_eq!(bytes.len(), 60 + 24 + 40);
        assert_eq!(Summary::decode(&bytes), Some(s));
        for i in 0..bytes.len() {
            let mut d = bytes.clone();
            d[i] ^= 0x10;
            assert_eq!(Summary::decode(&d), None, "flip at {i}");
        }
        assert_eq!(Summary::decode(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        assert!(matches!(lock(dir.path()), Err(LogError::Locked { .. })));
        drop(held);
        lock(dir.path()).unwrap();
    }
}
