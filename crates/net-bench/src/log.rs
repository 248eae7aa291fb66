//! Log rows: the embedded durable log ([`LogAdapter`]) beside bare loops that write the same
//! bytes to plain files, plus the measurement behind the log's choice of a file per shard.
//!
//! - Writes go straight to `on_batch` (not through the bus), one batch of 1,024 events of 100
//!   bytes at a time on shard 0, awaited before the next, as a shard's batch worker does. The
//!   batches are built, and dropped, outside the clock; only the `on_batch` calls are timed.
//!   The bare loop writes as many bytes as the log: per batch it copies the same 1,024
//!   payloads, each behind a 52-byte header of zeros (the size of the log's frame), into one
//!   buffer and `write`s it to one file (plus `fdatasync` in the synced pair). So both pay for
//!   a copy and for the same bytes into the page cache; the log's own work (the frame's
//!   fields, the checksum, its index and dedup bookkeeping, the hand-off from async code) is
//!   what the ratio shows.
//! - Read-back goes through the bus: events written by `ingest_raw` into a bus on the log,
//!   then read with `bus.poll`, beside the same on a `MemoryAdapter`.
//! - Reopen: a child process (this binary, see [`writer_process_entry`]) fills a log over 16
//!   shards with `FsyncPolicy::Never` and is killed with SIGKILL while it holds the log open;
//!   the time of `LogAdapter::open` that follows is the row. Each further repeat kills a new
//!   writer that appended one batch per shard. The files are in the page cache (they were just
//!   written), so this is recovery's own cost, not a cold disk's.
//! - Heap: a log is filled, closed, then opened and read whole through `bus.poll` while the
//!   counting allocator runs; the row is the largest live heap seen after any page.
//! - Group commit: 16 writer threads each write batches, either to a file of their own with an
//!   `fdatasync` per batch, or by handing them to one committer thread that writes every batch
//!   waiting into one shared file and covers them with a single `fdatasync`.
//!
//! Everything is written under the system's temporary directory and removed afterwards.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::Bytes;
use net_adapter::{Adapter, Batch, BatchEvent, MemoryAdapter, MemoryAdapterConfig};
use net_adapter_log::{FsyncPolicy, LogAdapter, LogAdapterConfig};
use net_core::{ConsumeRequest, EventBus};

use crate::alloc_count::Counting;
use crate::plan::{payload, Mode, Plan, Summary, PAYLOAD_BYTES};
use crate::report::{Row, Unit};
use crate::roundtrip::{self, PAGE};
use crate::throughput::{bus_config, SHARDS};

/// Events per batch in every row of this group.
const BATCH: usize = 1024;

/// Bytes the log frames each event with; the bare loops write as many zeros before each
/// payload, so that they write as many bytes as the log.
const FRAME: usize = 52;

/// Batches built ahead of the clock at a time, in the write rows.
const CHUNK: u64 = 64;

/// The environment variable that makes this binary a log writer to be killed (see
/// [`writer_process_entry`]): `<bytes> <dir>`.
const WRITER_ENV: &str = "NET_BENCH_LOG_WRITER";

/// The row names, also how rows name their baselines.
const LOG_SYNC: &str = "LogAdapter on_batch, fsync every batch";
const BARE_SYNC: &str = "bare write + fdatasync per batch, one file";
const LOG_NOSYNC: &str = "LogAdapter on_batch, fsync never";
const BARE_NOSYNC: &str = "bare write per batch, one file, no fdatasync";
const LOG_POLL: &str = "LogAdapter poll back (bus.poll)";
const MEMORY_POLL: &str = "MemoryAdapter poll back (bus.poll), beside the log";
const REOPEN: &str = "LogAdapter reopen after kill";
const REOPEN_BOUND: &str = "log reopen bound (1 s)";
const HEAP: &str = "LogAdapter heap, open + read all (bus.poll)";
const HEAP_BOUND: &str = "log heap bound (64 MB)";
const GROUP: &str = "bare: one shared file, group commit, 16 writers";
const PER_FILE: &str = "bare: 16 files, fdatasync per batch, 16 writers";

/// A directory of its own under the system's temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "net-bench-log-{tag}-{}-{}",
            std::process::id(),
            now_ns()
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("could not create {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Nanoseconds since the Unix epoch.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The payloads of one batch: 1,024 distinct events of [`PAYLOAD_BYTES`] bytes.
fn payloads() -> Vec<Bytes> {
    (0..BATCH).map(|i| Bytes::from(payload(0, i))).collect()
}

/// A batch of `payloads` for `shard`, starting at `sequence_start`.
fn batch(payloads: &[Bytes], shard: u16, sequence_start: u64, nonce: u64) -> Arc<Batch> {
    let ts = now_ns();
    Arc::new(Batch {
        shard_id: shard,
        events: payloads
            .iter()
            .map(|raw| BatchEvent {
                raw: raw.clone(),
                insertion_ts: ts,
                shard_id: shard,
            })
            .collect(),
        sequence_start,
        process_nonce: nonce,
    })
}

/// Opens a log, blocking (before any clock runs, or timed on purpose).
fn open(dir: &Path, fsync: FsyncPolicy) -> Result<LogAdapter> {
    LogAdapter::open(LogAdapterConfig::new(dir).fsync(fsync))
        .with_context(|| format!("could not open the log in {}", dir.display()))
}

/// Events the log holds over every shard.
fn stored(log: &LogAdapter) -> u64 {
    (0..SHARDS)
        .map(|s| {
            let usage = log.shard_usage(s);
            usage.next - usage.start
        })
        .sum()
}

/// Bytes of the log's segments over every shard.
fn log_bytes(log: &LogAdapter) -> u64 {
    (0..SHARDS).map(|s| log.shard_usage(s).bytes).sum()
}

/// `batches` batches written through `on_batch` of a fresh log on shard 0; only the calls
/// are timed. Returns the time and, when the log does not hold every event, the problem.
async fn log_write(
    fsync: FsyncPolicy,
    batches: u64,
    payloads: &[Bytes],
) -> Result<(Duration, Option<String>)> {
    let scratch = Scratch::new("write")?;
    let log = open(&scratch.0, fsync)?;
    let nonce = now_ns();
    let mut elapsed = Duration::ZERO;
    let mut next = 0;
    while next < batches {
        let end = (next + CHUNK).min(batches);
        let chunk: Vec<Arc<Batch>> = (next..end)
            .map(|b| batch(payloads, 0, b * BATCH as u64, nonce))
            .collect();
        let started = Instant::now();
        for b in &chunk {
            log.on_batch(b.clone()).await?;
        }
        elapsed += started.elapsed();
        // Dropped after the clock, as they were built before it.
        drop(chunk);
        next = end;
    }
    let expected = batches * BATCH as u64;
    let held = stored(&log);
    log.shutdown().await?;
    let problem = (held != expected).then(|| format!("the log holds {held} of {expected} events"));
    Ok((elapsed, problem))
}

/// The bare loop: `batches` times, the payloads, each behind [`FRAME`] zero bytes, copied into
/// one buffer and written to one file with a `write` (and an `fdatasync` when `sync`).
fn bare_write(sync: bool, batches: u64, payloads: &[Bytes]) -> Result<Duration> {
    let scratch = Scratch::new("bare")?;
    let path = scratch.0.join("bare.log");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("could not create {}", path.display()))?;
    let mut buf = Vec::with_capacity(BATCH * (FRAME + PAYLOAD_BYTES));
    let started = Instant::now();
    for _ in 0..batches {
        buf.clear();
        for p in payloads {
            buf.extend_from_slice(&[0; FRAME]);
            buf.extend_from_slice(p);
        }
        file.write_all(&buf)?;
        if sync {
            file.sync_data()?;
        }
    }
    Ok(started.elapsed())
}

/// Writes `events` through a bus on `adapter`, then times reading them back with `bus.poll`.
async fn poll_back(
    adapter: impl Adapter + 'static,
    events: u64,
    problems: &mut Vec<String>,
    what: &str,
) -> Result<Duration> {
    let bus = EventBus::new(bus_config().adapter_instance(adapter).build()?).await?;
    let (_, problem) = roundtrip::write(&bus, events).await?;
    if let Some(problem) = problem {
        problems.push(format!("{what}: {problem}"));
    }
    let started = Instant::now();
    let read = roundtrip::through_bus(&bus).await?;
    let elapsed = started.elapsed();
    if read != events {
        problems.push(format!("{what}: read back {read} of {events} events"));
    }
    bus.shutdown().await?;
    Ok(elapsed)
}

/// Writes batches over 16 shards (round robin) with a fresh producer nonce until the log's
/// segments hold at least `target` bytes and every shard got at least one batch. Returns
/// the events written.
async fn fill(log: &LogAdapter, target: u64, payloads: &[Bytes]) -> Result<u64> {
    let nonce = now_ns();
    let mut written = 0u64;
    let mut round = 0u64;
    loop {
        for shard in 0..SHARDS {
            let start = log.shard_usage(shard).next;
            log.on_batch(batch(payloads, shard, start, nonce)).await?;
            written += BATCH as u64;
        }
        round += 1;
        if log_bytes(log) >= target || round > 1 << 30 {
            return Ok(written);
        }
    }
}

/// When this process was started as a log writer by the reopen row, fills the log, says how
/// many events it wrote ("filled N" on standard output) and waits to be killed; `None`
/// otherwise.
pub(crate) fn writer_process_entry() -> Option<ExitCode> {
    let spec = std::env::var(WRITER_ENV).ok()?;
    let result = (|| -> Result<()> {
        let (bytes, dir) = spec.split_once(' ').context("expected `<bytes> <dir>`")?;
        let target: u64 = bytes.parse().context("the byte count")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let log = open(Path::new(dir), FsyncPolicy::Never)?;
        let written = runtime.block_on(fill(&log, target, &payloads()))?;
        let mut out = std::io::stdout();
        writeln!(out, "filled {written}")?;
        out.flush()?;
        // Held open, unsynced, until the parent kills this process.
        loop {
            std::thread::sleep(Duration::from_secs(60));
            let _ = &log;
        }
    })();
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("log writer process: {err:#}");
            ExitCode::FAILURE
        }
    })
}

/// Starts a writer on `dir`, waits until it wrote up to `target` bytes, kills it with
/// SIGKILL; returns how many events it wrote.
fn write_and_kill(dir: &Path, target: u64) -> Result<u64> {
    let exe = std::env::current_exe().context("could not find this executable")?;
    let mut child = Command::new(exe)
        .env(WRITER_ENV, format!("{target} {}", dir.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("could not start the log writer process")?;
    let mut line = String::new();
    let read =
        BufReader::new(child.stdout.take().context("the writer's stdout")?).read_line(&mut line);
    child.kill().context("could not kill the log writer")?;
    child.wait()?;
    read.context("could not read the writer's output")?;
    line.trim()
        .strip_prefix("filled ")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("the log writer said {line:?}"))
}

/// The largest live heap after opening the log in `dir` and after each page read through
/// `bus.poll`; checks that `expected` events came back.
async fn heap_pass(dir: &Path, expected: u64, problems: &mut Vec<String>) -> Result<f64> {
    let counting = Counting::start();
    let log = open(dir, FsyncPolicy::Never)?;
    let mut peak = counting.live_bytes();
    // Small rings: the row is about the log, not about the bus's (preallocated) rings.
    let bus = EventBus::new(
        bus_config()
            .ring_capacity(1024)
            .adapter_instance(log)
            .build()?,
    )
    .await?;
    let mut cursor: Option<String> = None;
    let mut read = 0u64;
    loop {
        let mut request = ConsumeRequest::new(PAGE);
        if let Some(c) = cursor.take() {
            request = request.from(c);
        }
        let page = bus.poll(request).await?;
        read += page.events.len() as u64;
        let more = page.has_more;
        cursor = Some(page.cursor);
        drop(page.events);
        peak = peak.max(counting.live_bytes());
        if !more {
            break;
        }
    }
    bus.shutdown().await?;
    drop(counting);
    if read != expected {
        problems.push(format!("{HEAP}: read back {read} of {expected} events"));
    }
    Ok(peak.max(0) as f64)
}

/// 16 writer threads, `batches` batches each, each to a file of its own with an `fdatasync`
/// per batch.
fn per_file(batches: u64, payloads: &[Bytes]) -> Result<Duration> {
    let scratch = Scratch::new("perfile")?;
    let files = (0..SHARDS)
        .map(|w| File::create(scratch.0.join(format!("{w}.wal"))))
        .collect::<std::io::Result<Vec<File>>>()?;
    let start_line = Barrier::new(files.len() + 1);
    std::thread::scope(|scope| {
        let writers: Vec<_> = files
            .into_iter()
            .map(|mut file| {
                let start_line = &start_line;
                scope.spawn(move || -> std::io::Result<()> {
                    let mut buf = Vec::with_capacity(BATCH * PAYLOAD_BYTES);
                    start_line.wait();
                    for _ in 0..batches {
                        buf.clear();
                        for p in payloads {
                            buf.extend_from_slice(p);
                        }
                        file.write_all(&buf)?;
                        file.sync_data()?;
                    }
                    Ok(())
                })
            })
            .collect();
        start_line.wait();
        let started = Instant::now();
        for writer in writers {
            writer
                .join()
                .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
        }
        Ok(started.elapsed())
    })
}

/// 16 writer threads, `batches` batches each, handed to one committer that writes every
/// batch waiting into one shared file and then syncs once for all of them; each writer
/// waits for its batch's sync before it sends the next. Returns the time and the number of
/// `fdatasync` calls.
fn group_commit(batches: u64, payloads: &[Bytes]) -> Result<(Duration, u64)> {
    let scratch = Scratch::new("group")?;
    let mut file = File::create(scratch.0.join("shared.wal"))?;
    let (to_committer, queue) = mpsc::channel::<(Vec<u8>, mpsc::SyncSender<Vec<u8>>)>();
    let start_line = Barrier::new(usize::from(SHARDS) + 1);
    std::thread::scope(|scope| {
        let committer = scope.spawn(move || -> std::io::Result<u64> {
            let mut syncs = 0u64;
            let mut group = Vec::new();
            let mut out = Vec::new();
            while let Ok(first) = queue.recv() {
                group.push(first);
                while let Ok(more) = queue.try_recv() {
                    group.push(more);
                }
                out.clear();
                for (buf, _) in &group {
                    out.extend_from_slice(buf);
                }
                file.write_all(&out)?;
                file.sync_data()?;
                syncs += 1;
                for (buf, ack) in group.drain(..) {
                    let _ = ack.send(buf);
                }
            }
            Ok(syncs)
        });
        let writers: Vec<_> = (0..SHARDS)
            .map(|_| {
                let (to_committer, start_line) = (to_committer.clone(), &start_line);
                scope.spawn(move || -> Result<()> {
                    let (ack, acked) = mpsc::sync_channel::<Vec<u8>>(1);
                    let mut buf = Vec::with_capacity(BATCH * PAYLOAD_BYTES);
                    start_line.wait();
                    for _ in 0..batches {
                        buf.clear();
                        for p in payloads {
                            buf.extend_from_slice(p);
                        }
                        to_committer
                            .send((buf, ack.clone()))
                            .map_err(|_| anyhow::anyhow!("the committer stopped"))?;
                        buf = acked
                            .recv()
                            .map_err(|_| anyhow::anyhow!("the committer stopped"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        drop(to_committer);
        start_line.wait();
        let started = Instant::now();
        for writer in writers {
            writer
                .join()
                .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
        }
        let elapsed = started.elapsed();
        let syncs = committer
            .join()
            .map_err(|_| anyhow::anyhow!("the committer thread panicked"))??;
        Ok((elapsed, syncs))
    })
}

/// Events per second of each duration, for `events` events.
fn rates(events: u64, times: &[Duration]) -> Result<Summary> {
    Summary::of(
        times
            .iter()
            .map(|t| events as f64 / t.as_secs_f64().max(1e-9))
            .collect(),
    )
    .context("no repeat was measured")
}

/// The log rows.
pub(crate) async fn rows(plan: &Plan) -> Result<Vec<Row>> {
    eprintln!("  log: on_batch and bare file writes, poll back, reopen after kill, heap");
    let payloads = payloads();
    let (mut write_problems, mut read_problems, mut reopen_problems, mut heap_problems) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut times: [Vec<Duration>; 8] = Default::default();
    let mut syncs = Vec::new();
    let reopen_dir = Scratch::new("reopen")?;
    let heap_dir = Scratch::new("heap")?;
    let (mut reopen_written, mut reopens, mut heaps) = (0u64, Vec::new(), Vec::new());

    // The heap row reads a log written once, closed cleanly.
    let heap_events = {
        let log = open(&heap_dir.0, FsyncPolicy::Never)?;
        let written = fill(&log, plan.log_heap_bytes, &payloads).await?;
        log.shutdown().await?;
        written
    };
    let heap_size = dir_bytes(&heap_dir.0);

    let rounds = plan.repeats + usize::from(plan.warm_up);
    for round in 0..rounds {
        let timed = round >= usize::from(plan.warm_up);
        let mut sample = Vec::with_capacity(8);
        let (t, p) = log_write(FsyncPolicy::EveryBatch, plan.log_sync_batches, &payloads).await?;
        write_problems.extend(p);
        sample.push(t);
        sample.push(bare_write(true, plan.log_sync_batches, &payloads)?);
        let (t, p) = log_write(FsyncPolicy::Never, plan.log_nosync_batches, &payloads).await?;
        write_problems.extend(p);
        sample.push(t);
        sample.push(bare_write(false, plan.log_nosync_batches, &payloads)?);
        let scratch = Scratch::new("read")?;
        let log = open(&scratch.0, FsyncPolicy::Never)?;
        sample.push(poll_back(log, plan.log_read_events, &mut read_problems, LOG_POLL).await?);
        let memory = MemoryAdapter::with_config(
            MemoryAdapterConfig::default()
                .max_events_per_shard(usize::try_from(plan.log_read_events).unwrap_or(usize::MAX)),
        );
        sample.push(
            poll_back(
                memory,
                plan.log_read_events,
                &mut read_problems,
                MEMORY_POLL,
            )
            .await?,
        );
        drop(scratch);
        sample.push(per_file(plan.group_batches, &payloads)?);
        let (t, n) = group_commit(plan.group_batches, &payloads)?;
        sample.push(t);
        if timed {
            syncs.push(n);
            for (slot, t) in times.iter_mut().zip(sample) {
                slot.push(t);
            }
        }

        // Reopen after a kill: the first repeat fills the log, later ones append a batch per
        // shard; each writer is killed before the timed open.
        if timed {
            reopen_written += write_and_kill(&reopen_dir.0, plan.log_reopen_bytes)?;
            let dir = reopen_dir.0.clone();
            let started = Instant::now();
            let log = tokio::task::spawn_blocking(move || open(&dir, FsyncPolicy::Never))
                .await
                .context("the open task failed")??;
            reopens.push(started.elapsed().as_nanos() as f64);
            let held = stored(&log);
            if held != reopen_written {
                reopen_problems.push(format!(
                    "the reopened log holds {held} events; the killed writers acknowledged \
                     {reopen_written}"
                ));
            }
            log.shutdown().await?;
            drop(log);
            heaps.push(heap_pass(&heap_dir.0, heap_events, &mut heap_problems).await?);
        }
    }
    let reopen_size = dir_bytes(&reopen_dir.0);
    for problems in [
        &mut write_problems,
        &mut read_problems,
        &mut reopen_problems,
        &mut heap_problems,
    ] {
        problems.dedup();
    }

    let sync_events = plan.log_sync_batches * BATCH as u64;
    let nosync_events = plan.log_nosync_batches * BATCH as u64;
    let group_events = plan.group_batches * BATCH as u64 * u64::from(SHARDS);
    let small = if plan.mode == Mode::Full {
        String::new()
    } else {
        format!(
            " ({} mode: a smaller log than the full run's 1 GB / 2 GB)",
            plan.mode.name()
        )
    };
    let per_sync = {
        let total: u64 = syncs.iter().sum();
        let runs = syncs.len().max(1) as f64;
        (plan.group_batches * u64::from(SHARDS)) as f64 / (total as f64 / runs).max(1.0)
    };
    Ok(vec![
        Row::new(LOG_SYNC, Unit::EventsPerSec, rates(sync_events, &times[0])?)
            .baseline(BARE_SYNC)
            .payload(PAYLOAD_BYTES)
            .note(format!(
                "{} batches of {BATCH} on one shard, each awaited; the log adds a 52-byte \
                 frame per event, the bare loop as many zero bytes",
                plan.log_sync_batches
            ))
            .problems(write_problems.clone()),
        Row::new(
            BARE_SYNC,
            Unit::EventsPerSec,
            rates(sync_events, &times[1])?,
        )
        .payload(PAYLOAD_BYTES)
        .note(
            "the payloads, each behind 52 zero bytes (the log's frame size), copied into one \
             buffer; one write and one fdatasync per batch",
        ),
        Row::new(
            LOG_NOSYNC,
            Unit::EventsPerSec,
            rates(nosync_events, &times[2])?,
        )
        .baseline(BARE_NOSYNC)
        .payload(PAYLOAD_BYTES)
        .note(format!(
            "{} batches of {BATCH} on one shard, each awaited; the same bytes as the bare loop",
            plan.log_nosync_batches
        ))
        .problems(write_problems),
        Row::new(
            BARE_NOSYNC,
            Unit::EventsPerSec,
            rates(nosync_events, &times[3])?,
        )
        .payload(PAYLOAD_BYTES)
        .note(
            "the payloads, each behind 52 zero bytes (the log's frame size), copied into one \
             buffer; one write per batch",
        ),
        Row::new(
            LOG_POLL,
            Unit::EventsPerSec,
            rates(plan.log_read_events, &times[4])?,
        )
        .baseline(MEMORY_POLL)
        .payload(PAYLOAD_BYTES)
        .note(format!(
            "{} events written by ingest_raw, read in pages of up to {PAGE} merged across \
             {SHARDS} shards",
            plan.log_read_events
        ))
        .problems(read_problems.clone()),
        Row::new(
            MEMORY_POLL,
            Unit::EventsPerSec,
            rates(plan.log_read_events, &times[5])?,
        )
        .payload(PAYLOAD_BYTES)
        .note("the same events and pages on a MemoryAdapter")
        .problems(read_problems),
        Row::new(
            REOPEN,
            Unit::Nanos,
            Summary::of(reopens).context("no reopen was measured")?,
        )
        .baseline(REOPEN_BOUND)
        .note(format!(
            "LogAdapter::open of a {:.0} MB log over {SHARDS} shards whose writer was \
             SIGKILLed{small}; files in the page cache",
            reopen_size as f64 / 1e6
        ))
        .problems(reopen_problems),
        Row::new(REOPEN_BOUND, Unit::Nanos, Summary::fixed(1e9))
            .note("a target, not a measurement"),
        Row::new(
            HEAP,
            Unit::Bytes,
            Summary::of(heaps).context("no heap was measured")?,
        )
        .baseline(HEAP_BOUND)
        .note(format!(
            "largest live heap after open and after each page, reading a {:.0} MB log of {} \
             events{small}; bus rings of 1,024 slots",
            heap_size as f64 / 1e6,
            heap_events
        ))
        .problems(heap_problems),
        Row::new(HEAP_BOUND, Unit::Bytes, Summary::fixed(64e6)).note("a target, not a measurement"),
        Row::new(
            PER_FILE,
            Unit::EventsPerSec,
            rates(group_events, &times[6])?,
        )
        .payload(PAYLOAD_BYTES)
        .note(format!(
            "{} batches of {BATCH} per writer thread, each to its own file",
            plan.group_batches
        )),
        Row::new(GROUP, Unit::EventsPerSec, rates(group_events, &times[7])?)
            .baseline(PER_FILE)
            .payload(PAYLOAD_BYTES)
            .note(format!(
                "the same batches into one file, {per_sync:.1} batches per fdatasync on average"
            )),
    ])
}

/// Bytes of every file under `dir`, one level of subdirectories deep (the log's layout).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                dir_bytes(&path)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_rows_write_what_they_time() {
        let payloads = payloads();
        let (_, problem) = log_write(FsyncPolicy::Never, 3, &payloads).await.unwrap();
        assert_eq!(problem, None);
        let scratch = Scratch::new("test").unwrap();
        let log = open(&scratch.0, FsyncPolicy::Never).unwrap();
        let written = fill(&log, 1, &payloads).await.unwrap();
        assert_eq!(written, u64::from(SHARDS) * BATCH as u64);
        assert_eq!(stored(&log), written);
        let (_, syncs) = group_commit(2, &payloads).unwrap();
        assert!((1..=32).contains(&syncs), "{syncs} syncs for 32 batches");
    }
}
