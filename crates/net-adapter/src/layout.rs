//! [`StreamLayout`]: what every producer and consumer of one stream must agree on, and how an
//! adapter records it in its backend.
//!
//! A bus routes events over its shards; a consumer reads the shards it knows of. A consumer
//! that opens a stream with fewer shards than its producer would read a subset of the events
//! and never say so, and a producer with another shard count would scatter one key's events
//! over shards the others do not expect. So the first bus that opens a stream records the
//! layout in the backend ([`Adapter::record_layout`](crate::Adapter::record_layout) with
//! [`LayoutWrite::IfAbsent`]), and every later one compares its own with what is recorded and
//! refuses to start on a mismatch.
//!
//! The record is a small JSON document, [`StreamLayout::encode`]: `{"format":1,"shards":16}`.
//! Adapters store it as an opaque string next to their data (a Redis key, a JetStream stream)
//! and read it back with [`StreamLayout::decode`], which rejects anything it does not
//! understand with [`AdapterError::Fatal`]: a layout this version cannot read is not one it may
//! silently ignore.

use crate::AdapterError;

/// The version of the encoding [`StreamLayout::encode`] writes.
const FORMAT: u64 = 1;

/// The shape of a stream that producers and consumers must share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct StreamLayout {
    /// How many shard ids the stream has: shards `0..shards`.
    pub shards: u16,
}

/// How [`Adapter::record_layout`](crate::Adapter::record_layout) writes a layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LayoutWrite {
    /// Record it only if the backend has none yet (atomically: of two buses opening a new
    /// stream at once, exactly one layout wins and both see it).
    IfAbsent,
    /// Replace whatever is recorded (after the bus added shards).
    Replace,
}

impl StreamLayout {
    /// A layout of `shards` shards.
    pub fn new(shards: u16) -> Self {
        StreamLayout { shards }
    }

    /// The text an adapter stores: `{"format":1,"shards":N}`.
    pub fn encode(&self) -> String {
        format!("{{\"format\":{FORMAT},\"shards\":{}}}", self.shards)
    }

    /// Reads what [`StreamLayout::encode`] wrote. `what` names the record in the error (for
    /// example `redis key ev:layout`).
    pub fn decode(bytes: &[u8], what: &str) -> Result<Self, AdapterError> {
        let bad = |why: String| AdapterError::Fatal(format!("stream layout in {what}: {why}"));
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON ({e})")))?;
        let format = value.get("format").and_then(serde_json::Value::as_u64);
        if format != Some(FORMAT) {
            return Err(bad(format!(
                "format {} is not one this version reads (it reads {FORMAT})",
                value
                    .get("format")
                    .map_or_else(|| "missing".to_owned(), ToString::to_string)
            )));
        }
        let shards = value
            .get("shards")
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| bad("`shards` is not a shard count from 1 to 65535".to_owned()))?;
        Ok(StreamLayout { shards })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<u16, &str>) {
        match (StreamLayout::decode(text.as_bytes(), "test"), expected) {
            (Ok(layout), Ok(shards)) => assert_eq!(layout.shards, shards, "{text}"),
            (Err(AdapterError::Fatal(why)), Err(want)) => {
                assert!(why.contains(want), "{text}: {why}")
            }
            (got, want) => panic!("{text}: got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn layouts_decode_what_they_encode() {
        for shards in [1, 16, 1024, u16::MAX] {
            let layout = StreamLayout::new(shards);
            assert_eq!(
                StreamLayout::decode(layout.encode().as_bytes(), "test").unwrap(),
                layout
            );
        }
        assert_eq!(
            StreamLayout::new(16).encode(),
            r#"{"format":1,"shards":16}"#
        );
    }

    #[test]
    fn unreadable_layouts_are_fatal() {
        check(r#"{"format":1,"shards":8,"extra":true}"#, Ok(8));
        check("", Err("not JSON"));
        check("\u{ff}", Err("not JSON"));
        check(r#"{"shards":8}"#, Err("format missing"));
        check(r#"{"format":2,"shards":8}"#, Err("format 2"));
        check(r#"{"format":1}"#, Err("`shards`"));
        check(r#"{"format":1,"shards":0}"#, Err("`shards`"));
        check(r#"{"format":1,"shards":65536}"#, Err("`shards`"));
        check(r#"{"format":1,"shards":-1}"#, Err("`shards`"));
        check(r#"{"format":1,"shards":"8"}"#, Err("`shards`"));
    }
}
