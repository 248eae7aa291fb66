//! The bus cursor: an opaque string that maps each shard id to its adapter's cursor.
//!
//! Wire format (version 1), carried as URL-safe base64 without padding:
//!
//! ```text
//! u8       version = 1
//! varint   entry count
//! entries: u16 shard id (little-endian), varint length, that many UTF-8 bytes
//! u32      checksum (little-endian): low 32 bits of FNV-1a 64 over every byte before it
//! ```
//!
//! Varints are unsigned LEB128 in their shortest form.
//!
//! Invariants:
//! - `decode(encode(c)) == c` for every cursor `c` whose encoding stays within
//!   [`MAX_ENCODED_LEN`] (about 760 shards at the maximum adapter cursor length, tens of
//!   thousands at typical lengths);
//! - the empty cursor encodes as `""`, and `""` decodes to the empty cursor (the start of
//!   every shard);
//! - entries are strictly increasing by shard id, so each cursor has exactly one encoding
//!   and a decoded cursor never names a shard twice;
//! - every adapter cursor is valid UTF-8 of at most [`MAX_ADAPTER_CURSOR_LEN`] bytes, which
//!   [`BusCursor::set`] enforces on the way in and [`BusCursor::decode`] on the way back;
//! - decoding never panics, and every length it reads is checked against the limits and the
//!   bytes actually present before anything is allocated for it;
//! - the version byte is read before the checksum, so a cursor from a newer build is reported
//!   as such rather than as corrupt.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// The format version this build writes and reads.
const VERSION: u8 = 1;

/// The longest encoded (base64) cursor `decode` accepts.
pub(crate) const MAX_ENCODED_LEN: usize = 1 << 20;

/// The most entries a decoded cursor may declare (one per possible `u16` shard id).
const MAX_ENTRIES: u64 = 1 << 16;

/// The longest adapter cursor, in bytes.
pub(crate) const MAX_ADAPTER_CURSOR_LEN: usize = 1024;

/// The longest varint: ten 7-bit groups cover 64 bits.
const MAX_VARINT_LEN: usize = 10;

/// FNV-1a 64 offset basis and prime.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Why a cursor string could not be decoded (or an adapter cursor could not be stored).
///
/// Messages are meant to follow `invalid cursor: ` in `ConsumerError::InvalidCursor`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CursorError {
    /// The string is not URL-safe base64 without padding.
    #[error("not url-safe base64")]
    NotBase64(#[source] base64::DecodeError),
    /// The base64 decoded to no bytes at all.
    #[error("empty blob")]
    EmptyBlob,
    /// Version 0 was never written by any build: the bytes are not a cursor.
    #[error("version 0 is not a cursor version")]
    InvalidVersion,
    /// A version newer than this build understands.
    #[error("unsupported version {0} (this build reads version 1)")]
    UnsupportedVersion(u8),
    /// The blob ends in the middle of a field.
    #[error("truncated")]
    Truncated,
    /// The checksum does not match: the cursor was truncated or altered.
    #[error("checksum mismatch")]
    ChecksumMismatch,
    /// A shard id appears twice.
    #[error("shard {0} appears twice")]
    DuplicateShard(u16),
    /// Shard ids are out of order.
    #[error("shard {shard} follows shard {previous} (shards must be strictly increasing)")]
    ShardsNotIncreasing {
        /// The shard id before.
        previous: u16,
        /// The offending shard id.
        shard: u16,
    },
    /// An adapter cursor is not valid UTF-8.
    #[error("adapter cursor of shard {shard} is not utf-8")]
    NotUtf8 {
        /// The shard whose cursor is broken.
        shard: u16,
    },
    /// The encoded string is longer than [`MAX_ENCODED_LEN`].
    #[error("encoded cursor is {len} bytes long (at most {max} allowed)", max = MAX_ENCODED_LEN)]
    EncodedTooLong {
        /// The length found.
        len: usize,
    },
    /// The entry count exceeds the number of possible shards.
    #[error("{count} entries declared (at most {max} allowed)", max = MAX_ENTRIES)]
    TooManyEntries {
        /// The count found.
        count: u64,
    },
    /// An adapter cursor is longer than [`MAX_ADAPTER_CURSOR_LEN`].
    #[error(
        "adapter cursor of shard {shard} is {len} bytes long (at most {max} allowed)",
        max = MAX_ADAPTER_CURSOR_LEN
    )]
    AdapterCursorTooLong {
        /// The shard whose cursor is too long.
        shard: u16,
        /// The length found or declared.
        len: u64,
    },
    /// A varint is longer than ten bytes, overflows 64 bits, or is not in shortest form.
    #[error("malformed varint")]
    MalformedVarint,
    /// Bytes remain after the last entry.
    #[error("{0} trailing bytes after the last entry")]
    TrailingBytes(usize),
}

/// Where a consumer stands on each shard: shard id -> the adapter's cursor for that shard.
///
/// A shard that has no entry is read from its beginning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BusCursor {
    positions: BTreeMap<u16, String>,
}

impl BusCursor {
    /// The empty cursor: every shard from its beginning.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The adapter cursor recorded for `shard`, if any.
    pub(crate) fn get(&self, shard: u16) -> Option<&str> {
        self.positions.get(&shard).map(String::as_str)
    }

    /// Records the adapter cursor of `shard`, replacing any previous one.
    ///
    /// # Errors
    ///
    /// [`CursorError::AdapterCursorTooLong`] when `cursor` exceeds
    /// [`MAX_ADAPTER_CURSOR_LEN`] bytes: such a cursor could not be decoded again, so it is
    /// refused here and the previous position is kept.
    pub(crate) fn set(&mut self, shard: u16, cursor: String) -> Result<(), CursorError> {
        if cursor.len() > MAX_ADAPTER_CURSOR_LEN {
            return Err(CursorError::AdapterCursorTooLong {
                shard,
                len: len_u64(cursor.len()),
            });
        }
        self.positions.insert(shard, cursor);
        Ok(())
    }

    /// Every `(shard, adapter cursor)` pair, by increasing shard id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u16, &str)> + '_ {
        self.positions
            .iter()
            .map(|(shard, cursor)| (*shard, cursor.as_str()))
    }

    /// The shard ids that have a recorded position, increasing.
    pub(crate) fn shards(&self) -> impl Iterator<Item = u16> + '_ {
        self.positions.keys().copied()
    }

    /// The opaque string form; `""` for the empty cursor.
    pub(crate) fn encode(&self) -> String {
        if self.positions.is_empty() {
            return String::new();
        }
        let payload: usize = self
            .positions
            .values()
            .fold(0, |sum, cursor| sum.saturating_add(cursor.len()));
        let capacity = self
            .positions
            .len()
            .saturating_mul(2 + MAX_VARINT_LEN)
            .saturating_add(payload)
            .saturating_add(1 + MAX_VARINT_LEN + 4);
        let mut blob = Vec::with_capacity(capacity);
        blob.push(VERSION);
        put_varint(&mut blob, len_u64(self.positions.len()));
        for (shard, cursor) in self.iter() {
            blob.extend_from_slice(&shard.to_le_bytes());
            put_varint(&mut blob, len_u64(cursor.len()));
            blob.extend_from_slice(cursor.as_bytes());
        }
        let checksum = checksum32(&blob);
        blob.extend_from_slice(&checksum.to_le_bytes());
        URL_SAFE_NO_PAD.encode(blob)
    }

    /// Parses a string produced by [`BusCursor::encode`].
    ///
    /// # Errors
    ///
    /// A [`CursorError`] naming the first problem found; see the module docs for the checks.
    pub(crate) fn decode(s: &str) -> Result<Self, CursorError> {
        if s.is_empty() {
            return Ok(Self::new());
        }
        if s.len() > MAX_ENCODED_LEN {
            return Err(CursorError::EncodedTooLong { len: s.len() });
        }
        // Bounded by the length check above: at most 768 KiB.
        let blob = URL_SAFE_NO_PAD.decode(s).map_err(CursorError::NotBase64)?;
        let Some((&version, _)) = blob.split_first() else {
            return Err(CursorError::EmptyBlob);
        };
        match version {
            0 => return Err(CursorError::InvalidVersion),
            VERSION => {}
            newer => return Err(CursorError::UnsupportedVersion(newer)),
        }
        let Some((content, checksum)) = blob.split_last_chunk::<4>() else {
            return Err(CursorError::Truncated);
        };
        // The version byte and at least one byte of count precede the checksum.
        if content.len() < 2 {
            return Err(CursorError::Truncated);
        }
        if u32::from_le_bytes(*checksum) != checksum32(content) {
            return Err(CursorError::ChecksumMismatch);
        }
        let mut reader = Reader {
            rest: content.get(1..).unwrap_or_default(),
        };
        let count = reader.varint()?;
        if count > MAX_ENTRIES {
            return Err(CursorError::TooManyEntries { count });
        }
        let mut positions = BTreeMap::new();
        let mut previous: Option<u16> = None;
        for _ in 0..count {
            let shard = reader.u16_le()?;
            match previous {
                Some(prev) if prev == shard => return Err(CursorError::DuplicateShard(shard)),
                Some(prev) if prev > shard => {
                    return Err(CursorError::ShardsNotIncreasing {
                        previous: prev,
                        shard,
                    })
                }
                _ => {}
            }
            let declared = reader.varint()?;
            let len = usize::try_from(declared)
                .ok()
                .filter(|&len| len <= MAX_ADAPTER_CURSOR_LEN)
                .ok_or(CursorError::AdapterCursorTooLong {
                    shard,
                    len: declared,
                })?;
            let bytes = reader.take(len)?;
            let text = std::str::from_utf8(bytes).map_err(|_| CursorError::NotUtf8 { shard })?;
            positions.insert(shard, text.to_owned());
            previous = Some(shard);
        }
        if !reader.rest.is_empty() {
            return Err(CursorError::TrailingBytes(reader.rest.len()));
        }
        Ok(Self { positions })
    }
}

/// A forward-only view over the bytes between the version byte and the checksum.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CursorError> {
        if n > self.rest.len() {
            return Err(CursorError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u16_le(&mut self) -> Result<u16, CursorError> {
        let Some((head, tail)) = self.rest.split_first_chunk::<2>() else {
            return Err(CursorError::Truncated);
        };
        self.rest = tail;
        Ok(u16::from_le_bytes(*head))
    }

    /// Reads a shortest-form LEB128 varint of at most ten bytes that fits in a `u64`.
    fn varint(&mut self) -> Result<u64, CursorError> {
        let mut value: u64 = 0;
        for i in 0..MAX_VARINT_LEN {
            let Some((&byte, tail)) = self.rest.split_first() else {
                return Err(CursorError::Truncated);
            };
            self.rest = tail;
            // The tenth byte carries bit 63 only: anything more overflows or continues.
            if i == MAX_VARINT_LEN - 1 && byte > 1 {
                return Err(CursorError::MalformedVarint);
            }
            // i < 10, so the shift is at most 63.
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                // A zero final byte after the first one is padding: not shortest form.
                if byte == 0 && i > 0 {
                    return Err(CursorError::MalformedVarint);
                }
                return Ok(value);
            }
        }
        Err(CursorError::MalformedVarint)
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        // Low seven bits plus the continuation flag; the mask keeps the cast lossless.
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push((value & 0x7f) as u8);
}

/// `usize` always fits in `u64` on supported targets; saturate rather than assume.
fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Low 32 bits of FNV-1a 64.
fn checksum32(bytes: &[u8]) -> u32 {
    let hash = bytes.iter().fold(FNV_OFFSET, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    // Truncation to the low half is the point.
    hash as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cursor(entries: &[(u16, &str)]) -> BusCursor {
        let mut c = BusCursor::new();
        for &(shard, position) in entries {
            c.set(shard, position.to_owned()).expect("short cursor");
        }
        c
    }

    /// Appends a valid checksum to `content` and encodes it, so tests can reach the checks
    /// that come after the checksum.
    fn seal(content: &[u8]) -> String {
        let mut blob = content.to_vec();
        blob.extend_from_slice(&checksum32(content).to_le_bytes());
        URL_SAFE_NO_PAD.encode(blob)
    }

    fn varint(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, value);
        out
    }

    /// Decodes `input` and asserts the error message contains `expected`.
    fn check(input: &str, expected: &str) {
        match BusCursor::decode(input) {
            Ok(c) => panic!("{input:?} decoded to {c:?}, expected error {expected:?}"),
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.contains(expected),
                    "{input:?}: {message:?} does not contain {expected:?}"
                );
                assert_eq!(message, message.to_lowercase(), "lowercase: {message}");
                assert!(!message.ends_with('.'), "no trailing period: {message}");
            }
        }
    }

    fn sample() -> BusCursor {
        cursor(&[
            (0, "1526919030474-0"),
            (3, "42"),
            (7, ""),
            (65535, "ünïcödé ✓"),
        ])
    }

    #[test]
    fn round_trips() {
        let long = "x".repeat(MAX_ADAPTER_CURSOR_LEN);
        let many: Vec<(u16, String)> = (0..300u16).map(|s| (s * 7, s.to_string())).collect();
        let many_refs: Vec<(u16, &str)> = many.iter().map(|(s, c)| (*s, c.as_str())).collect();
        for c in [
            BusCursor::new(),
            sample(),
            cursor(&[(9, "only")]),
            cursor(&[(1, &long)]),
            cursor(&many_refs),
        ] {
            let encoded = c.encode();
            assert!(encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(BusCursor::decode(&encoded), Ok(c));
        }
    }

    #[test]
    fn empty_cursor_is_the_empty_string() {
        assert_eq!(BusCursor::new().encode(), "");
        assert_eq!(BusCursor::decode(""), Ok(BusCursor::new()));
        // An explicit zero-entry blob also decodes to the empty cursor.
        assert_eq!(BusCursor::decode(&seal(&[1, 0])), Ok(BusCursor::new()));
    }

    #[test]
    fn golden_encoding() {
        assert_eq!(checksum32(b""), 0x8422_2325);
        assert_eq!(checksum32(b"a"), 0x8601_ec8c);
        let mut content = vec![1, 2, 3, 0, 2, b'4', b'2', 0x00, 0x01, 1, b'x'];
        assert_eq!(cursor(&[(3, "42"), (256, "x")]).encode(), seal(&content));
        // Layout check by hand: checksum bytes are little-endian.
        let sum = checksum32(&content).to_le_bytes();
        content.extend_from_slice(&sum);
        assert_eq!(
            cursor(&[(3, "42"), (256, "x")]).encode(),
            URL_SAFE_NO_PAD.encode(&content)
        );
    }

    #[test]
    fn accessors() {
        let mut c = sample();
        assert_eq!(c.get(3), Some("42"));
        assert_eq!(c.get(4), None);
        assert_eq!(c.shards().collect::<Vec<_>>(), vec![0, 3, 7, 65535]);
        c.set(3, "43".to_owned()).expect("short");
        assert_eq!(c.iter().nth(1), Some((3, "43")));
        let refused = c.set(3, "y".repeat(MAX_ADAPTER_CURSOR_LEN + 1));
        assert_eq!(
            refused,
            Err(CursorError::AdapterCursorTooLong {
                shard: 3,
                len: 1025
            })
        );
        assert_eq!(c.get(3), Some("43"), "a refused set keeps the old position");
    }

    #[test]
    fn varint_round_trip_edges() {
        for value in [0, 1, 127, 128, 300, 16_383, 16_384, u64::MAX - 1, u64::MAX] {
            let bytes = varint(value);
            assert!(bytes.len() <= MAX_VARINT_LEN);
            let mut reader = Reader { rest: &bytes };
            assert_eq!(reader.varint(), Ok(value));
            assert!(reader.rest.is_empty());
        }
    }

    #[test]
    fn rejections() {
        let long = "z".repeat(MAX_ADAPTER_CURSOR_LEN + 1);
        let mut too_long_entry = vec![1, 1, 5, 0];
        too_long_entry.extend(varint(len_u64(long.len())));
        too_long_entry.extend_from_slice(long.as_bytes());
        let huge = "A".repeat(MAX_ENCODED_LEN + 1);
        let mut eleven_byte_varint = vec![1];
        eleven_byte_varint.extend([0x80; 10]);
        eleven_byte_varint.push(0);
        let mut overflowing_varint = vec![1];
        overflowing_varint.extend([0xff; 9]);
        overflowing_varint.push(0x02);
        let cases: Vec<(String, &str)> = vec![
            ("!!!!".into(), "not url-safe base64"),
            ("a".into(), "not url-safe base64"),
            ("AQ==".into(), "not url-safe base64"),
            ("a b".into(), "not url-safe base64"),
            ("+/+/".into(), "not url-safe base64"),
            ("AB".into(), "not url-safe base64"),
            (huge, "at most 1048576 allowed"),
            (seal(&[0, 0]), "version 0 is not a cursor version"),
            (URL_SAFE_NO_PAD.encode([0]), "version 0"),
            (seal(&[2, 0]), "unsupported version 2"),
            (
                URL_SAFE_NO_PAD.encode([255, 1, 2]),
                "unsupported version 255",
            ),
            (URL_SAFE_NO_PAD.encode([1]), "truncated"),
            (URL_SAFE_NO_PAD.encode([1, 0, 0, 0]), "truncated"),
            (seal(&[1]), "truncated"),
            (seal(&[1, 1, 3]), "truncated"),
            (seal(&[1, 1, 3, 0, 5, b'a']), "truncated"),
            (seal(&[1, 2, 3, 0, 0]), "truncated"),
            (seal(&[1, 0x80]), "truncated"),
            (
                URL_SAFE_NO_PAD.encode([1, 0, 0, 0, 0, 0]),
                "checksum mismatch",
            ),
            (seal(&[1, 2, 3, 0, 0, 3, 0, 0]), "shard 3 appears twice"),
            (
                seal(&[1, 2, 9, 0, 0, 3, 0, 0]),
                "shard 3 follows shard 9 (shards must be strictly increasing)",
            ),
            (
                seal(&[1, 1, 4, 0, 2, 0xc3, 0x28]),
                "adapter cursor of shard 4 is not utf-8",
            ),
            (
                seal(&too_long_entry),
                "adapter cursor of shard 5 is 1025 bytes long",
            ),
            (seal(&[1, 0x81, 0x80, 0x04]), "65537 entries declared"),
            (seal(&[1, 0x80, 0x80, 0x04]), "truncated"),
            (seal(&eleven_byte_varint), "malformed varint"),
            (seal(&overflowing_varint), "malformed varint"),
            (seal(&[1, 0x81, 0x00]), "malformed varint"),
            (seal(&[1, 0, 7]), "1 trailing bytes after the last entry"),
            (seal(&[1, 1, 3, 0, 0, 9, 9]), "2 trailing bytes"),
        ];
        for (input, expected) in &cases {
            check(input, expected);
        }
    }

    #[test]
    fn versions_have_distinct_messages() {
        let v0 = BusCursor::decode(&seal(&[0, 0])).expect_err("version 0");
        let v2 = BusCursor::decode(&seal(&[2, 0])).expect_err("version 2");
        assert_eq!(v0, CursorError::InvalidVersion);
        assert_eq!(v2, CursorError::UnsupportedVersion(2));
        assert_ne!(v0.to_string(), v2.to_string());
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut content = vec![1];
        content.extend(varint(u64::MAX));
        assert_eq!(
            BusCursor::decode(&seal(&content)),
            Err(CursorError::TooManyEntries { count: u64::MAX })
        );
        // The largest allowed count with no entries behind it fails fast on the first read.
        let mut content = vec![1];
        content.extend(varint(MAX_ENTRIES));
        assert_eq!(
            BusCursor::decode(&seal(&content)),
            Err(CursorError::Truncated)
        );
        // A declared cursor length far beyond the data is refused by the length limit.
        let mut content = vec![1, 1, 0, 0];
        content.extend(varint(u64::MAX));
        assert_eq!(
            BusCursor::decode(&seal(&content)),
            Err(CursorError::AdapterCursorTooLong {
                shard: 0,
                len: u64::MAX
            })
        );
    }

    #[test]
    fn every_truncation_is_rejected() {
        let encoded = sample().encode();
        for end in 1..encoded.len() {
            let prefix = encoded.get(..end).expect("ascii");
            assert!(BusCursor::decode(prefix).is_err(), "prefix of length {end}");
        }
        let blob = URL_SAFE_NO_PAD.decode(&encoded).expect("valid");
        for end in 1..blob.len() {
            let prefix = URL_SAFE_NO_PAD.encode(blob.get(..end).expect("in range"));
            assert!(
                BusCursor::decode(&prefix).is_err(),
                "blob prefix of length {end}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let blob = URL_SAFE_NO_PAD.decode(sample().encode()).expect("valid");
        for byte in 0..blob.len() {
            for bit in 0..8 {
                let mut flipped = blob.clone();
                if let Some(b) = flipped.get_mut(byte) {
                    *b ^= 1 << bit;
                }
                let result = BusCursor::decode(&URL_SAFE_NO_PAD.encode(&flipped));
                assert!(
                    result.is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
        // Flipping bits of the text itself must never panic either.
        let text = sample().encode().into_bytes();
        for i in 0..text.len() {
            for bit in 0..7 {
                let mut flipped = text.clone();
                if let Some(b) = flipped.get_mut(i) {
                    *b ^= 1 << bit;
                }
                if let Ok(s) = std::str::from_utf8(&flipped) {
                    let _ = BusCursor::decode(s);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip_of_arbitrary_maps(
            map in prop::collection::btree_map(any::<u16>(), "\\PC{0,64}", 0..64)
        ) {
            let mut c = BusCursor::new();
            for (shard, position) in &map {
                prop_assert!(c.set(*shard, position.clone()).is_ok());
            }
            let decoded = BusCursor::decode(&c.encode());
            prop_assert_eq!(&decoded, &Ok(c));
            let pairs: Vec<(u16, String)> = decoded
                .iter()
                .flat_map(|d| d.iter().map(|(s, p)| (s, p.to_owned())))
                .collect();
            prop_assert_eq!(pairs, map.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn decode_never_panics_on_strings(s in ".{0,300}") {
            let _ = BusCursor::decode(&s);
        }

        #[test]
        fn decode_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = BusCursor::decode(&URL_SAFE_NO_PAD.encode(&bytes));
        }

        #[test]
        fn decode_never_panics_past_the_checksum(
            body in prop::collection::vec(any::<u8>(), 0..300)
        ) {
            // With a valid version and checksum the body parser itself sees random bytes.
            let mut content = vec![VERSION];
            content.extend(body);
            let _ = BusCursor::decode(&seal(&content));
        }
    }
}
