//! The `deny` step: `cargo deny check licenses bans sources` over the workspace, then a
//! canary that shows the same policy rejects a crate that breaks it.
//!
//! A policy check that never fails proves nothing, so after the workspace passes, the step
//! builds a scratch crate in a temporary directory and runs cargo-deny on it four times:
//! - as written (MIT, one dependency on `bytes = "1"`, a crate already in `Cargo.lock`), with
//!   the repository's `deny.toml`: this must pass, so the failures below are the policy's
//!   doing and not a broken setup;
//! - with a `*` version requirement: `bans` must fail (`wildcards = "deny"`);
//! - with a license outside the allow list: `licenses` must fail;
//! - with the repository's `deny.toml` plus a ban on `bytes`: `bans` must fail.
//!
//! Everything runs with `CARGO_NET_OFFLINE=true`: the scratch crate only needs what the
//! workspace build already put in the local registry cache.
//!
//! When cargo-deny is not installed the step fails under `CI=true` (`.ci/run` installs it)
//! and is skipped with a loud notice elsewhere.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{cargo, ci_env, run, succeeds, workspace_root};

/// The checks `ci` runs; advisories are left out because they need the network.
const CHECKS: [&str; 3] = ["licenses", "bans", "sources"];

/// Runs the workspace check and the canary.
pub(crate) fn run_step() -> Result<()> {
    if !succeeds(cargo(["deny", "--version"])) {
        if ci_env() {
            bail!(
                "cargo-deny is not installed, and under CI=true licenses, bans and sources must \
                 be checked (`.ci/run` installs it with `cargo install --locked cargo-deny`)"
            );
        }
        let rule = "!".repeat(72);
        println!("{rule}");
        println!("!! cargo-deny is NOT installed: licenses, bans and sources were NOT checked");
        println!("!! install it with `cargo install --locked cargo-deny` and rerun");
        println!("!! (with CI=true this is a failure)");
        println!("{rule}");
        return Ok(());
    }
    let mut workspace = cargo(["deny", "check"]);
    workspace.args(CHECKS);
    run(workspace)?;
    let scratch = Scratch::new()?;
    let result = canary(&scratch);
    drop(scratch);
    result?;
    println!("deny: the policy passes the workspace and rejects each deliberate breach");
    Ok(())
}

/// A scratch directory under the system's temporary directory, removed on drop.
struct Scratch {
    /// The directory itself.
    dir: PathBuf,
}

impl Scratch {
    /// Creates a fresh, empty scratch directory.
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("net-deny-canary-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("could not clear {}", dir.display()))?;
        }
        fs::create_dir_all(dir.join("src"))
            .with_context(|| format!("could not create {}", dir.display()))?;
        fs::write(dir.join("src").join("lib.rs"), "//! Canary.\n")
            .with_context(|| format!("could not write into {}", dir.display()))?;
        Ok(Self { dir })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The scratch crate's manifest with the given license and requirement on `bytes`.
fn manifest(license: &str, bytes_requirement: &str) -> String {
    format!(
        "[package]\nname = \"deny-canary\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
         license = \"{license}\"\npublish = false\n\n[dependencies]\n\
         bytes = \"{bytes_requirement}\"\n\n[workspace]\n"
    )
}

/// One run of cargo-deny over the scratch crate.
struct Case {
    /// What the run shows, for the log.
    name: &'static str,
    /// The license of the scratch crate.
    license: &'static str,
    /// The scratch crate's requirement on `bytes`.
    bytes_requirement: &'static str,
    /// Extra lines appended to the repository's `deny.toml`.
    extra_policy: &'static str,
    /// The one check to run.
    check: &'static str,
    /// Whether cargo-deny must accept the crate.
    must_pass: bool,
    /// For a run that must fail, the diagnostic code that cargo-deny must report (so a
    /// failure for some other reason, such as a bad configuration, does not count).
    diagnostic: &'static str,
}

/// The control run first: if it fails, the later failures would prove nothing.
const CASES: [Case; 5] = [
    Case {
        name: "control: a compliant crate passes licenses",
        license: "MIT",
        bytes_requirement: "1",
        extra_policy: "",
        check: "licenses",
        must_pass: true,
        diagnostic: "",
    },
    Case {
        name: "control: a compliant crate passes bans",
        license: "MIT",
        bytes_requirement: "1",
        extra_policy: "",
        check: "bans",
        must_pass: true,
        diagnostic: "",
    },
    Case {
        name: "a wildcard requirement fails bans",
        license: "MIT",
        bytes_requirement: "*",
        extra_policy: "",
        check: "bans",
        must_pass: false,
        diagnostic: "error[wildcard]",
    },
    Case {
        name: "a license outside the allow list fails licenses",
        license: "GPL-3.0-only",
        bytes_requirement: "1",
        extra_policy: "",
        check: "licenses",
        must_pass: false,
        diagnostic: "error[rejected]",
    },
    Case {
        name: "a banned crate fails bans",
        license: "MIT",
        bytes_requirement: "1",
        extra_policy: "\n[[bans.deny]]\ncrate = \"bytes\"\n",
        check: "bans",
        must_pass: false,
        diagnostic: "error[banned]",
    },
];

/// Runs every case over the scratch crate in `scratch`.
fn canary(scratch: &Scratch) -> Result<()> {
    let policy_path = workspace_root().join("deny.toml");
    let policy = fs::read_to_string(&policy_path)
        .with_context(|| format!("could not read {}", policy_path.display()))?;
    for case in &CASES {
        fs::write(
            scratch.dir.join("Cargo.toml"),
            manifest(case.license, case.bytes_requirement),
        )
        .context("could not write the canary manifest")?;
        let mut generate = cargo_offline(&scratch.dir, ["generate-lockfile", "--offline"]);
        generate.stdout(std::process::Stdio::null());
        let generated = generate
            .status()
            .context("could not run cargo generate-lockfile")?;
        if !generated.success() {
            bail!(
                "canary `{}`: `cargo generate-lockfile --offline` failed in {} ({generated}); \
                 is `bytes` in the local registry cache?",
                case.name,
                scratch.dir.display()
            );
        }
        let config = scratch.dir.join("deny.toml");
        fs::write(&config, format!("{policy}{}", case.extra_policy))
            .context("could not write the canary deny.toml")?;
        let (passed, report) = deny(&scratch.dir, &config, case.check)?;
        let verdict = if passed { "passed" } else { "failed" };
        println!("deny canary: {} -> cargo deny {verdict}", case.name);
        if passed != case.must_pass {
            eprintln!("{report}");
            bail!(
                "canary `{}`: cargo deny check {} {verdict}, which it must not: the policy in \
                 deny.toml is not enforced as written",
                case.name,
                case.check
            );
        }
        if !passed && !report.contains(case.diagnostic) {
            eprintln!("{report}");
            bail!(
                "canary `{}`: cargo deny check {} failed without reporting `{}`, so it failed \
                 for another reason",
                case.name,
                case.check,
                case.diagnostic
            );
        }
    }
    Ok(())
}

/// A `cargo` command run in `dir` with the network off.
fn cargo_offline<const N: usize>(dir: &Path, args: [&str; N]) -> Command {
    let mut command = cargo(args);
    command.current_dir(dir).env("CARGO_NET_OFFLINE", "true");
    command
}

/// Whether `cargo deny check <check>` accepts the crate in `dir` under `config`, and what it
/// printed on standard error.
fn deny(dir: &Path, config: &Path, check: &str) -> Result<(bool, String)> {
    let manifest = dir.join("Cargo.toml");
    let mut command = cargo_offline(dir, ["deny", "--offline", "--manifest-path"]);
    command
        .arg(&manifest)
        .arg("--config")
        .arg(config)
        .args(["check", check]);
    let out = command
        .output()
        .context("could not run cargo deny on the canary")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}
