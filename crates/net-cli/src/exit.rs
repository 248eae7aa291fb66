//! Exit statuses, error reporting and logging set-up.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failure: a backend could not be reached or refused a request, an I/O error, events lost |
//! | 2 | usage: a bad flag or flag value, filter, URL, setting or cursor file |
//! | 3 | invalid input: `produce --strict` met lines that are not JSON (the valid ones were stored) |
//! | 130 | `produce` interrupted by Ctrl-C (the lines read before were stored) |
//!
//! An error is printed as one line on standard error, `error: <what>: <why>`, never with a
//! backtrace.

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

/// Sends `tracing` output to standard error, filtered by `RUST_LOG` or else `default`.
pub(crate) fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
