//! Runs the net-adapter conformance kit against `FileAdapter`, one test per property.

use file_adapter::FileAdapter;
use net_adapter::conformance::{unique_namespace, Capabilities, Fixture, HookError, HookResult};
use net_adapter::{async_trait, Adapter};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// A `FileAdapter` in a directory of its own, removed by `cleanup`.
struct FileFixture {
    dir: PathBuf,
    adapter: Arc<FileAdapter>,
}

/// Turns an I/O error inside a hook into a hook failure.
fn failed(err: impl std::fmt::Display) -> HookError {
    HookError::Failed(err.to_string())
}

#[async_trait]
impl Fixture for FileFixture {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.adapter.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default().persists_dedup_ids(true)
    }

    /// Appends a line that is not an entry, as a crash in the middle of a write leaves one.
    async fn inject_corrupt(&self, shard_id: u16) -> HookResult {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.adapter.log_path(shard_id))
            .map_err(failed)?;
        file.write_all(b"1700000000 torn-by-a-cra\n")
            .map_err(failed)
    }

    async fn trim(&self, shard_id: u16, keep: usize) -> HookResult {
        self.adapter.retain_newest(shard_id, keep).map_err(failed)
    }

    /// Puts a directory where the shard's log file belongs: every write to it fails until
    /// someone repairs the disk, which is what a permanent failure is.
    async fn fail_next_batch_permanently(&self, shard_id: u16) -> HookResult {
        let path = self.adapter.log_path(shard_id);
        if path.is_file() {
            fs::remove_file(&path).map_err(failed)?;
        }
        fs::create_dir(&path).map_err(failed)
    }

    // `fail_next_batch_after_write` and `time_out_next_batch_after_write` are not provided:
    // an append to a local file either happens and returns, or fails and returns. There is
    // no reply to lose, so the kit reports those two properties as skipped.

    async fn cleanup(&self) -> Result<(), String> {
        fs::remove_dir_all(&self.dir).map_err(|e| format!("removing {}: {e}", self.dir.display()))
    }
}

/// Builds a fresh adapter in a new directory under the system's temporary directory.
async fn fixture() -> FileFixture {
    let dir = std::env::temp_dir().join(unique_namespace());
    let adapter = FileAdapter::open(&dir).expect("create the log directory");
    FileFixture {
        dir,
        adapter: Arc::new(adapter),
    }
}

net_adapter::conformance_suite!(fixture);
