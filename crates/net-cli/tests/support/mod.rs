//! What the `net` command tests share: running the binary and reading its output.
//!
//! The servers the commands talk to come from `net_testkit`.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The `net` binary under test.
pub fn net() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_net"));
    command.env_remove("RUST_LOG").env("NO_COLOR", "1");
    command
}

/// Runs `net` with `args` and no input.
pub fn run(args: &[&str]) -> Output {
    net()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run net")
}

/// Runs `net` with `args`, feeding `input` on standard input.
pub fn run_with_input(args: &[&str], input: &[u8]) -> Output {
    let mut child = net()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run net");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write input");
    child.wait_with_output().expect("wait for net")
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the command failed with `code` and printed exactly one line, `error: ...`, with no
/// panic or backtrace; returns that line.
pub fn one_error_line(output: &Output, code: i32) -> String {
    let err = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status; stderr: {err}; stdout: {}",
        stdout(output)
    );
    assert!(!err.contains("panicked"), "a panic: {err}");
    assert!(!err.contains("backtrace"), "a backtrace: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_owned()
}

/// A stream name no other test uses.
pub fn unique_stream(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("cli-{tag}-{}-{nanos}", std::process::id())
}

/// Writes `lines` (each followed by a newline) to `path`.
pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).expect("write the input file");
}
