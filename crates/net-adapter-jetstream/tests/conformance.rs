//! Runs the net-adapter conformance kit against `JetStreamAdapter` on a real nats-server, one
//! test per property, every hook provided (see `support/fixture.rs`), with the default read
//! path.
//!
//! Each property gets a private server of its own, so the properties can run in parallel and a
//! failure leaves nothing behind.

mod support;

use net_adapter_jetstream::ReadPath;
use support::fixture::{start, JetStreamFixture};

/// A fresh fixture with the default read path.
///
/// Without any server the kit cannot run at all: the skip is reported loudly and the test
/// process ends successfully here (each property runs in a process of its own under nextest;
/// under `cargo test` every test of this file would skip for the same reason). Under
/// `CI=true` the harness fails instead.
async fn fixture() -> JetStreamFixture {
    match start("conformance", ReadPath::Auto).await {
        Some(fixture) => fixture,
        None => std::process::exit(0),
    }
}

net_adapter::conformance_suite!(fixture);
