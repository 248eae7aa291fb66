//! The conformance fixture of `JetStreamAdapter`: a fresh adapter on a private server, with
//! every hook of the kit implemented against the real server.

use super::{unique_name, NatsServer};
use async_nats::jetstream;
use futures_util::TryStreamExt;
use net_adapter::conformance::{Capabilities, Fixture, HookError, HookResult};
use net_adapter::{async_trait, Adapter};
use net_adapter_jetstream::{JetStreamAdapter, JetStreamAdapterConfig, JetStreamFault, ReadPath};
use std::sync::Arc;
use std::time::Duration;

/// A `JetStreamAdapter` with streams of its own on a server of its own.
pub struct JetStreamFixture {
    pub adapter: Arc<JetStreamAdapter>,
    pub config: JetStreamAdapterConfig,
    /// A separate connection for the hooks, as an operator's tool would be.
    pub admin: jetstream::Context,
    /// Kept alive for the fixture's lifetime; dropping it stops a private server.
    _server: NatsServer,
}

/// Turns an error inside a hook into a hook failure.
fn failed(what: &str, err: impl std::fmt::Display) -> HookError {
    HookError::Failed(format!("{what}: {err}"))
}

impl JetStreamFixture {
    /// Applies `change` to the configuration of `shard_id`'s stream (creating it first).
    async fn update_stream(
        &self,
        shard_id: u16,
        change: impl FnOnce(&mut jetstream::stream::Config),
    ) -> HookResult {
        self.adapter
            .provision(shard_id)
            .await
            .map_err(|e| failed("provision", e))?;
        let mut stream = self
            .admin
            .get_stream(self.config.stream_for(shard_id))
            .await
            .map_err(|e| failed("get stream", e))?;
        let mut config = stream
            .info()
            .await
            .map_err(|e| failed("stream info", e))?
            .config
            .clone();
        change(&mut config);
        self.admin
            .update_stream(config)
            .await
            .map_err(|e| failed("update stream", e))?;
        Ok(())
    }
}

#[async_trait]
impl Fixture for JetStreamFixture {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.adapter.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .persists_dedup_ids(true)
            .records_layout(true)
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(20)
    }

    /// Publishes bytes that are not a record to the shard's subject, as a foreign writer
    /// would.
    async fn inject_corrupt(&self, shard_id: u16) -> HookResult {
        self.adapter
            .provision(shard_id)
            .await
            .map_err(|e| failed("provision", e))?;
        let subject = self.config.subjects_for(shard_id).remove(0);
        self.admin
            .publish(subject, "\u{0}torn {\"r\":".into())
            .await
            .map_err(|e| failed("publish", e))?
            .await
            .map_err(|e| failed("publish ack", e))?;
        Ok(())
    }

    /// Lowers the stream's max messages to `keep`: the server's own retention trims it.
    async fn trim(&self, shard_id: u16, keep: usize) -> HookResult {
        let keep = i64::try_from(keep).map_err(|e| failed("keep", e))?;
        self.update_stream(shard_id, |config| config.max_messages = keep.max(1))
            .await
    }

    /// Shrinks the stream's largest message to 16 bytes: the server refuses every publish of
    /// the batch, as a misconfigured stream would.
    async fn fail_next_batch_permanently(&self, shard_id: u16) -> HookResult {
        self.update_stream(shard_id, |config| config.max_message_size = 16)
            .await
    }

    async fn fail_next_batch_after_write(&self, shard_id: u16) -> HookResult {
        self.adapter
            .inject_fault(shard_id, JetStreamFault::AckLostAfterWrite);
        Ok(())
    }

    async fn time_out_next_batch_after_write(&self, shard_id: u16) -> HookResult {
        self.adapter
            .inject_fault(shard_id, JetStreamFault::AckTimeoutAfterWrite);
        Ok(())
    }

    /// Deletes every stream of the fixture (the server may be shared through `NATS_URL`).
    async fn cleanup(&self) -> Result<(), String> {
        let prefix = format!("{}_shard_", self.config.stream_name);
        let layout = format!("{}_layout", self.config.stream_name);
        let names: Vec<String> = self
            .admin
            .stream_names()
            .try_collect()
            .await
            .map_err(|e| format!("listing streams: {e}"))?;
        for name in names
            .into_iter()
            .filter(|n| n.starts_with(&prefix) || *n == layout)
        {
            self.admin
                .delete_stream(&name)
                .await
                .map_err(|e| format!("deleting {name}: {e}"))?;
        }
        Ok(())
    }
}

/// Starts a server and an adapter reading with `read_path` on fresh stream names; `None`
/// when no server is available (the harness has said so loudly, or failed under `CI=true`).
pub async fn start(test: &str, read_path: ReadPath) -> Option<JetStreamFixture> {
    let server = NatsServer::start(test)?;
    let config = JetStreamAdapterConfig::new(server.url(), unique_name("conf"))
        .request_timeout(Duration::from_secs(5))
        .read_path(read_path);
    let adapter = JetStreamAdapter::connect(config.clone())
        .await
        .expect("connect the adapter");
    let client = async_nats::connect(server.url())
        .await
        .expect("connect the admin client");
    Some(JetStreamFixture {
        adapter: Arc::new(adapter),
        config,
        admin: jetstream::new(client),
        _server: server,
    })
}
