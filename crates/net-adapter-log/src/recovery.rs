//! Opening a shard that is already on disk, and repairing what a crash left behind.
//!
//! Sealed segments are taken from their `.idx` when it is intact and matches the file, and
//! scanned otherwise. The active segment is always scanned: its damaged or incomplete tail
//! (a batch whose records did not all reach the disk) is cut off, damage in the middle is
//! counted and left for readers to skip. Segments a crash left wholly below the log start are
//! deleted. [`Recovery`] sums up what was found.

use crate::files::{self, Summary};
use crate::read_cache::Readers;
use crate::record::{Item, Scanner};
use crate::segment::Segment;
use crate::shard::Shard;
use crate::LogError;
use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

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

impl Shard {
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
