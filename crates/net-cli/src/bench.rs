//! `net bench`: ingest many events through a bus and report how fast they went.
//!
//! Producer threads ingest pre-built payloads with `ingest_raw` under
//! `BackpressureMode::Block`, so a full ring makes them wait instead of dropping. The clock
//! starts when the producers are released and stops when `flush()` returned, so events that
//! are merely queued are not counted. A probe wrapped around the adapter takes the wall clock
//! once per batch as it reaches the adapter and records, for each event of the batch, that
//! time minus the event's `insertion_ts` (both nanoseconds since the Unix epoch): the
//! ingest-to-dispatch latency, which under a saturating load is mostly time spent queued.

use crate::backend::adapter_config;
use crate::backend::{check_reachable, config_error, start_bus, LogArgs, StoreKind};
use crate::histogram::Histogram;
use crate::mesh_args::MeshArgs;
use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use net_sdk::{
    Adapter, AdapterConfig, AdapterError, AdapterFactory, AdapterInstance, BackpressureMode, Batch,
    BatchConfig, EventBusConfig, MemoryAdapterConfig, RawEvent, ShardPollResult,
};
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest `--events`.
const MAX_EVENTS: u64 = 100_000_000_000;
/// Largest number of ring slots, per shard and over all shards together (about 64 bytes each).
const MAX_RING_SLOTS: u64 = 1 << 23;
/// Largest `--batch-events`.
const MAX_BATCH_EVENTS: u64 = 100_000;
/// Largest `--batch-delay-ms`: one hour, as the bus allows.
const MAX_BATCH_DELAY_MS: u64 = 3_600_000;
/// Largest `--retain` (per shard).
const MAX_RETAIN: u64 = 10_000_000;
/// Largest `--rate`, in events per second.
const MAX_RATE: u64 = 1_000_000_000;

/// The adapters `net bench` can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchAdapter {
    /// The in-memory adapter, keeping the newest `--retain` events per shard.
    Memory,
    /// Discards every batch: the cost of the bus alone.
    Noop,
    /// The embedded durable log in `--dir` (by default a temporary directory, removed after
    /// the run).
    Log,
    /// Redis Streams at `--url`.
    Redis,
    /// NATS JetStream at `--url`.
    Jetstream,
    /// The encrypted mesh: the `net node`s given with `--peer` store the events.
    Net,
}

/// Flags of `net bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Events to ingest in total.
    #[arg(long, default_value_t = 10_000_000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_EVENTS))]
    events: u64,
    /// Adapter the bus dispatches to.
    #[arg(long, value_enum, default_value = "memory")]
    adapter: BenchAdapter,
    /// Server URL for redis or jetstream [default: the local server's usual port].
    #[arg(long)]
    url: Option<String>,
    /// Stream name (prefix) used on redis or jetstream.
    #[arg(long, default_value = "net-bench")]
    stream: String,
    /// Producer threads; the events are split evenly between them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    producers: u16,
    /// Shards of the bus.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    shards: u16,
    /// Slots of each shard's ring (a power of two; shards × slots at most 8,388,608).
    #[arg(long, default_value_t = 8192,
          value_parser = clap::value_parser!(u64).range(2..=MAX_RING_SLOTS))]
    ring_capacity: u64,
    /// A batch closes at this many events...
    #[arg(long, default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH_EVENTS))]
    batch_events: u64,
    /// ...or this many milliseconds after its first event.
    #[arg(long, default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=MAX_BATCH_DELAY_MS))]
    batch_delay_ms: u64,
    /// Payload size in bytes of each JSON event (at least 64).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(64..=1_048_576))]
    event_size: u64,
    /// Events the memory adapter keeps per shard (older ones are trimmed, so memory stays
    /// bounded however many events run through).
    #[arg(long, default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(1..=MAX_RETAIN))]
    retain: u64,
    /// Offer this many events per second in total (split over the producers) instead of as
    /// many as the bus takes: the latency then shows the batching delay rather than queueing.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_RATE))]
    rate: Option<u64>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    mesh: MeshArgs,
}

/// Nanoseconds since the Unix epoch, the clock of `insertion_ts`.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Wraps the adapter under test and records how long each event waited before its batch
/// reached it. Costs one clock read and one lock per batch, and no allocation.
struct LatencyProbe {
    inner: Box<dyn Adapter>,
    ages: Arc<Mutex<Histogram>>,
}

#[async_trait]
impl Adapter for LatencyProbe {
    async fn init(&mut self) -> Result<(), AdapterError> {
        self.inner.init().await
    }

    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        let now = now_ns();
        {
            let mut ages = self.ages.lock().unwrap_or_else(PoisonError::into_inner);
            for event in &batch.events {
                ages.record(now.saturating_sub(event.insertion_ts));
            }
        }
        self.inner.on_batch(batch).await
    }

    async fn poll_shard(
        &self,
        shard_id: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        self.inner.poll_shard(shard_id, cursor, limit).await
    }

    async fn flush(&self) -> Result<(), AdapterError> {
        self.inner.flush().await
    }

    async fn shutdown(&self) -> Result<(), AdapterError> {
        self.inner.shutdown().await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn is_healthy(&self) -> bool {
        self.inner.is_healthy().await
    }
}

/// Distinct pre-built payloads of `size` bytes for producer `producer`, so producing costs a
/// reference-count increment per event.
fn payloads(producer: u16, size: usize) -> Vec<RawEvent> {
    (0..4096u32)
        .map(|i| {
            let head = format!(r#"{{"type":"bench","producer":{producer},"n":{i},"pad":""#);
            let pad = size.saturating_sub(head.len() + 2);
            let mut text = head;
            text.extend(std::iter::repeat_n('x', pad));
            text.push_str("\"}");
            RawEvent::from_bytes(text.into_bytes())
        })
        .collect()
}

/// Peak resident memory of this process in bytes (Linux), if known.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A directory of its own under the system's temporary directory, removed with everything in
/// it when dropped: where `--adapter log` writes when `--dir` is not given.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self(std::env::temp_dir().join(format!("net-bench-{}-{nanos}", std::process::id())))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The adapter settings of every adapter but the mesh; `scratch` is the log's directory
/// when `--dir` is not given.
fn bench_adapter_config(args: &BenchArgs, scratch: &std::path::Path) -> Result<AdapterConfig> {
    let url = |kind: StoreKind| args.url.as_deref().unwrap_or(kind.default_url()).to_owned();
    Ok(match args.adapter {
        BenchAdapter::Memory => AdapterConfig::memory_with(
            MemoryAdapterConfig::default().max_events_per_shard(to_usize(args.retain)),
        ),
        BenchAdapter::Noop | BenchAdapter::Net => AdapterConfig::noop(),
        BenchAdapter::Log => AdapterConfig::log_with(args.log.config(scratch)),
        BenchAdapter::Redis => {
            adapter_config(StoreKind::Redis, &url(StoreKind::Redis), &args.stream)?
        }
        BenchAdapter::Jetstream => adapter_config(
            StoreKind::Jetstream,
            &url(StoreKind::Jetstream),
            &args.stream,
        )?,
    })
}

/// `n` as a `usize` (every flag is bounded far below `usize::MAX` on 64-bit targets).
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Runs `net bench`.
pub(crate) async fn run(args: BenchArgs) -> Result<ExitCode> {
    // Checked before anything is built or connected: the rings are allocated up front.
    let slots = u64::from(args.shards) * args.ring_capacity;
    if slots > MAX_RING_SLOTS {
        return Err(crate::exit::usage(format!(
            "--shards {} × --ring-capacity {} is {slots} ring slots; at most {MAX_RING_SLOTS} \
             are allowed",
            args.shards, args.ring_capacity
        )));
    }
    let adapter_name = format!("{:?}", args.adapter).to_lowercase();
    args.log
        .refuse_unless_log(args.adapter == BenchAdapter::Log, &adapter_name)?;
    // Declared before the adapter, so the directory goes after the log is closed.
    let scratch =
        (args.adapter == BenchAdapter::Log && args.log.dir.is_none()).then(ScratchDir::new);
    let scratch_path = scratch.as_ref().map(|s| s.0.clone()).unwrap_or_default();
    let inner: Box<dyn Adapter> = match args.adapter {
        BenchAdapter::Net => Box::new(args.mesh.connect(args.shards).await?),
        BenchAdapter::Log => bench_adapter_config(&args, &scratch_path)?
            .build()
            .await
            .map_err(config_error)
            .context("cannot open the log")?,
        _ => bench_adapter_config(&args, &scratch_path)?
            .build()
            .await
            .map_err(|e| crate::exit::usage(e.to_string()))?,
    };
    let ages = Arc::new(Mutex::new(Histogram::default()));
    let probe = LatencyProbe {
        inner,
        ages: ages.clone(),
    };
    let builder = EventBusConfig::builder()
        .shards(args.shards)
        .ring_capacity(to_usize(args.ring_capacity))
        .batch(
            BatchConfig::default()
                .max_events(to_usize(args.batch_events))
                .max_delay_ms(args.batch_delay_ms),
        )
        .backpressure(BackpressureMode::Block)
        .adapter(AdapterInstance::new(probe));
    let bus = start_bus(builder, &format!("a bus on {adapter_name}")).await?;
    if matches!(args.adapter, BenchAdapter::Redis | BenchAdapter::Jetstream) {
        check_reachable(&bus, &adapter_name).await?;
    }

    let producers = usize::from(args.producers);
    let pools: Vec<Vec<RawEvent>> = (0..args.producers)
        .map(|p| payloads(p, args.event_size as usize))
        .collect();
    let bar = ProgressBar::new(args.events);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} {rate} eta {eta}",
        )
        .context("progress bar template")?
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.2}M events/s", state.per_sec() / 1e6);
            },
        )
        .progress_chars("=> "),
    );
    let sent = AtomicU64::new(0);
    let finished = AtomicUsize::new(0);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let start_line = Barrier::new(producers + 1);
    let started = std::thread::scope(|scope| {
        for (index, pool) in pools.iter().enumerate() {
            let share = args.events / producers as u64
                + u64::from((index as u64) < args.events % producers as u64);
            let (bus, sent, finished, failure, start_line) =
                (&bus, &sent, &finished, &failure, &start_line);
            // With --rate, event `i` of this producer is due `i / rate` after the start; a
            // producer checks the clock once per 64 events and waits until the next run is due.
            let per_producer = args
                .rate
                .map(|rate| (rate as f64 / producers as f64).max(1e-3));
            scope.spawn(move || {
                start_line.wait();
                let start = Instant::now();
                let mask = pool.len() - 1;
                let mut pending = 0u64;
                for i in 0..share {
                    if let Some(rate) = per_producer.filter(|_| i % 64 == 0) {
                        let due = start + Duration::from_secs_f64(i as f64 / rate);
                        while Instant::now() < due {
                            std::thread::yield_now();
                        }
                    }
                    if let Err(e) = bus.ingest_raw(pool[i as usize & mask].clone()) {
                        *failure.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(e.to_string());
                        break;
                    }
                    pending += 1;
                    if pending == 8192 {
                        sent.fetch_add(pending, Ordering::Relaxed);
                        pending = 0;
                    }
                }
                sent.fetch_add(pending, Ordering::Relaxed);
                finished.fetch_add(1, Ordering::Release);
            });
        }
        start_line.wait();
        let started = Instant::now();
        while finished.load(Ordering::Acquire) < producers {
            std::thread::sleep(Duration::from_millis(50));
            bar.set_position(sent.load(Ordering::Relaxed));
        }
        started
    });
    bus.flush().await.context("flush")?;
    let elapsed = started.elapsed();
    bar.set_position(sent.load(Ordering::Relaxed));
    bar.finish_and_clear();
    bus.shutdown_via_ref().await.context("shut the bus down")?;
    let stats = bus.stats().snapshot();
    if let Some(reason) = failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        bail!("a producer stopped: {reason}");
    }

    let ages = ages.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let events = stats.events_dispatched;
    let bytes = events * args.event_size;
    let report = Report {
        adapter: adapter_name,
        events,
        seconds,
        events_per_sec: events as f64 / seconds,
        mb_per_sec: bytes as f64 / seconds / 1e6,
        dropped: stats.events_dropped,
        rejected: stats.events_rejected,
        p50_ns: ages.quantile(0.5),
        p99_ns: ages.quantile(0.99),
        max_ns: (ages.len() > 0).then(|| ages.max()),
        peak_rss: peak_rss(),
        args: &args,
    };
    // Rendered first, then written at once: standard output is not kept locked.
    let mut text = Vec::new();
    if args.json {
        writeln!(text, "{}", report.json())?;
    } else {
        report.table(&mut text)?;
    }
    let mut out = std::io::stdout();
    out.write_all(&text)?;
    out.flush()?;
    if stats.events_dropped > 0 || stats.events_rejected > 0 || events != args.events {
        bail!(
            "{} of {} events did not reach the adapter ({} dropped, {} rejected)",
            args.events.saturating_sub(events),
            args.events,
            stats.events_dropped,
            stats.events_rejected
        );
    }
    Ok(ExitCode::SUCCESS)
}

struct Report<'a> {
    adapter: String,
    events: u64,
    seconds: f64,
    events_per_sec: f64,
    mb_per_sec: f64,
    dropped: u64,
    rejected: u64,
    p50_ns: Option<u64>,
    p99_ns: Option<u64>,
    max_ns: Option<u64>,
    peak_rss: Option<u64>,
    args: &'a BenchArgs,
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn duration(ns: Option<u64>) -> String {
    match ns {
        None => "-".to_owned(),
        Some(ns) if ns < 1_000 => format!("{ns} ns"),
        Some(ns) if ns < 1_000_000 => format!("{:.1} µs", ns as f64 / 1e3),
        Some(ns) => format!("{:.1} ms", ns as f64 / 1e6),
    }
}

impl Report<'_> {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "adapter": self.adapter,
            "events": self.events,
            "seconds": self.seconds,
            "events_per_sec": self.events_per_sec,
            "mb_per_sec": self.mb_per_sec,
            "event_bytes": self.args.event_size,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "latency_ns": {
                "p50": self.p50_ns,
                "p99": self.p99_ns,
                "max": self.max_ns,
            },
            "producers": self.args.producers,
            "shards": self.args.shards,
            "ring_capacity": self.args.ring_capacity,
            "batch_events": self.args.batch_events,
            "batch_delay_ms": self.args.batch_delay_ms,
            "offered_rate": self.args.rate,
            "peak_rss_bytes": self.peak_rss,
        })
    }

    fn table(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let a = self.args;
        writeln!(
            out,
            "net bench: {} events of {} bytes into {} ({} shards, {} producer{}, batches of {} or {} ms)",
            grouped(a.events),
            a.event_size,
            self.adapter,
            a.shards,
            a.producers,
            if a.producers == 1 { "" } else { "s" },
            a.batch_events,
            a.batch_delay_ms,
        )?;
        writeln!(out)?;
        let rows = [
            ("events", grouped(self.events)),
            ("seconds", format!("{:.3}", self.seconds)),
            ("events/s", grouped(self.events_per_sec.round() as u64)),
            ("MB/s", format!("{:.1}", self.mb_per_sec)),
            ("dropped", grouped(self.dropped)),
            ("rejected", grouped(self.rejected)),
            ("latency p50", duration(self.p50_ns)),
            ("latency p99", duration(self.p99_ns)),
            ("latency max", duration(self.max_ns)),
            (
                "peak RSS",
                self.peak_rss
                    .map_or_else(|| "-".to_owned(), |b| format!("{} MB", b / 1_000_000)),
            ),
        ];
        for (name, value) in rows {
            writeln!(out, "  {name:<12} {value:>16}")?;
        }
        writeln!(out)?;
        match a.rate {
            Some(rate) => writeln!(
                out,
                "latency: from ingest to the batch reaching the adapter, at {} events/s offered",
                grouped(rate)
            ),
            None => writeln!(
                out,
                "latency: from ingest to the batch reaching the adapter; under this saturating \
                 load it is mostly time queued in the rings (use --rate to offer a fixed load)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_requested_size_and_are_json() {
        for size in [64, 100, 1000] {
            for event in payloads(3, size).iter().take(50) {
                assert_eq!(event.len(), size);
                serde_json::from_slice::<serde_json::Value>(event.bytes()).unwrap();
            }
        }
        assert_eq!(payloads(0, 100)[7].len(), 100);
    }

    #[test]
    fn numbers_are_grouped() {
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1234567, "1,234,567"),
        ] {
            assert_eq!(grouped(n), s);
        }
    }
}
