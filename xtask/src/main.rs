//! Project automation for the net workspace, run as `cargo xtask <command>`.
//!
//! Every CI step is a subcommand, so a green `cargo xtask ci` on a laptop means a green CI.
//! `cargo xtask bench [--quick]` is the one command outside `ci`: it runs the benchmarks.
//! The only dependencies are std and anyhow; each step shells out to `cargo` (the one named
//! by the `CARGO` environment variable when set) from the workspace root.

mod boundary;
mod cmd;
mod deny;
mod fuzz;
mod python;
mod steps;
mod tidy;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// One CI step: its subcommand name, a one-line description and the function that runs it.
struct Step {
    /// The subcommand that runs this step alone.
    name: &'static str,
    /// What the step checks, shown by `cargo xtask help`.
    about: &'static str,
    /// Runs the step; an error means the step failed.
    run: fn() -> Result<()>,
}

/// The steps of `cargo xtask ci`, in the order it runs them (cheap and local checks first).
const STEPS: &[Step] = &[
    Step {
        name: "fmt",
        about: "cargo fmt --all -- --check",
        run: steps::fmt,
    },
    Step {
        name: "tidy",
        about: "module docs, no todo!/unimplemented!/dbg!, SAFETY comments on unsafe blocks",
        run: tidy::run,
    },
    Step {
        name: "boundary",
        about:
            "net-core and net-adapter depend on no broker client; default net-adapter not on tokio",
        run: boundary::run,
    },
    Step {
        name: "clippy",
        about: "cargo clippy on all targets and features with -D warnings",
        run: steps::clippy,
    },
    Step {
        name: "test",
        about: "cargo nextest (or cargo test) for the workspace, then the doctests",
        run: steps::test,
    },
    Step {
        name: "loom",
        about: "net-core's loom models of its handshakes (--cfg loom, target/loom)",
        run: steps::loom,
    },
    Step {
        name: "example-adapter",
        about: "fmt, clippy and tests (the conformance kit) of examples/file-adapter",
        run: steps::example_adapter,
    },
    Step {
        name: "python",
        about: "bindings/python: fmt, clippy, pip install into target/pyenv, mypy, pytest",
        run: python::step,
    },
    Step {
        name: "bench-smoke",
        about: "net-bench --smoke (debug build): every bench row runs, the report is written",
        run: steps::bench_smoke,
    },
    Step {
        name: "fuzz-smoke",
        about: "every cargo-fuzz target in fuzz/ built and run for 10 s (RUSTC_BOOTSTRAP=1)",
        run: fuzz::smoke,
    },
    Step {
        name: "doc",
        about: "cargo doc for the workspace with RUSTDOCFLAGS=-D warnings",
        run: steps::doc,
    },
    Step {
        name: "deny",
        about: "cargo deny check licenses bans sources, then a canary crate it must reject",
        run: deny::run_step,
    },
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("help" | "-h" | "--help") => {
            print_usage();
            Ok(())
        }
        Some("ci") if args.len() == 1 => ci(),
        Some("bench") => steps::bench(&args[1..]),
        Some(name) if args.len() == 1 => match STEPS.iter().find(|step| step.name == name) {
            Some(step) => (step.run)(),
            None => Err(anyhow::anyhow!(
                "unknown command `{name}` (run `cargo xtask help` for the list)"
            )),
        },
        Some(_) => Err(anyhow::anyhow!(
            "expected exactly one command, got `{}` (run `cargo xtask help` for the list)",
            args.join(" ")
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the list of commands.
fn print_usage() {
    println!("usage: cargo xtask <command>\n\ncommands:");
    println!(
        "  {:<12} every step below, in this order, stopping at the first failure",
        "ci"
    );
    for step in STEPS {
        println!("  {:<12} {}", step.name, step.about);
    }
    println!(
        "\nnot part of ci:\n  {:<12} the benchmark report in target/bench (release build; \
         `--quick` for a short run)",
        "bench"
    );
}

/// Runs every step in order, prints a header per step and a timed summary at the end.
///
/// Stops at the first failing step; the summary still lists what ran.
fn ci() -> Result<()> {
    if cmd::ci_env() {
        println!("CI=true: broker suites (Redis, NATS JetStream, mesh) must not skip; a missing server is a failure");
    } else {
        println!(
            "CI is not set to true: broker suites may skip (loudly) when no server is available"
        );
    }
    let started = Instant::now();
    let mut done: Vec<(&str, Duration, bool)> = Vec::new();
    let mut failure = None;
    for (index, step) in STEPS.iter().enumerate() {
        println!();
        println!(
            "==> [{}/{}] {} ({})",
            index + 1,
            STEPS.len(),
            step.name,
            step.about
        );
        let step_started = Instant::now();
        let result = (step.run)();
        done.push((step.name, step_started.elapsed(), result.is_ok()));
        if let Err(err) = result {
            failure = Some((step.name, err));
            break;
        }
    }
    println!();
    println!("==> summary");
    for (name, elapsed, ok) in &done {
        let status = if *ok { "ok" } else { "FAILED" };
        println!("  {name:<12} {status:<7} {:>8.1}s", elapsed.as_secs_f64());
    }
    for step in STEPS.iter().skip(done.len()) {
        println!("  {:<12} {:<7} {:>8}", step.name, "not run", "-");
    }
    println!(
        "  {:<12} {:<7} {:>8.1}s",
        "total",
        "",
        started.elapsed().as_secs_f64()
    );
    if let Some((name, err)) = failure {
        bail!("step `{name}` failed: {err:#}");
    }
    println!("\nall {} steps passed", STEPS.len());
    Ok(())
}
