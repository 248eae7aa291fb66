//! The stored format of one event and the decoding of stream entries.
//!
//! Every entry has two fields:
//!
//! - `d`: `{"r":<payload>,"t":<insertion timestamp, ns since the epoch>,"s":<shard id>}`.
//!   The payload is embedded verbatim when it is JSON without surrounding whitespace, so
//!   `redis-cli XRANGE` shows it as written. "JSON" means a document under the rule of
//!   [`net_adapter::payload`] (valid UTF-8 in every string, no lone surrogate escape, bounded
//!   nesting), the rule the bus's validated ingest path and filter evaluator use. Any other
//!   payload (the bus's unvalidated raw path accepts arbitrary bytes) is stored as
//!   `"b":"<base64>"` instead of `"r"`, so its bytes still come back exactly and the `d`
//!   field itself always stays valid JSON.
//! - `dedup_id`: the event's dedup id (`{nonce:x}:{shard}:{sequence_start}:{index}`).
//!
//! Decoding looks fields up by name (their order on the wire does not matter) and sorts an
//! entry into one of three outcomes: an event; a corrupt entry, which readers skip while
//! moving past it; or an entry whose shard id is out of range or names another shard, which
//! must stop the reader at that position (it would otherwise be mis-routed).

use base64::Engine as _;
use bytes::Bytes;
use net_adapter::StoredEvent;
use redis::Value;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt::Write as _;

use crate::id::StreamId;

/// Appends the `d` field of an event to `out` (which is cleared first).
pub(crate) fn encode_d(out: &mut Vec<u8>, raw: &[u8], insertion_ts: u64, shard_id: u16) {
    out.clear();
    if embeddable(raw) {
        out.extend_from_slice(b"{\"r\":");
        out.extend_from_slice(raw);
    } else {
        out.extend_from_slice(b"{\"b\":\"");
        // Only payloads that are not JSON take this path, so the allocation is rare.
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
        out.extend_from_slice(encoded.as_bytes());
        out.push(b'"');
    }
    let mut tail = String::with_capacity(48);
    let _ = write!(tail, ",\"t\":{insertion_ts},\"s\":{shard_id}}}");
    out.extend_from_slice(tail.as_bytes());
}

/// True when `raw` can be embedded verbatim: a JSON document under the rule of
/// [`net_adapter::payload`] with no whitespace around it. Anything the rule refuses (bytes
/// that are not UTF-8 inside a string, a lone surrogate escape, nesting past the limit) would
/// make the `d` field unreadable, so it takes the base64 form.
fn embeddable(raw: &[u8]) -> bool {
    net_adapter::payload::embeddable(raw)
}

/// Writes the dedup id of event `index` of a batch into `out` (cleared first); the same
/// text as [`net_adapter::dedup_id`], without allocating.
pub(crate) fn encode_dedup_id(
    out: &mut String,
    nonce: u64,
    shard_id: u16,
    sequence_start: u64,
    index: usize,
) {
    out.clear();
    let _ = write!(out, "{nonce:x}:{shard_id}:{sequence_start}:{index}");
}

/// The `d` field as stored.
#[derive(Deserialize)]
struct Stored<'a> {
    /// Present even when it holds `null`: the payload `null` is embedded like any other.
    #[serde(borrow, default, deserialize_with = "present")]
    r: Option<&'a RawValue>,
    #[serde(borrow, default)]
    b: Option<std::borrow::Cow<'a, str>>,
    t: u64,
    s: u64,
}

/// Deserializes a present field as `Some`, even when it holds `null` (a plain `Option` would
/// read `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// What one stream entry turned out to be.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A well-formed event.
    Event(StoredEvent),
    /// An entry that cannot be decoded; readers skip it.
    Corrupt {
        /// Its id.
        id: StreamId,
        /// Why.
        reason: &'static str,
        /// Its fields as stored (`None` when the stream no longer holds it), for a dead
        /// letter copy.
        fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    },
    /// An entry whose shard id does not belong to the stream it was read from.
    WrongShard {
        /// Its id.
        id: StreamId,
        /// The shard id it claims.
        claimed: u64,
        /// Its fields as stored.
        fields: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

/// One raw entry: its id and its field/value pairs (`None` when the stream no longer holds
/// the entry, as `XAUTOCLAIM` and pending reads report deleted entries).
pub(crate) struct RawEntry {
    /// The id.
    pub(crate) id: StreamId,
    /// The fields, or `None` for a deleted entry.
    pub(crate) fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// Turns the bytes of a reply item into text, if it is a string.
fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

/// Parses a list of entries as `XRANGE`, `XREADGROUP` and `XAUTOCLAIM` return it:
/// `[[id, [field, value, ...]], ...]`. An item without a valid id is a protocol violation
/// (`Err` with a description); everything else is left to [`decode`].
pub(crate) fn parse_entries(value: Value) -> Result<Vec<RawEntry>, String> {
    let items = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) | Value::Set(items) => items,
        other => return Err(format!("expected a list of entries, got {other:?}")),
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let (id, fields) = match item {
            Value::Array(mut pair) if pair.len() == 2 => {
                let fields = pair.pop().unwrap_or(Value::Nil);
                let id = pair.pop().unwrap_or(Value::Nil);
                (id, fields)
            }
            other => return Err(format!("expected an entry [id, fields], got {other:?}")),
        };
        let id = bytes_of(id)
            .as_deref()
            .and_then(StreamId::parse_bytes)
            .ok_or_else(|| "an entry has no valid id".to_owned())?;
        let fields = match fields {
            Value::Nil => None,
            Value::Array(flat) => {
                let mut pairs = Vec::with_capacity(flat.len() / 2);
                let mut flat = flat.into_iter();
                while let (Some(field), Some(value)) = (flat.next(), flat.next()) {
                    if let (Some(field), Some(value)) = (bytes_of(field), bytes_of(value)) {
                        pairs.push((field, value));
                    }
                }
                Some(pairs)
            }
            Value::Map(map) => Some(
                map.into_iter()
                    .filter_map(|(field, value)| Some((bytes_of(field)?, bytes_of(value)?)))
                    .collect(),
            ),
            // Fields of a shape no Redis sends: the entry is unreadable, not the reply.
            _ => Some(Vec::new()),
        };
        entries.push(RawEntry { id, fields });
    }
    Ok(entries)
}

/// Where the payload of a valid `d` field is.
enum Payload {
    /// Embedded JSON at this byte range of the field.
    Slice(usize, usize),
    /// Decoded from base64.
    Owned(Vec<u8>),
}

/// What the `d` field says, before anything is moved.
enum Inspected {
    Valid { insertion_ts: u64, payload: Payload },
    Corrupt(&'static str),
    WrongShard(u64),
}

/// Checks the `d` field of an entry of shard `shard_id`'s stream.
fn inspect(d: &[u8], shard_id: u16) -> Inspected {
    let Ok(text) = std::str::from_utf8(d) else {
        return Inspected::Corrupt("the `d` field is not UTF-8");
    };
    let stored: Stored<'_> = match serde_json::from_str(text) {
        Ok(stored) => stored,
        Err(_) => return Inspected::Corrupt("the `d` field is not the stored JSON object"),
    };
    if stored.s != u64::from(shard_id) {
        return Inspected::WrongShard(stored.s);
    }
    let payload = match (stored.r, stored.b) {
        (Some(raw), None) => {
            // The payload is a slice of the field: remember where, to share the buffer.
            let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
            Payload::Slice(start, start + raw.get().len())
        }
        (None, Some(encoded)) => {
            match base64::engine::general_purpose::STANDARD.decode(&*encoded) {
                Ok(bytes) => Payload::Owned(bytes),
                Err(_) => return Inspected::Corrupt("the `b` field is not base64"),
            }
        }
        _ => return Inspected::Corrupt("the `d` field holds neither `r` nor `b` exactly once"),
    };
    Inspected::Valid {
        insertion_ts: stored.t,
        payload,
    }
}

/// Decodes one entry read from shard `shard_id`'s stream.
pub(crate) fn decode(entry: RawEntry, shard_id: u16) -> Decoded {
    let id = entry.id;
    let Some(mut fields) = entry.fields else {
        return Decoded::Corrupt {
            id,
            reason: "the entry was deleted from the stream",
            fields: None,
        };
    };
    let Some(at) = fields.iter().position(|(field, _)| field == b"d") else {
        return Decoded::Corrupt {
            id,
            reason: "the entry has no `d` field",
            fields: Some(fields),
        };
    };
    let (insertion_ts, payload) = match inspect(&fields[at].1, shard_id) {
        Inspected::Valid {
            insertion_ts,
            payload,
        } => (insertion_ts, payload),
        Inspected::Corrupt(reason) => {
            return Decoded::Corrupt {
                id,
                reason,
                fields: Some(fields),
            }
        }
        Inspected::WrongShard(claimed) => {
            return Decoded::WrongShard {
                id,
                claimed,
                fields,
            }
        }
    };
    let dedup_id = fields
        .iter()
        .find(|(field, _)| field == b"dedup_id")
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
        .map(str::to_owned);
    let raw = match payload {
        Payload::Slice(start, end) => Bytes::from(fields.swap_remove(at).1).slice(start..end),
        Payload::Owned(bytes) => Bytes::from(bytes),
    };
    Decoded::Event(StoredEvent {
        id: id.to_string(),
        raw,
        insertion_ts,
        shard_id,
        dedup_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &[u8])]) -> RawEntry {
        RawEntry {
            id: StreamId { ms: 7, seq: 1 },
            fields: Some(
                fields
                    .iter()
                    .map(|(f, v)| (f.as_bytes().to_vec(), v.to_vec()))
                    .collect(),
            ),
        }
    }

    fn round_trip(raw: &[u8]) {
        let mut d = Vec::new();
        encode_d(&mut d, raw, 1_700_000_000_000_000_123, 65_535);
        let decoded = decode(entry(&[("dedup_id", b"a:1:2:3"), ("d", &d)]), 65_535);
        match decoded {
            Decoded::Event(event) => {
                assert_eq!(&event.raw[..], raw, "{}", String::from_utf8_lossy(&d));
                assert_eq!(event.insertion_ts, 1_700_000_000_000_000_123);
                assert_eq!(event.shard_id, 65_535);
                assert_eq!(event.id, "7-1");
                assert_eq!(event.dedup_id.as_deref(), Some("a:1:2:3"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn payloads_round_trip() {
        round_trip(br#"{"a":1,"text":"caf\u00e9 \" \\ \n"}"#);
        round_trip("{\"t\":\"\u{1f980}\"}".as_bytes());
        round_trip(b"[1,2,3]");
        round_trip(b"42");
        round_trip(b"null");
        round_trip(b"\"\"");
        round_trip(b"not json at all");
        round_trip(b" {\"padded\":true} ");
        round_trip(b"");
        round_trip(&[0xff, 0x00, 0x80]);
        // Looks like JSON to a lenient scanner, but the `d` field could not hold it verbatim.
        round_trip(b"{\"a\":\"\xff\xfe\"}");
        round_trip(br#"{"a":"\ud800"}"#);
        round_trip(br#"["\udc00",1]"#);
        round_trip(b"1e400");
        let depth = net_adapter::payload::MAX_DEPTH;
        for levels in [depth - 1, depth, depth + 1, 4 * depth] {
            let nested = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
            round_trip(nested.as_bytes());
        }
    }

    #[test]
    fn payloads_outside_the_json_rule_are_not_embedded() {
        let mut d = Vec::new();
        encode_d(&mut d, b"{\"a\":\"\xff\xfe\"}", 5, 3);
        assert_eq!(d, br#"{"b":"eyJhIjoi//4ifQ==","t":5,"s":3}"#);
        encode_d(&mut d, br#""\ud800""#, 5, 3);
        assert!(
            d.starts_with(br#"{"b":"#),
            "{}",
            String::from_utf8_lossy(&d)
        );
    }

    #[test]
    fn stored_json_is_readable() {
        let mut d = Vec::new();
        encode_d(&mut d, br#"{"k":"v"}"#, 5, 3);
        assert_eq!(d, br#"{"r":{"k":"v"},"t":5,"s":3}"#);
        encode_d(&mut d, b"xy", 5, 3);
        assert_eq!(d, br#"{"b":"eHk=","t":5,"s":3}"#);
    }

    #[test]
    fn dedup_ids_match_the_adapter_crate() {
        let mut out = String::new();
        encode_dedup_id(&mut out, 0xabc, 7, 99, 3);
        assert_eq!(out, net_adapter::dedup_id(0xabc, 7, 99, 3));
    }

    fn kind(decoded: Decoded) -> String {
        match decoded {
            Decoded::Event(_) => "event".to_owned(),
            Decoded::Corrupt { .. } => "corrupt".to_owned(),
            Decoded::WrongShard { claimed, .. } => format!("wrong shard {claimed}"),
        }
    }

    #[test]
    fn damaged_entries() {
        let check = |fields: &[(&str, &[u8])], expected: &str| {
            assert_eq!(kind(decode(entry(fields), 3)), expected, "{:?}", {
                fields
                    .iter()
                    .map(|(f, v)| format!("{f}={}", String::from_utf8_lossy(v)))
                    .collect::<Vec<_>>()
            });
        };
        check(&[("d", br#"{"r":1,"t":1,"s":3}"#)], "event");
        check(&[("d", br#"{"r":null,"t":1,"s":3}"#)], "event");
        check(&[("d", br#"{"r":null,"b":"AA==","t":1,"s":3}"#)], "corrupt");
        check(&[("x", b"1")], "corrupt");
        check(&[("d", b"{not json")], "corrupt");
        check(&[("d", &[0xff, 0xfe])], "corrupt");
        check(&[("d", br#"{"r":1,"s":3}"#)], "corrupt");
        check(&[("d", br#"{"r":1,"t":-1,"s":3}"#)], "corrupt");
        check(&[("d", br#"{"t":1,"s":3}"#)], "corrupt");
        check(&[("d", br#"{"r":1,"b":"AA==","t":1,"s":3}"#)], "corrupt");
        check(&[("d", br#"{"b":"!!","t":1,"s":3}"#)], "corrupt");
        check(&[("d", br#"{"r":1,"t":1,"s":-3}"#)], "corrupt");
        check(&[("d", br#"{"r":1,"t":1,"s":70000}"#)], "wrong shard 70000");
        check(&[("d", br#"{"r":1,"t":1,"s":4}"#)], "wrong shard 4");
        let deleted = RawEntry {
            id: StreamId { ms: 1, seq: 1 },
            fields: None,
        };
        assert_eq!(kind(decode(deleted, 3)), "corrupt");
    }

    #[test]
    fn parsing_replies() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::BulkString(b"1-1".to_vec()),
                Value::Array(vec![
                    Value::BulkString(b"d".to_vec()),
                    Value::BulkString(b"x".to_vec()),
                ]),
            ]),
            Value::Array(vec![Value::BulkString(b"1-2".to_vec()), Value::Nil]),
        ]);
        let entries = parse_entries(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].fields.as_ref().unwrap().len(), 1);
        assert!(entries[1].fields.is_none());
        assert!(parse_entries(Value::Int(3)).is_err());
        assert!(parse_entries(Value::Array(vec![Value::Int(3)])).is_err());
        assert!(parse_entries(Value::Nil).unwrap().is_empty());
    }
}
