//! The NATS server the integration tests run against: [`net_testkit::NatsServer`], which
//! starts a private `nats-server -js` (or falls back to `NATS_URL`), and names for streams.
#![allow(dead_code, unreachable_pub)]

pub mod fixture;

pub use net_testkit::NatsServer;

/// A name no other test uses, for stream prefixes.
pub fn unique_name(what: &str) -> String {
    net_adapter::conformance::unique_namespace().replace("net-conformance", what)
}
