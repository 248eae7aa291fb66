//! The Python package (`bindings/python`): `cargo xtask python` and its bench rows.
//!
//! The package is not a workspace member (maturin builds it against an interpreter), so its
//! fmt and clippy run here with `--manifest-path`, sharing the workspace's target directory.
//! The package is installed with `pip install ./bindings/python` (the way a user installs it)
//! into a private virtualenv, `target/pyenv`, made with `python3 -m venv`; maturin, pytest,
//! pytest-timeout and mypy come from PyPI into that virtualenv.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd::{cargo, run, workspace_root};

/// The package's manifest, relative to the workspace root.
const MANIFEST: &str = "bindings/python/Cargo.toml";
/// What the test virtualenv needs from PyPI.
const TOOLS: &[&str] = &[
    "maturin>=1.9.4,<2",
    "pytest>=7",
    "pytest-timeout",
    "mypy>=1.8",
];
/// The published wheel the bench rows compare against.
const PUBLISHED: &str = "net-mesh==0.45.1";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn python_in(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// Creates the virtualenv at `venv` when missing, then installs `packages` into it.
fn virtualenv(venv: &Path, packages: &[&str]) -> Result<PathBuf> {
    let python = python_in(venv);
    if !python.exists() {
        let mut make = Command::new("python3");
        make.arg("-m").arg("venv").arg(venv);
        run(make).context("python3 -m venv (install python3 and its venv module)")?;
    }
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    pip.args(packages);
    run(pip)?;
    Ok(python)
}

/// Installs the package from source into the virtualenv `python` belongs to.
fn install_package(python: &Path) -> Result<()> {
    let mut pip = Command::new(python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--force-reinstall",
        "--no-deps",
    ]);
    pip.arg(workspace_root().join("bindings/python"));
    pip.env("CARGO_TARGET_DIR", target_dir());
    run(pip)
}

/// `cargo xtask python`: fmt and clippy of the binding crate, the package installed into
/// `target/pyenv`, `mypy --strict` over its examples, then its pytest suite (the broker and
/// mesh tests start private servers and the `net` binary built here).
pub(crate) fn step() -> Result<()> {
    let target = target_dir();
    let commands: [&[&str]; 2] = [
        &["fmt", "--manifest-path", MANIFEST, "--", "--check"],
        &[
            "clippy",
            "--manifest-path",
            MANIFEST,
            "--locked",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    ];
    for args in commands {
        let mut command = cargo(args);
        command.env("CARGO_TARGET_DIR", &target);
        run(command)?;
    }
    // The mesh round trip runs a node of the `net` command.
    run(cargo(["build", "--package", "net-cli"]))?;
    let python = virtualenv(&target.join("pyenv"), TOOLS)?;
    install_package(&python)?;
    let package = workspace_root().join("bindings/python");
    let mut mypy = Command::new(&python);
    mypy.args(["-m", "mypy", "--strict", "--no-incremental", "examples"]);
    mypy.current_dir(&package);
    run(mypy)?;
    let mut pytest = Command::new(&python);
    pytest.args([
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--timeout",
        "300",
        "tests",
    ]);
    pytest.current_dir(&package);
    pytest.env("NET_BIN", target.join("debug").join("net"));
    run(pytest)
}

/// The Python bench rows: `bindings/python/bench.py` against this package, and against the
/// published wheel in a virtualenv of its own when it can be installed (the rows say loudly
/// when it cannot). Writes `python.md` and `python.json` into `out`.
pub(crate) fn bench(out: &Path, quick: bool) -> Result<()> {
    let target = target_dir();
    let python = virtualenv(&target.join("pyenv"), TOOLS)?;
    install_package(&python)?;
    let published_venv = target.join("pyenv-published");
    let published = match virtualenv(&published_venv, &[PUBLISHED]) {
        Ok(python) => Some(python),
        Err(e) => {
            eprintln!(
                "\n!!! SKIPPED: the published wheel ({PUBLISHED}) could not be installed: {e:#}\n\
                 !!! the Python rows run for netbus alone, without the comparison.\n"
            );
            None
        }
    };
    std::fs::create_dir_all(out)?;
    let mut command = Command::new(&python);
    command.arg(workspace_root().join("bindings/python/bench.py"));
    command.arg("--out").arg(out);
    if let Some(published) = &published {
        command.arg("--published-python").arg(published);
    }
    if quick {
        command.arg("--quick");
    }
    run(command)
}
