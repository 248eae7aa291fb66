//! `net`: benchmark the event bus, move JSON lines into and out of a backend, and run nodes.
//!
//! Every subcommand explains its flags with `--help`. Errors are printed as one line,
//! `error: <what went wrong>: <why>`, on standard error, and the exit status says what kind
//! of failure it was (see [`exit`]).

mod backend;
mod bench;
mod consume;
mod exit;
mod histogram;
mod mesh;
mod mesh_args;
mod produce;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// The net event bus from the command line.
#[derive(Debug, Parser)]
#[command(
    name = "net",
    version,
    about = "Benchmark the net event bus and move events through its backends",
    long_about = "Benchmark the net event bus and move JSON events through its backends.\n\n\
                  Exit status: 0 success, 1 failure (backend unreachable, I/O error, events \
                  lost), 2 usage error (bad flag, filter, URL or cursor file), 3 invalid input \
                  lines under `produce --strict`, 130 `produce` interrupted by Ctrl-C and 143 by \
                  SIGTERM (what it read was stored or written to --failed-lines).\n\n\
                  Logs go to standard error; set RUST_LOG (e.g. RUST_LOG=net_core=info) to see \
                  more of them."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ingest many events through a bus and report events/s, MB/s, drops and latency.
    Bench(bench::BenchArgs),
    /// Read JSON lines (standard input or a file) and store them through a backend.
    Produce(produce::ProduceArgs),
    /// Print stored events as JSON lines, resuming from a cursor file.
    Consume(consume::ConsumeArgs),
    /// Like `consume --follow`: print stored events, then wait for new ones until Ctrl-C.
    Tail(consume::ConsumeArgs),
    /// Run a mesh node: accept peers, store what they send, answer their polls, until Ctrl-C.
    Node(mesh::NodeArgs),
    /// Create a node identity file (mode 0600) and print its node id.
    Keygen(mesh::KeygenArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return exit::clap_error(&err),
    };
    let log_default = match cli.command {
        Command::Node(_) => "info",
        _ => "error",
    };
    // Held until the end of `main`: dropping it writes out the log lines still queued.
    let log_guard = exit::init_logging(log_default);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return exit::report(&anyhow::Error::new(err).context("start the runtime")),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Bench(args) => bench::run(args).await,
            Command::Produce(args) => produce::run(args).await,
            Command::Consume(args) => consume::run(args).await,
            Command::Tail(mut args) => {
                args.follow = true;
                consume::run(args).await
            }
            Command::Node(args) => mesh::node(args).await,
            Command::Keygen(args) => mesh::keygen(args),
        }
    });
    // Do not wait for tasks a failed command may have left behind.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    let code = match result {
        Ok(code) => code,
        Err(err) => exit::report(&err),
    };
    drop(log_guard);
    code
}
