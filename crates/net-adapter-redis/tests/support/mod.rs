//! The Redis the integration tests run against: a [`net_testkit::RedisServer`] with a key
//! prefix of its own, and a plain client for what the tests do behind the adapter.
//!
//! [`Redis::any`] uses `REDIS_URL` when it is set and a private server otherwise;
//! [`Redis::private`] always starts a private one, which the test can kill and restart.
#![allow(dead_code, unreachable_pub)]

use std::ops::{Deref, DerefMut};
use std::time::Duration;

pub use net_testkit::{RedisOptions as Options, RedisServer};

/// The server a test uses, with a key prefix no other test uses.
pub struct Redis {
    server: RedisServer,
    /// A prefix no other test uses, for key names.
    pub prefix: String,
}

/// A unique key prefix.
pub fn unique_prefix() -> String {
    net_adapter::conformance::unique_namespace()
}

impl Redis {
    /// A server for a test that can share one: `REDIS_URL` when set, else a private one.
    /// `None` (after a loud message) when there is neither.
    pub fn any(test: &str) -> Option<Redis> {
        RedisServer::any(test).map(Self::with_prefix)
    }

    /// A private server with `options`; `None` (after a loud message) without the binary.
    pub fn private(test: &str, options: Options) -> Option<Redis> {
        RedisServer::private(test, options).map(Self::with_prefix)
    }

    fn with_prefix(server: RedisServer) -> Redis {
        Redis {
            server,
            prefix: unique_prefix(),
        }
    }

    /// A plain client connection (multiplexed), for what the tests do behind the adapter.
    /// Its replies may take long on a loaded machine: it waits up to a minute for each.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(10)))
            .set_response_timeout(Some(Duration::from_secs(60)));
        redis::Client::open(self.url())
            .expect("valid url")
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("connect to redis")
    }
}

impl Deref for Redis {
    type Target = RedisServer;

    fn deref(&self) -> &RedisServer {
        &self.server
    }
}

impl DerefMut for Redis {
    fn deref_mut(&mut self) -> &mut RedisServer {
        &mut self.server
    }
}

/// Deletes every key under `prefix` (for tests on a shared server).
pub async fn delete_prefix(con: &mut redis::aio::MultiplexedConnection, prefix: &str) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(con)
        .await
        .unwrap_or_default();
    // Batch keys carry the stream key as a hash tag: `{prefix...}:batch:...`.
    let tagged: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}*"))
        .query_async(con)
        .await
        .unwrap_or_default();
    for key in keys.into_iter().chain(tagged) {
        let _: Result<(), _> = redis::cmd("DEL").arg(key).query_async(con).await;
    }
}
