//! The stored record: how one event is laid out in a JetStream message, and how a message is
//! read back.
//!
//! A record is a JSON object `{"r":<raw>,"t":<ts>,"s":<shard>}`: `r` is the event's payload
//! embedded verbatim (it is JSON already, so nothing is escaped or copied twice), `t` the
//! insertion timestamp in nanoseconds since the Unix epoch, `s` the shard id. The event's dedup
//! id travels in the `Nats-Msg-Id` header, not in the record.
//!
//! A payload that cannot be embedded verbatim (not a JSON document under the rule of
//! [`net_adapter::payload`], which the validated ingest path and the filter evaluator share;
//! surrounded by whitespace; or the literal `null`, which a record reserves) is stored as
//! `{"b":"<base64>","t":..,"s":..}` instead, so every byte comes back exactly as ingested.
//!
//! Reading a message gives one of three outcomes ([`Decoded`]):
//! - an event;
//! - a corrupt record (not JSON, fields missing or of the wrong type): skipped, and the cursor
//!   moves past it;
//! - a dangerous record (`"r": null`, or a shard id out of range or not the shard being read):
//!   a writer is broken or events are mis-routed, so the read stops with `Fatal` at exactly
//!   that message instead of guessing.

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::io::Write as _;

/// What one stored message decodes to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A well-formed record.
    Event {
        /// The payload bytes as ingested.
        raw: Bytes,
        /// Insertion timestamp, nanoseconds since the Unix epoch.
        insertion_ts: u64,
    },
    /// A record that cannot be decoded; the reason is for logs.
    Corrupt(String),
    /// A record whose content is dangerous to pass on; the reason names the problem.
    Dangerous(String),
}

/// Appends the record of one event to `out`.
pub(crate) fn encode(raw: &[u8], insertion_ts: u64, shard_id: u16, out: &mut Vec<u8>) {
    if embeddable(raw) {
        out.extend_from_slice(b"{\"r\":");
        out.extend_from_slice(raw);
    } else {
        out.extend_from_slice(b"{\"b\":\"");
        let start = out.len();
        out.resize(start + base64::encoded_len(raw.len(), true).unwrap_or(0), 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(raw, &mut out[start..])
            .unwrap_or(0);
        out.truncate(start + written);
        out.push(b'"');
    }
    // Writing into a Vec cannot fail.
    let _ = write!(out, ",\"t\":{insertion_ts},\"s\":{shard_id}}}");
}

/// Bytes of the header block around a `Nats-Msg-Id` value: `NATS/1.0\r\n`, then
/// `Nats-Msg-Id: <id>\r\n`, then `\r\n`.
const MSG_ID_HEADER_OVERHEAD: usize =
    "NATS/1.0\r\n".len() + "Nats-Msg-Id: ".len() + "\r\n".len() + "\r\n".len();

/// The longest dedup id: `{nonce:x}:{shard}:{sequence_start}:{index}` at their maxima.
pub(crate) const MAX_MSG_ID_LEN: usize = 16 + 1 + 5 + 1 + 20 + 1 + 20;

/// What the server counts against its `max_payload` for one published record: the record plus
/// the header block carrying its dedup id.
pub(crate) fn message_size(record_len: usize, msg_id_len: usize) -> usize {
    record_len
        .saturating_add(MSG_ID_HEADER_OVERHEAD)
        .saturating_add(msg_id_len)
}

/// Whether `raw` can be embedded verbatim: a JSON document under the rule of
/// [`net_adapter::payload`] with nothing around it, and not `null`.
fn embeddable(raw: &[u8]) -> bool {
    raw != b"null" && net_adapter::payload::embeddable(raw)
}

/// The fields of a record as they are parsed; `r` keeps `null` apart from absent.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    r: Option<&'a RawValue>,
    #[serde(default, borrow)]
    b: Option<&'a str>,
    t: u64,
    s: i128,
}

/// Deserializes a present field as `Some` even when it holds `null`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Decodes the message `payload` read from the stream of `shard_id`.
pub(crate) fn decode(payload: &Bytes, shard_id: u16) -> Decoded {
    let fields: Fields<'_> = match serde_json::from_slice(payload) {
        Ok(fields) => fields,
        Err(err) => return Decoded::Corrupt(format!("not a record: {err}")),
    };
    if !(0..=i128::from(u16::MAX)).contains(&fields.s) {
        return Decoded::Dangerous(format!("shard id {} is out of range", fields.s));
    }
    if fields.s != i128::from(shard_id) {
        return Decoded::Dangerous(format!(
            "record of shard {} found in the stream of shard {shard_id}",
            fields.s
        ));
    }
    let raw = match (fields.r, fields.b) {
        (Some(r), None) if r.get() == "null" => {
            return Decoded::Dangerous("payload `r` is null".to_owned())
        }
        (Some(r), None) => payload.slice_ref(r.get().as_bytes()),
        (None, Some(b)) => match base64::engine::general_purpose::STANDARD.decode(b) {
            Ok(bytes) => Bytes::from(bytes),
            Err(err) => return Decoded::Corrupt(format!("payload `b` is not base64: {err}")),
        },
        (Some(_), Some(_)) => return Decoded::Corrupt("both `r` and `b` are present".into()),
        (None, None) => return Decoded::Corrupt("no payload field".into()),
    };
    Decoded::Event {
        raw,
        insertion_ts: fields.t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(raw: &[u8], ts: u64, shard: u16) -> Vec<u8> {
        let mut out = Vec::new();
        encode(raw, ts, shard, &mut out);
        out
    }

    /// Encodes `raw` and checks the record text, then that it decodes back to `raw`.
    fn check_round_trip(raw: &[u8], record: &str) {
        let bytes = encoded(raw, 17, 3);
        assert_eq!(String::from_utf8_lossy(&bytes), record, "encoding {raw:?}");
        match decode(&Bytes::from(bytes), 3) {
            Decoded::Event {
                raw: got,
                insertion_ts,
            } => {
                assert_eq!(&got[..], raw);
                assert_eq!(insertion_ts, 17);
            }
            other => panic!("{raw:?} decoded to {other:?}"),
        }
    }

    #[test]
    fn round_trips() {
        check_round_trip(br#"{"a":1}"#, r#"{"r":{"a":1},"t":17,"s":3}"#);
        check_round_trip(br#"[1, 2 ,3]"#, r#"{"r":[1, 2 ,3],"t":17,"s":3}"#);
        check_round_trip(b"\"caf\xc3\xa9\"", "{\"r\":\"caf\u{e9}\",\"t\":17,\"s\":3}");
        check_round_trip(b"42", r#"{"r":42,"t":17,"s":3}"#);
        check_round_trip(b"null", r#"{"b":"bnVsbA==","t":17,"s":3}"#);
        check_round_trip(b" {}", r#"{"b":"IHt9","t":17,"s":3}"#);
        check_round_trip(b"{} ", r#"{"b":"e30g","t":17,"s":3}"#);
        check_round_trip(b"not json", r#"{"b":"bm90IGpzb24=","t":17,"s":3}"#);
        check_round_trip(b"", r#"{"b":"","t":17,"s":3}"#);
        check_round_trip(b"\xff\x00", r#"{"b":"/wA=","t":17,"s":3}"#);
        check_round_trip(b"{}{}", r#"{"b":"e317fQ==","t":17,"s":3}"#);
        check_round_trip(b"\"\xff\xfe\"", r#"{"b":"Iv/+Ig==","t":17,"s":3}"#);
        check_round_trip(br#""\ud800""#, r#"{"b":"Ilx1ZDgwMCI=","t":17,"s":3}"#);
        check_round_trip(b"1e400", r#"{"b":"MWU0MDA=","t":17,"s":3}"#);
    }

    #[test]
    fn message_size_counts_the_header_block() {
        // The header block as NATS frames it.
        let block = "NATS/1.0\r\nNats-Msg-Id: ab:1:2:3\r\n\r\n";
        assert_eq!(message_size(100, "ab:1:2:3".len()), 100 + block.len());
        assert_eq!(
            net_adapter::dedup_id(u64::MAX, u16::MAX, u64::MAX, usize::MAX).len(),
            MAX_MSG_ID_LEN
        );
    }

    #[test]
    fn nesting_round_trips_at_every_depth() {
        let depth = net_adapter::payload::MAX_DEPTH;
        for levels in [depth - 1, depth, depth + 1, 4 * depth] {
            let raw = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
            let record = encoded(raw.as_bytes(), 1, 3);
            assert_eq!(
                record.starts_with(b"{\"r\":"),
                levels < depth,
                "{levels} levels"
            );
            match decode(&Bytes::from(record), 3) {
                Decoded::Event { raw: got, .. } => assert_eq!(&got[..], raw.as_bytes()),
                other => panic!("{levels} levels decoded to {other:?}"),
            }
        }
    }

    #[test]
    fn extreme_values_round_trip() {
        let bytes = encoded(b"1", u64::MAX, u16::MAX);
        assert_eq!(
            decode(&Bytes::from(bytes), u16::MAX),
            Decoded::Event {
                raw: Bytes::from_static(b"1"),
                insertion_ts: u64::MAX
            }
        );
    }

    /// Decodes `record` as read from shard 3 and checks the kind of outcome.
    fn check(record: &str, want: &str) {
        let got = match decode(&Bytes::copy_from_slice(record.as_bytes()), 3) {
            Decoded::Event { .. } => "event",
            Decoded::Corrupt(_) => "corrupt",
            Decoded::Dangerous(_) => "dangerous",
        };
        assert_eq!(got, want, "{record}");
    }

    #[test]
    fn classification() {
        check(r#"{"r":1,"t":1,"s":3}"#, "event");
        check(r#"{"s":3,"t":1,"r":{"x":[1]}}"#, "event");
        check(r#"{"r":1,"t":1,"s":3,"extra":true}"#, "event");
        check(r#"{"r":null,"t":1,"s":3}"#, "dangerous");
        check(r#"{"r":1,"t":1,"s":65536}"#, "dangerous");
        check(r#"{"r":1,"t":1,"s":-1}"#, "dangerous");
        check(r#"{"r":1,"t":1,"s":4}"#, "dangerous");
        check(r#"{"r":1,"t":1,"s":99999999999999999999}"#, "dangerous");
        check("", "corrupt");
        check("\u{0}garbage", "corrupt");
        check(r#"{"r":1,"t":1}"#, "corrupt");
        check(r#"{"r":1,"s":3}"#, "corrupt");
        check(r#"{"t":1,"s":3}"#, "corrupt");
        check(r#"{"r":1,"b":"","t":1,"s":3}"#, "corrupt");
        check(r#"{"b":"!!","t":1,"s":3}"#, "corrupt");
        check(r#"{"r":1,"t":-1,"s":3}"#, "corrupt");
        check(r#"{"r":1,"t":1.5,"s":3}"#, "corrupt");
        check(r#"{"r":1,"t":1,"s":"3"}"#, "corrupt");
        check(r#"{"r":1,"t":1,"s":3.0}"#, "corrupt");
        check(r#"{"r":1,"t":1,"s":3"#, "corrupt");
        check(r#"[1,2,3]"#, "corrupt");
    }
}
