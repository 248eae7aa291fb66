//! A private `nats-server -js`, or the shared one `NATS_URL` names.

use crate::process::{dump_log, end, free_port, respawn, skip, watchdog};
use std::io::Read as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a freshly started server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(20);

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

/// A NATS server with JetStream for one test: a private process, or the shared `NATS_URL`.
///
/// Dropping it stops a private server, printing the end of its log first when the test is
/// failing.
pub struct NatsServer {
    kind: Kind,
    port: u16,
    url: String,
}

/// The `nats-server` binary: the one `NATS_SERVER_BIN` names (to test another server
/// version), else the one on `PATH`, else one where distributions install it.
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
        [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|candidate| candidate.is_file())
    })
}

fn external(url: String) -> NatsServer {
    NatsServer {
        kind: Kind::External,
        port: 0,
        url,
    }
}

impl NatsServer {
    /// Starts a private server, or falls back to `NATS_URL` without a binary. `None` (after
    /// a loud skip message, or a panic under CI) when neither is available.
    pub fn start(test: &str) -> Option<Self> {
        if let Some(binary) = find_binary() {
            return Some(Self::spawn_private(binary));
        }
        if let Ok(url) = std::env::var("NATS_URL") {
            return Some(external(url));
        }
        skip(
            "jetstream",
            test,
            "no nats-server binary on PATH and NATS_URL is not set",
        );
        None
    }

    /// Like [`start`](Self::start), but prefers the shared `NATS_URL` when it is set.
    pub fn any(test: &str) -> Option<Self> {
        if let Ok(url) = std::env::var("NATS_URL") {
            return Some(external(url));
        }
        Self::start(test)
    }

    /// Like [`start`](Self::start), but only a private server will do (the test kills it).
    pub fn start_private(test: &str) -> Option<Self> {
        let server = Self::start(test)?;
        if server.is_private() {
            Some(server)
        } else {
            skip(
                "jetstream",
                test,
                "it must kill the server, and only NATS_URL is available",
            );
            None
        }
    }

    /// Starts `binary` on a free port, trying a few ports before giving up.
    fn spawn_private(binary: PathBuf) -> Self {
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
            port: 0,
            url: String::new(),
        };
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port();
            server.url = format!("nats://127.0.0.1:{}", server.port);
            match server.spawn() {
                Ok(()) => return server,
                Err(err) => last_error = err,
            }
        }
        panic!("could not start nats-server: {last_error}");
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True when this harness owns the server process.
    pub fn is_private(&self) -> bool {
        matches!(self.kind, Kind::Private { .. })
    }

    /// The port of a private server.
    pub fn port(&self) -> u16 {
        assert!(self.is_private(), "a private server");
        self.port
    }

    /// The server's log file (private servers only).
    pub fn log_path(&self) -> Option<PathBuf> {
        match &self.kind {
            Kind::Private { store, .. } => Some(store.path().join("nats-server.log")),
            Kind::External => None,
        }
    }

    /// Starts the server process on the configured port and store, and waits until it accepts
    /// connections and its log says it is ready.
    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port;
        let log = self.log_path();
        let Kind::Private {
            binary,
            child,
            watchdog: guard,
            store,
        } = &mut self.kind
        else {
            return Ok(());
        };
        let data = store.path().join("jetstream");
        let log = log.expect("private servers have a log");
        // The log survives a restart: only what this run writes counts for readiness.
        let seen = std::fs::metadata(&log).map_or(0, |m| m.len());
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
        match watchdog(server_pid) {
            Ok(process) => *guard = Some(process),
            Err(err) => {
                end(child);
                return Err(err);
            }
        }
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if ready(port, &log, seen) {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
                end(child);
                end(guard);
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "nats-server exited at start with {status}; its log:\n{text}"
                ));
            }
            if Instant::now() > deadline {
                end(child);
                end(guard);
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "nats-server did not get ready within {READY_WITHIN:?}; its log:\n{text}"
                ));
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
            end(child);
            end(watchdog);
        }
    }

    /// Starts the server again on the same port with the same store directory.
    pub fn restart(&mut self) {
        self.kill();
        respawn("nats-server", READY_WITHIN, || self.spawn());
    }

    /// The server's log, for failure reports.
    pub fn log(&self) -> String {
        let Some(path) = self.log_path() else {
            return "(external server: no log)".to_owned();
        };
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Prints the last lines of the server's log to standard error.
    pub fn dump_log(&self) {
        let title = format!(
            "nats-server log ({})",
            self.log_path()
                .as_deref()
                .map_or_else(|| "external".into(), |p: &Path| p.display().to_string())
        );
        dump_log(&title, &self.log(), 200);
    }
}

/// True once the server greets a client with its `INFO` line and its log says it is ready
/// after its first `seen` bytes (so JetStream has recovered its store).
fn ready(port: u16, log: &Path, seen: u64) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 8];
    if !matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"INFO")) {
        return false;
    }
    let Ok(text) = std::fs::read(log) else {
        return false;
    };
    let start = usize::try_from(seen).unwrap_or(usize::MAX);
    let fresh = text.get(start..).unwrap_or(&text[..]);
    fresh.windows(15).any(|w| w == b"Server is ready")
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_log();
        }
        self.kill();
    }
}
