//! Python values to event payloads: `bytes`/`str` as they are, other values as JSON text.

use crate::errors::SerializationError;
use bytes::Bytes;
use net_sdk::RawEvent;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// Deepest nesting of lists and dicts `ingest` serializes: deeper values (and values that
/// contain themselves) raise `SerializationError` instead of exhausting the stack. It is the
/// depth serde_json reads back, so everything written here can be parsed again.
const MAX_DEPTH: usize = 128;

/// The payload bytes of `ingest_raw`: `bytes`, `bytearray` or `str` (as UTF-8),
/// copied once.
pub(crate) fn raw_payload(value: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(bytes.as_bytes()));
    }
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(Bytes::copy_from_slice(text.to_cow()?.as_bytes()));
    }
    if let Ok(array) = value.cast::<PyByteArray>() {
        return Ok(Bytes::from(array.to_vec()));
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "a raw event is bytes, bytearray or str, not {}",
        value.get_type().name()?
    )))
}

/// A raw event from `bytes`, `bytearray` or `str`.
pub(crate) fn raw_event(value: &Bound<'_, PyAny>) -> PyResult<RawEvent> {
    raw_payload(value).map(RawEvent::from_bytes)
}

/// `value` as compact JSON text.
pub(crate) fn json_bytes(value: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let mut out = Vec::with_capacity(64);
    match serde_json::to_writer(&mut out, &Json { value, depth: 0 }) {
        Ok(()) => Ok(Bytes::from(out)),
        Err(e) => Err(SerializationError::new_err(format!(
            "event serialization failed: {e}"
        ))),
    }
}

/// A Python value seen through serde.
struct Json<'a, 'py> {
    value: &'a Bound<'py, PyAny>,
    depth: usize,
}

impl Json<'_, '_> {
    fn child<'b, 'py>(&self, value: &'b Bound<'py, PyAny>) -> Result<Json<'b, 'py>, String> {
        if self.depth >= MAX_DEPTH {
            return Err(format!(
                "nested deeper than {MAX_DEPTH} levels (or contains itself)"
            ));
        }
        Ok(Json {
            value,
            depth: self.depth + 1,
        })
    }
}

impl Serialize for Json<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = self.value;
        if let Ok(dict) = value.cast::<PyDict>() {
            let mut map = serializer.serialize_map(Some(dict.len()))?;
            for (key, item) in dict.iter() {
                let key = key.cast::<PyString>().map_err(|_| {
                    S::Error::custom(format!("dict keys must be str, not {}", type_name(&key)))
                })?;
                let key = key.to_cow().map_err(S::Error::custom)?;
                map.serialize_entry(&*key, &self.child(&item).map_err(S::Error::custom)?)?;
            }
            return map.end();
        }
        if let Ok(text) = value.cast::<PyString>() {
            let text = text.to_cow().map_err(S::Error::custom)?;
            return serializer.serialize_str(&text);
        }
        if let Ok(flag) = value.cast::<PyBool>() {
            return serializer.serialize_bool(flag.is_true());
        }
        if value.cast::<PyInt>().is_ok() {
            if let Ok(n) = value.extract::<i64>() {
                return serializer.serialize_i64(n);
            }
            if let Ok(n) = value.extract::<u64>() {
                return serializer.serialize_u64(n);
            }
            return Err(S::Error::custom(
                "integer out of range (JSON events carry 64-bit integers)",
            ));
        }
        if let Ok(float) = value.cast::<PyFloat>() {
            let x = float.value();
            if !x.is_finite() {
                return Err(S::Error::custom(format!("{x} is not a JSON number")));
            }
            return serializer.serialize_f64(x);
        }
        if value.is_none() {
            return serializer.serialize_unit();
        }
        if let Ok(list) = value.cast::<PyList>() {
            let mut seq = serializer.serialize_seq(Some(list.len()))?;
            for item in list.iter() {
                seq.serialize_element(&self.child(&item).map_err(S::Error::custom)?)?;
            }
            return seq.end();
        }
        if let Ok(tuple) = value.cast::<PyTuple>() {
            let mut seq = serializer.serialize_seq(Some(tuple.len()))?;
            for item in tuple.iter() {
                seq.serialize_element(&self.child(&item).map_err(S::Error::custom)?)?;
            }
            return seq.end();
        }
        Err(S::Error::custom(format!(
            "{} is not JSON serializable",
            type_name(value)
        )))
    }
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "this value".to_owned())
}
