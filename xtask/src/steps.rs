//! The CI steps that are a thin wrapper around one or two cargo commands.

use anyhow::Result;

use crate::cmd::{cargo, run, succeeds, workspace_root};

/// `cargo fmt --all -- --check`.
pub(crate) fn fmt() -> Result<()> {
    run(cargo(["fmt", "--all", "--", "--check"]))
}

/// `cargo clippy --workspace --all-targets --all-features -- -D warnings`.
pub(crate) fn clippy() -> Result<()> {
    run(cargo([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))
}

/// The workspace tests: nextest when installed (else `cargo test`), then the doctests.
///
/// nextest does not run doctests, so `cargo test --doc` always runs afterwards.
pub(crate) fn test() -> Result<()> {
    if succeeds(cargo(["nextest", "--version"])) {
        run(cargo([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
        ]))?;
    } else {
        println!("cargo-nextest is not installed: falling back to cargo test");
        run(cargo(["test", "--workspace", "--all-features"]))?;
    }
    run(cargo(["test", "--workspace", "--all-features", "--doc"]))
}

/// The loom models of net-core's producer/worker handshakes (the reservation against the state
/// word, and the wake-up mark), built with `--cfg loom` in release mode.
///
/// They build in a target directory of their own (`target/loom`, or `loom` under
/// `CARGO_TARGET_DIR`), since `--cfg loom` changes every crate's flags and would otherwise
/// throw away the main build. `LOOM_MAX_PREEMPTIONS` bounds how many times loom preempts a
/// thread in one interleaving: 2 (unless the environment says otherwise) covers the
/// handshakes, which are a few atomic steps per thread, and keeps the run to seconds once
/// built.
pub(crate) fn loom() -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), std::path::PathBuf::from)
        .join("loom");
    let mut command = cargo([
        "test",
        "--package",
        "net-core",
        "--lib",
        "--release",
        "loom",
    ]);
    command
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", target);
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        command.env("LOOM_MAX_PREEMPTIONS", "2");
    }
    run(command)
}

/// The manifest of the example adapter, which is not a workspace member.
const EXAMPLE_ADAPTER: &str = "examples/file-adapter/Cargo.toml";

/// The example adapter crate, built as a third-party adapter is (outside the workspace,
/// against net-adapter alone, with its own committed `Cargo.lock`): fmt check, clippy with
/// `-D warnings`, and its tests, which run the conformance kit through the macro.
///
/// It shares the workspace's target directory (unless `CARGO_TARGET_DIR` already names one)
/// so the dependencies it has in common with the workspace are not built twice.
pub(crate) fn example_adapter() -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .unwrap_or_else(|| workspace_root().join("target").into_os_string());
    let commands: [&[&str]; 3] = [
        &["fmt", "--manifest-path", EXAMPLE_ADAPTER, "--", "--check"],
        &[
            "clippy",
            "--manifest-path",
            EXAMPLE_ADAPTER,
            "--locked",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &["test", "--manifest-path", EXAMPLE_ADAPTER, "--locked"],
    ];
    for args in commands {
        let mut command = cargo(args);
        command.env("CARGO_TARGET_DIR", &target);
        run(command)?;
    }
    Ok(())
}

/// `net-bench --smoke` in a debug build: checks that every bench row runs and that the
/// report is written (to `target/bench-smoke`, so a real report in `target/bench` survives).
pub(crate) fn bench_smoke() -> Result<()> {
    run(cargo([
        "run",
        "--package",
        "net-bench",
        "--",
        "--smoke",
        "--out",
        "target/bench-smoke",
    ]))
}

/// `cargo xtask bench [ARGS]`: `net-bench` built in release mode, writing to `target/bench`.
///
/// `ARGS` (such as `--quick`, or `--out DIR` for another directory) are passed on.
pub(crate) fn bench(args: &[String]) -> Result<()> {
    let mut command = cargo(["run", "--release", "--package", "net-bench", "--"]);
    command.args(args);
    let own_out = !args.iter().any(|arg| arg == "--out");
    if own_out {
        command.args(["--out", "target/bench"]);
    }
    run(command)?;
    // The Python rows go beside the report (net-bench ran from the workspace root).
    let out = match args.iter().position(|arg| arg == "--out") {
        Some(i) => workspace_root().join(args.get(i + 1).map_or("target/bench", String::as_str)),
        None => workspace_root().join("target").join("bench"),
    };
    crate::python::bench(&out, args.iter().any(|arg| arg == "--quick"))?;
    if own_out {
        let report = workspace_root().join("target").join("bench");
        println!(
            "report: {} (with report.json and report.svg beside it)",
            report.join("report.md").display()
        );
    }
    Ok(())
}

/// `cargo doc --workspace --no-deps --all-features` with `RUSTDOCFLAGS=-D warnings`.
pub(crate) fn doc() -> Result<()> {
    let mut command = cargo(["doc", "--workspace", "--no-deps", "--all-features"]);
    command.env("RUSTDOCFLAGS", "-D warnings");
    run(command)
}
