//! Every numeric flag of every subcommand, found in the `--help` output so that a new flag is
//! covered without touching this file, is fed hostile values: the command must end quickly
//! with status 0, 1 (an accepted value, then no server to talk to) or 2 (a rejected value)
//! and a single line on standard error, never a panic (101), an abort (134) or a hang.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use support::{net, stderr, stdout};

/// Longest a single run may take before it counts as a hang.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// A value above every numeric flag's maximum.
const HUGE: u64 = 1 << 40;

/// Runs `net` with `args` in `dir`, without input, and fails the test if it does not end in
/// time.
fn run_in(dir: &Path, args: &[String]) -> Output {
    let mut child = net()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run net");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait for net").is_some() {
            return child.wait_with_output().expect("collect the output");
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect the output");
            panic!(
                "`net {}` hung for {RUN_TIMEOUT:?}; stderr: {}",
                args.join(" "),
                stderr(&output)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The long flags that take a value, as listed by `net <command> --help`.
fn flags_with_values(dir: &Path, command: &str) -> BTreeSet<String> {
    let output = run_in(dir, &[command.to_owned(), "--help".to_owned()]);
    assert!(
        output.status.success(),
        "{command} --help: {}",
        stderr(&output)
    );
    let mut flags = BTreeSet::new();
    for line in stdout(&output).lines() {
        let line = line.trim_start();
        let line = line
            .strip_prefix('-')
            .and_then(|l| l.split_once(", "))
            .map_or(line, |(_, rest)| rest);
        let Some(rest) = line.strip_prefix("--") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        if value.starts_with('<') {
            flags.insert(format!("--{name}"));
        }
    }
    flags
}

/// Arguments with which an accepted run of `command` ends quickly without any server: the
/// backend is a closed local port (connection refused at once), the bench runs one event.
fn base_args(command: &str, dir: &Path) -> Vec<(String, String)> {
    let pairs: &[(&str, &str)] = match command {
        "bench" => &[("--adapter", "memory"), ("--events", "1")],
        "produce" | "consume" | "tail" => {
            &[("--adapter", "redis"), ("--url", "redis://127.0.0.1:1")]
        }
        "node" => &[
            ("--listen", "127.0.0.1:0"),
            ("--storage", "redis"),
            ("--storage-url", "redis://127.0.0.1:1"),
        ],
        _ => &[],
    };
    let mut args: Vec<(String, String)> = pairs
        .iter()
        .map(|(f, v)| ((*f).to_owned(), (*v).to_owned()))
        .collect();
    if command == "node" {
        let missing = dir.join("no-such-identity.key");
        args.push(("--identity".into(), missing.display().to_string()));
    }
    if command == "keygen" {
        args.push(("--out".into(), dir.join("k").display().to_string()));
        args.push(("--force".into(), String::new()));
    }
    args
}

/// `net command` with the base arguments (except `flag`) and `flag=value`.
fn invocation(command: &str, dir: &Path, flag: &str, value: &str) -> Vec<String> {
    let mut args = vec![command.to_owned()];
    for (f, v) in base_args(command, dir) {
        if f == flag {
            continue;
        }
        args.push(f);
        if !v.is_empty() {
            args.push(v);
        }
    }
    args.push(format!("{flag}={value}"));
    args
}

/// Checks one run; returns its status.
fn check(output: &Output, what: &str) -> i32 {
    let err = stderr(output);
    let code = output
        .status
        .code()
        .unwrap_or_else(|| panic!("{what}: killed by a signal ({:?}); {err}", output.status));
    assert!(
        matches!(code, 0..=2),
        "{what}: exit status {code} (101 is a panic, 134 an abort); stderr: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: a panic: {err}");
    let lines: Vec<&str> = err.lines().collect();
    if code == 0 {
        assert!(
            lines.is_empty(),
            "{what}: succeeded but wrote to stderr: {err}"
        );
    } else {
        assert_eq!(lines.len(), 1, "{what}: one line of stderr expected: {err}");
        assert!(lines[0].starts_with("error: "), "{what}: {err}");
    }
    code
}

#[test]
fn every_numeric_flag_of_every_command_refuses_hostile_values_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let commands = ["bench", "produce", "consume", "tail", "node", "keygen"];
    let mut numeric = Vec::new();
    for command in commands {
        for flag in flags_with_values(dir.path(), command) {
            // A flag is numeric when a non-number is refused as one.
            let args = invocation(command, dir.path(), &flag, "not-a-number");
            let output = run_in(dir.path(), &args);
            let what = format!("net {}", args.join(" "));
            check(&output, &what);
            if stderr(&output).contains("invalid digit") {
                numeric.push((command, flag));
            }
        }
    }
    // The flags this test was written against must be among those found.
    for (command, flag) in [
        ("bench", "--ring-capacity"),
        ("bench", "--events"),
        ("bench", "--retain"),
        ("consume", "--dedup-window"),
        ("tail", "--dedup-window"),
        ("consume", "--limit"),
        ("produce", "--retry-window"),
        ("produce", "--shards"),
    ] {
        assert!(
            numeric.iter().any(|(c, f)| *c == command && f == flag),
            "{command} {flag} was not found among {numeric:?}"
        );
    }
    let mut failures = Vec::new();
    for (command, flag) in &numeric {
        for value in ["0", "1"] {
            let args = invocation(command, dir.path(), flag, value);
            let output = run_in(dir.path(), &args);
            let what = format!("net {}", args.join(" "));
            // Status 1 is allowed only for the closed port the base arguments point at: the
            // value was accepted, and the run then failed to reach its backend.
            if check(&output, &what) == 1 {
                let err = stderr(&output);
                assert!(
                    err.contains("127.0.0.1:1") || err.contains("cannot reach"),
                    "{what}: exit 1 for another reason than the unreachable backend: {err}"
                );
            }
        }
        // Above any sane maximum, or not a count at all: a usage error naming the flag.
        let max = u64::MAX.to_string();
        let huge = HUGE.to_string();
        for value in [huge.as_str(), max.as_str(), "-1", "1.5", "", "abc"] {
            let args = invocation(command, dir.path(), flag, value);
            let output = run_in(dir.path(), &args);
            let what = format!("net {}", args.join(" "));
            let code = check(&output, &what);
            let err = stderr(&output);
            if code != 2 || !err.contains(flag.as_str()) {
                failures.push(format!("{what}: exit {code}: {}", err.trim()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "values that should be usage errors were not:\n{}",
        failures.join("\n")
    );
}

#[test]
fn help_shows_the_stream_naming_patterns_whole() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["produce", "consume", "tail"] {
        let output = run_in(dir.path(), &[command.to_owned(), "--help".to_owned()]);
        let text = stdout(&output);
        assert!(
            text.contains("named STREAM:shard:N (N = 0, 1, ...)"),
            "{text}"
        );
        assert!(
            text.contains("named STREAM_shard_N (N = 0, 1, ...)"),
            "{text}"
        );
    }
}
