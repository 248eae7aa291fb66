//! `net produce`: JSON lines from standard input or a file into a backend.
//!
//! Each non-blank line must be one JSON document. Invalid lines are reported on standard
//! error with their line number and skipped; every valid line is ingested (under
//! `BackpressureMode::Block`, so none is refused) and the bus is flushed before the command
//! exits, so nothing accepted is lost. With `--strict` the command still stores every valid
//! line but exits with status 3 when any line was invalid. With `--key`, events are routed by
//! the value of that field, so the events of one key keep their order. Ctrl-C stops reading
//! at the next line, stores what was read and exits with status 130.

use crate::backend::Backend;
use crate::exit::{INTERRUPTED, INVALID_INPUT};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use net_sdk::{BackpressureMode, IngestionError, RawEvent};
use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Flags of `net produce`.
#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    /// Read JSON lines from this file instead of standard input.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Route each event by this field (a dot path such as `user.id`; array items by index,
    /// `items.0`): events with equal values go to one shard and keep their order. A line
    /// without the field is invalid.
    #[arg(long)]
    key: Option<String>,
    /// Exit with status 3 if any line was invalid (the valid lines are still stored).
    #[arg(long)]
    strict: bool,
    /// Print at most this many invalid-line reports (the count is always printed).
    #[arg(long, default_value_t = 100)]
    max_reports: u64,
    /// The backend (its flags come last so the mesh heading closes the help).
    #[command(flatten)]
    backend: Backend,
}

/// Why a line was not ingested.
fn check_line(line: &[u8], key: Option<&[&str]>) -> std::result::Result<RawEvent, String> {
    let bytes = Bytes::copy_from_slice(line);
    let Some(path) = key else {
        return RawEvent::from_bytes_validated(bytes).map_err(|e| invalid_json(&e));
    };
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| invalid_json(&e))?;
    let mut field = &value;
    for part in path {
        let next = match field {
            serde_json::Value::Object(map) => map.get(*part),
            serde_json::Value::Array(items) => {
                part.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            _ => None,
        };
        field = next.ok_or_else(|| format!("no key field `{}`", path.join(".")))?;
    }
    let key_bytes = match field {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    };
    Ok(RawEvent::with_key(bytes, key_bytes))
}

fn invalid_json(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let reason = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(reason, _)| reason);
    format!("invalid JSON ({reason} at column {})", e.column())
}

/// Runs `net produce`.
pub(crate) async fn run(args: ProduceArgs) -> Result<ExitCode> {
    let key: Option<Vec<&str>> = args.key.as_deref().map(|k| k.split('.').collect());
    if key.as_ref().is_some_and(|k| k.iter().any(|p| p.is_empty())) {
        return Err(crate::exit::usage(format!(
            "--key `{}` is not a dot path of field names",
            args.key.as_deref().unwrap_or_default()
        )));
    }
    let input: Box<dyn BufRead> = match &args.file {
        Some(path) => Box::new(BufReader::new(
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    let what = args.backend.describe();
    let last_drop: Arc<Mutex<Option<String>>> = Arc::default();
    let observer = last_drop.clone();
    let bus = args
        .backend
        .open_bus(|builder| {
            builder
                .backpressure(BackpressureMode::Block)
                .on_drop(move |dropped| {
                    let reason = dropped
                        .error
                        .clone()
                        .unwrap_or_else(|| format!("{:?}", dropped.reason));
                    *observer.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
                })
        })
        .await?;

    // Ctrl-C stops reading at the next line and still flushes what was accepted; a second
    // Ctrl-C (for a reader blocked on a terminal) exits at once.
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(i32::from(INTERRUPTED));
            }
        }
    });

    let mut reader = input;
    let mut line = Vec::new();
    let (mut number, mut produced, mut invalid) = (0u64, 0u64, 0u64);
    let mut stderr = std::io::stderr().lock();
    let read_result: Result<()> = loop {
        if interrupted.load(Ordering::SeqCst) {
            break Ok(());
        }
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(anyhow::Error::new(e).context(format!("read line {}", number + 1))),
        }
        number += 1;
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let outcome = match check_line(text, key.as_deref()) {
            Ok(event) => match bus.ingest_raw(event) {
                Ok(()) => Ok(()),
                Err(e @ IngestionError::TooLarge { .. }) => Err(e.to_string()),
                // Not the line's fault: the bus cannot take events at all.
                Err(e) => break Err(anyhow::Error::new(e).context(format!("line {number}"))),
            },
            Err(reason) => Err(reason),
        };
        match outcome {
            Ok(()) => produced += 1,
            Err(reason) => {
                invalid += 1;
                if invalid <= args.max_reports {
                    let _ = writeln!(stderr, "warning: line {number}: {reason}; skipped");
                }
            }
        }
    };
    // Whatever happened to the input, what was accepted reaches the backend.
    let flushed = bus.flush().await;
    bus.shutdown_via_ref().await.context("shut the bus down")?;
    read_result?;
    flushed.with_context(|| format!("flush to {what}"))?;
    let stats = bus.stats().snapshot();
    if stats.events_dropped > 0 {
        let reason = last_drop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_default();
        bail!(
            "{} of {produced} events could not be stored in {what}: {reason}",
            stats.events_dropped
        );
    }
    writeln!(
        stderr,
        "produced {produced} event{} from {number} line{} into {what}{}",
        if produced == 1 { "" } else { "s" },
        if number == 1 { "" } else { "s" },
        if invalid > 0 {
            format!(
                " ({invalid} invalid line{} skipped)",
                if invalid == 1 { "" } else { "s" }
            )
        } else {
            String::new()
        }
    )?;
    if interrupted.load(Ordering::SeqCst) {
        writeln!(
            stderr,
            "error: interrupted after line {number}; the {produced} events read before were stored"
        )?;
        return Ok(ExitCode::from(INTERRUPTED));
    }
    if args.strict && invalid > 0 {
        writeln!(
            stderr,
            "error: {invalid} invalid line{} in the input (--strict); the {produced} valid event{} were stored",
            if invalid == 1 { "" } else { "s" },
            if produced == 1 { "" } else { "s" },
        )?;
        return Ok(ExitCode::from(INVALID_INPUT));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, key: Option<&str>, expected: std::result::Result<(), &str>) {
        let path: Option<Vec<&str>> = key.map(|k| k.split('.').collect());
        let got = check_line(line.as_bytes(), path.as_deref()).map(|_| ());
        match (&got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(reason), Err(want)) => assert!(reason.contains(want), "{line}: {reason}"),
            _ => panic!("{line:?} with key {key:?}: got {got:?}"),
        }
    }

    #[test]
    fn lines_are_checked() {
        check(r#"{"a":1}"#, None, Ok(()));
        check("[1,2]", None, Ok(()));
        check(
            "{",
            None,
            Err("invalid JSON (EOF while parsing an object at column 1)"),
        );
        check(
            r#"{"a":1} x"#,
            None,
            Err("invalid JSON (trailing characters at column 9)"),
        );
        check(r#"{"user":{"id":7}}"#, Some("user.id"), Ok(()));
        check(r#"{"items":[{"k":"a"}]}"#, Some("items.0.k"), Ok(()));
        check(
            r#"{"user":{}}"#,
            Some("user.id"),
            Err("no key field `user.id`"),
        );
        check(r#"{"user":5}"#, Some("user.id"), Err("no key field"));
        check("nope", Some("user"), Err("invalid JSON"));
    }

    #[test]
    fn keys_route_by_value() {
        let path = ["user"];
        let a = check_line(br#"{"user":"u1","n":1}"#, Some(&path)).unwrap();
        let b = check_line(br#"{"n":2,"user":"u1"}"#, Some(&path)).unwrap();
        let c = check_line(br#"{"user":"u2"}"#, Some(&path)).unwrap();
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
        // A key is its text: the string "7" and the number 7 route alike.
        let s = check_line(br#"{"user":"7"}"#, Some(&path)).unwrap();
        let n = check_line(br#"{"user":7}"#, Some(&path)).unwrap();
        assert_eq!(s.hash(), n.hash());
    }
}
