//! How `net produce`, `net consume` and `net tail` stop and start: SIGTERM handled like
//! Ctrl-C, damaged cursor files refused as usage errors, oversized lines skipped, and the
//! summary's wording.

mod support;

use net_testkit::RedisServer;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use support::{net, one_error_line, run, run_with_input, stderr, stdout, unique_stream};

fn backend<'a>(redis: &'a RedisServer, stream: &'a str) -> [&'a str; 6] {
    [
        "--adapter",
        "redis",
        "--url",
        redis.url(),
        "--stream",
        stream,
    ]
}

/// Sends SIGTERM to `child`.
fn terminate(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits for `child` at most 30 s.
fn wait(mut child: Child) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the command did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn sigterm_stops_produce_like_ctrl_c_with_its_summary() {
    let Some(redis) = RedisServer::any("sigterm_stops_produce") else {
        return;
    };
    let stream = unique_stream("sigterm");
    let mut child = net()
        .arg("produce")
        .args(backend(&redis, &stream))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.as_mut().unwrap();
    for i in 0..10 {
        writeln!(stdin, r#"{{"i":{i}}}"#).unwrap();
    }
    stdin.flush().unwrap();
    // The input stays open: the command must stop although no further line arrives.
    std::thread::sleep(Duration::from_secs(1));
    terminate(&child);
    let output = wait(child);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(143), "{err}");
    assert!(
        err.contains("produced 10 events from 10 lines"),
        "no summary: {err}"
    );
    assert!(
        err.contains("error: terminated after line 10; the 10 events read before were stored"),
        "{err}"
    );
    let read = run(&[&["consume"][..], &backend(&redis, &stream)].concat());
    assert_eq!(stdout(&read).lines().count(), 10, "{}", stderr(&read));
}

#[test]
fn sigterm_stops_tail_after_saving_the_cursor() {
    let Some(redis) = RedisServer::any("sigterm_stops_tail") else {
        return;
    };
    let stream = unique_stream("tail-term");
    let input: String = (0..5).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let produced = run_with_input(
        &[&["produce"][..], &backend(&redis, &stream)].concat(),
        input.as_bytes(),
    );
    assert!(produced.status.success(), "{}", stderr(&produced));
    let dir = tempfile::tempdir().unwrap();
    let cursor = dir.path().join("tail.cursor");
    let mut child = net()
        .arg("tail")
        .args(backend(&redis, &stream))
        .args(["--cursor-file", cursor.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..5 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.starts_with("{\"i\":"), "{line:?}");
    }
    terminate(&child);
    let output = wait(child);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // The saved cursor is past the five printed events.
    let again = run(&[
        &["consume"][..],
        &backend(&redis, &stream),
        &["--cursor-file", cursor.to_str().unwrap()],
    ]
    .concat());
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again), "");
}

#[test]
fn damaged_cursor_files_are_usage_errors_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("empty", &b""[..]),
        ("blank", b"\n\n"),
        ("binary", b"\x00\xff\xfe\x01garbage"),
        ("two-lines", b"AQID\nAQIE\n"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        for command in ["consume", "tail"] {
            // A closed port: had the command tried to connect, it would fail with status 1.
            let output = run(&[
                command,
                "--adapter",
                "redis",
                "--url",
                "redis://127.0.0.1:1",
                "--cursor-file",
                path.to_str().unwrap(),
            ]);
            let line = one_error_line(&output, 2);
            assert!(line.contains("cursor file"), "{name}: {line}");
            assert!(line.contains("--from-start"), "{name}: {line}");
        }
    }
}

#[test]
fn an_oversized_line_is_skipped_as_invalid_and_the_rest_stored() {
    let Some(redis) = RedisServer::any("an_oversized_line_is_skipped") else {
        return;
    };
    let stream = unique_stream("oversized");
    let mut input = Vec::new();
    input.extend_from_slice(b"{\"i\":1}\n{\"big\":\"");
    input.resize(input.len() + (50 << 20), b'x');
    input.extend_from_slice(b"\"}\n{\"i\":3}\n");
    let output = run_with_input(
        &[&["produce"][..], &backend(&redis, &stream), &["--strict"]].concat(),
        &input,
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{err}");
    assert!(
        err.contains("warning: line 2: too large (52428810 bytes; the largest event is 1048576 bytes); skipped"),
        "{err}"
    );
    assert!(
        err.contains(
            "error: 1 invalid line in the input (--strict); the 2 valid events were stored"
        ),
        "{err}"
    );
    let read = run(&[&["consume"][..], &backend(&redis, &stream)].concat());
    assert_eq!(stdout(&read), "{\"i\":1}\n{\"i\":3}\n", "{}", stderr(&read));
}

#[test]
fn one_stored_event_is_reported_in_the_singular() {
    let Some(redis) = RedisServer::any("one_stored_event_is_reported") else {
        return;
    };
    let stream = unique_stream("singular");
    let output = run_with_input(
        &[&["produce"][..], &backend(&redis, &stream), &["--strict"]].concat(),
        b"{\"a\":1}\nnot json\n",
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{err}");
    assert!(
        err.contains("produced 1 event from 2 lines into ")
            && err.contains("(1 invalid line skipped)"),
        "{err}"
    );
    assert!(
        err.contains("error: 1 invalid line in the input (--strict); the 1 valid event was stored"),
        "{err}"
    );
}
