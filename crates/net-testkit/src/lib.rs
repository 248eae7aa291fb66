//! Real broker servers for integration tests.
//!
//! [`RedisServer`] starts a private `redis-server`, and [`NatsServer`] a private
//! `nats-server -js`, each on a free loopback port with a temporary directory of its own.
//! Both can be killed with SIGKILL and started again on the same port and directory, stop
//! their process when dropped, and print the server's log when the test is failing. A small
//! shell watchdog kills a server whose test process died without dropping the handle.
//!
//! `REDIS_URL` and `NATS_URL` name shared servers the tests may use instead, and
//! `NATS_SERVER_BIN` picks another `nats-server` binary. When no server is available a test
//! says loudly that it was skipped; under `CI=true` (or `CI=1`) that is a failure instead.
//!
//! This crate is for tests only and is never published.

mod nats;
mod process;
mod redis;

pub use nats::NatsServer;
pub use process::{ci, dump_log, free_port, loud, skip, wait_for_port};
pub use redis::{RedisOptions, RedisServer};
