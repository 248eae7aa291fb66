//! [`Link`]: one pooled, multiplexed connection that reconnects by itself.
//!
//! Every command goes through [`Link::run`], which bounds the whole call — connecting if
//! needed, sending, waiting for the reply — by the command timeout. A connection that
//! failed at the I/O level is dropped at once, and the next call opens a new one, so a
//! server that was restarted is reached again without restarting the process.
//!
//! A reply that does not come in time does not drop the connection by itself: the command
//! is still queued on the server and will run (a retry queued behind it then finds its
//! batch already written). Only a connection that has answered nothing but timeouts for
//! [`DEAD_AFTER`] command timeouts in a row is taken for dead and replaced, so a socket
//! whose peer vanished without a reset is not waited on forever.
//!
//! Concurrency: the current connection sits behind a short `parking_lot` lock (cloning a
//! multiplexed connection is cheap); opening a new one is serialised by an async mutex so a
//! burst of callers after an outage opens one connection, not one each. Each connection has
//! a generation number, so a late failure on an old connection cannot drop its replacement.

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{classify, Class};

/// After this many command timeouts of nothing but timed-out calls, a connection is
/// replaced.
const DEAD_AFTER: u32 = 3;

/// The connection in use and how it has been doing.
struct Current {
    generation: u64,
    connection: MultiplexedConnection,
    /// Since when every call on it timed out (`None`: the last call got a reply).
    failing_since: Option<Instant>,
}

/// What went wrong with a call through the link.
#[derive(Debug)]
pub(crate) enum LinkError {
    /// No reply (or no connection) within the command timeout.
    Timeout,
    /// The client or the server reported an error.
    Redis(RedisError),
}

/// One lazily opened, self-replacing connection to the server.
pub(crate) struct Link {
    client: Client,
    config: AsyncConnectionConfig,
    timeout: Duration,
    current: Mutex<Option<Current>>,
    connecting: tokio::sync::Mutex<u64>,
}

impl Link {
    /// A link to the server of `client` whose calls are bounded by `timeout`.
    pub(crate) fn new(client: Client, timeout: Duration) -> Self {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Self {
            client,
            config,
            timeout,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(0),
        }
    }

    /// The current connection, opening one if there is none.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        if let Some(current) = &*self.current.lock() {
            return Ok((current.generation, current.connection.clone()));
        }
        let mut generation = self.connecting.lock().await;
        // Someone else may have connected while this call waited for the mutex.
        if let Some(current) = &*self.current.lock() {
            return Ok((current.generation, current.connection.clone()));
        }
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        *generation += 1;
        *self.current.lock() = Some(Current {
            generation: *generation,
            connection: connection.clone(),
            failing_since: None,
        });
        tracing::debug!(generation = *generation, "redis: connected");
        Ok((*generation, connection))
    }

    /// Records how a call on connection `generation` ended: `None` for a reply, `Some(true)`
    /// for a broken connection, `Some(false)` for a timeout. Drops the connection when it is
    /// broken or has been timing out for too long.
    fn record(&self, generation: u64, failure: Option<bool>) {
        let mut slot = self.current.lock();
        let Some(current) = slot.as_mut().filter(|c| c.generation == generation) else {
            return;
        };
        let drop = match failure {
            None => {
                current.failing_since = None;
                false
            }
            Some(true) => true,
            Some(false) => {
                let since = *current.failing_since.get_or_insert_with(Instant::now);
                since.elapsed() >= self.timeout * DEAD_AFTER
            }
        };
        if drop {
            *slot = None;
            tracing::debug!(generation, "redis: dropped the connection");
        }
    }

    /// Runs `call` on the connection, bounded by the command timeout.
    pub(crate) async fn run<T, F, Fut>(&self, call: F) -> Result<T, LinkError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        // The generation of the connection the call used (0: none yet).
        let generation = AtomicU64::new(0);
        let attempt = async {
            let (g, connection) = self.connection().await?;
            generation.store(g, Ordering::Relaxed);
            call(connection).await
        };
        let (result, failure) = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => (Ok(value), None),
            // A server error is a reply: the connection works.
            Ok(Err(err))
                if err.kind() != redis::ErrorKind::Io && classify(&err) != Class::Connection =>
            {
                (Err(LinkError::Redis(err)), None)
            }
            Ok(Err(err)) if err.is_timeout() => (Err(LinkError::Redis(err)), Some(false)),
            Ok(Err(err)) => (Err(LinkError::Redis(err)), Some(true)),
            Err(_) => (Err(LinkError::Timeout), Some(false)),
        };
        match generation.load(Ordering::Relaxed) {
            0 => {}
            g => self.record(g, failure),
        }
        result
    }
}
