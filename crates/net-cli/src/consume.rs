//! `net consume` and `net tail`: print stored events as JSON lines.
//!
//! Events are read through an [`EventStream`]: page by page, copies dropped by dedup id, and
//! the cursor saved to `--cursor-file` (replaced atomically) once every event of a page has
//! been printed. A run that is stopped (Ctrl-C or SIGTERM) prints the rest of its current page
//! before it saves the cursor, so the next run starts right after the last printed event.
//!
//! The cursor file is read before the backend is contacted: a file that is damaged (empty,
//! binary, several lines) is a usage error, never a silent restart from the beginning.

use crate::backend::Backend;
use crate::exit::{stop_signal, usage};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use net_sdk::{
    ConsumerError, CursorStore, EventStream, FileCursor, Filter, MemoryCursor, Ordering,
    StoredEvent, StreamError, StreamOptions,
};
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Largest `--dedup-window`: at about 100 bytes per remembered id, 1 GB once full.
const MAX_DEDUP_WINDOW: u64 = 10_000_000;
/// Largest `--limit`.
const MAX_LIMIT: u64 = 1_000_000_000_000;
/// Largest `--max-wait-ms`: one hour.
const MAX_WAIT_MS: u64 = 3_600_000;

/// How events of different shards are interleaved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum OrderArg {
    /// Each shard's order kept, shards taken in turn.
    Sequence,
    /// By ingestion time across shards.
    Timestamp,
}

/// Flags of `net consume` and `net tail`.
#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// File that keeps the position between runs: read at start (when it exists) and
    /// replaced atomically after each printed page. Without it every run starts at the
    /// earliest retained event.
    #[arg(long)]
    cursor_file: Option<PathBuf>,
    /// Start at the earliest retained event, ignoring the cursor file (which is still
    /// updated).
    #[arg(long)]
    from_start: bool,
    /// Keep waiting for new events (polling with a backoff) until Ctrl-C or SIGTERM.
    #[arg(long)]
    pub(crate) follow: bool,
    /// Print only events matching this JSON filter, e.g. '{"type":"click"}' or
    /// '{"latency_ms":{"$gt":100}}'. Skipped events still move the cursor.
    #[arg(long)]
    filter: Option<String>,
    /// Stop after printing this many events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=MAX_LIMIT))]
    limit: Option<u64>,
    /// Print each event as {"id","shard","insertion_ts","dedup_id","event"} instead of the
    /// payload alone.
    #[arg(long)]
    envelope: bool,
    /// How events of different shards are interleaved.
    #[arg(long, value_enum, default_value = "sequence")]
    ordering: OrderArg,
    /// Events read per poll.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    page_size: u64,
    /// Dedup ids remembered to drop redelivered copies (see docs/operations.md for sizing).
    #[arg(long, default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=MAX_DEDUP_WINDOW))]
    dedup_window: u64,
    /// Longest wait between polls when following, in milliseconds.
    #[arg(long, default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_WAIT_MS))]
    max_wait_ms: u64,
    /// The backend (its flags come last so the mesh heading closes the help).
    #[command(flatten)]
    backend: Backend,
}

/// Writes one event line with a single write, through `line` (a reused buffer), so standard
/// output is never kept locked between events.
fn print(
    out: &mut impl Write,
    line: &mut Vec<u8>,
    event: &StoredEvent,
    envelope: bool,
) -> io::Result<()> {
    line.clear();
    if envelope {
        let payload: serde_json::Value = serde_json::from_slice(&event.raw).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&event.raw).into())
        });
        let value = serde_json::json!({
            "id": event.id,
            "shard": event.shard_id,
            "insertion_ts": event.insertion_ts,
            "dedup_id": event.dedup_id,
            "event": payload,
        });
        serde_json::to_writer(&mut *line, &value).map_err(io::Error::other)?;
    } else {
        line.extend_from_slice(&event.raw);
    }
    line.push(b'\n');
    out.write_all(line)
}

/// Runs `net consume` (and `net tail`, which sets `follow`).
pub(crate) async fn run(args: ConsumeArgs) -> Result<ExitCode> {
    let filter = args
        .filter
        .as_deref()
        .map(Filter::parse)
        .transpose()
        .map_err(|e| usage(format!("invalid --filter: {e}")))?;
    let mut options = StreamOptions::default()
        .page_size(args.page_size as usize)
        .follow(args.follow)
        .backoff(
            Duration::from_millis(10),
            Duration::from_millis(args.max_wait_ms),
        )
        .dedup_capacity(usize::try_from(args.dedup_window).unwrap_or(usize::MAX))
        .from_start(args.from_start)
        .ordering(match args.ordering {
            OrderArg::Sequence => Ordering::Sequence,
            OrderArg::Timestamp => Ordering::Timestamp,
        });
    if let Some(filter) = filter {
        options = options.filter(filter);
    }
    if let Some(limit) = args.limit {
        options = options.max_events(limit);
    }
    if let Some(path) = &args.cursor_file {
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
                return Err(usage(format!(
                    "--cursor-file {}: directory {} does not exist",
                    path.display(),
                    dir.display()
                )))
            }
            _ => {}
        }
        if !args.from_start {
            FileCursor::new(path.clone()).load().map_err(|e| {
                usage(format!(
                    "cannot read cursor file {}: {e}; use --from-start or remove it",
                    path.display()
                ))
            })?;
        }
    }
    let what = args.backend.describe();
    let bus = args.backend.open_bus(|builder| builder).await?;
    let result = async {
        match &args.cursor_file {
            Some(path) => {
                let store = FileCursor::new(path.clone());
                consume(&bus, options, store, &args, &what).await
            }
            None => consume(&bus, options, MemoryCursor::default(), &args, &what).await,
        }
    }
    .await;
    bus.shutdown_via_ref().await.context("shut the bus down")?;
    result
}

async fn consume<S: CursorStore + Unpin>(
    bus: &net_sdk::EventBus,
    options: StreamOptions,
    store: S,
    args: &ConsumeArgs,
    what: &str,
) -> Result<ExitCode> {
    let cursor_name = args.cursor_file.as_ref().map_or_else(
        || "the cursor".to_owned(),
        |p| format!("cursor file {}", p.display()),
    );
    let mut stream = EventStream::new(bus, options, store)
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot read {cursor_name}")))?;
    // Not locked: each event is one write, and nothing holds the stream across a wait.
    let mut out = io::stdout();
    let mut line = Vec::new();
    let interrupt = stop_signal();
    tokio::pin!(interrupt);
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = &mut interrupt => {
                // Finish the page in hand so the saved cursor matches what was printed.
                for event in stream.drain_buffered() {
                    if print(&mut out, &mut line, &event, args.envelope).is_err() {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                if out.flush().is_ok() {
                    stream.commit().context("save the cursor")?;
                }
                return Ok(ExitCode::SUCCESS);
            }
        };
        match next {
            None => break,
            Some(Ok(event)) => {
                if let Err(e) = print(&mut out, &mut line, &event, args.envelope) {
                    // A closed pipe (e.g. `| head`) ends the run quietly; the cursor stays
                    // at the last page saved in full.
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return Ok(ExitCode::SUCCESS);
                    }
                    return Err(anyhow::Error::new(e).context("write to standard output"));
                }
            }
            Some(Err(StreamError::Consumer(ConsumerError::InvalidCursor(reason)))) => {
                return Err(usage(format!(
                    "{cursor_name} holds a cursor this stream does not accept ({reason}); \
                     use --from-start or remove it"
                )));
            }
            Some(Err(StreamError::Consumer(ConsumerError::Adapter(e)))) if args.follow => {
                tracing::warn!(error = %e, "reading from {what} failed; retrying");
            }
            Some(Err(e)) => {
                return Err(anyhow::Error::new(e).context(format!("cannot read from {what}")));
            }
        }
    }
    out.flush().context("write to standard output")?;
    stream.commit().context("save the cursor")?;
    Ok(ExitCode::SUCCESS)
}
