//! The record frame and the forward scan over a segment file.
//!
//! [`encode`] appends one record to a buffer; [`Scanner`] walks a segment from a position,
//! yielding intact records and the spans of damage between them (see the crate docs for the
//! frame and for when a record is intact). The scan reads through a window buffer with
//! positioned reads, so it never holds more than one window plus one record in memory.
//! Payloads are handed out as slices of the window ([`Bytes`]), not copies: a page of events
//! keeps alive the windows it was read from, and a window no payload points into any more is
//! reused for the next read.

use bytes::{Bytes, BytesMut};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// `NETL` read as bytes, little-endian.
pub(crate) const MAGIC: u32 = 0x4C54_454E;
/// Bytes before the payload.
pub(crate) const HEADER: usize = 52;
/// The largest payload a record may hold.
pub(crate) const MAX_PAYLOAD: usize = 16 << 20;
/// How much a scan reads at once unless told otherwise.
pub(crate) const WINDOW: usize = 64 << 10;

/// The fields of a record's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) offset: u64,
    pub(crate) ts: u64,
    pub(crate) nonce: u64,
    pub(crate) batch_start: u64,
    pub(crate) index: u32,
    pub(crate) count: u32,
}

/// Appends one record (header and payload) to `out`.
///
/// The header is built on the stack and copied in whole; the checksum then runs over the
/// record where it lies in `out`, in one pass (records of payloads that are a multiple of 8
/// bytes long stay 8-byte aligned there, which the CRC32C instruction likes).
pub(crate) fn encode(out: &mut Vec<u8>, h: &Header, payload: &[u8]) {
    let start = out.len();
    let mut head = [0u8; HEADER];
    head[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    head[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    head[12..20].copy_from_slice(&h.offset.to_le_bytes());
    head[20..28].copy_from_slice(&h.ts.to_le_bytes());
    head[28..36].copy_from_slice(&h.nonce.to_le_bytes());
    head[36..44].copy_from_slice(&h.batch_start.to_le_bytes());
    head[44..48].copy_from_slice(&h.index.to_le_bytes());
    head[48..52].copy_from_slice(&h.count.to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The framed size of a record with a payload of `len` bytes.
pub(crate) fn framed(len: usize) -> u64 {
    (HEADER + len) as u64
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes the header of `b` (at least [`HEADER`] bytes); checks nothing.
fn header(b: &[u8]) -> (u32, u32, usize, Header) {
    (
        u32_at(b, 0),
        u32_at(b, 4),
        u32_at(b, 8) as usize,
        Header {
            offset: u64_at(b, 12),
            ts: u64_at(b, 20),
            nonce: u64_at(b, 28),
            batch_start: u64_at(b, 36),
            index: u32_at(b, 44),
            count: u32_at(b, 48),
        },
    )
}

/// What a scan found next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Item {
    /// An intact record at `pos`, `size` bytes long; its payload is `payload`.
    Record {
        pos: u64,
        size: u64,
        header: Header,
        /// Empty when the scan skips payloads.
        payload: Bytes,
    },
    /// Bytes `from..to` hold no intact record the scan could accept.
    Damage { from: u64, to: u64 },
}

/// A forward scan over the bytes `0..end` of a segment file.
///
/// A record is accepted when it is intact and its offset is above the last accepted one
/// (`after`); anything else starts a damaged span, which ends at the next magic that begins
/// an acceptable record, or at `end`.
pub(crate) struct Scanner<'f> {
    file: &'f File,
    end: u64,
    pos: u64,
    after: Option<u64>,
    /// Bytes `buf_at..buf_at + buf.len()` of the file.
    buf: Bytes,
    buf_at: u64,
    /// The least one read fetches.
    window: usize,
    want_payload: bool,
}

impl<'f> Scanner<'f> {
    /// Scans `file` from `pos` to `end`, accepting records with an offset above `after`.
    pub(crate) fn new(file: &'f File, pos: u64, end: u64, after: Option<u64>) -> Self {
        Scanner {
            file,
            end,
            pos,
            after,
            buf: Bytes::new(),
            buf_at: 0,
            window: WINDOW,
            want_payload: true,
        }
    }

    /// Reads at least `bytes` at a time (at least [`WINDOW`]): a reader that knows how much
    /// it wants fetches it with one positioned read.
    pub(crate) fn window(mut self, bytes: usize) -> Self {
        self.window = bytes.max(WINDOW);
        self
    }

    /// Skips copying payloads out (recovery needs only headers and positions).
    pub(crate) fn without_payloads(mut self) -> Self {
        self.want_payload = false;
        self
    }

    /// The position the next item starts at.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// Makes bytes `at..at + n` (clipped to `end`) available in the window; returns them.
    fn bytes(&mut self, at: u64, n: usize) -> io::Result<&[u8]> {
        let n = n.min(self.end.saturating_sub(at) as usize);
        let have = at >= self.buf_at && at + n as u64 <= self.buf_at + self.buf.len() as u64;
        if !have {
            let size = n.max(self.window).min(self.end.saturating_sub(at) as usize);
            // The old window's memory is reused unless a payload handed out still uses it.
            let mut fresh = match std::mem::take(&mut self.buf).try_into_mut() {
                Ok(mut old) => {
                    old.clear();
                    old
                }
                Err(_) => BytesMut::new(),
            };
            fresh.resize(size, 0);
            let mut filled = 0;
            while filled < size {
                match self.file.read_at(&mut fresh[filled..], at + filled as u64) {
                    Ok(0) => break,
                    Ok(k) => filled += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            fresh.truncate(filled);
            self.buf = fresh.freeze();
            self.buf_at = at;
        }
        let from = (at - self.buf_at) as usize;
        let to = (from + n).min(self.buf.len());
        Ok(&self.buf[from..to])
    }

    /// Checks for an acceptable record at `at`; returns its header, size and payload range.
    fn record_at(&mut self, at: u64) -> io::Result<Option<(Header, u64)>> {
        let after = self.after;
        let b = self.bytes(at, HEADER)?;
        if b.len() < HEADER {
            return Ok(None);
        }
        let (magic, crc, len, h) = header(b);
        if magic != MAGIC || len > MAX_PAYLOAD || at + framed(len) > self.end {
            return Ok(None);
        }
        if after.is_some_and(|a| h.offset <= a) || h.index >= h.count {
            return Ok(None);
        }
        let whole = self.bytes(at, HEADER + len)?;
        if whole.len() < HEADER + len || crc32c::crc32c(&whole[8..]) != crc {
            return Ok(None);
        }
        Ok(Some((h, framed(len))))
    }

    /// The next item, or `None` at `end`.
    pub(crate) fn next_item(&mut self) -> io::Result<Option<Item>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let at = self.pos;
        if let Some((header, size)) = self.record_at(at)? {
            let payload = if self.want_payload {
                let from = (at - self.buf_at) as usize + HEADER;
                self.buf.slice(from..from + size as usize - HEADER)
            } else {
                Bytes::new()
            };
            self.pos = at + size;
            self.after = Some(header.offset);
            return Ok(Some(Item::Record {
                pos: at,
                size,
                header,
                payload,
            }));
        }
        // Damage: look for the next magic that starts an acceptable record.
        let magic = MAGIC.to_le_bytes();
        let mut probe = at + 1;
        while probe + 4 <= self.end {
            let window = self.bytes(probe, WINDOW)?.to_vec();
            if window.len() < 4 {
                break;
            }
            let mut found = None;
            for i in 0..=window.len() - 4 {
                if window[i..i + 4] == magic {
                    let candidate = probe + i as u64;
                    if self.record_at(candidate)?.is_some() {
                        found = Some(candidate);
                        break;
                    }
                }
            }
            if let Some(candidate) = found {
                self.pos = candidate;
                return Ok(Some(Item::Damage {
                    from: at,
                    to: candidate,
                }));
            }
            probe += (window.len() - 3) as u64;
        }
        self.pos = self.end;
        Ok(Some(Item::Damage {
            from: at,
            to: self.end,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn h(offset: u64, index: u32, count: u32) -> Header {
        Header {
            offset,
            ts: 100 + offset,
            nonce: 7,
            batch_start: 0,
            index,
            count,
        }
    }

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        (dir, File::open(path).unwrap())
    }

    fn scan(bytes: &[u8]) -> Vec<String> {
        let (_dir, file) = file_with(bytes);
        let mut s = Scanner::new(&file, 0, bytes.len() as u64, None);
        let mut out = Vec::new();
        while let Some(item) = s.next_item().unwrap() {
            out.push(match item {
                Item::Record {
                    pos,
                    header,
                    payload,
                    ..
                } => format!(
                    "r{}@{pos}:{}",
                    header.offset,
                    String::from_utf8_lossy(&payload)
                ),
                Item::Damage { from, to } => format!("d{from}..{to}"),
            });
        }
        out
    }

    #[test]
    fn frame_layout_is_pinned() {
        let mut b = Vec::new();
        encode(&mut b, &h(3, 1, 2), b"hi");
        assert_eq!(b.len(), 54);
        assert_eq!(&b[0..4], b"NETL");
        assert_eq!(u32_at(&b, 8), 2);
        assert_eq!(u64_at(&b, 12), 3);
        assert_eq!(u64_at(&b, 20), 103);
        assert_eq!(u64_at(&b, 28), 7);
        assert_eq!(u64_at(&b, 36), 0);
        assert_eq!(u32_at(&b, 44), 1);
        assert_eq!(u32_at(&b, 48), 2);
        assert_eq!(&b[52..], b"hi");
        assert_eq!(u32_at(&b, 4), crc32c::crc32c(&b[8..]));
    }

    #[test]
    fn scans_records_and_damage() {
        let mut b = Vec::new();
        encode(&mut b, &h(0, 0, 1), b"a");
        encode(&mut b, &h(1, 0, 1), b"bb");
        assert_eq!(scan(&b), ["r0@0:a", "r1@53:bb"]);
        let good = b.clone();

        // A flipped payload byte makes record 1 damage up to the end.
        let mut d = good.clone();
        d[53 + 52] ^= 1;
        assert_eq!(scan(&d), ["r0@0:a", "d53..107"]);

        // Damage in front of an intact record is skipped up to it.
        let mut d = good.clone();
        d[10] ^= 0xff;
        assert_eq!(scan(&d), ["d0..53", "r1@53:bb"]);

        // A torn tail.
        assert_eq!(scan(&good[..100]), ["r0@0:a", "d53..100"]);
        // Garbage only.
        assert_eq!(scan(&[0xAB; 10]), ["d0..10"]);
        // A record whose offset does not go up is not accepted.
        let mut b2 = Vec::new();
        encode(&mut b2, &h(5, 0, 1), b"x");
        encode(&mut b2, &h(5, 0, 1), b"y");
        encode(&mut b2, &h(6, 0, 1), b"z");
        assert_eq!(scan(&b2), ["r5@0:x", "d53..106", "r6@106:z"]);
        // A length past the end of the file is damage, not a panic.
        let mut d = good.clone();
        d[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(scan(&d), ["d0..53", "r1@53:bb"]);
    }

    #[test]
    fn big_records_cross_windows() {
        let mut b = Vec::new();
        let big = vec![b'q'; WINDOW * 2 + 3];
        encode(&mut b, &h(0, 0, 2), &big);
        encode(&mut b, &h(1, 1, 2), b"end");
        let out = scan(&b);
        assert_eq!(out.len(), 2);
        assert!(out[1].ends_with(":end"));
        // Damage spanning windows is found past them.
        let mut d = b.clone();
        d[0] = 0;
        let out = scan(&d);
        assert_eq!(out[0], format!("d0..{}", WINDOW * 2 + 3 + HEADER));
    }
}
