//! Helpers to find the workspace root and run `cargo` from it.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The workspace root: the parent of this crate's manifest directory.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// Whether the `CI` environment variable is `true` (later crates read it to forbid skips).
pub(crate) fn ci_env() -> bool {
    std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true"))
}

/// A `cargo` command (the one in `CARGO`, else `cargo` from PATH) run from the workspace root.
///
/// The environment is inherited, so `CI`, `REDIS_URL`, `NATS_URL` and friends pass through.
pub(crate) fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    command.args(args).current_dir(workspace_root());
    command
}

/// Renders a command as `VAR=value cargo arg ...` for logs (program shown as `cargo`).
fn display(command: &Command) -> String {
    let mut line = String::new();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            let value = value.to_string_lossy();
            if value.contains(' ') {
                line.push_str(&format!("{}='{value}' ", key.to_string_lossy()));
            } else {
                line.push_str(&format!("{}={value} ", key.to_string_lossy()));
            }
        }
    }
    line.push_str("cargo");
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Prints the command, runs it with inherited stdio and fails when it exits non-zero.
pub(crate) fn run(mut command: Command) -> Result<()> {
    let shown = display(&command);
    println!("$ {shown}");
    let status = command
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` exited with {status}");
    }
    Ok(())
}

/// Prints the command, runs it and returns its stdout; stderr is passed through.
pub(crate) fn output(mut command: Command) -> Result<String> {
    let shown = display(&command);
    println!("$ {shown}");
    let out = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !out.status.success() {
        bail!("`{shown}` exited with {}", out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{shown}` printed non-UTF-8 output"))
}

/// Whether a command runs and exits zero, with its output discarded (used to probe tools).
pub(crate) fn succeeds(mut command: Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
