//! What the `net` command tests share: running the binary, and a private `redis-server`.
//!
//! [`Redis::start`] starts `redis-server` (and [`Nats::start`] `nats-server -js`) on a free
//! loopback port in a temporary directory and stops it when dropped. With `REDIS_URL` (or
//! `NATS_URL`) set, that server is used instead. Without either, a test says loudly that it
//! was skipped, and fails under `CI=true`.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Reports a missing server: a failure under CI, a loud skip elsewhere.
fn unavailable<T>(test: &str, server: &str, env: &str) -> Option<T> {
    let message = format!("!! net-cli test `{test}` SKIPPED: no {server} on PATH and no {env}");
    assert!(
        !ci(),
        "{message}; CI=true, so a missing server is a failure"
    );
    let _ = writeln!(std::io::stderr(), "{message}");
    None
}

fn have(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A NATS server with JetStream for one test.
pub struct Nats {
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
    url: String,
}

impl Nats {
    /// `NATS_URL` when set, else a private `nats-server -js`; `None` (after a loud message)
    /// when neither is available.
    pub fn start(test: &str) -> Option<Nats> {
        if let Ok(url) = std::env::var("NATS_URL") {
            return Some(Nats {
                child: None,
                _dir: None,
                url,
            });
        }
        if !have("nats-server") {
            return unavailable(test, "nats-server", "NATS_URL");
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("nats-server")
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
                .arg("-sd")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nats-server");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                if nats_ready(port) {
                    return Some(Nats {
                        child: Some(child),
                        _dir: Some(dir),
                        url: format!("nats://127.0.0.1:{port}"),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start nats-server");
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// True once the server greets a client with its `INFO` line.
fn nats_ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 8];
    matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"INFO"))
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Redis server for one test.
pub struct Redis {
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
    url: String,
}

impl Redis {
    /// `REDIS_URL` when set, else a private server; `None` (after a loud message) when
    /// neither is available.
    pub fn start(test: &str) -> Option<Redis> {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return Some(Redis {
                child: None,
                _dir: None,
                url,
            });
        }
        if !have("redis-server") {
            return unavailable(test, "redis-server", "REDIS_URL");
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                if ping(port) {
                    return Some(Redis {
                        child: Some(child),
                        _dir: Some(dir),
                        url: format!("redis://127.0.0.1:{port}"),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start redis-server");
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
