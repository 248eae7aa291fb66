//! Redis rows: events written through the bus into a [`RedisAdapter`] on a private
//! redis-server, once with the idempotent write script and once with plain `MULTI`/`EXEC`,
//! beside `redis-benchmark` sending pipelined `XADD`s of the same entries to the same server
//! in the same run; then the rate of reading them back with `poll`.
//!
//! The server is started here (`redis-server` on a free loopback port, no persistence, in a
//! temporary directory, killed at the end). Without a `redis-server` binary the rows are
//! left out with a warning, or the run fails under `CI=true`. Without `redis-benchmark` only
//! its row is left out.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use net_adapter_redis::{RedisAdapter, RedisAdapterConfig, WriteMode};
use net_core::EventBus;

use crate::plan::{Mode, Plan, Summary, PAYLOAD_BYTES};
use crate::report::{Row, Unit};
use crate::roundtrip::{self, PAGE};
use crate::throughput::{bus_config, SHARDS};

/// Commands `redis-benchmark` keeps in flight per connection, and its connections.
const PIPELINE: usize = 64;
const CLIENTS: usize = 16;

/// The row names, also used as baselines.
const SCRIPT: &str = "RedisAdapter write, script (ingest_raw + flush)";
const MULTI: &str = "RedisAdapter write, MULTI/EXEC (ingest_raw + flush)";
const BENCHMARK: &str = "redis-benchmark XADD, pipelined";
const POLL: &str = "RedisAdapter poll back (bus.poll)";
const DIRECT: &str = "RedisAdapter poll_shard, direct";

/// Events per measurement.
fn events(plan: &Plan) -> u64 {
    match plan.mode {
        Mode::Smoke => 5_000,
        Mode::Quick => 100_000,
        Mode::Full => 300_000,
    }
}

/// A private redis-server for the length of the rows.
struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// Whether `program --version` runs.
fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Starts a private server; `None` without a `redis-server` binary.
fn start_server() -> Result<Option<Server>> {
    if !available("redis-server") {
        return Ok(None);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = std::env::temp_dir().join(format!("net-bench-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("could not start redis-server")?;
    let server = Server { child, dir, port };
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not accept connections within 15 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(server))
}

/// `FLUSHALL` on the private server, so every repeat starts from an empty one.
fn flush_server(port: u16) -> Result<()> {
    let status = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "FLUSHALL"])
        .stdout(Stdio::null())
        .status()
        .context("could not run redis-cli")?;
    if !status.success() {
        bail!("redis-cli FLUSHALL failed");
    }
    Ok(())
}

/// `redis-benchmark` appending `events` entries shaped like the adapter's (a `d` field of
/// a 100-byte payload wrapped as stored, and a dedup id) to one stream, pipelined. Returns
/// the rate it reports.
fn benchmark(port: u16, events: u64) -> Result<f64> {
    let payload = String::from_utf8(crate::plan::payload(0, 0))?;
    let d = format!(r#"{{"r":{payload},"t":1700000000000000000,"s":0}}"#);
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-n", &events.to_string()])
        .args(["-P", &PIPELINE.to_string(), "-c", &CLIENTS.to_string()])
        .arg("--csv")
        .args(["XADD", "bench:redis-benchmark", "*", "d", &d])
        .args(["dedup_id", "5eed:0:1000:17"])
        .stdin(Stdio::null())
        .output()
        .context("could not run redis-benchmark")?;
    if !output.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // A header, then per test `"<command>","<rps>"` and six latency columns. The command
    // holds quotes and commas of its own, so count the columns from the end.
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter(|line| line.starts_with("\"XADD"))
        .filter_map(|line| line.rsplit("\",\"").nth(6))
        .find_map(|rps| rps.trim_matches('"').parse::<f64>().ok())
        .with_context(|| format!("no rate in redis-benchmark's output: {text}"))
}

/// The timings of one write path in one repeat.
struct Written {
    bus: EventBus,
    adapter: Arc<RedisAdapter>,
    write: Duration,
}

/// Writes the events through a bus on a fresh adapter with `mode`.
async fn write(
    url: &str,
    mode: WriteMode,
    events: u64,
    problems: &mut Vec<String>,
) -> Result<Written> {
    let prefix = format!("bench:{mode:?}").to_lowercase();
    let config = RedisAdapterConfig::new(url, prefix)
        .write_mode(mode)
        .command_timeout(Duration::from_secs(30));
    let adapter = Arc::new(RedisAdapter::new(config)?);
    let bus = EventBus::new(bus_config().adapter_instance(adapter.clone()).build()?).await?;
    let (write, problem) = roundtrip::write(&bus, events).await?;
    if let Some(problem) = problem {
        problems.push(format!("{mode:?}: {problem}"));
    }
    Ok(Written {
        bus,
        adapter,
        write,
    })
}

/// The timings of one repeat.
struct Pass {
    script: Duration,
    multi: Duration,
    benchmark: Option<f64>,
    poll: Duration,
    direct: Duration,
}

/// One repeat on an emptied server; records what went wrong in `problems`.
async fn pass(plan: &Plan, server: &Server, problems: &mut [Vec<String>; 3]) -> Result<Pass> {
    let events = events(plan);
    flush_server(server.port)?;
    let url = server.url();
    let multi = write(&url, WriteMode::Transaction, events, &mut problems[1]).await?;
    multi.bus.shutdown().await?;
    let script = write(&url, WriteMode::Script, events, &mut problems[0]).await?;
    let benchmark = if available("redis-benchmark") {
        Some(benchmark(server.port, events)?)
    } else {
        None
    };

    let started = Instant::now();
    let read = roundtrip::through_bus(&script.bus).await?;
    let poll = started.elapsed();
    if read != events {
        problems[2].push(format!("bus.poll read back {read} of {events} events"));
    }
    let started = Instant::now();
    let read = roundtrip::direct(&*script.adapter).await?;
    let direct = started.elapsed();
    if read != events {
        problems[2].push(format!("poll_shard read back {read} of {events} events"));
    }
    script.bus.shutdown().await?;
    Ok(Pass {
        script: script.write,
        multi: multi.write,
        benchmark,
        poll,
        direct,
    })
}

/// The Redis rows, or none (with a warning) when no server can be started.
pub(crate) async fn rows(plan: &Plan) -> Result<Vec<Row>> {
    let Some(server) = start_server()? else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            bail!("no redis-server binary: the Redis rows cannot run");
        }
        eprintln!("  !! Redis rows SKIPPED: no redis-server binary");
        return Ok(Vec::new());
    };
    eprintln!(
        "  RedisAdapter write (script, MULTI/EXEC) and poll back, redis-benchmark ({})",
        server.url()
    );
    let events = events(plan) as f64;
    let mut problems: [Vec<String>; 3] = Default::default();
    if plan.warm_up {
        pass(plan, &server, &mut problems).await?;
    }
    let mut passes = Vec::with_capacity(plan.repeats);
    for _ in 0..plan.repeats {
        passes.push(pass(plan, &server, &mut problems).await?);
    }
    drop(server);
    let [script_problems, multi_problems, read_problems] = problems.map(|mut p| {
        p.dedup();
        p
    });
    let rates = |time: fn(&Pass) -> Duration| {
        let rates = passes
            .iter()
            .map(|p| events / time(p).as_secs_f64().max(1e-9))
            .collect();
        Summary::of(rates).context("no repeat was measured")
    };
    let benchmark = Summary::of(passes.iter().filter_map(|p| p.benchmark).collect());
    let batches = "1 producer, 16 shards (a stream each), one batch in flight per shard";
    let mut script = Row::new(SCRIPT, Unit::EventsPerSec, rates(|p| p.script)?)
        .also_against(MULTI)
        .payload(PAYLOAD_BYTES)
        .note(format!(
            "{batches}; one Lua script per batch: XADDs plus the batch key that makes retries \
             write nothing twice"
        ))
        .problems(script_problems);
    let mut multi = Row::new(MULTI, Unit::EventsPerSec, rates(|p| p.multi)?)
        .payload(PAYLOAD_BYTES)
        .note(format!(
            "{batches}; one MULTI/EXEC of XADDs per batch (a retry after a lost reply stores \
             copies)"
        ))
        .problems(multi_problems);
    let mut rows = Vec::new();
    if let Some(summary) = benchmark {
        script = script.baseline(BENCHMARK);
        multi = multi.baseline(BENCHMARK);
        rows.push(script);
        rows.push(multi);
        rows.push(
            Row::new(BENCHMARK, Unit::EventsPerSec, summary)
                .payload(PAYLOAD_BYTES)
                .note(format!(
                    "the same entries to one stream, {CLIENTS} connections with {PIPELINE} \
                     XADDs in flight each, no bus, no acknowledgement bookkeeping"
                )),
        );
    } else {
        eprintln!("  !! redis-benchmark row SKIPPED: no redis-benchmark binary");
        rows.push(script);
        rows.push(multi);
    }
    rows.push(
        Row::new(POLL, Unit::EventsPerSec, rates(|p| p.poll)?)
            .baseline(DIRECT)
            .payload(PAYLOAD_BYTES)
            .note(format!(
                "pages of up to {PAGE} events merged across {SHARDS} shards"
            ))
            .problems(read_problems),
    );
    rows.push(
        Row::new(DIRECT, Unit::EventsPerSec, rates(|p| p.direct)?)
            .payload(PAYLOAD_BYTES)
            .note(format!(
                "XRANGE pages of up to {PAGE} events, one shard after another"
            )),
    );
    Ok(rows)
}
