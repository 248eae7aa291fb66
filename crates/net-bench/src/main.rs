//! `net-bench`: the event bus measured beside the queues and channels a Rust user would
//! otherwise pick, in one process run, written up as JSON, Markdown and an SVG chart.
//!
//! Run it through `cargo xtask bench [--quick]`, which builds it in release mode and writes
//! to `target/bench`. Directly:
//!
//! ```text
//! net-bench [--quick | --smoke] [--out DIR] [--only GROUP,...]
//! ```
//!
//! - default (full): 7 repeats per row and long runs, for the numbers people quote;
//! - `--quick`: 3 repeats and shorter runs, under a minute;
//! - `--smoke`: one short repeat per row, to check in CI (even in a debug build) that every
//!   row runs and the report is written;
//! - `--only raw,latency`: only some groups of rows (see [`GROUPS`]), e.g. under a profiler.
//!
//! The process exits non-zero when a row is invalid (an event lost or miscounted), after
//! writing the report. See docs/performance.md for what each row measures.

mod alloc_count;
mod heap;
mod histogram;
mod jetstream;
mod latency;
mod log;
mod memory;
mod mesh;
mod plan;
mod redis;
mod report;
mod roundtrip;
mod throughput;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::plan::{Mode, Plan};
use crate::report::{Machine, Report};

/// What the command line asked for.
#[derive(Debug)]
struct Options {
    /// How thorough the run is.
    mode: Mode,
    /// Where the report files go.
    out: PathBuf,
    /// The groups of rows to run (all of [`GROUPS`] unless `--only` narrowed them).
    groups: Vec<&'static str>,
}

/// The groups of rows, in the order they run: `ingest_raw` and the queues and channels,
/// JSON `ingest`, MemoryAdapter write and poll, latency, heap, then the JetStream and Redis
/// adapters (each on a private server) write and poll, then the mesh between two nodes, then
/// the embedded log beside bare file writes.
const GROUPS: [&str; 9] = [
    "raw",
    "json",
    "memory",
    "latency",
    "heap",
    "jetstream",
    "redis",
    "mesh",
    "log",
];

/// The usage text.
const USAGE: &str = "usage: net-bench [--quick | --smoke] [--out DIR]

  (default)  full run: 7 repeats per row, long measurements
  --quick    3 repeats per row, shorter measurements (well under a minute)
  --smoke    1 short repeat per row: checks that every row runs and the report is written
  --out DIR  where report.json, report.md and report.svg go (default: target/bench)
  --only G   only these comma-separated groups of rows: raw, json, memory, latency, heap,
             jetstream, redis, mesh, log";

/// Parses the arguments (without the program name); `None` means help was asked for.
fn parse(args: &[String]) -> Result<Option<Options>> {
    let mut options = Options {
        mode: Mode::Full,
        out: PathBuf::from("target/bench"),
        groups: GROUPS.to_vec(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.mode = Mode::Quick,
            "--smoke" => options.mode = Mode::Smoke,
            "--full" => options.mode = Mode::Full,
            "--out" => {
                options.out = args.next().context("--out needs a directory")?.into();
            }
            "--only" => {
                let list = args.next().context("--only needs a list of groups")?;
                options.groups = list
                    .split(',')
                    .map(|name| {
                        GROUPS
                            .into_iter()
                            .find(|group| *group == name)
                            .with_context(|| format!("unknown group `{name}` in --only\n\n{USAGE}"))
                    })
                    .collect::<Result<_>>()?;
            }
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    Ok(Some(options))
}

/// Measures every row and writes the report; fails when a row is invalid.
async fn run(options: Options) -> Result<()> {
    let plan = Plan::new(options.mode);
    let mut machine = Machine::detect();
    if machine.profile == "debug" && plan.mode != Mode::Smoke {
        eprintln!("warning: this is a debug build; its numbers say little (use --release)");
    }
    eprintln!(
        "net-bench: {} mode, {} repeat(s) per row, {} cores",
        plan.mode.name(),
        plan.repeats,
        machine.cores
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    for group in GROUPS {
        if !options.groups.contains(&group) {
            continue;
        }
        rows.extend(match group {
            "raw" => throughput::raw_rows(&plan).await?,
            "json" => throughput::json_rows(&plan).await?,
            "memory" => memory::rows(&plan).await?,
            "latency" => latency::rows(&plan).await?,
            "redis" => redis::rows(&plan).await?,
            "jetstream" => jetstream::rows(&plan).await?,
            "mesh" => mesh::rows(&plan).await?,
            "log" => log::rows(&plan).await?,
            _ => heap::rows(&plan).await?,
        });
    }
    machine.load_after = report::load_average();
    let report = Report {
        plan,
        machine,
        rows,
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    let table = report.to_markdown();
    println!("\n{table}");
    let written = report.write(&options.out)?;
    for path in &written {
        println!("wrote {}", path.display());
    }
    if plan.mode == Mode::Smoke {
        check_written(&options.out, report.rows.len())?;
    }
    let invalid = report.invalid_rows();
    if !invalid.is_empty() {
        bail!(
            "{} invalid row(s):\n  {}",
            invalid.len(),
            invalid.join("\n  ")
        );
    }
    Ok(())
}

/// Reads `report.json` back and checks that it holds `rows` rows.
fn check_written(out: &std::path::Path, rows: usize) -> Result<()> {
    let path = out.join("report.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let found = json["rows"].as_array().map_or(0, Vec::len);
    if found != rows {
        bail!("{} holds {found} rows, expected {rows}", path.display());
    }
    println!("smoke: {rows} rows measured, report readable");
    Ok(())
}

fn main() -> ExitCode {
    // The mesh rows run their storage node in a second process: this same binary.
    if let Some(code) = mesh::storage_process_entry() {
        return code;
    }
    // The log's reopen row kills a writer process: this same binary.
    if let Some(code) = log::writer_process_entry() {
        return code;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the tokio runtime")
        .and_then(|runtime| runtime.block_on(run(options)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, Mode};

    /// Parses `args` and compares the mode and output directory (`None`: help or error).
    fn check(args: &[&str], expected: Option<(Mode, &str)>) {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let got = parse(&args).ok().flatten();
        let got = got.as_ref().map(|o| (o.mode, o.out.to_str().unwrap_or("")));
        assert_eq!(got, expected, "args {args:?}");
    }

    #[test]
    fn arguments() {
        check(&[], Some((Mode::Full, "target/bench")));
        check(&["--quick"], Some((Mode::Quick, "target/bench")));
        check(&["--smoke", "--out", "x/y"], Some((Mode::Smoke, "x/y")));
        check(&["--help"], None);
        check(&["--out"], None);
        check(&["--fast"], None);
        check(&["--only", "raw,heap"], Some((Mode::Full, "target/bench")));
        check(&["--only", "raw,nope"], None);
        let args = ["--only".to_owned(), "heap,raw".to_owned()];
        let groups = parse(&args).ok().flatten().map(|o| o.groups);
        assert_eq!(groups, Some(vec!["heap", "raw"]));
    }
}
