//! A private `redis-server`, or the shared one `REDIS_URL` names.

use crate::process::{dump_log, end, free_port, respawn, skip, watchdog};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept commands after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Options of a private server.
#[derive(Clone, Debug, Default)]
pub struct RedisOptions {
    /// AOF persistence with `appendfsync always`: an acknowledged write survives SIGKILL.
    pub aof: bool,
    /// `requirepass`.
    pub password: Option<String>,
}

/// A private server process (and the watchdog that ends it if the tests die).
struct Private {
    port: u16,
    dir: tempfile::TempDir,
    options: RedisOptions,
    child: Option<Child>,
    watchdog: Option<Child>,
}

/// The Redis server a test uses: a private process, or the shared `REDIS_URL`.
///
/// Dropping it stops a private server, printing its log first when the test is failing.
pub struct RedisServer {
    private: Option<Private>,
    url: String,
}

fn have_binary() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl RedisServer {
    /// A server for a test that can share one: `REDIS_URL` when set, else a private one.
    /// `None` (after a loud message, or a panic under CI) when there is neither.
    pub fn any(test: &str) -> Option<RedisServer> {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return Some(RedisServer { private: None, url });
        }
        Self::private(test, RedisOptions::default())
    }

    /// A private server with `options`; `None` (after a loud message, or a panic under CI)
    /// without a `redis-server` binary.
    pub fn private(test: &str, options: RedisOptions) -> Option<RedisServer> {
        if !have_binary() {
            skip(
                "redis",
                test,
                "no redis-server binary on PATH (install redis-server, or set REDIS_URL for \
                 the tests that can use a shared server)",
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("net-redis-test-")
            .tempdir()
            .expect("create a temporary directory");
        let mut private = Private {
            port: 0,
            dir,
            options,
            child: None,
            watchdog: None,
        };
        let mut last_error = String::new();
        for _ in 0..5 {
            private.port = free_port();
            match private.spawn() {
                Ok(()) => {
                    let url = private.url();
                    return Some(RedisServer {
                        private: Some(private),
                        url,
                    });
                }
                Err(err) => last_error = err,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// The URL of the server (with the password, when one is set).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True for a server this test started.
    pub fn is_private(&self) -> bool {
        self.private.is_some()
    }

    /// The port of a private server.
    pub fn port(&self) -> u16 {
        self.private.as_ref().expect("a private server").port
    }

    /// Ends the private server with SIGKILL (no shutdown, no flush), as a crash would.
    pub fn kill(&mut self) {
        self.private.as_mut().expect("a private server").kill();
    }

    /// Starts the private server again on the same port and directory (so an AOF survives).
    pub fn restart(&mut self) {
        let private = self.private.as_mut().expect("a private server");
        private.kill();
        respawn("redis-server", START_TIMEOUT, || private.spawn());
    }

    /// The server's log so far (empty for a shared server).
    pub fn log(&self) -> String {
        self.private.as_ref().map_or_else(String::new, Private::log)
    }

    /// Runs `redis-cli` against the private server with `args` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let private = self.private.as_ref().expect("a private server");
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &private.port.to_string()]);
        if let Some(password) = &private.options.password {
            command.args(["--no-auth-warning", "-a", password]);
        }
        let output = command.args(args).output().expect("run redis-cli");
        assert!(
            output.status.success(),
            "redis-cli {args:?} failed: {output:?}"
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Private {
    fn url(&self) -> String {
        match &self.options.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the server and waits until it answers `PING`.
    fn spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(["--save", "", "--daemonize", "no", "--loglevel", "notice"]);
        if self.options.aof {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        if let Some(password) = &self.options.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        let pid = child.id();
        self.child = Some(child);
        self.watchdog = Some(watchdog(pid)?);
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.kill();
                    return Err(format!(
                        "redis-server exited with {status}:\n{}",
                        self.log()
                    ));
                }
            }
            if self.ready() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        Err(format!(
            "redis-server did not become ready:\n{}",
            self.log()
        ))
    }

    /// True once the server answers `PING` with `PONG` (so it is past loading its AOF).
    fn ready(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut request = String::new();
        if let Some(password) = &self.options.password {
            request.push_str(&format!("AUTH {password}\r\n"));
        }
        request.push_str("PING\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut reply = Vec::new();
        let mut buf = [0u8; 256];
        while !reply.windows(5).any(|w| w == b"PONG\r") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
            if reply.starts_with(b"-") || reply.windows(2).any(|w| w == b"\n-") {
                return false;
            }
        }
        true
    }

    fn kill(&mut self) {
        end(&mut self.child);
        end(&mut self.watchdog);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(private) = self.private.as_mut() {
            if std::thread::panicking() {
                let title = format!("redis-server log (port {})", private.port);
                dump_log(&title, &private.log(), usize::MAX);
            }
            private.kill();
        }
    }
}
