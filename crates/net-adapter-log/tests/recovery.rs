//! Torn and corrupt data: a newest segment cut at every byte of its last records, random
//! bytes flipped in sealed segments and their indexes, damage inside the active segment.
//! Reopening never panics, keeps every intact record, drops only the damaged part, counts it,
//! and a consumer's cursor moves past it.

mod support;

use net_adapter::Adapter;
use net_adapter_log::{LogAdapter, LogAdapterConfig};
use std::collections::BTreeMap;
use std::path::Path;
use support::{batch, copy_log, read_all, records_of, runtime, seq_of, Rng};

fn open(dir: &Path, segment_bytes: u64) -> LogAdapter {
    LogAdapter::open(LogAdapterConfig::new(dir).segment_bytes(segment_bytes)).expect("open")
}

/// Writes batches of the given sizes to shard 0; returns the segment length after each.
fn write(dir: &Path, segment_bytes: u64, sizes: &[u64]) -> Vec<u64> {
    let rt = runtime();
    let log = open(dir, segment_bytes);
    let mut ends = Vec::new();
    let mut seq = 0;
    for &n in sizes {
        rt.block_on(log.on_batch(batch(0, 7, seq, n))).unwrap();
        seq += n;
        let paths = log.segment_paths(0);
        ends.push(std::fs::metadata(paths.last().unwrap()).unwrap().len());
    }
    drop(log);
    ends
}

#[test]
fn torn_tail_at_every_byte_of_the_last_batches() {
    let original = tempfile::tempdir().unwrap();
    let sizes = [3u64, 1, 4, 2, 5, 1, 3];
    let ends = write(original.path(), 1 << 20, &sizes);
    let segment = original
        .path()
        .join("shard-00000")
        .join("00000000000000000000.log");
    let bytes = std::fs::read(&segment).unwrap();
    assert_eq!(bytes.len() as u64, *ends.last().unwrap());
    let rt = runtime();
    // Every cut from the end of the fourth batch to the full length.
    let from = ends[3];
    let mut cases = 0;
    for cut in from..=bytes.len() as u64 {
        let dir = tempfile::tempdir().unwrap();
        copy_log(original.path(), dir.path());
        let path = dir
            .path()
            .join("shard-00000")
            .join("00000000000000000000.log");
        std::fs::write(&path, &bytes[..cut as usize]).unwrap();
        let log = open(dir.path(), 1 << 20);
        // The batches that ended at or before the cut survive whole; nothing else.
        let complete = ends.iter().take_while(|&&e| e <= cut).count();
        let kept_end = ends[complete - 1];
        let expected: u64 = sizes[..complete].iter().sum();
        let events = rt.block_on(read_all(&log, 0, 3));
        let seqs: Vec<u64> = events.iter().map(seq_of).collect();
        assert_eq!(seqs, (0..expected).collect::<Vec<_>>(), "cut at {cut}");
        let recovery = log.recovery();
        assert_eq!(recovery.truncated_bytes, cut - kept_end, "cut at {cut}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            kept_end,
            "cut at {cut}"
        );
        // Appends continue right after the kept events, with no gap in the offsets.
        rt.block_on(log.on_batch(batch(0, 8, 0, 2))).unwrap();
        let events = rt.block_on(read_all(&log, 0, 100));
        assert_eq!(events.len() as u64, expected + 2, "cut at {cut}");
        assert_eq!(
            events.last().unwrap().id,
            (expected + 2).to_string(),
            "cut at {cut}"
        );
        drop(log);
        cases += 1;
    }
    assert!(cases > 300, "only {cases} cuts checked");
}

#[test]
fn torn_tail_keeps_the_retry_map() {
    // A batch that was written whole but whose acknowledgement never arrived is not stored
    // twice when the restarted producer sends it again.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1 << 20, &[2, 3]);
    let rt = runtime();
    let log = open(dir.path(), 1 << 20);
    rt.block_on(log.on_batch(batch(0, 7, 2, 3))).unwrap();
    rt.block_on(log.on_batch(batch(0, 7, 0, 2))).unwrap();
    rt.block_on(log.on_batch(batch(0, 7, 5, 1))).unwrap();
    let seqs: Vec<u64> = rt
        .block_on(read_all(&log, 0, 10))
        .iter()
        .map(seq_of)
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4, 5]);
}

/// Flips `flips` random bytes in random sealed segments of `dir`; returns the positions per
/// segment file name.
fn flip(
    dir: &Path,
    rng: &mut Rng,
    flips: usize,
    sealed: &[String],
) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for _ in 0..flips {
        let name = &sealed[rng.below(sealed.len() as u64) as usize];
        let path = dir.join("shard-00000").join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = rng.below(bytes.len() as u64) as usize;
        bytes[at] ^= 1 + rng.below(255) as u8;
        std::fs::write(&path, &bytes).unwrap();
        out.entry(name.clone()).or_default().push(at);
    }
    out
}

#[test]
fn flipped_bytes_in_sealed_segments_are_skipped() {
    let original = tempfile::tempdir().unwrap();
    let sizes: Vec<u64> = (0..150).map(|i| 1 + i % 5).collect();
    write(original.path(), 4096, &sizes);
    let total: u64 = sizes.iter().sum();
    let shard_dir = original.path().join("shard-00000");
    let mut logs: Vec<String> = std::fs::read_dir(&shard_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    logs.sort();
    assert!(logs.len() >= 4, "only {} segments", logs.len());
    let sealed = logs[..logs.len() - 1].to_vec();
    // Offsets of the records of each sealed segment, by position.
    let layout: BTreeMap<String, Vec<(usize, usize, u64)>> = sealed
        .iter()
        .map(|n| {
            (
                n.clone(),
                records_of(&std::fs::read(shard_dir.join(n)).unwrap()),
            )
        })
        .collect();
    let rt = runtime();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for case in 0..150 {
        let seed = rng.0;
        let dir = tempfile::tempdir().unwrap();
        copy_log(original.path(), dir.path());
        let flips = 1 + rng.below(4) as usize;
        let flipped = flip(dir.path(), &mut rng, flips, &sealed);
        let mut damaged = std::collections::BTreeSet::new();
        for (name, positions) in &flipped {
            for &at in positions {
                for &(pos, size, offset) in &layout[name] {
                    if (pos..pos + size).contains(&at) {
                        damaged.insert(offset);
                    }
                }
            }
        }
        let log = open(dir.path(), 4096);
        for limit in [1, 4, 1000] {
            let events = rt.block_on(read_all(&log, 0, limit));
            let got: Vec<u64> = events.iter().map(seq_of).collect();
            let want: Vec<u64> = (0..total).filter(|o| !damaged.contains(o)).collect();
            assert_eq!(
                got, want,
                "case {case} (seed {seed:#x}), limit {limit}, flips {flipped:?}"
            );
            for e in &events {
                // Offsets equal sequence numbers here: one producer from 0.
                assert_eq!(e.id, (seq_of(e) + 1).to_string());
            }
        }
        if !damaged.is_empty() {
            assert!(
                log.damaged_reads() > 0,
                "case {case}: damage met but not counted"
            );
        }
        drop(log);
    }
}

#[test]
fn damaged_indexes_are_rebuilt() {
    let original = tempfile::tempdir().unwrap();
    let sizes: Vec<u64> = (0..120).map(|i| 1 + i % 4).collect();
    write(original.path(), 4096, &sizes);
    let total: u64 = sizes.iter().sum();
    let shard_dir = original.path().join("shard-00000");
    let mut idx: Vec<String> = std::fs::read_dir(&shard_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".idx"))
        .collect();
    idx.sort();
    assert!(idx.len() >= 3);
    let rt = runtime();
    let mut rng = Rng(0xfeed_0002);
    for case in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        copy_log(original.path(), dir.path());
        let name = &idx[rng.below(idx.len() as u64) as usize];
        let path = dir.path().join("shard-00000").join(name);
        if case % 5 == 0 {
            std::fs::remove_file(&path).unwrap();
        } else {
            let mut bytes = std::fs::read(&path).unwrap();
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] ^= 0x40;
            std::fs::write(&path, &bytes).unwrap();
        }
        let log = open(dir.path(), 4096);
        assert_eq!(log.recovery().rebuilt_indexes, 1, "case {case}: {name}");
        let seqs: Vec<u64> = rt
            .block_on(read_all(&log, 0, 7))
            .iter()
            .map(seq_of)
            .collect();
        assert_eq!(seqs, (0..total).collect::<Vec<_>>(), "case {case}");
        drop(log);
        // The rebuilt index is trusted on the next open.
        let log = open(dir.path(), 4096);
        assert_eq!(log.recovery().rebuilt_indexes, 0, "case {case}");
    }
}

#[test]
fn damage_inside_the_active_segment_keeps_later_batches() {
    let dir = tempfile::tempdir().unwrap();
    let ends = write(dir.path(), 1 << 20, &[2, 2, 2]);
    let path = dir
        .path()
        .join("shard-00000")
        .join("00000000000000000000.log");
    let mut bytes = std::fs::read(&path).unwrap();
    // One byte inside the second batch's first record.
    bytes[ends[0] as usize + 60] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let rt = runtime();
    let log = open(dir.path(), 1 << 20);
    let r = log.recovery();
    assert_eq!((r.damaged_spans, r.truncated_bytes), (1, 0), "{r:?}");
    let seqs: Vec<u64> = rt
        .block_on(read_all(&log, 0, 1))
        .iter()
        .map(seq_of)
        .collect();
    assert_eq!(seqs, [0, 1, 3, 4, 5]);
    // A consumer that had read up to the first batch passes the damage.
    let page = rt.block_on(log.poll_shard(0, Some("2"), 1)).unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(seq_of(&page.events[0]), 3);
    assert_eq!(page.cursor, "4");
}

#[test]
fn garbage_and_empty_files_never_panic() {
    let rt = runtime();
    let mut rng = Rng(0xabcdef);
    for case in 0..100 {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 4096, &[3, 3, 3]);
        let shard = dir.path().join("shard-00000");
        let mut names: Vec<_> = std::fs::read_dir(&shard)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        let victim = &names[rng.below(names.len() as u64) as usize];
        let len = rng.below(300) as usize;
        let garbage: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        std::fs::write(victim, garbage).unwrap();
        let log = open(dir.path(), 4096);
        let events = rt.block_on(read_all(&log, 0, 2));
        assert!(events.len() <= 9, "case {case}");
        let seqs: Vec<u64> = events.iter().map(seq_of).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "case {case}: {seqs:?}"
        );
    }
}
