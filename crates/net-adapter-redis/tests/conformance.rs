//! The adapter conformance kit against a real `redis-server`, once per write path.
//!
//! Every property runs against a fresh server (or a fresh key prefix on `REDIS_URL`), with
//! every hook the kit asks for done the way Redis itself would produce the situation:
//!
//! - `inject_corrupt`: a raw `XADD` of an entry whose `d` field is torn JSON;
//! - `trim`: `XTRIM ... MAXLEN = keep`;
//! - `fail_next_batch_permanently`: the shard's key replaced by a string (`WRONGTYPE`);
//! - `fail_next_batch_after_write`: the batch is written by the adapter, then its reply is
//!   replaced by a retryable error (a reply lost on the way back);
//! - `time_out_next_batch_after_write`: `CLIENT PAUSE ... WRITE` holds the write past the
//!   adapter's command timeout; it runs on the server once the pause ends (private server
//!   only: pausing a shared server would stall other users).
//!
//! The script path stores nothing twice, so its suite is also run once more on the retry
//! properties with the `persists_dedup_ids` capability withheld: the kit then fails the
//! adapter on any stored copy instead of filtering copies by dedup id.

mod support;

use net_adapter::conformance::{
    run_property, AdapterOnly, Capabilities, Fixture, HookError, HookResult, Outcome, Property,
};
use net_adapter::{
    async_trait, Adapter, AdapterError, Batch, LayoutWrite, ShardPollResult, StreamLayout,
};
use net_adapter_redis::{RedisAdapter, RedisAdapterConfig, WriteMode};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{delete_prefix, Redis};

/// The adapter's command timeout in these tests.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the timeout hook pauses writes: past the command timeout, and short of the
/// three timeouts after which the adapter gives up on a connection.
const PAUSE: Duration = Duration::from_millis(3_200);

/// Shards whose next batch gets its reply replaced by an error.
#[derive(Default)]
struct Flags(Mutex<HashSet<u16>>);

impl Flags {
    fn set(&self, shard: u16) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(shard);
    }

    fn take(&self, shard: u16) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&shard)
    }
}

/// The adapter, plus the one failure Redis cannot produce on demand: a reply lost after
/// the write happened.
struct LostReply {
    adapter: RedisAdapter,
    lose: Flags,
}

#[async_trait]
impl Adapter for LostReply {
    async fn init(&mut self) -> Result<(), AdapterError> {
        self.adapter.init().await
    }

    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        let shard = batch.shard_id;
        self.adapter.on_batch(batch).await?;
        if self.lose.take(shard) {
            return Err(AdapterError::Transient(format!(
                "redis: write on shard {shard}: the reply was lost (injected by the test)"
            )));
        }
        Ok(())
    }

    async fn poll_shard(
        &self,
        shard_id: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        self.adapter.poll_shard(shard_id, cursor, limit).await
    }

    async fn flush(&self) -> Result<(), AdapterError> {
        self.adapter.flush().await
    }

    async fn shutdown(&self) -> Result<(), AdapterError> {
        self.adapter.shutdown().await
    }

    fn name(&self) -> &str {
        self.adapter.name()
    }

    async fn is_healthy(&self) -> bool {
        self.adapter.is_healthy().await
    }

    async fn record_layout(
        &self,
        layout: StreamLayout,
        write: LayoutWrite,
    ) -> Result<Option<StreamLayout>, AdapterError> {
        self.adapter.record_layout(layout, write).await
    }
}

/// One fresh adapter on its own server (or prefix) for one property.
struct RedisFixture {
    redis: Redis,
    adapter: Arc<LostReply>,
    dedup_ids: bool,
}

impl RedisFixture {
    async fn new(mode: WriteMode, dedup_ids: bool) -> Option<Self> {
        let redis = Redis::any("conformance")?;
        let config = RedisAdapterConfig::new(redis.url(), redis.prefix.clone())
            .write_mode(mode)
            .command_timeout(COMMAND_TIMEOUT);
        let mut adapter = RedisAdapter::new(config).expect("valid config");
        adapter.init().await.expect("init");
        Some(Self {
            redis,
            adapter: Arc::new(LostReply {
                adapter,
                lose: Flags::default(),
            }),
            dedup_ids,
        })
    }

    fn key(&self, shard: u16) -> String {
        self.adapter.adapter.shard_key(shard)
    }

    async fn raw(&self, cmd: &mut redis::Cmd) -> HookResult {
        let mut con = self.redis.client().await;
        cmd.query_async::<redis::Value>(&mut con)
            .await
            .map(|_| ())
            .map_err(|e| HookError::Failed(e.to_string()))
    }
}

#[async_trait]
impl Fixture for RedisFixture {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.adapter.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .persists_dedup_ids(self.dedup_ids)
            .records_layout(true)
    }

    async fn inject_corrupt(&self, shard_id: u16) -> HookResult {
        self.raw(
            redis::cmd("XADD")
                .arg(self.key(shard_id))
                .arg("*")
                .arg("d")
                .arg(r#"{"r":{"torn":"#)
                .arg("dedup_id")
                .arg("torn"),
        )
        .await
    }

    async fn trim(&self, shard_id: u16, keep: usize) -> HookResult {
        self.raw(
            redis::cmd("XTRIM")
                .arg(self.key(shard_id))
                .arg("MAXLEN")
                .arg("=")
                .arg(keep),
        )
        .await
    }

    async fn fail_next_batch_permanently(&self, shard_id: u16) -> HookResult {
        let key = self.key(shard_id);
        self.raw(redis::cmd("DEL").arg(&key)).await?;
        self.raw(redis::cmd("SET").arg(&key).arg("not a stream"))
            .await
    }

    async fn fail_next_batch_after_write(&self, shard_id: u16) -> HookResult {
        self.adapter.lose.set(shard_id);
        Ok(())
    }

    async fn time_out_next_batch_after_write(&self, _shard_id: u16) -> HookResult {
        if !self.redis.is_private() {
            return Err(HookError::Unsupported);
        }
        self.raw(
            redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(PAUSE.as_millis() as u64)
                .arg("WRITE"),
        )
        .await
    }

    async fn cleanup(&self) -> Result<(), String> {
        if !self.redis.is_private() {
            let mut con = self.redis.client().await;
            delete_prefix(&mut con, &self.redis.prefix).await;
        }
        Ok(())
    }
}

/// The fixture of one property: a Redis one, or — when no server is available and the
/// support module has said so loudly (under `CI=true` it fails instead) — the in-memory
/// reference adapter without hooks, so the rest of the workspace's tests still run.
enum AnyFixture {
    Redis(RedisFixture),
    Missing(AdapterOnly),
}

impl AnyFixture {
    fn inner(&self) -> &dyn Fixture {
        match self {
            AnyFixture::Redis(fixture) => fixture,
            AnyFixture::Missing(fixture) => fixture,
        }
    }
}

async fn fixture(mode: WriteMode, dedup_ids: bool) -> AnyFixture {
    match RedisFixture::new(mode, dedup_ids).await {
        Some(fixture) => AnyFixture::Redis(fixture),
        None => AnyFixture::Missing(AdapterOnly::new(net_adapter::MemoryAdapter::new())),
    }
}

#[async_trait]
impl Fixture for AnyFixture {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.inner().adapter()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }
    fn deadline(&self) -> Duration {
        self.inner().deadline()
    }
    async fn inject_corrupt(&self, shard_id: u16) -> HookResult {
        self.inner().inject_corrupt(shard_id).await
    }
    async fn trim(&self, shard_id: u16, keep: usize) -> HookResult {
        self.inner().trim(shard_id, keep).await
    }
    async fn fail_next_batch_permanently(&self, shard_id: u16) -> HookResult {
        self.inner().fail_next_batch_permanently(shard_id).await
    }
    async fn fail_next_batch_after_write(&self, shard_id: u16) -> HookResult {
        self.inner().fail_next_batch_after_write(shard_id).await
    }
    async fn time_out_next_batch_after_write(&self, shard_id: u16) -> HookResult {
        self.inner().time_out_next_batch_after_write(shard_id).await
    }
    async fn cleanup(&self) -> Result<(), String> {
        self.inner().cleanup().await
    }
}

/// The script write path, judged with dedup ids like any adapter that persists them.
mod script {
    use super::*;

    async fn factory() -> AnyFixture {
        fixture(WriteMode::Script, true).await
    }

    net_adapter::conformance_suite!(factory);
}

/// The `MULTI`/`EXEC` write path: copies after a retry are allowed, filtered by dedup id.
mod transaction {
    use super::*;

    async fn factory() -> AnyFixture {
        fixture(WriteMode::Transaction, true).await
    }

    net_adapter::conformance_suite!(factory);
}

/// The retry properties on the script path with copies forbidden outright.
mod script_stores_no_copies {
    use super::*;

    fn strict(property: Property) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let outcome = runtime.block_on(async {
            let fixture = fixture(WriteMode::Script, false).await;
            run_property(property, fixture).await
        });
        match outcome {
            Ok(Outcome::Passed { .. }) => {}
            Ok(other) => net_testkit::loud(&format!("!! {other}")),
            Err(failure) => panic!("{failure}"),
        }
    }

    #[test]
    fn idempotent_retry_after_ok() {
        strict(Property::IdempotentRetryAfterOk);
    }

    #[test]
    fn idempotent_retry_after_error() {
        strict(Property::IdempotentRetryAfterError);
    }

    #[test]
    fn idempotent_retry_after_cancel() {
        strict(Property::IdempotentRetryAfterCancel);
    }

    #[test]
    fn idempotent_retry_after_timeout() {
        strict(Property::IdempotentRetryAfterTimeout);
    }
}
