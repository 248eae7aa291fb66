//! Feeds arbitrary bytes to a listening session, as an unauthenticated peer would: it must
//! fail cleanly, never panic, never buffer more than one record.

#![no_main]

use libfuzzer_sys::fuzz_target;
use net_mesh::{EntityKeypair, Role, Session, SessionConfig};
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let config = SessionConfig::new(EntityKeypair::from_secret_bytes([7; 32]));
    let Ok(mut session) = Session::new(config, Role::Responder, Instant::now()) else {
        return;
    };
    // Split the input in two calls to exercise the partial-record path.
    let (a, b) = data.split_at(data.len() / 2);
    if session.handle_input(a).is_ok() {
        let _ = session.handle_input(b);
    }
    while session.poll_event().is_some() {}
});
