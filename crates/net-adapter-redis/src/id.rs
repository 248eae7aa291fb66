//! Stream entry ids (`<milliseconds>-<sequence>`), which are also the adapter's cursors.
//!
//! A cursor names the last entry a reader has seen; `0-0` is the position before the first
//! entry a stream can ever hold. Parsing is strict: two runs of ASCII digits joined by one
//! dash, each fitting a `u64`, nothing else. Anything longer than the longest valid id is
//! rejected before it is looked at, so a hostile cursor costs nothing to refuse.

use std::fmt;

/// The longest valid id: two 20-digit numbers and a dash.
const MAX_LEN: usize = 41;

/// A Redis stream entry id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct StreamId {
    /// Milliseconds part.
    pub(crate) ms: u64,
    /// Sequence within the millisecond.
    pub(crate) seq: u64,
}

impl StreamId {
    /// `0-0`: before every entry.
    pub(crate) const ZERO: StreamId = StreamId { ms: 0, seq: 0 };
    /// The largest id Redis can hold.
    pub(crate) const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// Parses `text` strictly; `None` for anything that is not exactly an entry id.
    pub(crate) fn parse(text: &str) -> Option<StreamId> {
        if text.is_empty() || text.len() > MAX_LEN {
            return None;
        }
        let (ms, seq) = text.split_once('-')?;
        Some(StreamId {
            ms: digits(ms)?,
            seq: digits(seq)?,
        })
    }

    /// Parses the bytes of an id as Redis returns it.
    pub(crate) fn parse_bytes(bytes: &[u8]) -> Option<StreamId> {
        std::str::from_utf8(bytes).ok().and_then(StreamId::parse)
    }

    /// The id right before this one (`0-0` stays `0-0`).
    pub(crate) fn predecessor(self) -> StreamId {
        match (self.ms, self.seq) {
            (0, 0) => StreamId::ZERO,
            (ms, 0) => StreamId {
                ms: ms - 1,
                seq: u64::MAX,
            },
            (ms, seq) => StreamId { ms, seq: seq - 1 },
        }
    }
}

/// A run of ASCII digits that fits a `u64` (no sign, no spaces, not empty).
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::StreamId;

    fn check(text: &str, expected: Option<(u64, u64)>) {
        let got = StreamId::parse(text).map(|id| (id.ms, id.seq));
        assert_eq!(got, expected, "{text:?}");
        if let Some(id) = StreamId::parse(text) {
            assert_eq!(id.to_string(), text);
        }
    }

    #[test]
    fn parsing() {
        check("0-0", Some((0, 0)));
        check("1700000000000-5", Some((1_700_000_000_000, 5)));
        check(
            "18446744073709551615-18446744073709551615",
            Some((u64::MAX, u64::MAX)),
        );
        for bad in [
            "",
            "-",
            "1",
            "1-",
            "-1",
            "1--1",
            "+1-1",
            "1-+1",
            " 1-1",
            "1-1 ",
            "1-1-1",
            "a-1",
            "18446744073709551616-0",
            "0-18446744073709551616",
            "\u{0}",
            "\u{1f980}",
        ] {
            check(bad, None);
        }
        check(&"9".repeat(100_000), None);
    }

    #[test]
    fn ordering_and_predecessor() {
        let id = |ms, seq| StreamId { ms, seq };
        assert!(id(1, 0) > id(0, u64::MAX));
        assert!(id(1, 2) < id(1, 3));
        assert_eq!(id(5, 3).predecessor(), id(5, 2));
        assert_eq!(id(5, 0).predecessor(), id(4, u64::MAX));
        assert_eq!(StreamId::ZERO.predecessor(), StreamId::ZERO);
        assert_eq!(id(0, 1).predecessor(), StreamId::ZERO);
    }
}
