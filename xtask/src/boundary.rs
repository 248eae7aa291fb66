//! The crate-boundary check: the core crates must not pull in a broker client.
//!
//! `cargo tree` lists the normal (non-dev, non-build) dependencies of net-adapter and
//! net-core, with and without `--all-features`, for every target.
//! The check fails when a broker or mesh crate shows up there under any feature set, or when
//! tokio shows up under net-adapter's default features: a third-party adapter must be able to
//! depend on net-adapter alone without pulling in a runtime. The `conformance` feature may
//! bring tokio in, since adapter crates enable it only in their dev-dependencies.
//! The Redis and JetStream adapters and the mesh may not depend on net-core either (nor on a
//! broker client they do not speak), the durable log depends on neither net-core nor any
//! broker or mesh crate, and no crate of the workspace may turn on async-nats's `server_2_10`+ features:
//! a 2.9 server silently ignores the settings they add, so they must not compile.

use std::collections::BTreeSet;

use anyhow::{bail, Result};

use crate::cmd::{cargo, output};

/// Crates that neither net-adapter nor net-core may depend on, directly or transitively.
const BROKER_CRATES: &[&str] = &["redis", "async-nats", "snow", "ed25519-dalek"];

/// One package and the crates banned from its normal dependency tree.
struct Rule {
    /// The package whose tree is checked.
    package: &'static str,
    /// Banned with the default features.
    default_features: Vec<&'static str>,
    /// Banned with `--all-features`.
    all_features: Vec<&'static str>,
}

/// The packages checked and what each may not depend on.
fn rules() -> Vec<Rule> {
    let mut adapter_default = BROKER_CRATES.to_vec();
    adapter_default.push("tokio");
    // The durable log speaks to its files only: no bus, no broker, no mesh crypto.
    let mut log_banned = vec!["net-core"];
    log_banned.extend_from_slice(BROKER_CRATES);
    vec![
        Rule {
            package: "net-adapter",
            default_features: adapter_default,
            all_features: BROKER_CRATES.to_vec(),
        },
        Rule {
            package: "net-core",
            default_features: BROKER_CRATES.to_vec(),
            all_features: BROKER_CRATES.to_vec(),
        },
        Rule {
            package: "net-adapter-redis",
            default_features: vec!["net-core", "async-nats"],
            all_features: vec!["net-core", "async-nats"],
        },
        Rule {
            package: "net-adapter-jetstream",
            default_features: vec!["net-core", "redis"],
            all_features: vec!["net-core", "redis"],
        },
        Rule {
            package: "net-adapter-log",
            default_features: log_banned.clone(),
            all_features: log_banned,
        },
        Rule {
            package: "net-mesh",
            default_features: vec!["net-core", "redis", "async-nats"],
            all_features: vec!["net-core", "redis", "async-nats"],
        },
    ]
}

/// Runs `cargo tree` for each rule and feature set and reports every banned crate found.
pub(crate) fn run() -> Result<()> {
    let mut violations = Vec::new();
    for rule in rules() {
        let package = rule.package;
        for (features, banned) in [
            (None, &rule.default_features),
            (Some("--all-features"), &rule.all_features),
        ] {
            let mut args = vec![
                "tree", "-p", package, "-e", "normal", "--prefix", "none", "--target", "all",
            ];
            args.extend(features);
            let tree = output(cargo(&args))?;
            if !crate_names(&tree).any(|name| name == package) {
                bail!("`cargo tree -p {package}` did not list {package} itself; cannot check it");
            }
            let found = banned_in_tree(&tree, banned);
            let label = features.unwrap_or("default features");
            println!(
                "checked {package} ({label}): {} distinct crates, none of [{}] allowed: {}",
                crate_names(&tree).collect::<BTreeSet<_>>().len(),
                banned.join(", "),
                if found.is_empty() { "ok" } else { "VIOLATION" }
            );
            for name in found {
                violations.push(format!("{package} ({label}) depends on `{name}`"));
            }
        }
    }
    let features = output(cargo([
        "tree",
        "--workspace",
        "--all-features",
        "-e",
        "features",
        "--prefix",
        "none",
        "-i",
        "async-nats",
    ]))?;
    let newer = newer_server_features(&features);
    println!(
        "checked async-nats features (workspace, all features): {}",
        if newer.is_empty() { "ok" } else { "VIOLATION" }
    );
    for feature in newer {
        violations.push(format!(
            "async-nats feature `{feature}` is enabled (nats-server 2.9 ignores its settings)"
        ));
    }
    if !violations.is_empty() {
        for violation in &violations {
            eprintln!("boundary violation: {violation}");
        }
        bail!("{} crate boundary violation(s)", violations.len());
    }
    println!("crate boundaries hold");
    Ok(())
}

/// The crate names in `cargo tree --prefix none` output (first word of each line).
fn crate_names(tree: &str) -> impl Iterator<Item = &str> {
    tree.lines()
        .filter_map(|line| line.split_whitespace().next())
}

/// The banned crates named in the tree, each reported once, in the order of `banned`.
fn banned_in_tree<'a>(tree: &str, banned: &[&'a str]) -> Vec<&'a str> {
    banned
        .iter()
        .copied()
        .filter(|name| crate_names(tree).any(|found| found == *name))
        .collect()
}

/// The async-nats `server_*` features named in `cargo tree -e features -i async-nats` output.
fn newer_server_features(tree: &str) -> BTreeSet<&str> {
    tree.lines()
        .filter_map(|line| line.trim().strip_prefix("async-nats feature \""))
        .filter_map(|rest| rest.split('"').next())
        .filter(|feature| feature.starts_with("server_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{banned_in_tree, newer_server_features};

    #[test]
    fn finds_newer_async_nats_server_features() {
        let tree = "async-nats feature \"jetstream\"\n\
                    async-nats v0.51.0\n\
                    async-nats feature \"server_2_10\"\n\
                    async-nats feature \"server_2_10\"\n\
                    async-nats feature \"default\"\n";
        assert_eq!(
            newer_server_features(tree).into_iter().collect::<Vec<_>>(),
            ["server_2_10"]
        );
        assert!(newer_server_features("async-nats feature \"jetstream\"\n").is_empty());
    }

    fn check(tree: &str, banned: &[&str], expected: &[&str]) {
        assert_eq!(banned_in_tree(tree, banned), expected, "tree:\n{tree}");
    }

    #[test]
    fn finds_banned_crates_by_exact_name() {
        let tree = "net-core v0.1.0 (/work/main/crates/net-core)\n\
                    redis v1.0.0\n\
                    tokio v1.48.0\n\
                    tokio v1.48.0 (*)\n";
        check(tree, &["redis", "tokio", "snow"], &["redis", "tokio"]);
    }

    #[test]
    fn similar_names_are_not_banned() {
        let tree = "net-adapter v0.1.0 (/work/main/crates/net-adapter)\n\
                    redis-protocol v5.0.0\n\
                    tokio-util v0.7.0\n\
                    snowflake v1.0.0\n";
        check(tree, &["redis", "tokio", "snow"], &[]);
    }

    #[test]
    fn empty_tree_is_clean() {
        check("", &["redis"], &[]);
    }
}
