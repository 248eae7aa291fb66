//! Exit statuses, error reporting and logging set-up.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failure: a backend could not be reached or refused a request, an I/O error, events lost |
//! | 2 | usage: a bad flag or flag value, filter, URL, setting or cursor file |
//! | 3 | invalid input: `produce --strict` met lines that are not JSON (the valid ones were stored) |
//! | 130 | `produce` interrupted by Ctrl-C (SIGINT); the lines read before were stored or written to `--failed-lines` |
//! | 143 | `produce` stopped by SIGTERM, with the same summary as for Ctrl-C |
//!
//! An error is printed as one line on standard error, `error: <what>: <why>`, never with a
//! backtrace.
//!
//! Logging never holds up a command: `tracing` output is queued to a writer thread (see
//! [`init_logging`]), so a backend that logs from its own threads while the command waits
//! cannot block on standard error, and the command itself never keeps standard error or
//! standard output locked across a wait.

use std::fmt;
use std::io::Write as _;
use std::process::ExitCode;

/// Any failure that is not a usage error.
pub(crate) const FAILURE: u8 = 1;
/// A bad flag, flag value, setting or cursor file.
pub(crate) const USAGE: u8 = 2;
/// Invalid input lines under `produce --strict`.
pub(crate) const INVALID_INPUT: u8 = 3;
/// `produce` stopped by Ctrl-C (what it read before was stored).
pub(crate) const INTERRUPTED: u8 = 130;
/// `produce` stopped by SIGTERM (what it read before was stored).
pub(crate) const TERMINATED: u8 = 143;

/// A request to stop from outside: Ctrl-C or SIGTERM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopSignal {
    /// SIGINT, usually Ctrl-C on a terminal.
    Interrupt,
    /// SIGTERM, as sent by `kill`, service managers and container runtimes.
    Terminate,
}

impl StopSignal {
    /// The exit status of a command stopped by this signal (128 + the signal number).
    pub(crate) fn status(self) -> u8 {
        match self {
            StopSignal::Interrupt => INTERRUPTED,
            StopSignal::Terminate => TERMINATED,
        }
    }
}

/// Waits for the next Ctrl-C or SIGTERM. If the handlers cannot be installed it never
/// returns (the signals then keep their default action).
pub(crate) async fn stop_signal() -> StopSignal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            Some(()) = int.recv() => StopSignal::Interrupt,
            Some(()) = term.recv() => StopSignal::Terminate,
            else => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        match tokio::signal::ctrl_c().await {
            Ok(()) => StopSignal::Interrupt,
            Err(_) => std::future::pending().await,
        }
    }
}

/// Writes one line to standard error. The stream is locked for this one write only, never
/// across a wait.
pub(crate) fn say(line: fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// An error caused by how the command was called; reported with status [`USAGE`].
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A usage error with `message`.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// Prints `err` as one line and returns its status.
pub(crate) fn report(err: &anyhow::Error) -> ExitCode {
    // Each cause once: wrappers often repeat their source's message in their own.
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string().replace('\n', " ");
        if !parts.last().is_some_and(|last| last.contains(text.trim())) {
            parts.push(text);
        }
    }
    let line = parts.join(": ");
    let _ = writeln!(std::io::stderr(), "error: {line}");
    if err.chain().any(|e| e.is::<UsageError>()) {
        ExitCode::from(USAGE)
    } else {
        ExitCode::from(FAILURE)
    }
}

/// Prints a command-line parsing error as one line (help and version print in full).
pub(crate) fn clap_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(USAGE)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            // clap's message is a paragraph (sometimes listing arguments on indented lines),
            // then usage and hints: keep the paragraph, on one line.
            let text = err.to_string();
            let message: Vec<&str> = text
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect();
            let message = message.join(" ");
            let message = message.trim_start_matches("error: ");
            let message = if message.is_empty() {
                "invalid arguments"
            } else {
                message
            };
            let _ = writeln!(std::io::stderr(), "error: {message} (see `net --help`)");
            ExitCode::from(USAGE)
        }
    }
}

/// Lines of log output queued for the writer thread; more are dropped (and counted by the
/// writer) rather than making the logging thread wait.
const LOG_QUEUE_LINES: usize = 64 * 1024;

/// Sends `tracing` output to standard error, filtered by `RUST_LOG` or else `default`.
///
/// Log lines are handed to a writer thread through a bounded queue that drops lines when it
/// is full, so no thread ever waits for standard error on behalf of a log line. Keep the
/// returned guard until the command ends: dropping it writes out what is still queued.
pub(crate) fn init_logging(default: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("net-log")
        .finish(std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer)
        .try_init();
    guard
}
