//! Decodes arbitrary bytes as a mesh frame; whatever decodes must re-encode to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use net_mesh::frame::Frame;

fuzz_target!(|data: &[u8]| {
    let bytes = bytes::Bytes::copy_from_slice(data);
    if let Ok(frame) = Frame::decode(&bytes) {
        // What decoded fits every length prefix, so it encodes.
        assert_eq!(frame.to_bytes().unwrap(), data);
    }
});
