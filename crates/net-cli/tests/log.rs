//! The embedded log through the real binary: `net produce` then `net consume` with no flags
//! (the log in ./net-data is the default), cursor files across runs, a directory held by
//! another process, and a relay in front of a `net node --storage log` that is killed with
//! SIGKILL while events flow through it.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{net, one_error_line, stderr, stdout, write_lines};

/// `net args` run in `dir`, fed `input`.
fn run_in(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = net()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run net");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait for net");
    feeder.join().unwrap();
    output
}

/// The lines `net consume` printed, asserting it succeeded.
fn consumed(dir: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["consume"];
    all.extend(args);
    let output = run_in(dir, &all, b"");
    assert!(output.status.success(), "consume: {}", stderr(&output));
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
    stdout(&output).lines().map(str::to_owned).collect()
}

/// JSON lines of many shapes: nested, escaped, non-ASCII, with inner spaces, up to 4 KB.
fn varied_lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 5 {
            0 => format!(r#"{{"i":{i},"user":"u{}","tags":["a","b"]}}"#, i % 7),
            1 => format!(r#"{{"i": {i}, "text" : "spaced  out\ttab \"quoted\" \\ slash"}}"#),
            2 => format!(r#"{{"i":{i},"name":"zoë ✓ 雪","n":-1.5e3,"ok":true,"none":null}}"#),
            3 => format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(i % 4000)),
            _ => format!(r#"[{i},{{"deep":{{"deeper":[1,2,{{"k":"v"}}]}}}}]"#),
        })
        .collect()
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

#[test]
fn produce_then_consume_with_no_flags_round_trips_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let lines = varied_lines(3_000);
    let mut input = lines.join("\n");
    input.push('\n');
    let output = run_in(dir.path(), &["produce"], input.as_bytes());
    assert!(output.status.success(), "produce: {}", stderr(&output));
    assert!(
        stderr(&output).contains("produced 3000 events from 3000 lines into the log in net-data"),
        "{}",
        stderr(&output)
    );
    assert!(dir.path().join("net-data").join("MANIFEST").is_file());

    // Another process reads them back, byte for byte (shards interleave, so compare sorted).
    let got = consumed(dir.path(), &[]);
    assert_eq!(got.len(), lines.len());
    assert_eq!(sorted(got), sorted(lines.clone()));
    // Without a cursor file every run starts from the beginning.
    assert_eq!(consumed(dir.path(), &[]).len(), lines.len());
}

#[test]
fn consume_resumes_from_its_cursor_file_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..1_000).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
    let output = run_in(
        dir.path(),
        &["produce"],
        (lines.join("\n") + "\n").as_bytes(),
    );
    assert!(output.status.success(), "produce: {}", stderr(&output));

    let cursor = ["--cursor-file", "reader.cursor"];
    let with = |extra: &[&'static str]| {
        let mut args = cursor.to_vec();
        args.extend(extra);
        consumed(dir.path(), &args)
    };
    let mut seen = with(&["--limit", "300"]);
    assert_eq!(seen.len(), 300);
    assert!(dir.path().join("reader.cursor").is_file());
    seen.extend(with(&[]));
    assert_eq!(seen.len(), 1_000);
    assert!(with(&[]).is_empty(), "nothing is left after the cursor");

    // Events stored later are the next run's, and only they.
    let more: Vec<String> = (1_000..1_050).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
    let output = run_in(
        dir.path(),
        &["produce"],
        (more.join("\n") + "\n").as_bytes(),
    );
    assert!(output.status.success(), "produce: {}", stderr(&output));
    let next = with(&[]);
    assert_eq!(sorted(next.clone()), sorted(more.clone()));
    seen.extend(next);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a line was printed twice");
    let all: Vec<String> = lines.into_iter().chain(more).collect();
    assert_eq!(sorted(seen), sorted(all));
    // --from-start ignores the cursor.
    assert_eq!(with(&["--from-start"]).len(), 1_050);
}

#[test]
fn a_log_directory_in_use_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_in(
        dir.path(),
        &["produce", "--dir", "shared"],
        b"{\"first\":1}\n",
    );
    assert!(output.status.success(), "produce: {}", stderr(&output));

    // `tail` holds the directory from the moment it printed its first event until it stops.
    let mut tail = net()
        .args(["tail", "--dir", "shared"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start net tail");
    let mut first = String::new();
    BufReader::new(tail.stdout.take().unwrap())
        .read_line(&mut first)
        .expect("read tail's first line");
    assert_eq!(first, "{\"first\":1}\n");

    let key = dir.path().join("node.key");
    let keygen = net()
        .args(["keygen", "-o", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    for args in [
        vec!["produce", "--dir", "shared"],
        vec!["consume", "--dir", "shared"],
        vec!["consume", "--dir", "./shared/../shared", "--fsync", "never"],
        vec![
            "node",
            "--listen",
            "127.0.0.1:0",
            "--identity",
            key.to_str().unwrap(),
            "--storage",
            "log",
            "--dir",
            "shared",
        ],
    ] {
        let output = run_in(dir.path(), &args, b"{\"second\":2}\n");
        let line = one_error_line(&output, 1);
        assert!(
            line.contains("log directory") && line.contains("in use by another process"),
            "{args:?}: {line}"
        );
    }

    stop(&mut tail, "-INT");
    let status = tail.wait().unwrap();
    assert_eq!(status.code(), Some(0), "tail after Ctrl-C");
    // Released: the refused line was never stored, and the directory is usable again.
    assert_eq!(
        consumed(dir.path(), &["--dir", "shared"]),
        ["{\"first\":1}"]
    );
}

#[test]
fn log_flags_are_refused_where_they_do_not_apply() {
    let dir = tempfile::tempdir().unwrap();
    for (args, flag) in [
        (
            vec!["produce", "--adapter", "redis", "--dir", "d"],
            "--dir applies to the log only",
        ),
        (
            vec!["consume", "--adapter", "jetstream", "--fsync", "never"],
            "--fsync applies to the log only",
        ),
        (
            vec!["consume", "--url", "redis://127.0.0.1:1"],
            "--url applies to redis and jetstream",
        ),
        (
            vec!["bench", "--adapter", "noop", "--dir", "d"],
            "--dir applies to the log only",
        ),
        (vec!["produce", "--fsync", "interval-ms=0"], "--fsync"),
        (vec!["produce", "--fsync", "sometimes"], "--fsync"),
    ] {
        let output = run_in(dir.path(), &args, b"");
        let line = one_error_line(&output, 2);
        assert!(line.contains(flag), "{args:?}: {line}");
    }
    assert!(
        !dir.path().join("d").exists(),
        "a refused command created its directory"
    );
}

#[test]
fn bench_on_the_log_writes_to_a_temporary_directory_it_removes() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_in(
        dir.path(),
        &[
            "bench",
            "--adapter",
            "log",
            "--events",
            "20000",
            "--fsync",
            "interval-ms=50",
            "--json",
        ],
        b"",
    );
    assert!(output.status.success(), "bench: {}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(report["events"], 20000);
    assert_eq!(report["adapter"], "log");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "bench wrote into its current directory"
    );

    // With --dir the log stays, and another command reads what the bench stored.
    let output = run_in(
        dir.path(),
        &[
            "bench",
            "--adapter",
            "log",
            "--dir",
            "kept",
            "--events",
            "5000",
            "--json",
        ],
        b"",
    );
    assert!(output.status.success(), "bench: {}", stderr(&output));
    assert_eq!(consumed(dir.path(), &["--dir", "kept"]).len(), 5000);
}

/// Sends `signal` (such as `-KILL`) to `child`.
fn stop(child: &mut Child, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill {signal}");
}

/// A free TCP port on loopback (free when this returns; the caller binds it soon after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `net node` with `args`, its standard error appended to `log`, and waits for its
/// "listening on" line; returns the process and its address.
fn start_node(args: &[&str], log: &Path) -> (Child, String) {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = net()
        .arg("node")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("start net node");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("read the node's first line");
    let words: Vec<&str> = line.split_whitespace().collect();
    if !(words.len() == 5 && words[2] == "listening") {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "unexpected first line {line:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    (child, words[4].to_owned())
}

/// Bytes in the segment files under `dir`.
fn log_bytes(dir: &Path) -> u64 {
    let Ok(shards) = std::fs::read_dir(dir) else {
        return 0;
    };
    shards
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
        .filter(|f| f.path().extension().is_some_and(|x| x == "log"))
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn a_relay_in_front_of_a_log_node_killed_twice_loses_and_duplicates_nothing() {
    const EVENTS: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    for name in ["store.key", "relay.key"] {
        let output = net().args(["keygen", "-o", &path(name)]).output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let store_addr = format!("127.0.0.1:{}", free_port());
    let store_args = [
        "--listen",
        &store_addr,
        "--identity",
        &path("store.key"),
        "--storage",
        "log",
        "--dir",
        &path("store-log"),
    ];
    let store_log = dir.path().join("store.stderr");
    let (mut store, _) = start_node(&store_args, &store_log);
    let (mut relay, relay_addr) = start_node(
        &[
            "--listen",
            "127.0.0.1:0",
            "--identity",
            &path("relay.key"),
            "--peer",
            &store_addr,
            "--storage",
            "forward",
        ],
        &dir.path().join("relay.stderr"),
    );

    let lines: Vec<String> = (0..EVENTS)
        .map(|i| format!(r#"{{"i":{i},"pad":"{}"}}"#, "p".repeat(i % 40)))
        .collect();
    let input = dir.path().join("input.jsonl");
    write_lines(&input, &lines);
    let started = Instant::now();
    let mut produce = net()
        .args([
            "produce",
            "--adapter",
            "net",
            "--peer",
            &relay_addr,
            "--file",
            input.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start net produce");

    // About 100 bytes per stored event: kill the storage node at a fifth and at three fifths
    // of the way, while `produce` is still waiting for the rest to be acknowledged.
    let total = (EVENTS as u64) * 90;
    for fraction in [5, 5 * 3] {
        let threshold = total * fraction / 25;
        let deadline = Instant::now() + Duration::from_secs(40);
        while log_bytes(Path::new(&path("store-log"))) < threshold {
            assert!(
                Instant::now() < deadline,
                "the log never reached {threshold} bytes; store log:\n{}",
                std::fs::read_to_string(&store_log).unwrap_or_default()
            );
            assert!(
                produce.try_wait().unwrap().is_none(),
                "produce ended before the kill"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            produce.try_wait().unwrap().is_none(),
            "produce ended before the kill"
        );
        stop(&mut store, "-KILL");
        store.wait().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        store = start_node(&store_args, &store_log).0;
    }
    let output = produce.wait_with_output().expect("wait for net produce");
    assert_eq!(
        output.status.code(),
        Some(0),
        "produce: {}; store log:\n{}",
        stderr(&output),
        std::fs::read_to_string(&store_log).unwrap_or_default()
    );
    assert!(
        stderr(&output).contains(&format!("produced {EVENTS} events")),
        "{}",
        stderr(&output)
    );
    eprintln!(
        "produced {EVENTS} events through two kills in {:?}",
        started.elapsed()
    );

    // Stop both nodes, then read the storage node's log directly.
    for node in [&mut relay, &mut store] {
        stop(node, "-INT");
        assert_eq!(node.wait().unwrap().code(), Some(0));
    }
    // With --envelope each event carries its id: its position in its shard plus one. Ids are
    // dense per shard, so the highest id of each shard is how many records the shard holds:
    // a copy the reader's dedup hid would still show up in that sum.
    let stored = consumed(
        dir.path(),
        &[
            "--dir",
            &path("store-log"),
            "--page-size",
            "10000",
            "--envelope",
        ],
    );
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    let mut highest: BTreeMap<u64, u64> = BTreeMap::new();
    for line in &stored {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let i = v["event"]["i"].as_u64().expect("an i field");
        *counts.entry(i).or_default() += 1;
        let id: u64 = v["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("an id");
        let top = highest.entry(v["shard"].as_u64().unwrap()).or_default();
        *top = (*top).max(id);
    }
    let lost = (0..EVENTS as u64)
        .filter(|i| !counts.contains_key(i))
        .count();
    let duplicated = counts.values().filter(|&&n| n > 1).count();
    let records: u64 = highest.values().sum();
    assert_eq!(
        (lost, duplicated, stored.len(), records),
        (0, 0, EVENTS, EVENTS as u64),
        "(lost, duplicated, printed, records in the log)"
    );
}

#[test]
fn a_consumer_with_another_shard_count_is_refused_on_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_in(dir.path(), &["produce", "--shards", "4"], b"{\"a\":1}\n");
    assert!(output.status.success(), "produce: {}", stderr(&output));
    let output = run_in(dir.path(), &["consume", "--shards", "8"], b"");
    let line = one_error_line(&output, 2);
    assert!(line.contains("created with 4 shards"), "{line}");
    assert_eq!(consumed(dir.path(), &["--shards", "4"]), ["{\"a\":1}"]);
}
