//! A segment file as a shard sees it: its base offset, the summary of its intact records
//! (the same summary a sealed segment's `.idx` holds) and the sparse index that lets a read
//! start near an offset instead of at the top of the file.

use crate::files::Summary;
use crate::record::Header;

/// One sparse index entry per this many bytes of segment.
pub(crate) const INDEX_EVERY: u64 = 32 << 10;

/// A segment file and what is known of it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    /// `summary.len` is the committed length (for the active segment, what writes made).
    pub(crate) summary: Summary,
    /// Where the next sparse index entry may start.
    pub(crate) next_boundary: u64,
}

impl Segment {
    pub(crate) fn new(base: u64) -> Self {
        Segment {
            base,
            summary: Summary::default(),
            next_boundary: 0,
        }
    }

    /// Accounts for an intact record at `pos` of `size` bytes.
    pub(crate) fn note(&mut self, pos: u64, size: u64, h: &Header) {
        let s = &mut self.summary;
        if pos >= self.next_boundary {
            s.entries.push((h.offset, pos as u32));
            self.next_boundary = (pos / INDEX_EVERY + 1) * INDEX_EVERY;
        }
        if s.records == 0 {
            s.first = h.offset;
        }
        s.records += 1;
        s.last = h.offset;
        s.newest_ts = s.newest_ts.max(h.ts);
        let e = s.batches.entry(h.nonce).or_insert((h.batch_start, h.count));
        if h.batch_start >= e.0 {
            *e = (h.batch_start, h.count);
        }
        s.len = s.len.max(pos + size);
    }

    /// The position to start reading offset `c` from: the last index entry at or below it.
    pub(crate) fn seek(&self, c: u64) -> u64 {
        let e = &self.summary.entries;
        match e.partition_point(|&(offset, _)| offset <= c) {
            0 => 0,
            i => u64::from(e[i - 1].1),
        }
    }

    /// A position at or after the end of every record below offset `upto`: the first index
    /// entry at or above it, else the segment's length. Only sizes a read; never trusted as a
    /// record boundary.
    pub(crate) fn read_end(&self, upto: u64) -> u64 {
        let e = &self.summary.entries;
        e.get(e.partition_point(|&(offset, _)| offset < upto))
            .map_or(self.summary.len, |&(_, pos)| u64::from(pos))
            .min(self.summary.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_end_bounds_every_record_below_it() {
        let mut s = Segment::new(100);
        s.summary.entries = vec![(100, 0), (300, 32_800), (500, 65_600)];
        s.summary.len = 90_000;
        assert_eq!(s.read_end(100), 0);
        assert_eq!(s.read_end(101), 32_800);
        assert_eq!(s.read_end(300), 32_800);
        assert_eq!(s.read_end(301), 65_600);
        assert_eq!(s.read_end(501), 90_000);
        assert_eq!(s.read_end(u64::MAX), 90_000);
    }
}
