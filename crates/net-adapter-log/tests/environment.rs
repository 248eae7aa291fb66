//! A hostile environment: a full disk, a read-only directory, a second process on the same
//! directory, a manifest with another shard count or from a future version. Each gives a
//! typed error, and nothing acknowledged is lost.
//!
//! The full disk is a real 1 MiB tmpfs and the read-only directory a read-only bind mount,
//! both mounted by the test (it runs as root, which ignores file permissions, so `chmod`
//! would prove nothing). Where mounting is refused, the disk-full test falls back to the
//! log's injected write layer (`LogFault::DiskFull`) and says so on standard error, and the
//! read-only test says it could not run.

mod support;

use net_adapter::{Adapter, AdapterError, LayoutWrite, StreamLayout};
use net_adapter_log::{LogAdapter, LogAdapterConfig, LogError, LogFault};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::{batch, read_all, runtime, seq_of};

/// A mount made by a test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn run(args: &[&str]) -> bool {
        Command::new("mount")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        let opts = format!("size={size}");
        Self::run(&["-t", "tmpfs", "-o", &opts, "tmpfs", dir.to_str()?])
            .then(|| Mount(dir.to_owned()))
    }

    fn read_only_view(source: &Path, view: &Path) -> Option<Mount> {
        if !Self::run(&["--bind", source.to_str()?, view.to_str()?]) {
            return None;
        }
        let mount = Mount(view.to_owned());
        Self::run(&["-o", "remount,bind,ro", view.to_str()?]).then_some(mount)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the log until a batch is refused; checks the refusal, then that nothing
/// acknowledged was lost and the refused batch left no trace; returns (acknowledged
/// events, the refused batch's start).
fn fill_until_refused(log: &LogAdapter, rt: &tokio::runtime::Runtime) -> (u64, u64) {
    let mut seq = 0;
    loop {
        let b = batch(0, 1, seq, 50);
        match rt.block_on(log.on_batch(b)) {
            Ok(()) => seq += 50,
            Err(e) => {
                assert!(e.is_retryable(), "a full disk must be retryable: {e}");
                let text = e.to_string();
                assert!(
                    text.contains("log: ") && text.contains("disk is full"),
                    "{text}"
                );
                assert!(text.contains("shard-00000"), "the path is named: {text}");
                break;
            }
        }
        assert!(seq < 1_000_000, "the disk never filled");
    }
    let events = rt.block_on(read_all(log, 0, 10_000));
    let seqs: Vec<u64> = events.iter().map(seq_of).collect();
    assert_eq!(seqs, (0..seq).collect::<Vec<_>>(), "acknowledged events");
    (seq, seq)
}

#[test]
fn disk_full_refuses_the_batch_and_loses_nothing() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::tmpfs(dir.path(), "1m");
    let config = LogAdapterConfig::new(dir.path().join("log")).segment_bytes(64 << 10);
    if mount.is_none() {
        eprintln!(
            "!! disk_full: mounting a tmpfs was refused; the full disk is simulated with the \
             injected write layer (LogFault::DiskFull)"
        );
        let log = LogAdapter::open(config.clone()).unwrap();
        rt.block_on(log.on_batch(batch(0, 1, 0, 50))).unwrap();
        log.inject_fault(0, LogFault::DiskFull);
        let e = rt.block_on(log.on_batch(batch(0, 1, 50, 50))).unwrap_err();
        assert!(
            e.is_retryable() && e.to_string().contains("disk is full"),
            "{e}"
        );
        rt.block_on(log.on_batch(batch(0, 1, 50, 50))).unwrap();
        let seqs: Vec<u64> = rt
            .block_on(read_all(&log, 0, 1000))
            .iter()
            .map(seq_of)
            .collect();
        assert_eq!(seqs, (0..100).collect::<Vec<_>>());
        return;
    }
    eprintln!("disk_full: on a real 1 MiB tmpfs");
    let log = LogAdapter::open(config.clone()).unwrap();
    let (acked, refused) = fill_until_refused(&log, &rt);
    assert!(acked > 1000, "only {acked} events fit");
    // Retention (here a trim) frees whole segments; the same batch then goes through.
    log.trim(0, 100).unwrap();
    rt.block_on(log.on_batch(batch(0, 1, refused, 50))).unwrap();
    let events = rt.block_on(read_all(&log, 0, 10_000));
    assert_eq!(seq_of(events.last().unwrap()), refused + 49);
    drop(log);
    // After a restart, the refused-then-retried batch is there once, and nothing is torn.
    let log = LogAdapter::open(config).unwrap();
    assert_eq!(log.recovery().truncated_bytes, 0, "{:?}", log.recovery());
    let events = rt.block_on(read_all(&log, 0, 10_000));
    let seqs: Vec<u64> = events.iter().map(seq_of).collect();
    let start = seqs[0];
    assert_eq!(seqs, (start..refused + 50).collect::<Vec<_>>());
    drop(log);
    drop(mount);
}

#[test]
fn injected_disk_full_cuts_the_partial_write_back() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let log = LogAdapter::open(LogAdapterConfig::new(dir.path())).unwrap();
    rt.block_on(log.on_batch(batch(0, 1, 0, 10))).unwrap();
    let path = log.segment_paths(0).pop().unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    log.inject_fault(0, LogFault::DiskFull);
    let e = rt.block_on(log.on_batch(batch(0, 1, 10, 10))).unwrap_err();
    assert!(matches!(e, AdapterError::Transient(_)), "{e:?}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        len,
        "the half write was cut"
    );
    rt.block_on(log.on_batch(batch(0, 1, 10, 10))).unwrap();
    drop(log);
    let log = LogAdapter::open(LogAdapterConfig::new(dir.path())).unwrap();
    assert_eq!(log.recovery().truncated_bytes, 0);
    let seqs: Vec<u64> = rt
        .block_on(read_all(&log, 0, 100))
        .iter()
        .map(seq_of)
        .collect();
    assert_eq!(seqs, (0..20).collect::<Vec<_>>());
}

#[test]
fn read_only_directory_is_a_typed_error() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("log");
    let log = LogAdapter::open(LogAdapterConfig::new(&source)).unwrap();
    rt.block_on(log.on_batch(batch(0, 1, 0, 5))).unwrap();
    drop(log);
    let view = dir.path().join("view");
    std::fs::create_dir(&view).unwrap();
    let Some(mount) = Mount::read_only_view(&source, &view) else {
        eprintln!("!! read_only: a read-only bind mount was refused; this case was NOT checked");
        return;
    };
    match LogAdapter::open(LogAdapterConfig::new(&view)) {
        Err(LogError::ReadOnly { path, .. }) => assert!(path.starts_with(&view), "{path:?}"),
        other => panic!("expected a read-only error, got {other:?}"),
    }
    // A new log in a read-only place fails the same way.
    match LogAdapter::open(LogAdapterConfig::new(view.join("new"))) {
        Err(LogError::ReadOnly { .. }) => {}
        other => panic!("expected a read-only error, got {other:?}"),
    }
    drop(mount);
    let log = LogAdapter::open(LogAdapterConfig::new(&source)).unwrap();
    let seqs: Vec<u64> = rt
        .block_on(read_all(&log, 0, 100))
        .iter()
        .map(seq_of)
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
}

/// The child of `a_second_process_is_refused`: opens the log, says so, waits for stdin to
/// close.
#[test]
#[ignore = "the child process of a_second_process_is_refused"]
fn lock_holder_child() {
    let Ok(dir) = std::env::var("NET_LOG_LOCK_DIR") else {
        return;
    };
    let _log = LogAdapter::open(LogAdapterConfig::new(dir)).expect("open in the child");
    println!("opened");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn a_second_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "lock_holder_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NET_LOG_LOCK_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("opened") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child never opened the log"
        );
    }
    let e = LogAdapter::open(LogAdapterConfig::new(dir.path())).unwrap_err();
    assert!(matches!(e, LogError::Locked { .. }), "{e:?}");
    assert!(e.to_string().contains("in use by another process"), "{e}");
    assert!(!e.is_retryable());
    drop(child.stdin.take());
    child.wait().unwrap();
    // Once it is gone, the directory opens.
    LogAdapter::open(LogAdapterConfig::new(dir.path())).unwrap();
}

#[test]
fn a_second_open_in_one_process_is_refused_until_shutdown() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let log = LogAdapter::open(LogAdapterConfig::new(dir.path())).unwrap();
    assert!(matches!(
        LogAdapter::open(LogAdapterConfig::new(dir.path())),
        Err(LogError::Locked { .. })
    ));
    rt.block_on(log.shutdown()).unwrap();
    let again = LogAdapter::open(LogAdapterConfig::new(dir.path())).unwrap();
    drop(again);
    drop(log);
}

#[test]
fn manifests_from_the_future_or_garbage_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    drop(LogAdapter::open(LogAdapterConfig::new(dir.path())).unwrap());
    let manifest = dir.path().join("MANIFEST");
    std::fs::write(&manifest, br#"{"format":2,"shards":4}"#).unwrap();
    match LogAdapter::open(LogAdapterConfig::new(dir.path())) {
        Err(
            e @ LogError::FutureFormat {
                found: 2,
                supported: 1,
                ..
            },
        ) => {
            assert!(e.to_string().contains("format 2"), "{e}")
        }
        other => panic!("expected a future format error, got {other:?}"),
    }
    std::fs::write(&manifest, b"{\"form").unwrap();
    assert!(matches!(
        LogAdapter::open(LogAdapterConfig::new(dir.path())),
        Err(LogError::Manifest { .. })
    ));
}

#[test]
fn the_manifest_is_the_layout_record() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let log = LogAdapter::open(LogAdapterConfig::new(dir.path())).unwrap();
    let got = rt
        .block_on(log.record_layout(StreamLayout::new(4), LayoutWrite::IfAbsent))
        .unwrap();
    assert_eq!(got, Some(StreamLayout::new(4)));
    drop(log);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("MANIFEST")).unwrap(),
        r#"{"format":1,"shards":4}"#
    );
    let log = LogAdapter::open(LogAdapterConfig::new(dir.path())).unwrap();
    let got = rt
        .block_on(log.record_layout(StreamLayout::new(8), LayoutWrite::IfAbsent))
        .unwrap();
    assert_eq!(
        got,
        Some(StreamLayout::new(4)),
        "the first layout stays recorded"
    );
}

#[test]
fn a_bus_with_another_shard_count_is_refused() {
    use net_core::{ConfigError, EventBus, EventBusConfig};
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let open = || LogAdapter::open(LogAdapterConfig::new(dir.path())).unwrap();
        let config = EventBusConfig::builder()
            .shards(4)
            .adapter_instance(open())
            .build()
            .unwrap();
        let bus = EventBus::new(config).await.unwrap();
        bus.shutdown().await.unwrap();
        let config = EventBusConfig::builder()
            .shards(8)
            .adapter_instance(open())
            .build()
            .unwrap();
        match EventBus::new(config).await {
            Err(ConfigError::LayoutMismatch {
                recorded: 4,
                configured: 8,
                ..
            }) => {}
            Err(e) => panic!("expected a layout mismatch, got {e}"),
            Ok(_) => panic!("a bus with 8 shards opened a log recorded with 4"),
        }
    });
}
