//! Crash safety: a child process ingests through a real `EventBus` onto the log (a sync per
//! batch) and is killed with SIGKILL at random moments, 20 times. The child appends the
//! payload keys of every batch whose `on_batch` returned `Ok` to an acknowledgement file and
//! syncs it before going on. After every life the parent reopens the log and checks that each
//! acknowledged event is there exactly once, that no event is there twice, and that each
//! shard holds each life's events in the order they were ingested. Every sixth life ends with
//! a clean shutdown instead, and the bus's stats must then balance:
//! `events_dispatched + events_dropped == events_ingested`.
//!
//! The child is this test binary itself, run with `--ignored --exact crash_child`.

mod support;

use net_adapter::{async_trait, Adapter, AdapterError, Batch, ShardPollResult};
use net_adapter_log::{LogAdapter, LogAdapterConfig};
use net_core::{EventBus, EventBusConfig, IngestionError, RawEvent};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{read_all, runtime, Rng};

const SHARDS: u16 = 4;
const KILLS: usize = 20;
/// Keys of life `l` are `l * LIFE + n`.
const LIFE: u64 = 1_000_000_000;

/// The log adapter, recording every acknowledged batch in a synced file.
struct Acking {
    log: LogAdapter,
    acks: Mutex<std::fs::File>,
}

/// The key of a payload `{"k":N}`.
fn key_of(raw: &[u8]) -> u64 {
    let text = std::str::from_utf8(raw).expect("UTF-8 payload");
    text.strip_prefix("{\"k\":")
        .and_then(|t| t.strip_suffix('}'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a payload of this test: {text:?}"))
}

#[async_trait]
impl Adapter for Acking {
    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        self.log.on_batch(batch.clone()).await?;
        let line: Vec<String> = batch
            .events
            .iter()
            .map(|e| key_of(&e.raw).to_string())
            .collect();
        let mut file = self.acks.lock().unwrap();
        file.write_all(format!("{}\n", line.join(",")).as_bytes())
            .and_then(|()| file.sync_data())
            .expect("acknowledgement file");
        Ok(())
    }

    async fn poll_shard(
        &self,
        shard_id: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        self.log.poll_shard(shard_id, cursor, limit).await
    }

    async fn flush(&self) -> Result<(), AdapterError> {
        self.log.flush().await
    }

    async fn shutdown(&self) -> Result<(), AdapterError> {
        self.log.shutdown().await
    }

    fn name(&self) -> &str {
        self.log.name()
    }

    async fn record_layout(
        &self,
        layout: net_adapter::StreamLayout,
        write: net_adapter::LayoutWrite,
    ) -> Result<Option<net_adapter::StreamLayout>, AdapterError> {
        self.log.record_layout(layout, write).await
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The child: ingests `NET_LOG_CRASH_EVENTS` events, then shuts down and writes its stats.
#[test]
#[ignore = "the child process of crash_safety_under_sigkill"]
fn crash_child() {
    let Some(dir) = env("NET_LOG_CRASH_DIR").map(PathBuf::from) else {
        return;
    };
    let life: u64 = env("NET_LOG_CRASH_LIFE").unwrap().parse().unwrap();
    let events: u64 = env("NET_LOG_CRASH_EVENTS").unwrap().parse().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let log = LogAdapter::open(LogAdapterConfig::new(dir.join("log")).segment_bytes(64 << 10))
            .expect("open the log");
        let acks = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("acks-{life}")))
            .unwrap();
        let adapter = Acking {
            log,
            acks: Mutex::new(acks),
        };
        let config = EventBusConfig::builder()
            .shards(SHARDS)
            .adapter_instance(adapter)
            .producer_nonce_path(dir.join("nonce"))
            .build()
            .unwrap();
        let bus = EventBus::new(config).await.expect("bus");
        std::fs::write(dir.join(format!("ready-{life}")), b"").unwrap();
        for n in 0..events {
            let raw = format!("{{\"k\":{}}}", life * LIFE + n);
            loop {
                match bus.ingest_raw(RawEvent::from_bytes(raw.clone())) {
                    Ok(()) => break,
                    Err(IngestionError::Backpressure) => {
                        tokio::time::sleep(Duration::from_millis(1)).await
                    }
                    Err(e) => panic!("ingest: {e}"),
                }
            }
            if n % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        bus.flush().await.expect("flush");
        bus.shutdown_via_ref().await.expect("shutdown");
        let s = bus.stats().snapshot();
        let text = format!(
            "{} {} {}",
            s.events_ingested, s.events_dispatched, s.events_dropped
        );
        let mut f = std::fs::File::create(dir.join(format!("stats-{life}"))).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f.sync_all().unwrap();
    });
}

/// Every key acknowledged in any life so far (only whole lines: the last may be torn).
fn acknowledged(dir: &Path, lives: u64) -> HashSet<u64> {
    let mut out = HashSet::new();
    for life in 1..=lives {
        let Ok(text) = std::fs::read_to_string(dir.join(format!("acks-{life}"))) else {
            continue;
        };
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        for line in whole.lines() {
            out.extend(line.split(',').map(|k| k.parse::<u64>().unwrap()));
        }
    }
    out
}

/// Reopens the log and checks it against the acknowledgements; returns events stored.
fn verify(dir: &Path, lives: u64) -> usize {
    let rt = runtime();
    let log = LogAdapter::open(LogAdapterConfig::new(dir.join("log")).segment_bytes(64 << 10))
        .expect("reopen after the crash");
    let acked = acknowledged(dir, lives);
    let mut seen = HashSet::new();
    for shard in 0..SHARDS {
        let events = rt.block_on(read_all(&log, shard, 1000));
        let mut last_of_life: HashMap<u64, u64> = HashMap::new();
        for e in &events {
            let k = key_of(&e.raw);
            assert!(seen.insert(k), "key {k} is stored twice (life {lives})");
            let previous = last_of_life.insert(k / LIFE, k);
            assert!(
                previous.is_none_or(|p| p < k),
                "shard {shard}: key {k} after {previous:?}: out of order (life {lives})"
            );
        }
    }
    let missing: Vec<_> = acked.difference(&seen).take(5).collect();
    assert!(
        missing.is_empty(),
        "after life {lives}: {} acknowledged events are missing, e.g. {missing:?}; recovery {:?}",
        acked.difference(&seen).count(),
        log.recovery()
    );
    seen.len()
}

#[test]
fn crash_safety_under_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash test seed {seed:#x}");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let (mut kills, mut clean, mut life) = (0, 0, 0u64);
    let mut stored = 0;
    while kills < KILLS {
        life += 1;
        let graceful = life % 6 == 0;
        let events = if graceful { 3_000 } else { 100_000_000 };
        let mut child = Command::new(&exe)
            .args(["--ignored", "--exact", "crash_child", "--test-threads=1"])
            .env("NET_LOG_CRASH_DIR", dir.path())
            .env("NET_LOG_CRASH_LIFE", life.to_string())
            .env("NET_LOG_CRASH_EVENTS", events.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let ready = dir.path().join(format!("ready-{life}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        if graceful {
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                assert!(Instant::now() < deadline, "life {life} did not finish");
                std::thread::sleep(Duration::from_millis(10));
            };
            assert!(status.success(), "life {life} failed: {status}");
            let stats = std::fs::read_to_string(dir.path().join(format!("stats-{life}"))).unwrap();
            let n: Vec<u64> = stats.split(' ').map(|x| x.parse().unwrap()).collect();
            assert_eq!(n[0], events, "life {life}: ingested");
            assert_eq!(
                n[1] + n[2],
                n[0],
                "life {life}: dispatched + dropped != ingested"
            );
            clean += 1;
        } else {
            while !ready.exists() {
                assert!(Instant::now() < deadline, "life {life} never got ready");
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("life {life} exited early: {status}");
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_millis(rng.below(150)));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
        }
        let now = verify(dir.path(), life);
        assert!(
            now >= stored,
            "life {life}: fewer events stored ({now}) than before ({stored})"
        );
        stored = now;
    }
    let acked = acknowledged(dir.path(), life).len();
    println!(
        "{kills} kills and {clean} clean shutdowns in {:?}: {stored} events stored, {acked} acknowledged",
        started.elapsed()
    );
    assert!(
        acked > 1_000,
        "too few acknowledged events ({acked}) for the test to mean much"
    );
}
