//! The Redis the integration tests run against.
//!
//! [`Redis::start`] starts a private `redis-server` on a free loopback port, in a temporary
//! directory, with its log in that directory; [`Redis::kill`] ends it with SIGKILL and
//! [`Redis::restart`] starts it again on the same port and directory (so an AOF survives).
//! Dropping the handle stops the server, and prints its log when the test is failing.
//! A watchdog shell process kills the server if the test process dies without dropping it.
//!
//! When `REDIS_URL` is set, tests that need no private server use that server instead,
//! under a fresh key prefix. When neither a `redis-server` binary nor `REDIS_URL` is
//! available, the tests say loudly that they were skipped — and fail under `CI=true`.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept commands after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Options of a private server.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// AOF persistence with `appendfsync always`: an acknowledged write survives SIGKILL.
    pub aof: bool,
    /// `requirepass`.
    pub password: Option<String>,
}

/// A private server process (and the watchdog that ends it if the tests die).
struct Private {
    port: u16,
    dir: tempfile::TempDir,
    options: Options,
    child: Option<Child>,
    watchdog: Option<Child>,
}

/// The server a test uses.
pub struct Redis {
    private: Option<Private>,
    url: String,
    /// A prefix no other test uses, for key names.
    pub prefix: String,
}

/// Writes one line straight to the process's standard error, past output capture.
pub fn loud(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn have_binary() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Reports a missing server: a failure under CI, a loud skip elsewhere.
fn unavailable(test: &str, what: &str) -> Option<Redis> {
    let message = format!(
        "!! redis test `{test}` SKIPPED: {what} (install redis-server, or set REDIS_URL for the \
         tests that can use a shared server)"
    );
    if ci() {
        panic!("{message}; CI=true, so a missing server is a failure");
    }
    loud(&message);
    None
}

/// A unique key prefix.
pub fn unique_prefix() -> String {
    net_adapter::conformance::unique_namespace()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

impl Redis {
    /// A server for a test that can share one: `REDIS_URL` when set, else a private one.
    /// `None` (after a loud message) when there is neither.
    pub fn any(test: &str) -> Option<Redis> {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return Some(Redis {
                private: None,
                url,
                prefix: unique_prefix(),
            });
        }
        Self::private(test, Options::default())
    }

    /// A private server with `options`; `None` (after a loud message) without the binary.
    pub fn private(test: &str, options: Options) -> Option<Redis> {
        if !have_binary() {
            return unavailable(test, "no redis-server binary on PATH");
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
                    return Some(Redis {
                        private: Some(private),
                        url,
                        prefix: unique_prefix(),
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

    /// Ends the private server with SIGKILL.
    pub fn kill(&mut self) {
        self.private.as_mut().expect("a private server").kill();
    }

    /// Starts the private server again on the same port and directory.
    pub fn restart(&mut self) {
        let private = self.private.as_mut().expect("a private server");
        private.kill();
        let started = Instant::now();
        loop {
            match private.spawn() {
                Ok(()) => return,
                // The port can stay busy for a moment after the old process died.
                Err(err) if started.elapsed() < START_TIMEOUT => {
                    loud(&format!("redis restart retrying: {err}"));
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => panic!("could not restart redis-server: {err}"),
            }
        }
    }

    /// The server's log so far (private servers only).
    pub fn log(&self) -> String {
        self.private.as_ref().map_or_else(String::new, Private::log)
    }

    /// A plain client connection (multiplexed), for what the tests do behind the adapter.
    /// Its replies may take long on a loaded machine: it waits up to a minute for each.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(10)))
            .set_response_timeout(Some(Duration::from_secs(60)));
        redis::Client::open(self.url.as_str())
            .expect("valid url")
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("connect to redis")
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
        // Ends the server if this process goes away without stopping it.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg("while kill -0 \"$0\" 2>/dev/null; do sleep 1; done; kill -9 \"$1\" 2>/dev/null")
            .arg(std::process::id().to_string())
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn the watchdog: {e}"))?;
        self.watchdog = Some(watchdog);
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(private) = self.private.as_mut() {
            if std::thread::panicking() {
                loud(&format!(
                    "---- redis-server log (port {}) ----\n{}---- end of log ----",
                    private.port,
                    private.log()
                ));
            }
            private.kill();
        }
    }
}

/// Deletes every key under `prefix` (for tests on a shared server).
pub async fn delete_prefix(con: &mut redis::aio::MultiplexedConnection, prefix: &str) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(con)
        .await
        .unwrap_or_default();
    // Batch keys carry the stream key as a hash tag: `{prefix...}:batch:...`.
    let tagged: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}*"))
        .query_async(con)
        .await
        .unwrap_or_default();
    for key in keys.into_iter().chain(tagged) {
        let _: Result<(), _> = redis::cmd("DEL").arg(key).query_async(con).await;
    }
}
