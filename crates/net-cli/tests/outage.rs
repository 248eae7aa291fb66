//! `net produce` through Redis outages, with debug logging on: it never hangs, a retry window
//! longer than the outage stores every line exactly once, and what a shorter window gives up
//! on is written to `--failed-lines`, so that stored + failed lines are exactly the input.

mod support;

use net_testkit::{RedisOptions, RedisServer};
use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use support::{net, run, stderr, stdout, unique_stream};

/// `n` distinct lines, numbered from `from`.
fn lines(from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(i % 50)))
        .collect()
}

/// Starts `net produce` into `stream` reading standard input, logging at debug level into
/// `log` (a file, so a full pipe can never be the reason it stops).
fn produce(redis: &RedisServer, stream: &str, log: &Path, extra: &[&str]) -> Child {
    let log = std::fs::File::create(log).unwrap();
    net()
        .args(["produce", "--adapter", "redis", "--url", redis.url()])
        .args(["--stream", stream])
        .args(extra)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("run net produce")
}

fn feed(child: &mut Child, lines: &[String]) {
    let stdin = child.stdin.as_mut().expect("stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("write a line");
    }
    stdin.flush().unwrap();
}

/// Waits for `child` at most `limit`; a hang fails the test with the log's tail.
fn finish(mut child: Child, limit: Duration, log: &Path) -> Output {
    drop(child.stdin.take());
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            panic!("net produce hung for {limit:?}; last log lines: {tail:#?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Every event stored in `stream`, as the set of its lines (dedup by the consumer).
fn stored(redis: &RedisServer, stream: &str) -> (usize, HashSet<String>) {
    let output = run(&[
        "consume",
        "--adapter",
        "redis",
        "--url",
        redis.url(),
        "--stream",
        stream,
    ]);
    assert!(output.status.success(), "consume: {}", stderr(&output));
    let text = stdout(&output);
    let all: Vec<String> = text.lines().map(str::to_owned).collect();
    let set: HashSet<String> = all.iter().cloned().collect();
    (all.len(), set)
}

fn redis(test: &str) -> Option<RedisServer> {
    // Persisted after every write, so what was acknowledged survives the kill.
    RedisServer::private(
        test,
        RedisOptions {
            aof: true,
            ..RedisOptions::default()
        },
    )
}

#[test]
fn a_retry_window_longer_than_the_outage_stores_every_line_once_under_debug_logs() {
    let Some(mut redis) = redis("a_retry_window_longer_than_the_outage") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("produce.log");
    let stream = unique_stream("outage");
    let mut child = produce(&redis, &stream, &log, &["--retry-window", "60"]);
    let before = lines(0, 5_000);
    let during = lines(5_000, 5_000);
    let after = lines(10_000, 5_000);
    feed(&mut child, &before);
    std::thread::sleep(Duration::from_millis(300));
    redis.kill();
    feed(&mut child, &during);
    // Longer than the ten default retries of the bus would wait.
    std::thread::sleep(Duration::from_secs(8));
    redis.restart();
    feed(&mut child, &after);
    let output = finish(child, Duration::from_secs(120), &log);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "produce failed: {}",
        log_text
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        log_text.contains("produced 15000 events from 15000 lines"),
        "no summary in the log"
    );
    let sent: HashSet<String> = before.into_iter().chain(during).chain(after).collect();
    let (count, got) = stored(&redis, &stream);
    assert_eq!(count, sent.len(), "events read back, after dedup");
    assert_eq!(got, sent, "the lines read back differ from the lines sent");
}

#[test]
fn lines_given_up_after_the_retry_window_are_written_to_failed_lines() {
    let Some(mut redis) = redis("lines_given_up_after_the_retry_window") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("produce.log");
    let failed_path = dir.path().join("failed.jsonl");
    let stream = unique_stream("failed");
    let mut child = produce(
        &redis,
        &stream,
        &log,
        &[
            "--retry-window",
            "2",
            "--failed-lines",
            failed_path.to_str().unwrap(),
        ],
    );
    let before = lines(0, 2_000);
    let during = lines(2_000, 2_000);
    feed(&mut child, &before);
    std::thread::sleep(Duration::from_secs(1));
    redis.kill();
    feed(&mut child, &during);
    let output = finish(child, Duration::from_secs(60), &log);
    let log_text = std::fs::read_to_string(&log).unwrap();
    let error = log_text
        .lines()
        .rfind(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line; stdout {}", stdout(&output)));
    assert_eq!(output.status.code(), Some(1), "{error}");
    assert!(error.contains("their lines are in"), "{error}");
    assert!(error.contains("2s retry window"), "{error}");

    redis.restart();
    let failed_text = std::fs::read_to_string(&failed_path).unwrap();
    let failed: Vec<String> = failed_text.lines().map(str::to_owned).collect();
    let failed_set: HashSet<String> = failed.iter().cloned().collect();
    assert_eq!(failed.len(), failed_set.len(), "a line listed twice");
    assert!(!failed.is_empty(), "the outage failed nothing");
    let (_, got) = stored(&redis, &stream);
    assert!(
        got.is_disjoint(&failed_set),
        "lines both stored and listed as failed: {:?}",
        got.intersection(&failed_set).take(3).collect::<Vec<_>>()
    );
    let sent: HashSet<String> = before.into_iter().chain(during).collect();
    let accounted: HashSet<String> = got.union(&failed_set).cloned().collect();
    assert_eq!(
        accounted, sent,
        "stored + failed lines differ from the input"
    );
    // The failed lines can be produced again as they are.
    let replay = run(&[
        "produce",
        "--adapter",
        "redis",
        "--url",
        redis.url(),
        "--stream",
        &stream,
        "--file",
        failed_path.to_str().unwrap(),
    ]);
    assert!(replay.status.success(), "{}", stderr(&replay));
    let (_, all) = stored(&redis, &stream);
    assert_eq!(all, sent);
}

#[test]
fn produce_into_a_new_jetstream_stream_with_info_logs_does_not_hang() {
    let Some(nats) = net_testkit::NatsServer::any("produce_into_a_new_jetstream_stream") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("produce.log");
    let stream = unique_stream("js-info").replace('-', "_");
    let mut child = net()
        .args(["produce", "--adapter", "jetstream", "--url", nats.url()])
        .args(["--stream", &stream])
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let sent = lines(0, 5_000);
    feed(&mut child, &sent);
    let output = finish(child, Duration::from_secs(60), &log);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(output.status.code(), Some(0), "{log_text}");
    assert!(log_text.contains("produced 5000 events"), "{log_text}");
    let read = run(&[
        "consume",
        "--adapter",
        "jetstream",
        "--url",
        nats.url(),
        "--stream",
        &stream,
    ]);
    assert!(read.status.success(), "{}", stderr(&read));
    let got: HashSet<String> = stdout(&read).lines().map(str::to_owned).collect();
    assert_eq!(got, sent.into_iter().collect::<HashSet<_>>());
}
