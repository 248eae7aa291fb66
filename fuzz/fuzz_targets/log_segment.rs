//! Writes arbitrary bytes as the one segment file of shard 0 of a log directory, opens the
//! log and reads the shard to its end: recovery and reads must treat any bytes as damage to
//! cut or skip, never panic, and every page must move the cursor or end the shard.
//!
//! The log's record and index decoders are private to `net-adapter-log`, so this goes through
//! the public `LogAdapter::open` and `Adapter::poll_shard`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use net_adapter::Adapter;
use net_adapter_log::{LogAdapter, LogAdapterConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Removes the directory when the input is done, whatever happened.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fuzz_target!(|data: &[u8]| {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "net-fuzz-log-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let scratch = Scratch(dir);
    let shard = scratch.0.join("shard-00000");
    std::fs::create_dir_all(&shard).expect("create the shard directory");
    std::fs::write(shard.join("00000000000000000000.log"), data).expect("write the segment");
    runtime().block_on(async {
        let Ok(log) = LogAdapter::open(LogAdapterConfig::new(&scratch.0)) else {
            return;
        };
        let mut cursor: Option<String> = None;
        // Each page either moves the cursor or ends the shard; bound the walk all the same.
        for _ in 0..=data.len() + 1 {
            let Ok(page) = log.poll_shard(0, cursor.as_deref(), 64).await else {
                break;
            };
            if !page.has_more {
                break;
            }
            assert_ne!(
                cursor.as_deref(),
                Some(page.cursor.as_str()),
                "a page with more to read did not move the cursor"
            );
            cursor = Some(page.cursor);
        }
        let _ = log.shutdown().await;
    });
});
