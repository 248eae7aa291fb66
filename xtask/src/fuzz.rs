//! The `fuzz-smoke` step: builds every `cargo fuzz` target in `fuzz/` and runs each one for a
//! few seconds, so a decoder that panics on the first inputs libFuzzer tries, or a target that
//! no longer builds, fails CI.
//!
//! `cargo fuzz` passes sanitizer and coverage flags that only a nightly compiler accepts.
//! The toolchain is pinned to a stable release, so the step sets `RUSTC_BOOTSTRAP=1`, which
//! lets that compiler accept them, and builds with `--dev` (no optimization) to keep the build
//! short. Inputs that crash are kept in `fuzz/artifacts/<target>/`, and the corpus grows in
//! `fuzz/corpus/<target>/`; both are ignored by git.
//!
//! Without cargo-fuzz the step fails under `CI=true` (`.ci/run` installs it) and is skipped
//! with a loud notice elsewhere.

use anyhow::{bail, Result};

use crate::cmd::{cargo, ci_env, output, run, succeeds};

/// How long each target runs, in seconds (`-max_total_time`).
const SECONDS_PER_TARGET: &str = "10";

/// Builds every target, then runs each for [`SECONDS_PER_TARGET`].
pub(crate) fn smoke() -> Result<()> {
    if !succeeds(cargo(["fuzz", "--version"])) {
        if ci_env() {
            bail!(
                "cargo-fuzz is not installed, and under CI=true the fuzz targets must run \
                 (`.ci/run` installs it with `cargo install --locked cargo-fuzz`)"
            );
        }
        let rule = "!".repeat(72);
        println!("{rule}");
        println!("!! cargo-fuzz is NOT installed: the fuzz targets were NOT built or run");
        println!("!! install it with `cargo install --locked cargo-fuzz` and rerun");
        println!("!! (with CI=true this is a failure)");
        println!("{rule}");
        return Ok(());
    }
    let mut list = cargo(["fuzz", "list"]);
    list.env("RUSTC_BOOTSTRAP", "1");
    let targets: Vec<String> = output(list)?
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("`cargo fuzz list` found no targets in fuzz/");
    }
    let mut build = cargo(["fuzz", "build", "--dev"]);
    build.env("RUSTC_BOOTSTRAP", "1");
    run(build)?;
    for target in &targets {
        let max_time = format!("-max_total_time={SECONDS_PER_TARGET}");
        let mut fuzz = cargo(["fuzz", "run", "--dev", target.as_str(), "--", &max_time]);
        fuzz.env("RUSTC_BOOTSTRAP", "1");
        run(fuzz)?;
    }
    println!(
        "fuzz-smoke: {} targets built and run for {SECONDS_PER_TARGET} s each without a crash",
        targets.len()
    );
    Ok(())
}
