//! `net produce`: JSON lines from standard input or a file into a backend.
//!
//! Each non-blank line must be one JSON document. Invalid lines (not JSON, or longer than the
//! largest event) are reported on standard error with their line number and skipped; a line
//! is read through a bounded buffer, so an oversized one is skipped without being held in
//! memory. Every valid line is ingested (under `BackpressureMode::Block`, so none is refused)
//! and the bus is flushed before the command exits.
//!
//! A batch the backend does not take is retried for `--retry-window` seconds. A batch that is
//! still not stored then is dropped, counted, and its lines are written to `--failed-lines`
//! when given, so that every valid line is either stored or listed there: nothing is lost
//! without a trace. With `--strict` the command still stores every valid line but exits with
//! status 3 when any line was invalid. With `--key`, events are routed by the value of that
//! field, so the events of one key keep their order. Ctrl-C or SIGTERM stops reading at once
//! (even while the input has nothing to give), stores what was read, prints the summary and
//! exits with status 130 or 143; a second one exits at once.

use crate::backend::Backend;
use crate::exit::{say, stop_signal, usage, INVALID_INPUT};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use net_sdk::{
    BackpressureMode, DroppedEvents, EventBusConfig, IngestionError, RawEvent, RetryPolicy,
};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Longest `--retry-window`: one day.
const MAX_RETRY_WINDOW_SECS: u64 = 86_400;

/// Whitespace a line may carry around an event of the largest accepted size.
const LINE_SLACK: usize = 64;

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
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    max_reports: u64,
    /// Seconds a batch the backend does not take is retried before it is given up (and its
    /// lines written to --failed-lines); covers backend restarts and failovers.
    #[arg(long, value_name = "SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=MAX_RETRY_WINDOW_SECS))]
    retry_window: u64,
    /// Write every valid line that could not be stored to this file (created or replaced),
    /// one per line, ready to be produced again. Without it such lines are only counted.
    #[arg(long, value_name = "FILE")]
    failed_lines: Option<PathBuf>,
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

/// Lines read ahead of the bus.
const READ_AHEAD: usize = 64;

/// What the input reader hands over.
enum Input {
    /// A line, without its newline.
    Line(Vec<u8>),
    /// A line of this many bytes, too long to be an event, skipped unread.
    TooLong(u64),
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// The end of the input.
    End,
    /// A line (without its newline) is in the buffer.
    Read,
    /// A line of this many bytes, longer than the limit: skipped, the buffer holds none of it.
    TooLong(u64),
}

/// Reads the next line into `buf` (cleared first), holding at most `max` bytes of it: the
/// rest of a longer line is read and thrown away as it arrives.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    let mut total = 0u64;
    let mut too_long = false;
    loop {
        let chunk = match input.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(match (total, too_long) {
                (0, _) => Line::End,
                (_, true) => Line::TooLong(total),
                (_, false) => Line::Read,
            });
        }
        let (part, newline) = match chunk.iter().position(|&b| b == b'\n') {
            Some(at) => (&chunk[..at], true),
            None => (chunk, false),
        };
        total += part.len() as u64;
        if !too_long {
            if buf.len() + part.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(part);
            }
        }
        let used = part.len() + usize::from(newline);
        input.consume(used);
        if newline {
            return Ok(if too_long {
                Line::TooLong(total)
            } else {
                Line::Read
            });
        }
    }
}

/// "1 event", "2 events".
fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// Writes the lines of dropped batches to a file, off the batch workers.
struct FailedLines {
    path: PathBuf,
    sender: Option<mpsc::Sender<Vec<Bytes>>>,
    writer: tokio::task::JoinHandle<io::Result<u64>>,
}

impl FailedLines {
    /// Creates (or replaces) the file at `path`.
    fn create(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.is_dir() {
                return Err(usage(format!(
                    "--failed-lines {}: directory {} does not exist",
                    path.display(),
                    dir.display()
                )));
            }
        }
        let file = File::create(path)
            .with_context(|| format!("cannot create --failed-lines {}", path.display()))?;
        let (sender, receiver) = mpsc::channel::<Vec<Bytes>>();
        let writer = tokio::task::spawn_blocking(move || {
            let mut out = BufWriter::new(file);
            let mut written = 0u64;
            for lines in receiver {
                for line in lines {
                    out.write_all(&line)?;
                    out.write_all(b"\n")?;
                    written += 1;
                }
            }
            out.flush()?;
            out.get_ref().sync_all()?;
            Ok(written)
        });
        Ok(Self {
            path: path.to_owned(),
            sender: Some(sender),
            writer,
        })
    }

    /// A sender for the drop observer.
    fn sender(&self) -> Option<mpsc::Sender<Vec<Bytes>>> {
        self.sender.clone()
    }

    /// Queues one line that never reached the bus.
    fn push(&self, line: Bytes) {
        if let Some(sender) = &self.sender {
            let _ = sender.send(vec![line]);
        }
    }

    /// Waits until everything sent was written and synced (the observer's sender must be
    /// gone: drop the bus first); returns how many lines the file holds.
    async fn finish(mut self) -> Result<u64> {
        self.sender = None;
        let path = self.path.display().to_string();
        self.writer
            .await
            .context("the --failed-lines writer stopped")?
            .with_context(|| format!("write --failed-lines {path}"))
    }
}

/// Runs `net produce`.
pub(crate) async fn run(args: ProduceArgs) -> Result<ExitCode> {
    let key: Option<Vec<&str>> = args.key.as_deref().map(|k| k.split('.').collect());
    if key.as_ref().is_some_and(|k| k.iter().any(|p| p.is_empty())) {
        return Err(usage(format!(
            "--key `{}` is not a dot path of field names",
            args.key.as_deref().unwrap_or_default()
        )));
    }
    let mut input: Box<dyn BufRead + Send> = match &args.file {
        Some(path) => Box::new(BufReader::new(
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(BufReader::new(io::stdin())),
    };
    let failed = args
        .failed_lines
        .as_deref()
        .map(FailedLines::create)
        .transpose()?;
    let what = args.backend.describe();
    let last_drop: Arc<Mutex<Option<String>>> = Arc::default();
    let observer = last_drop.clone();
    let failed_sender = failed.as_ref().and_then(FailedLines::sender);
    let retry = RetryPolicy::for_duration(Duration::from_secs(args.retry_window));
    let max_event_bytes = EventBusConfig::default().max_event_bytes;
    let bus = args
        .backend
        .open_bus(|builder| {
            builder
                .backpressure(BackpressureMode::Block)
                .retry(retry)
                .max_event_bytes(max_event_bytes)
                .on_drop(move |dropped: &DroppedEvents| {
                    let reason = dropped
                        .error
                        .clone()
                        .unwrap_or_else(|| format!("{:?}", dropped.reason));
                    *observer.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
                    if let Some(sender) = &failed_sender {
                        let _ = sender.send(dropped.payloads.clone());
                    }
                })
        })
        .await?;

    // Lines are read on a thread of their own, so a stop request is seen at once even while
    // the input (a terminal, a pipe) has nothing to give.
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<io::Result<Input>>(READ_AHEAD);
    let limit = max_event_bytes + LINE_SLACK;
    std::thread::Builder::new()
        .name("net-produce-input".into())
        .spawn(move || {
            let mut buf = Vec::new();
            loop {
                let item = match read_line(&mut input, &mut buf, limit) {
                    Ok(Line::End) => return,
                    Ok(Line::Read) => Ok(Input::Line(std::mem::take(&mut buf))),
                    Ok(Line::TooLong(bytes)) => Ok(Input::TooLong(bytes)),
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if lines_tx.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        })
        .context("start the input reader")?;

    // Ctrl-C or SIGTERM stops reading and still flushes what was accepted; a second one
    // exits at once.
    let stopped = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let (flag, wake) = (stopped.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let signal = stop_signal().await;
            if flag.swap(signal.status(), Ordering::SeqCst) != 0 {
                std::process::exit(i32::from(signal.status()));
            }
            wake.notify_one();
        }
    });

    let (mut number, mut produced, mut invalid) = (0u64, 0u64, 0u64);
    let read_result: Result<()> = loop {
        let next = tokio::select! {
            biased;
            () = stop.notified() => break Ok(()),
            next = lines.recv() => next,
        };
        let (line, outcome) = match next {
            None => break Ok(()),
            Some(Ok(Input::Line(line))) => (line, None),
            Some(Ok(Input::TooLong(bytes))) => (
                Vec::new(),
                Some(format!(
                    "too large ({bytes} bytes; the largest event is {max_event_bytes} bytes)"
                )),
            ),
            Some(Err(e)) => {
                break Err(anyhow::Error::new(e).context(format!("read line {}", number + 1)))
            }
        };
        number += 1;
        let outcome = match outcome {
            Some(reason) => Err(reason),
            None => {
                let text = line.trim_ascii();
                if text.is_empty() {
                    continue;
                }
                match check_line(text, key.as_deref()) {
                    Ok(event) => {
                        let raw = event.bytes().clone();
                        match bus.ingest_raw(event) {
                            Ok(()) => Ok(()),
                            Err(e @ IngestionError::TooLarge { .. }) => Err(e.to_string()),
                            // Not the line's fault: the bus cannot take events at all.
                            Err(e) => {
                                if let Some(failed) = &failed {
                                    failed.push(raw);
                                }
                                break Err(anyhow::Error::new(e).context(format!("line {number}")));
                            }
                        }
                    }
                    Err(reason) => Err(reason),
                }
            }
        };
        match outcome {
            Ok(()) => produced += 1,
            Err(reason) => {
                invalid += 1;
                if invalid <= args.max_reports {
                    say(format_args!("warning: line {number}: {reason}; skipped"));
                }
            }
        }
    };
    // Whatever happened to the input, what was accepted reaches the backend (or, after the
    // retry window, the failed-lines file).
    let flushed = bus.flush().await;
    let shut = bus.shutdown_via_ref().await;
    let stats = bus.stats().snapshot();
    // The drop observer (and its sender) goes with the bus.
    drop(bus);
    let written = match failed {
        Some(failed) => Some((failed.path.clone(), failed.finish().await?)),
        None => None,
    };
    shut.context("shut the bus down")?;
    read_result?;
    flushed.with_context(|| format!("flush to {what}"))?;
    if stats.events_dropped > 0 {
        let reason = last_drop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_default();
        let lost = stats.events_dropped;
        let listed = match &written {
            Some((path, n)) if *n >= lost => format!("; their lines are in {}", path.display()),
            Some((path, n)) => format!(
                "; {n} of their lines are in {}, the others were not known any more",
                path.display()
            ),
            None => "; use --failed-lines FILE to keep them".to_owned(),
        };
        bail!(
            "{lost} of {produced} events could not be stored in {what} within the {}s retry \
             window ({reason}){listed}",
            args.retry_window
        );
    }
    say(format_args!(
        "produced {} from {} into {what}{}",
        plural(produced, "event"),
        plural(number, "line"),
        if invalid > 0 {
            format!(" ({} skipped)", plural(invalid, "invalid line"))
        } else {
            String::new()
        }
    ));
    let signal = stopped.load(Ordering::SeqCst);
    if signal != 0 {
        let name = if signal == crate::exit::TERMINATED {
            "terminated"
        } else {
            "interrupted"
        };
        say(format_args!(
            "error: {name} after line {number}; the {} read before {} stored",
            plural(produced, "event"),
            if produced == 1 { "was" } else { "were" }
        ));
        return Ok(ExitCode::from(signal));
    }
    if args.strict && invalid > 0 {
        say(format_args!(
            "error: {} in the input (--strict); the {} {} stored",
            plural(invalid, "invalid line"),
            plural(produced, "valid event"),
            if produced == 1 { "was" } else { "were" }
        ));
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

    /// Reads every line of `input` with a limit of `max`: the lines, or their length when
    /// too long.
    fn lines(input: &[u8], max: usize) -> Vec<Result<String, u64>> {
        let mut reader = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_line(&mut reader, &mut buf, max).unwrap() {
                Line::End => return out,
                Line::Read => out.push(Ok(String::from_utf8(buf.clone()).unwrap())),
                Line::TooLong(n) => {
                    assert!(buf.is_empty());
                    out.push(Err(n));
                }
            }
        }
    }

    #[test]
    fn lines_are_read_up_to_the_limit_and_longer_ones_skipped() {
        assert_eq!(lines(b"", 8), vec![]);
        assert_eq!(
            lines(b"ab\n\ncd", 8),
            vec![Ok("ab".into()), Ok(String::new()), Ok("cd".into())]
        );
        assert_eq!(lines(b"12345678\n", 8), vec![Ok("12345678".into())]);
        assert_eq!(
            lines(b"123456789\nok\n0123456789abcdef", 8),
            vec![Err(9), Ok("ok".into()), Err(16)]
        );
    }

    /// An endless line without a newline, then a short one.
    struct Flood {
        left: u64,
        tail: &'static [u8],
        chunk: Vec<u8>,
    }

    impl io::Read for Flood {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.left == 0 {
                let n = self.tail.len().min(out.len());
                out[..n].copy_from_slice(&self.tail[..n]);
                self.tail = &self.tail[n..];
                return Ok(n);
            }
            let n = out.len().min(self.chunk.len()).min(self.left as usize);
            out[..n].copy_from_slice(&self.chunk[..n]);
            self.left -= n as u64;
            Ok(n)
        }
    }

    #[test]
    fn an_oversized_line_is_skipped_without_being_buffered() {
        let size = 50 << 20;
        let mut reader = BufReader::new(Flood {
            left: size,
            tail: b"\n{\"after\":1}\n",
            chunk: vec![b'x'; 64 * 1024],
        });
        let max = 1 << 20;
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut buf, max).unwrap(),
            Line::TooLong(size)
        );
        // Never more than the limit was held, though fifty times that went by.
        assert!(buf.capacity() <= 2 * max, "held {} bytes", buf.capacity());
        assert_eq!(read_line(&mut reader, &mut buf, max).unwrap(), Line::Read);
        assert_eq!(buf, br#"{"after":1}"#);
        assert_eq!(read_line(&mut reader, &mut buf, max).unwrap(), Line::End);
    }
}
