//! What survives a restart: stored events, and dedup of batches delivered again afterwards.

use file_adapter::FileAdapter;
use net_adapter::conformance::{batch as batch_of, unique_namespace};
use net_adapter::{Adapter, Batch};
use std::sync::Arc;

fn batch(sequence_start: u64, n: u64) -> Arc<Batch> {
    let payloads = (sequence_start..sequence_start + n).map(|seq| format!("{{\"seq\":{seq}}}"));
    Arc::new(batch_of(2, sequence_start, payloads))
}

/// Drives the async adapter without a runtime: every future of `FileAdapter` is ready on its
/// first poll, because the file operations inside are synchronous.
fn now<T>(future: impl std::future::Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => panic!("FileAdapter futures complete on their first poll"),
    }
}

#[test]
fn events_and_dedup_survive_a_restart() {
    let dir = std::env::temp_dir().join(unique_namespace());
    {
        let adapter = FileAdapter::open(&dir).unwrap();
        now(adapter.on_batch(batch(0, 3))).unwrap();
        now(adapter.shutdown()).unwrap();
    }
    let adapter = FileAdapter::open(&dir).unwrap();
    // The producer restarted with the same nonce and delivers the last batch again.
    now(adapter.on_batch(batch(0, 3))).unwrap();
    now(adapter.on_batch(batch(3, 2))).unwrap();
    let page = now(adapter.poll_shard(2, None, 100)).unwrap();
    let seqs: Vec<String> = page
        .events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.raw).into_owned())
        .collect();
    assert_eq!(
        seqs,
        [
            "{\"seq\":0}",
            "{\"seq\":1}",
            "{\"seq\":2}",
            "{\"seq\":3}",
            "{\"seq\":4}"
        ]
    );
    assert!(!page.has_more);
    std::fs::remove_dir_all(&dir).unwrap();
}
