//! The NATS server the integration tests run against.
//!
//! [`NatsServer::start`] starts a private `nats-server -js` on a free loopback port with a store
//! directory of its own, and stops it when dropped (printing its log when the test is failing).
//! [`NatsServer::kill`] and [`NatsServer::restart`] kill it with SIGKILL and start it again on
//! the same port and store directory. A small shell watchdog kills the server if the test
//! process dies without dropping it, so no server outlives its test.
//!
//! `NATS_SERVER_BIN` picks another binary (to run the suite against another server version).
//! Without a `nats-server` binary the tests fall back to the server named by `NATS_URL` (those
//! that must kill the server are skipped then). With neither, every test says loudly that it
//! was skipped, and under `CI=true` it fails instead.
#![allow(dead_code, unreachable_pub)]

pub mod fixture;

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a freshly started server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(15);

/// Where the server comes from.
enum Kind {
    /// A process this harness started and owns.
    Private {
        binary: PathBuf,
        child: Option<Child>,
        watchdog: Option<Child>,
        store: tempfile::TempDir,
    },
    /// A server someone else runs (`NATS_URL`).
    External,
}

/// A NATS server with JetStream for one test.
pub struct NatsServer {
    kind: Kind,
    port: u16,
    url: String,
}

/// True when running under CI, where a missing server is a failure.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Reports that `test` could not run; under `CI=true` that is a failure.
pub fn skip(test: &str, why: &str) {
    let line = format!("!! jetstream test SKIPPED: `{test}` was not run: {why}");
    if ci() {
        panic!("{line} (CI=true: a missing NATS server is a failure)");
    }
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}

/// The `nats-server` binary: the one `NATS_SERVER_BIN` names (to test another server
/// version), else the one on `PATH`, else where Debian installs it.
fn find_binary() -> Option<PathBuf> {
    if let Some(chosen) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(PathBuf::from(chosen));
    }
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    from_path.or_else(|| {
        let debian = PathBuf::from("/usr/sbin/nats-server");
        debian.is_file().then_some(debian)
    })
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

impl NatsServer {
    /// Starts a private server, or falls back to `NATS_URL`. `None` (after a loud skip
    /// message, or a panic under `CI=true`) when neither is available.
    pub fn start(test: &str) -> Option<Self> {
        if let Some(binary) = find_binary() {
            let store = tempfile::Builder::new()
                .prefix("net-jetstream-test-")
                .tempdir()
                .expect("create a store directory");
            let mut server = NatsServer {
                kind: Kind::Private {
                    binary,
                    child: None,
                    watchdog: None,
                    store,
                },
                port: free_port(),
                url: String::new(),
            };
            server.url = format!("nats://127.0.0.1:{}", server.port);
            server.spawn();
            return Some(server);
        }
        if let Ok(url) = std::env::var("NATS_URL") {
            return Some(NatsServer {
                kind: Kind::External,
                port: 0,
                url,
            });
        }
        skip(
            test,
            "no nats-server binary on PATH and NATS_URL is not set",
        );
        None
    }

    /// Like [`start`](Self::start), but only a private server will do (the test kills it).
    pub fn start_private(test: &str) -> Option<Self> {
        let server = Self::start(test)?;
        if server.is_private() {
            Some(server)
        } else {
            skip(
                test,
                "it must kill the server, and only NATS_URL is available",
            );
            None
        }
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True when this harness owns the server process.
    pub fn is_private(&self) -> bool {
        matches!(self.kind, Kind::Private { .. })
    }

    /// The server's log file (private servers only).
    pub fn log_path(&self) -> Option<PathBuf> {
        match &self.kind {
            Kind::Private { store, .. } => Some(store.path().join("nats-server.log")),
            Kind::External => None,
        }
    }

    /// Starts the server process on the configured port and store, and waits until it accepts
    /// connections.
    fn spawn(&mut self) {
        let port = self.port;
        let log = self.log_path();
        let Kind::Private {
            binary,
            child,
            watchdog,
            store,
        } = &mut self.kind
        else {
            return;
        };
        let data = store.path().join("jetstream");
        let log = log.expect("private servers have a log");
        let started = Command::new(&*binary)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .arg("-sd")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("could not start {}: {err}", binary.display()));
        let server_pid = started.id();
        *child = Some(started);
        // Kills the server if this process goes away without dropping the harness.
        let script = format!(
            "while kill -0 {} 2>/dev/null && kill -0 {server_pid} 2>/dev/null; do sleep 0.5; \
             done; kill -9 {server_pid} 2>/dev/null",
            std::process::id()
        );
        *watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let ready = TcpStream::connect(("127.0.0.1", port)).is_ok()
                && fs::read_to_string(&log).is_ok_and(|text| text.contains("Server is ready"));
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
                let text = fs::read_to_string(&log).unwrap_or_default();
                panic!("nats-server exited at start with {status}; its log:\n{text}");
            }
            if Instant::now() > deadline {
                let text = fs::read_to_string(&log).unwrap_or_default();
                panic!("nats-server did not get ready within {READY_WITHIN:?}; its log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL (no shutdown, no flush), as a crash would.
    pub fn kill(&mut self) {
        if let Kind::Private {
            child, watchdog, ..
        } = &mut self.kind
        {
            if let Some(mut process) = child.take() {
                let _ = process.kill();
                let _ = process.wait();
            }
            if let Some(mut process) = watchdog.take() {
                let _ = process.wait();
            }
        }
    }

    /// Starts the server again on the same port with the same store directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The server's log, for failure reports.
    pub fn log(&self) -> String {
        let Some(path) = self.log_path() else {
            return "(external server: no log)".to_owned();
        };
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(&path) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// Prints the last lines of the server's log to standard error.
    pub fn dump_log(&self) {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(200)..];
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(
            stderr,
            "---- nats-server log ({}) ----\n{}\n---- end of log ----",
            self.log_path()
                .as_deref()
                .map_or_else(|| "external".into(), |p: &Path| p.display().to_string()),
            tail.join("\n")
        );
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_log();
        }
        self.kill();
    }
}

/// A name no other test uses, for stream prefixes.
pub fn unique_name(what: &str) -> String {
    net_adapter::conformance::unique_namespace().replace("net-conformance", what)
}
