//! `net produce`, `net consume` and `net tail` through the real binary, against a private
//! `redis-server` (or `REDIS_URL`) and `nats-server -js` (or `NATS_URL`).

mod support;

use net_testkit::{NatsServer, RedisServer};
use std::collections::{HashMap, HashSet};
use support::{one_error_line, run, run_with_input, stderr, stdout, unique_stream, write_lines};

/// `n` valid events over `users` keys, each with a per-user sequence number.
fn events(n: usize, users: usize) -> Vec<String> {
    let mut next = vec![0u64; users];
    (0..n)
        .map(|i| {
            let user = i % users;
            next[user] += 1;
            format!(r#"{{"user":"u{user}","seq":{},"i":{i}}}"#, next[user])
        })
        .collect()
}

fn backend<'a>(redis: &'a RedisServer, stream: &'a str) -> Vec<&'a str> {
    vec![
        "--adapter",
        "redis",
        "--url",
        redis.url(),
        "--stream",
        stream,
    ]
}

fn consume(redis: &RedisServer, stream: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["consume"];
    args.extend(backend(redis, stream));
    args.extend(extra);
    let output = run(&args);
    assert!(
        output.status.success(),
        "consume {extra:?}: {}",
        stderr(&output)
    );
    stdout(&output).lines().map(str::to_owned).collect()
}

#[test]
fn invalid_lines_are_reported_by_number_and_valid_ones_are_all_stored() {
    let Some(redis) = RedisServer::any("invalid_lines_are_reported_by_number") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.jsonl");
    let mut lines = events(1000, 7);
    // Line numbers are 1-based: these replace lines 3, 500 and 1000.
    lines[2] = "{not json".to_owned();
    lines[499] = r#"{"user":"u1","seq":}"#.to_owned();
    lines[999] = "[1, 2".to_owned();
    lines.insert(10, String::new()); // a blank line is skipped silently
    write_lines(&file, &lines);
    let valid: Vec<String> = lines
        .iter()
        .filter(|l| !l.is_empty() && serde_json::from_str::<serde_json::Value>(l).is_ok())
        .cloned()
        .collect();
    assert_eq!(valid.len(), 997);

    let stream = unique_stream("strict");
    let mut args = vec!["produce"];
    args.extend(backend(&redis, &stream));
    args.extend([
        "--file",
        file.to_str().unwrap(),
        "--strict",
        "--key",
        "user",
    ]);
    let output = run(&args);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Numbers count the blank line too: the file's lines 3, 501 and 1001.
    for number in [3, 501, 1001] {
        assert!(
            err.contains(&format!("warning: line {number}: invalid JSON")),
            "line {number} not reported:\n{err}"
        );
    }
    assert_eq!(err.matches("warning: line").count(), 3, "{err}");
    assert!(err.contains("error: 3 invalid lines"), "{err}");

    // Nothing valid was lost, nothing was stored twice, and each user's events kept order.
    let stored = consume(&redis, &stream, &["--from-start"]);
    assert_eq!(stored.len(), valid.len());
    let stored_set: HashSet<&String> = stored.iter().collect();
    assert_eq!(stored_set.len(), stored.len(), "duplicates");
    assert_eq!(stored_set, valid.iter().collect());
    assert_per_user_order(&stored);

    // Without --strict the same file exits 0 and stores the same events.
    let stream = unique_stream("lenient");
    let mut args = vec!["produce"];
    args.extend(backend(&redis, &stream));
    args.extend(["--file", file.to_str().unwrap()]);
    let output = run(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("produced 997 events from 1001 lines"),
        "{}",
        stderr(&output)
    );
    assert_eq!(consume(&redis, &stream, &[]).len(), 997);
}

fn assert_per_user_order(lines: &[String]) {
    let mut last: HashMap<String, u64> = HashMap::new();
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let user = value["user"].as_str().unwrap().to_owned();
        let seq = value["seq"].as_u64().unwrap();
        let previous = last.insert(user.clone(), seq).unwrap_or(0);
        assert!(seq > previous, "{user}: {seq} after {previous}");
    }
}

#[test]
fn a_cursor_file_resumes_without_duplicates() {
    let Some(redis) = RedisServer::any("a_cursor_file_resumes_without_duplicates") else {
        return;
    };
    let stream = unique_stream("cursor");
    let input = events(600, 5);
    let mut args = vec!["produce"];
    args.extend(backend(&redis, &stream));
    args.extend(["--key", "user"]);
    let output = run_with_input(&args, (input.join("\n") + "\n").as_bytes());
    assert!(output.status.success(), "{}", stderr(&output));

    let dir = tempfile::tempdir().unwrap();
    let cursor = dir.path().join("consumer.cursor");
    let cursor_arg = cursor.to_str().unwrap();
    let mut seen = Vec::new();
    for limit in ["100", "1", "250"] {
        let page = consume(
            &redis,
            &stream,
            &[
                "--cursor-file",
                cursor_arg,
                "--limit",
                limit,
                "--page-size",
                "64",
            ],
        );
        assert_eq!(page.len(), limit.parse::<usize>().unwrap());
        seen.extend(page);
    }
    assert!(cursor.exists());
    let rest = consume(&redis, &stream, &["--cursor-file", cursor_arg]);
    assert_eq!(rest.len(), 600 - 351);
    seen.extend(rest);
    // Nothing left: a further run prints nothing.
    assert!(consume(&redis, &stream, &["--cursor-file", cursor_arg]).is_empty());
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "duplicates across runs");
    assert_eq!(unique, input.iter().collect());

    // A filter prints only matching events; --envelope wraps them with their metadata.
    let filtered = consume(
        &redis,
        &stream,
        &[
            "--from-start",
            "--filter",
            r#"{"$and":[{"user":"u3"},{"seq":{"$lte":10}}]}"#,
            "--envelope",
        ],
    );
    assert_eq!(filtered.len(), 10);
    for line in &filtered {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["event"]["user"], "u3");
        assert!(
            value["dedup_id"].is_string() && value["id"].is_string(),
            "{value}"
        );
    }
}

#[test]
fn error_paths_print_one_line() {
    let Some(redis) = RedisServer::any("error_paths_print_one_line") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.cursor");
    std::fs::write(&garbage, "this is not a cursor\n").unwrap();
    let garbage = garbage.to_str().unwrap();
    let missing_dir = dir.path().join("no/such/dir/c");
    let missing_dir = missing_dir.to_str().unwrap();
    let url = redis.url();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "produce",
                "--adapter",
                "redis",
                "--url",
                "redis://127.0.0.1:1",
            ],
            1,
            "cannot reach redis",
        ),
        (
            vec!["produce", "--adapter", "redis", "--url", "nonsense://x"],
            2,
            "url",
        ),
        (
            vec![
                "produce",
                "--adapter",
                "redis",
                "--url",
                url,
                "--file",
                "/no/such/file",
            ],
            1,
            "cannot open /no/such/file",
        ),
        (
            vec![
                "produce",
                "--adapter",
                "redis",
                "--url",
                url,
                "--key",
                "a..b",
            ],
            2,
            "--key",
        ),
        (vec!["produce", "--adapter", "kafka"], 2, "--adapter"),
        (
            vec![
                "consume",
                "--adapter",
                "redis",
                "--url",
                url,
                "--filter",
                r#"{"$bogus":1}"#,
            ],
            2,
            "invalid --filter",
        ),
        (
            vec![
                "consume",
                "--adapter",
                "redis",
                "--url",
                url,
                "--filter",
                "{",
            ],
            2,
            "invalid --filter",
        ),
        (
            vec![
                "consume",
                "--adapter",
                "redis",
                "--url",
                url,
                "--cursor-file",
                garbage,
            ],
            2,
            "cursor",
        ),
        (
            vec![
                "consume",
                "--adapter",
                "redis",
                "--url",
                url,
                "--cursor-file",
                missing_dir,
            ],
            2,
            "does not exist",
        ),
        (
            vec!["consume", "--adapter", "jetstream", "--stream", "bad name!"],
            2,
            "stream",
        ),
        (
            vec![
                "consume",
                "--adapter",
                "redis",
                "--url",
                url,
                "--shards",
                "0",
            ],
            2,
            "shards",
        ),
        (
            vec![
                "tail",
                "--adapter",
                "redis",
                "--url",
                "redis://user:secret@127.0.0.1:1",
            ],
            1,
            "cannot reach",
        ),
    ];
    for (args, code, needle) in cases {
        let output = run(&args);
        let line = one_error_line(&output, code);
        assert!(
            line.to_lowercase().contains(&needle.to_lowercase()),
            "`net {}`: {line}",
            args.join(" ")
        );
        assert!(!line.contains("secret"), "a password in: {line}");
    }
}

#[test]
fn jetstream_round_trip_in_key_order() {
    let Some(nats) = NatsServer::any("jetstream_round_trip_in_key_order") else {
        return;
    };
    let stream = unique_stream("js").replace('-', "_");
    let input = events(500, 4);
    let backend = [
        "--adapter",
        "jetstream",
        "--url",
        nats.url(),
        "--stream",
        &stream,
    ];
    let mut args = vec!["produce", "--key", "user"];
    args.extend(backend);
    let output = run_with_input(&args, (input.join("\n") + "\n").as_bytes());
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = tempfile::tempdir().unwrap();
    let cursor = dir.path().join("js.cursor");
    let read = |limit: Option<&str>| {
        let mut args = vec!["consume", "--cursor-file", cursor.to_str().unwrap()];
        args.extend(backend);
        if let Some(limit) = limit {
            args.extend(["--limit", limit]);
        }
        let output = run(&args);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let mut seen = read(Some("123"));
    assert_eq!(seen.len(), 123);
    seen.extend(read(None));
    assert!(read(None).is_empty());
    assert_eq!(seen.len(), 500);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique, input.iter().collect());
    assert_per_user_order(&seen);
}

#[test]
fn tail_follows_new_events_and_stops_on_ctrl_c_with_the_cursor_saved() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let Some(redis) = RedisServer::any("tail_follows_new_events") else {
        return;
    };
    let stream = unique_stream("tail");
    let produce = |lines: &[String]| {
        let mut args = vec!["produce"];
        args.extend(backend(&redis, &stream));
        let output = run_with_input(&args, (lines.join("\n") + "\n").as_bytes());
        assert!(output.status.success(), "{}", stderr(&output));
    };
    let all = events(80, 3);
    produce(&all[..50]);

    let dir = tempfile::tempdir().unwrap();
    let cursor = dir.path().join("tail.cursor");
    let mut args = vec!["tail", "--max-wait-ms", "50"];
    args.extend(backend(&redis, &stream));
    args.extend(["--cursor-file", cursor.to_str().unwrap()]);
    let mut child = support::net()
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start net tail");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut read = |n: usize| {
        (0..n)
            .map(|_| {
                let mut line = String::new();
                out.read_line(&mut line).expect("read a line");
                line.trim_end().to_owned()
            })
            .collect::<Vec<_>>()
    };
    let mut seen = read(50);
    // New events arrive while it waits.
    produce(&all[50..]);
    seen.extend(read(30));
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique, all.iter().collect());

    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    // The cursor covers everything printed: a new run has nothing to print.
    assert!(consume(
        &redis,
        &stream,
        &["--cursor-file", cursor.to_str().unwrap()]
    )
    .is_empty());
}

#[test]
fn ctrl_c_stops_produce_and_keeps_what_it_read() {
    use std::io::Write as _;
    use std::process::Stdio;
    let Some(redis) = RedisServer::any("ctrl_c_stops_produce") else {
        return;
    };
    let stream = unique_stream("interrupt");
    let mut args = vec!["produce"];
    args.extend(backend(&redis, &stream));
    let mut child = support::net()
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start net produce");
    let mut input = child.stdin.take().unwrap();
    let mut n = 0;
    let mut send = |count: usize| {
        for _ in 0..count {
            n += 1;
            // Ignore a closed pipe: the command stops reading once interrupted.
            let _ = writeln!(input, r#"{{"n":{n}}}"#);
        }
        let _ = input.flush();
    };
    send(500);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    // The reader notices the interruption at its next line.
    let mut status = None;
    for _ in 0..100 {
        send(1);
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = status.expect("produce stops after Ctrl-C");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    let reported: usize = err
        .split("the ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count in {err}"));
    assert!(reported >= 500, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(consume(&redis, &stream, &[]).len(), reported, "{err}");
}
