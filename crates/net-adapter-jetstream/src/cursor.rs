//! Cursors: the decimal stream sequence of the last message a reader has seen.
//!
//! `"0"` is the position before the first message a stream ever held. The adapter only ever
//! produces the canonical form (no sign, no leading zero, no whitespace), so anything else is
//! rejected as a cursor it never produced.

use net_adapter::AdapterError;

/// The longest canonical cursor: `u64::MAX` has 20 digits.
const MAX_DIGITS: usize = 20;

/// Parses a cursor into the sequence it names.
pub(crate) fn parse(cursor: &str) -> Result<u64, AdapterError> {
    let canonical = !cursor.is_empty()
        && cursor.len() <= MAX_DIGITS
        && cursor.bytes().all(|b| b.is_ascii_digit())
        && (cursor == "0" || !cursor.starts_with('0'));
    match cursor.parse::<u64>() {
        Ok(sequence) if canonical => Ok(sequence),
        _ => Err(AdapterError::InvalidCursor(format!(
            "jetstream: {} is not a stream sequence",
            shorten(cursor)
        ))),
    }
}

/// A cursor for error messages: quoted, and cut short when long.
pub(crate) fn shorten(cursor: &str) -> String {
    const KEEP: usize = 32;
    if cursor.chars().count() <= KEEP {
        format!("{cursor:?}")
    } else {
        let head: String = cursor.chars().take(KEEP).collect();
        format!("{head:?}... ({} bytes)", cursor.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cursor: &str, expected: Option<u64>) {
        match (parse(cursor), expected) {
            (Ok(got), Some(want)) => assert_eq!(got, want, "{cursor:?}"),
            (Err(AdapterError::InvalidCursor(_)), None) => {}
            (got, want) => panic!("{cursor:?}: got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn cursors() {
        check("0", Some(0));
        check("1", Some(1));
        check("18446744073709551615", Some(u64::MAX));
        check("18446744073709551616", None);
        check("", None);
        check("00", None);
        check("01", None);
        check("+1", None);
        check("-1", None);
        check(" 1", None);
        check("1 ", None);
        check("1.0", None);
        check("\u{0}", None);
        check("\u{1f980}", None);
        check(&"9".repeat(100_000), None);
    }

    #[test]
    fn long_cursors_are_shortened_in_errors() {
        let text = parse(&"x".repeat(1 << 20)).unwrap_err().to_string();
        assert!(text.len() < 200, "{text}");
    }
}
