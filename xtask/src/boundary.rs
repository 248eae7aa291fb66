//! The crate-boundary check: the core crates must not pull in a broker client.
//!
//! `cargo tree` lists the normal (non-dev, non-build) dependencies of net-adapter and
//! net-core, with and without `--all-features`, for every target.
//! The check fails when a broker or mesh crate shows up there under any feature set, or when
//! tokio shows up under net-adapter's default features: a third-party adapter must be able to
//! depend on net-adapter alone without pulling in a runtime. The `conformance` feature may
//! bring tokio in, since adapter crates enable it only in their dev-dependencies.

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

#[cfg(test)]
mod tests {
    use super::banned_in_tree;

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
