//! Parses arbitrary text as a filter and runs whatever compiles against arbitrary bytes as the
//! payload: a bad filter is a `FilterError`, and matching never panics.
//!
//! The first byte says how many of the following bytes are the filter; the rest is the payload.

#![no_main]

use libfuzzer_sys::fuzz_target;
use net_core::Filter;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (filter, payload) = rest.split_at(usize::from(split).min(rest.len()));
    let Ok(text) = std::str::from_utf8(filter) else {
        return;
    };
    if let Ok(filter) = Filter::parse(text) {
        let _ = filter.matches_bytes(payload);
    }
});
