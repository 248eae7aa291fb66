//! JetStream rows: events written through the bus into a [`JetStreamAdapter`] on a private
//! nats-server, beside a bare async-nats loop publishing the same records with acks on the same
//! server in the same run; then the rate of reading them back with `poll`, beside reading one
//! message per request with `direct_get_next_for_subject`.
//!
//! The server is started here (`nats-server -js` on a free loopback port, store in a temporary
//! directory, killed at the end). Without a `nats-server` binary the rows use `NATS_URL`; with
//! neither they are left out with a warning, or the run fails under `CI=true`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_nats::jetstream;
use net_adapter::Adapter;
use net_adapter_jetstream::{JetStreamAdapter, JetStreamAdapterConfig, ReadPath};
use net_core::EventBus;

use crate::plan::{raw_pool, Plan, Summary, PAYLOAD_BYTES};
use crate::report::{Row, Unit};
use crate::roundtrip::{self, PAGE};
use crate::throughput::{bus_config, SHARDS};

/// Publishes the bare loop keeps awaiting their ack at once (the bus's batch size).
const WINDOW: usize = 1024;

/// The row names, also used as baselines.
const WRITE: &str = "JetStreamAdapter write (ingest_raw + flush)";
const BARE: &str = "bare async-nats publish + ack, pipelined";
const POLL: &str = "JetStreamAdapter poll back (bus.poll)";
const DIRECT: &str = "JetStreamAdapter poll_shard, direct";
const ONE_BY_ONE: &str = "direct_get_next_for_subject, one per request";
const CONSUMER: &str = "JetStreamAdapter poll_shard, pull consumer path";

/// A private nats-server for the length of the rows.
struct Server {
    child: Option<Child>,
    store: Option<PathBuf>,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(store) = self.store.take() {
            let _ = std::fs::remove_dir_all(store);
        }
    }
}

/// Starts a private server, or falls back to `NATS_URL`; `None` when neither is possible.
fn start_server() -> Result<Option<Server>> {
    // NATS_SERVER_BIN picks another binary, to measure another server version.
    let chosen = std::env::var_os("NATS_SERVER_BIN").map(PathBuf::from);
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("nats-server"))
                .find(|candidate| candidate.is_file())
        })
    };
    let binary = chosen.or_else(on_path).or_else(|| {
        let debian = PathBuf::from("/usr/sbin/nats-server");
        debian.is_file().then_some(debian)
    });
    let Some(binary) = binary else {
        return Ok(std::env::var("NATS_URL").ok().map(|url| Server {
            child: None,
            store: None,
            url,
        }));
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let store = std::env::temp_dir().join(format!("net-bench-nats-{}-{port}", std::process::id()));
    let child = Command::new(&binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("could not start {}", binary.display()))?;
    let server = Server {
        child: Some(child),
        store: Some(store),
        url: format!("nats://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nats-server did not accept connections within 15 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(server))
}

/// The timings and counts of one repeat.
struct Pass {
    write: Duration,
    bare: Duration,
    poll: Duration,
    direct: Duration,
    one_by_one: Duration,
    /// Messages read one per request.
    one_by_one_events: u64,
    /// Requests per page of the direct read.
    requests_per_page: f64,
    /// The direct read again through pull consumers, on servers where the default read path
    /// is batched direct get.
    consumer: Option<Duration>,
    /// The server's version.
    server: String,
}

/// What went wrong in the write and read halves of the repeats.
#[derive(Default)]
struct Problems {
    write: Vec<String>,
    read: Vec<String>,
}

/// The bare loop: `events` records of the adapter's size published to one stream with a
/// `Nats-Msg-Id` each, `WINDOW` at a time, every ack awaited.
async fn bare_publish(url: &str, stream: &str, events: u64) -> Result<Duration> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    let subject = format!("{stream}.in");
    js.create_stream(jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: vec![subject.clone()],
        duplicate_window: Duration::from_secs(300),
        allow_direct: true,
        ..Default::default()
    })
    .await?;
    let pool = raw_pool(0);
    let records: Vec<bytes::Bytes> = pool
        .iter()
        .map(|event| {
            let mut record = br#"{"r":"#.to_vec();
            record.extend_from_slice(event.bytes());
            record.extend_from_slice(br#","t":1700000000000000000,"s":0}"#);
            bytes::Bytes::from(record)
        })
        .collect();
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < events {
        let n = (events - sent).min(WINDOW as u64);
        let mut acks = Vec::with_capacity(n as usize);
        for i in sent..sent + n {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("bench:{i}"));
            let payload = records[(i as usize) % records.len()].clone();
            acks.push(
                js.publish_with_headers(subject.clone(), headers, payload)
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
        sent += n;
    }
    Ok(started.elapsed())
}

/// Reads up to `limit` messages of `stream` one request each, as the published design's read
/// path did.
async fn one_by_one(url: &str, stream: &str, subject: &str, limit: u64) -> Result<(Duration, u64)> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    let stream = js.get_stream(stream).await?;
    let started = Instant::now();
    let mut read = 0u64;
    let mut next = 1u64;
    while read < limit {
        match stream
            .direct_get_next_for_subject(subject, Some(next))
            .await
        {
            Ok(message) => {
                read += 1;
                next = message.sequence + 1;
            }
            Err(_) => break,
        }
    }
    Ok((started.elapsed(), read))
}

/// One repeat against `url` with fresh stream names; records what went wrong in `problems`.
async fn pass(plan: &Plan, url: &str, round: usize, problems: &mut Problems) -> Result<Pass> {
    let events = plan.jetstream_events;
    let prefix = format!("bench{}r{round}", std::process::id());
    let config = JetStreamAdapterConfig::new(url, &prefix).request_timeout(Duration::from_secs(30));
    let adapter = Arc::new(JetStreamAdapter::connect(config.clone()).await?);
    let bus = EventBus::new(bus_config().adapter_instance(adapter.clone()).build()?).await?;
    for shard in 0..SHARDS {
        // Stream creation is a one-time cost, not part of the write rate.
        adapter.provision(shard).await?;
    }
    let (write, problem) = roundtrip::write(&bus, events).await?;
    if let Some(problem) = problem {
        problems.write.push(problem);
    }

    let bare = bare_publish(url, &format!("{prefix}bare"), events).await?;

    let started = Instant::now();
    let read = roundtrip::through_bus(&bus).await?;
    let poll = started.elapsed();
    if read != events {
        problems
            .read
            .push(format!("bus.poll read back {read} of {events} events"));
    }

    let before = adapter.request_counts();
    let started = Instant::now();
    let read = roundtrip::direct(&*adapter).await?;
    let direct = started.elapsed();
    let after = adapter.request_counts();
    if read != events {
        problems
            .read
            .push(format!("poll_shard read back {read} of {events} events"));
    }
    let pages = (after.pages - before.pages).max(1);
    let requests_per_page = (after.api_requests() - before.api_requests()) as f64 / pages as f64;

    let batched = adapter
        .client()
        .is_some_and(|client| client.is_server_compatible(2, 11, 0));
    let server = adapter
        .client()
        .map(|client| client.server_info().version)
        .unwrap_or_default();
    let consumer = if batched {
        let reader =
            JetStreamAdapter::connect(config.clone().read_path(ReadPath::PullConsumer)).await?;
        let started = Instant::now();
        let read = roundtrip::direct(&reader).await?;
        let elapsed = started.elapsed();
        if read != events {
            problems.read.push(format!(
                "poll_shard (pull consumer) read back {read} of {events} events"
            ));
        }
        reader.shutdown().await?;
        Some(elapsed)
    } else {
        None
    };

    let limit = (events / 20).clamp(200, 5_000);
    let (one_by_one, one_by_one_events) = one_by_one(
        url,
        &config.stream_for(0),
        &config.subjects_for(0)[0],
        limit,
    )
    .await?;
    bus.shutdown().await?;
    Ok(Pass {
        write,
        bare,
        poll,
        direct,
        one_by_one,
        one_by_one_events,
        requests_per_page,
        consumer,
        server,
    })
}

/// The JetStream rows, or none (with a warning) when no server is available.
pub(crate) async fn rows(plan: &Plan) -> Result<Vec<Row>> {
    let Some(server) = start_server()? else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        if ci {
            bail!("no nats-server binary and no NATS_URL: the JetStream rows cannot run");
        }
        eprintln!("  !! JetStream rows SKIPPED: no nats-server binary and no NATS_URL");
        return Ok(Vec::new());
    };
    eprintln!(
        "  JetStreamAdapter write and poll back, bare async-nats loop ({})",
        server.url
    );
    let events = plan.jetstream_events as f64;
    let mut problems = Problems::default();
    let mut round = 0;
    if plan.warm_up {
        pass(plan, &server.url, round, &mut problems).await?;
        round += 1;
    }
    let mut passes = Vec::with_capacity(plan.repeats);
    for _ in 0..plan.repeats {
        passes.push(pass(plan, &server.url, round, &mut problems).await?);
        round += 1;
    }
    drop(server);
    problems.write.dedup();
    problems.read.dedup();
    let rates = |count: &dyn Fn(&Pass) -> f64, time: fn(&Pass) -> Duration| {
        let rates = passes
            .iter()
            .map(|p| count(p) / time(p).as_secs_f64().max(1e-9))
            .collect();
        Summary::of(rates).context("no repeat was measured")
    };
    let all = |_: &Pass| events;
    let server_version = passes.first().map(|p| p.server.clone()).unwrap_or_default();
    let path = if passes.iter().any(|p| p.consumer.is_some()) {
        "batched direct get, up to 1,000 messages per request"
    } else {
        "one ephemeral pull consumer and one fetch per page"
    };
    let requests = passes
        .iter()
        .map(|p| p.requests_per_page)
        .fold(0.0, f64::max);
    let mut rows = vec![
        Row::new(WRITE, Unit::EventsPerSec, rates(&all, |p| p.write)?)
            .baseline(BARE)
            .payload(PAYLOAD_BYTES)
            .note(format!(
                "1 producer, {SHARDS} shards (a stream each), batches of up to 1024, every \
                 event with its Nats-Msg-Id and acked"
            ))
            .problems(problems.write),
        Row::new(BARE, Unit::EventsPerSec, rates(&all, |p| p.bare)?)
            .payload(PAYLOAD_BYTES)
            .note(format!(
                "the same records and headers to one stream, {WINDOW} publishes in flight, then \
                 their acks"
            )),
        Row::new(POLL, Unit::EventsPerSec, rates(&all, |p| p.poll)?)
            .baseline(DIRECT)
            .payload(PAYLOAD_BYTES)
            .note(format!(
                "pages of up to {PAGE} events merged across {SHARDS} shards; each shard is asked \
                 for its fair share"
            ))
            .problems(problems.read),
        Row::new(DIRECT, Unit::EventsPerSec, rates(&all, |p| p.direct)?)
            .baseline(ONE_BY_ONE)
            .payload(PAYLOAD_BYTES)
            .note(format!(
                "pages of up to {PAGE} events, {path}; at most {requests:.1} requests per \
                 page; nats-server {server_version}"
            )),
        Row::new(
            ONE_BY_ONE,
            Unit::EventsPerSec,
            rates(&|p: &Pass| p.one_by_one_events as f64, |p| p.one_by_one)?,
        )
        .payload(PAYLOAD_BYTES)
        .note("one request per message, the read path this adapter replaces (shard 0 only)"),
    ];
    let consumer: Vec<f64> = passes
        .iter()
        .filter_map(|p| p.consumer.map(|t| events / t.as_secs_f64().max(1e-9)))
        .collect();
    if let Some(summary) = Summary::of(consumer) {
        rows.push(
            Row::new(CONSUMER, Unit::EventsPerSec, summary)
                .baseline(DIRECT)
                .payload(PAYLOAD_BYTES)
                .note("the same reads through ReadPath::PullConsumer, for comparison"),
        );
    }
    Ok(rows)
}
