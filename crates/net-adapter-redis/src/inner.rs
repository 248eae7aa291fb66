//! What the adapter and its group consumers share: the settings, the two connections, the
//! shutdown gate, and the mapping of a failed command to an [`AdapterError`].
//!
//! [`RedisAdapter`](crate::RedisAdapter) and [`GroupConsumer`](crate::GroupConsumer) both
//! hold an `Arc<Inner>`; neither needs the other's module.

use net_adapter::AdapterError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::RedisAdapterConfig;
use crate::error::{Context, Secrets};
use crate::link::{Link, LinkError};

/// What the adapter and its group consumers share.
pub(crate) struct Inner {
    pub(crate) config: RedisAdapterConfig,
    pub(crate) secrets: Secrets,
    /// Batches go through this connection.
    pub(crate) writer: Link,
    /// Reads, acknowledgements and health checks go through this one, so they never queue
    /// behind a slow write (or one held up by the server) on the same socket.
    pub(crate) reader: Link,
    pub(crate) script: redis::Script,
    pub(crate) shut_down: AtomicBool,
    /// Held shared by every call and exclusively by `shutdown`, which so waits (bounded)
    /// for the calls in flight.
    pub(crate) gate: tokio::sync::RwLock<()>,
    pub(crate) initialised: AtomicBool,
}

/// Maps a link failure to an adapter error.
pub(crate) fn link_error(ctx: &Context<'_>, err: LinkError, timeout: Duration) -> AdapterError {
    match err {
        LinkError::Timeout => ctx.timeout(timeout),
        // The client's own response timeout: the same situation, the same message.
        LinkError::Redis(err) if err.is_timeout() => ctx.timeout(timeout),
        LinkError::Redis(err) => ctx.redis(&err),
    }
}

impl Inner {
    /// Enters the shutdown gate: `Shutdown` once shutdown has begun.
    pub(crate) async fn enter(&self) -> Result<tokio::sync::RwLockReadGuard<'_, ()>, AdapterError> {
        let guard = self.gate.read().await;
        if self.shut_down.load(Ordering::Acquire) {
            return Err(AdapterError::Shutdown);
        }
        Ok(guard)
    }

    /// An error context for `operation` on `shard`.
    pub(crate) fn ctx<'a>(&'a self, operation: &'a str, shard: Option<u16>) -> Context<'a> {
        Context {
            operation,
            shard,
            secrets: &self.secrets,
        }
    }

    /// Runs `cmd` on `link` and maps failures for `operation` on `shard`.
    pub(crate) async fn query<T: redis::FromRedisValue + Send>(
        &self,
        link: &Link,
        cmd: &redis::Cmd,
        operation: &str,
        shard: Option<u16>,
    ) -> Result<T, AdapterError> {
        link.run(|mut con| async move { cmd.query_async::<T>(&mut con).await })
            .await
            .map_err(|err| {
                link_error(
                    &self.ctx(operation, shard),
                    err,
                    self.config.command_timeout,
                )
            })
    }

    /// Runs `pipe` on `link` and maps failures for `operation` on `shard`.
    pub(crate) async fn query_pipe<T: redis::FromRedisValue + Send>(
        &self,
        link: &Link,
        pipe: &redis::Pipeline,
        operation: &str,
        shard: Option<u16>,
    ) -> Result<T, AdapterError> {
        link.run(|mut con| async move { pipe.query_async::<T>(&mut con).await })
            .await
            .map_err(|err| {
                link_error(
                    &self.ctx(operation, shard),
                    err,
                    self.config.command_timeout,
                )
            })
    }
}
