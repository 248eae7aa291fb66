//! Decodes arbitrary bytes as the identity payload of a handshake message.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = net_mesh::session::decode_identity_payload(data);
});
