//! What both servers share: free ports, readiness waits, the skip policy, the watchdog and
//! the log dump.

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Writes one line straight to the process's standard error, past output capture.
pub fn loud(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}

/// True when running under CI (`CI=true` or `CI=1`), where a missing server is a failure.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Reports that `test` was not run because of `why`: a loud line on standard error, or a
/// panic under CI. `suite` names the kind of test in the message (`redis`, `jetstream`).
pub fn skip(suite: &str, test: &str, why: &str) {
    let line = format!("!! {suite} test `{test}` SKIPPED: {why}");
    if ci() {
        panic!("{line}; under CI a missing server is a failure");
    }
    loud(&line);
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Waits until something accepts connections on the loopback `port`; false after `timeout`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Prints `log` to standard error between two marker lines, keeping its last `tail` lines.
pub fn dump_log(title: &str, log: &str, tail: usize) {
    let lines: Vec<&str> = log.lines().collect();
    let shown = &lines[lines.len().saturating_sub(tail)..];
    loud(&format!(
        "---- {title} ----\n{}\n---- end of log ----",
        shown.join("\n")
    ));
}

/// Starts a shell that kills `server` with SIGKILL once this process is gone, so no server
/// outlives its test. It ends by itself when the server ends first.
pub(crate) fn watchdog(server: u32) -> Result<Child, String> {
    let script = format!(
        "while kill -0 {} 2>/dev/null && kill -0 {server} 2>/dev/null; do sleep 0.5; done; \
         kill -9 {server} 2>/dev/null",
        std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn the watchdog: {e}"))
}

/// Calls `spawn` until it succeeds, retrying for up to `within`: right after a server was
/// killed, its port can stay busy for a moment. Panics, naming `server`, if it never does.
pub(crate) fn respawn(
    server: &str,
    within: Duration,
    mut spawn: impl FnMut() -> Result<(), String>,
) {
    let started = Instant::now();
    loop {
        match spawn() {
            Ok(()) => return,
            Err(err) if started.elapsed() < within => {
                loud(&format!("{server} restart retrying: {err}"));
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(err) => panic!("could not restart {server}: {err}"),
        }
    }
}

/// Kills (SIGKILL) and reaps a process, if there is one.
pub(crate) fn end(process: &mut Option<Child>) {
    if let Some(mut child) = process.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
