//! The one rule that says which payloads are JSON documents.
//!
//! The bus accepts any bytes on its raw path, but several places need to know whether a
//! payload is a JSON document: the validated ingest path (`RawEvent::from_bytes_validated`)
//! refuses payloads that are not, the filter evaluator parses the ones that are, and adapters
//! that embed payloads in a JSON envelope must embed only the ones that are. If these places
//! disagreed, a payload could be accepted by one and lost by the next (accepted at ingest,
//! then skipped on read, or stored but never matched by any filter). So they all ask this
//! module.
//!
//! A payload is a JSON document when all of these hold:
//! - it is one JSON value (RFC 8259), optionally surrounded by JSON whitespace, and nothing
//!   else;
//! - every string (keys included) is valid UTF-8 and its `\u` escapes decode to Unicode
//!   scalar values: a lone surrogate such as `"\ud800"` is refused;
//! - every number fits an `f64` (`1e400` is refused);
//! - arrays and objects nest at most [`MAX_DEPTH`] levels (`[[1]]` nests 2 levels).
//!
//! [`validate`] checks the rule without building a tree and allocates only to unescape
//! strings; [`parse`] builds the [`serde_json::Value`] and accepts exactly the same inputs,
//! because both drive the same `serde_json` deserializer the same way.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// How deeply arrays and objects of a payload may nest; the outermost container is level 1.
///
/// This is what `serde_json`'s default recursion limit (128) lets through; [`parse`] and
/// [`validate`] both run under it, and a test pins the number so an upstream change cannot
/// move it silently.
pub const MAX_DEPTH: usize = 127;

/// Checks that `bytes` is a JSON document under the rule of this module.
///
/// # Errors
///
/// The `serde_json` error naming the first violation and its position.
pub fn validate(bytes: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<Checked>(bytes).map(|_| ())
}

/// Parses `bytes` as a JSON document under the rule of this module.
///
/// # Errors
///
/// Exactly when [`validate`] fails, with the same error.
pub fn parse(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Whether `bytes` is a JSON document with no whitespace before or after it, so it can be
/// embedded verbatim as the value of a JSON member: the envelope stays a JSON document within
/// the rule (one level deeper) and the embedded slice is exactly `bytes`.
///
/// Adapters that embed payloads in a JSON envelope must also refuse anything else they
/// reserve (such as `null`) themselves.
pub fn embeddable(bytes: &[u8]) -> bool {
    let trimmed = match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => !is_space(*first) && !is_space(*last),
        _ => false,
    };
    trimmed && within_depth(bytes, MAX_DEPTH - 1) && validate(bytes).is_ok()
}

/// JSON whitespace (RFC 8259 `ws`).
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// A cheap over-estimate of nesting: counts brackets outside strings. Run only on payloads
/// that are about to be validated, so malformed input just has to not panic.
fn within_depth(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// A deserialization target that checks a value the way `serde_json::Value` reads it,
/// without keeping it.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `deserialize_any` is what `Value` uses: it decodes strings (checking UTF-8 and
        // surrogates), converts numbers, and counts nesting against the recursion limit.
        // `IgnoredAny` would skip strings without decoding them.
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_none<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Checked, D::Error> {
        Checked::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nested(levels: usize) -> Vec<u8> {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels)).into_bytes()
    }

    fn nested_objects(levels: usize) -> Vec<u8> {
        format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels)).into_bytes()
    }

    /// `validate` and `parse` agree on `bytes`, and the verdict is `valid`.
    fn check(bytes: &[u8], valid: bool) {
        assert_eq!(
            validate(bytes).is_ok(),
            valid,
            "validate {:?}",
            bytes_text(bytes)
        );
        assert_eq!(parse(bytes).is_ok(), valid, "parse {:?}", bytes_text(bytes));
    }

    fn bytes_text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned()
    }

    #[test]
    fn the_rule() {
        check(b"{}", true);
        check(b" [1, {\"b\": null}] \n", true);
        check(b"\"caf\xc3\xa9\"", true);
        check(br#""\ud83e\udd80""#, true);
        check(b"1e300", true);
        check(b"", false);
        check(b"{", false);
        check(b"{} {}", false);
        check(b"\x00", false);
        check(b"{\"a\":\"\xff\xfe\"}", false);
        check(b"{\"\xff\":1}", false);
        check(br#""\ud800""#, false);
        check(br#"{"a":"\udc00x"}"#, false);
        check(br#"{"\ud800":1}"#, false);
        check(b"1e400", false);
        check(b"\xef\xbb\xbf{}", false);
    }

    #[test]
    fn depth_limit_is_exact() {
        check(&nested(MAX_DEPTH), true);
        check(&nested(MAX_DEPTH + 1), false);
        check(&nested_objects(MAX_DEPTH), true);
        check(&nested_objects(MAX_DEPTH + 1), false);
    }

    #[test]
    fn embedding() {
        assert!(embeddable(b"{\"a\":1}"));
        assert!(embeddable(b"null"));
        assert!(embeddable(&nested(MAX_DEPTH - 1)));
        assert!(!embeddable(&nested(MAX_DEPTH)));
        assert!(!embeddable(b" {}"));
        assert!(!embeddable(b"{}\n"));
        assert!(!embeddable(b""));
        assert!(!embeddable(b"{\"a\":\"\xff\xfe\"}"));
        assert!(!embeddable(br#"["\ud800"]"#));
        // Brackets inside strings do not count as nesting.
        let mut deep_text = b"[\"".to_vec();
        deep_text.extend(std::iter::repeat_n(b'[', 500));
        deep_text.extend_from_slice(b"\\\"]\"]");
        assert!(embeddable(&deep_text));
        // An embedded document keeps the envelope a document under the rule.
        let inner = nested(MAX_DEPTH - 1);
        let mut envelope = b"{\"r\":".to_vec();
        envelope.extend_from_slice(&inner);
        envelope.push(b'}');
        assert!(validate(&envelope).is_ok());
    }

    proptest! {
        #[test]
        fn validate_and_parse_agree(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(validate(&bytes).is_ok(), parse(&bytes).is_ok());
        }

        #[test]
        fn validate_and_parse_agree_on_near_json(
            parts in prop::collection::vec(
                prop::sample::select(vec![
                    "{", "}", "[", "]", "\"", ":", ",", "1", "\\u", "d800", "dc00", "\\",
                    "a", " ", "\u{e9}", "null", "1e999", "-", ".5",
                ]),
                0..40,
            ),
            junk in prop::option::of(any::<u8>()),
        ) {
            let mut bytes = parts.concat().into_bytes();
            if let Some(b) = junk {
                let at = bytes.len() / 2;
                bytes.insert(at, b);
            }
            let verdict = validate(&bytes).is_ok();
            prop_assert_eq!(verdict, parse(&bytes).is_ok(), "{:?}", bytes_text(&bytes));
            if embeddable(&bytes) {
                prop_assert!(verdict);
            }
        }
    }
}
