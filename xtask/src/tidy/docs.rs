//! Tidy rules that keep the prose in step with the code.
//!
//! - Every workspace member (the `members` of the root `Cargo.toml`) has a heading
//!   ``### `path` `` in the code map of `ARCHITECTURE.md`.
//! - Every subcommand of `cargo xtask` appears as `` `cargo xtask NAME` `` in
//!   `CONTRIBUTING.md`, so its table of steps lists what `ci` really runs.
//! - No line of `README.md`, `CONTRIBUTING.md`, `ARCHITECTURE.md` or `docs/*.md` calls
//!   "planned" a backend that the feature table of `README.md` marks as shipped (matched by
//!   the last word of its name, such as "mesh" or "log", or by its cargo feature), or a
//!   `cargo xtask` subcommand that exists.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Violation;

/// The heading of the README section whose table says what is shipped.
const FEATURE_HEADING: &str = "## Features and backends";

/// The heading of the code map in ARCHITECTURE.md.
const CODE_MAP_HEADING: &str = "## Code map";

/// The word that must not describe something that exists.
const PLANNED: &str = "planned";

/// Runs every rule of this module over the repository at `root`.
///
/// `commands` are the subcommands of `cargo xtask`.
pub(crate) fn check(root: &Path, commands: &[&str]) -> Result<Vec<Violation>> {
    let manifest = read(root, "Cargo.toml")?;
    let architecture = read(root, "ARCHITECTURE.md")?;
    let contributing = read(root, "CONTRIBUTING.md")?;
    let readme = read(root, "README.md")?;

    let mut violations = Vec::new();
    violations.extend(
        missing_from_code_map(&workspace_members(&manifest), &architecture)
            .into_iter()
            .map(|(line, message)| violation("ARCHITECTURE.md", line, message)),
    );
    violations.extend(
        commands_missing(commands, &contributing)
            .into_iter()
            .map(|(line, message)| violation("CONTRIBUTING.md", line, message)),
    );

    let shipped = shipped_features(&readme);
    let mut documents = vec![
        (PathBuf::from("README.md"), readme.clone()),
        (PathBuf::from("CONTRIBUTING.md"), contributing),
        (PathBuf::from("ARCHITECTURE.md"), architecture),
    ];
    let docs_dir = root.join("docs");
    let mut entries = fs::read_dir(&docs_dir)
        .with_context(|| format!("could not list {}", docs_dir.display()))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("could not list {}", docs_dir.display()))?;
    entries.sort();
    for path in entries {
        if path.extension().is_some_and(|ext| ext == "md") {
            let text = fs::read_to_string(&path)
                .with_context(|| format!("could not read {}", path.display()))?;
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            documents.push((relative, text));
        }
    }
    for (path, text) in &documents {
        violations.extend(
            planned_but_shipped(text, &shipped, commands)
                .into_iter()
                .map(|(line, message)| Violation {
                    path: path.clone(),
                    line,
                    message,
                }),
        );
    }
    Ok(violations)
}

/// Reads `name` under `root`.
fn read(root: &Path, name: &str) -> Result<String> {
    let path = root.join(name);
    fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))
}

/// A violation in the file `path`.
fn violation(path: &str, line: usize, message: String) -> Violation {
    Violation {
        path: PathBuf::from(path),
        line,
        message,
    }
}

/// The `members` of the `[workspace]` table of a root manifest, in order.
fn workspace_members(manifest: &str) -> Vec<String> {
    let Some(start) = manifest
        .lines()
        .position(|line| line.trim_start().starts_with("members"))
    else {
        return Vec::new();
    };
    let mut list = String::new();
    for line in manifest.lines().skip(start) {
        let line = line.split('#').next().unwrap_or_default();
        list.push_str(line);
        if line.contains(']') {
            break;
        }
    }
    let inside = list
        .split_once('[')
        .map_or("", |(_, rest)| rest.split(']').next().unwrap_or_default());
    inside
        .split(',')
        .map(|item| item.trim().trim_matches('"').to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

/// Members without a ``### `member` `` heading in the code map, reported at the map's heading
/// (or line 1 when there is no code map at all).
fn missing_from_code_map(members: &[String], architecture: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = architecture.lines().collect();
    let Some(start) = lines
        .iter()
        .position(|line| line.trim() == CODE_MAP_HEADING)
    else {
        return vec![(1, format!("no `{CODE_MAP_HEADING}` section"))];
    };
    let headings: Vec<&str> = lines[start + 1..]
        .iter()
        .take_while(|line| !line.starts_with("## "))
        .filter_map(|line| line.strip_prefix("### "))
        .map(str::trim)
        .collect();
    members
        .iter()
        .filter(|member| !headings.contains(&format!("`{member}`").as_str()))
        .map(|member| {
            (
                start + 1,
                format!(
                    "workspace member `{member}` has no ### `{member}` heading in the code map"
                ),
            )
        })
        .collect()
}

/// Subcommands that `CONTRIBUTING.md` never names as `` `cargo xtask NAME` ``.
fn commands_missing(commands: &[&str], contributing: &str) -> Vec<(usize, String)> {
    commands
        .iter()
        .filter(|name| {
            let quoted = format!("`cargo xtask {name}`");
            let with_args = format!("`cargo xtask {name} ");
            !contributing.contains(&quoted) && !contributing.contains(&with_args)
        })
        .map(|name| {
            (
                1,
                format!("`cargo xtask {name}` is a command but CONTRIBUTING.md never names it"),
            )
        })
        .collect()
}

/// One shipped row of the README's feature table: the words that name it in prose.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shipped {
    /// The first cell of the row, as written.
    label: String,
    /// Lower-case words that, next to "planned", mean this feature.
    names: Vec<String>,
}

/// The rows of the README's feature table whose status starts with "shipped".
///
/// A row is named by the last word of its label before any parenthesis ("encrypted mesh"
/// gives "mesh") and by its cargo feature (`` feature `net` `` gives "net"); labels that are
/// code (`` `AdapterConfig::memory()` ``) are named by the text inside the backticks.
fn shipped_features(readme: &str) -> Vec<Shipped> {
    let mut found = Vec::new();
    let mut in_section = false;
    for line in readme.lines() {
        if line.starts_with("## ") {
            in_section = line.trim() == FEATURE_HEADING;
            continue;
        }
        if !in_section || !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [label, status, ..] = cells.as_slice() else {
            continue;
        };
        if !status.to_lowercase().starts_with("shipped") {
            continue;
        }
        let mut names = Vec::new();
        if let Some(code) = label.strip_prefix('`') {
            names.push(code.split('`').next().unwrap_or_default().to_lowercase());
        } else {
            let head = label.split('(').next().unwrap_or_default();
            if let Some(last) = head.split_whitespace().last() {
                names.push(last.to_lowercase());
            }
        }
        if let Some((_, rest)) = label.split_once("feature `") {
            if let Some(feature) = rest.split('`').next() {
                names.push(feature.to_lowercase());
            }
        }
        names.retain(|name| !name.is_empty());
        found.push(Shipped {
            label: (*label).to_owned(),
            names,
        });
    }
    found
}

/// Whether `word` occurs in `line` (lower case) with no letter, digit, `_` or `-` on
/// either side.
fn mentions(line: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Lines that call a shipped feature or an existing command "planned".
fn planned_but_shipped(text: &str, shipped: &[Shipped], commands: &[&str]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let lower = line.to_lowercase();
        if !mentions(&lower, PLANNED) {
            continue;
        }
        for feature in shipped {
            if let Some(name) = feature.names.iter().find(|name| mentions(&lower, name)) {
                found.push((
                    index + 1,
                    format!(
                        "calls \"{name}\" planned, but README's feature table says `{}` is shipped",
                        feature.label
                    ),
                ));
            }
        }
        for name in commands {
            if lower.contains(&format!("cargo xtask {name}")) {
                found.push((
                    index + 1,
                    format!("calls `cargo xtask {name}` planned, but it is a command"),
                ));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::{
        commands_missing, missing_from_code_map, planned_but_shipped, shipped_features,
        workspace_members,
    };

    const README: &str = "# x\n\n## Features and backends\n\n| backend | status |\n|---|---|\n\
        | `AdapterConfig::memory()` | shipped |\n\
        | encrypted mesh (feature `net`) | shipped: see docs |\n\
        | Kafka (feature `kafka`) | planned |\n\n## Documentation\n\
        | not a feature | shipped |\n";

    /// Runs the "planned" rule over `input` with the README above and one command, `bench`,
    /// and compares the flagged lines.
    fn check(input: &str, expected_lines: &[usize]) {
        let shipped = shipped_features(README);
        let found: Vec<usize> = planned_but_shipped(input, &shipped, &["bench"])
            .into_iter()
            .map(|(line, _)| line)
            .collect();
        assert_eq!(found, expected_lines, "input:\n{input}");
    }

    #[test]
    fn the_feature_table_is_read_from_its_section_only() {
        let shipped = shipped_features(README);
        let names: Vec<Vec<String>> = shipped.into_iter().map(|s| s.names).collect();
        assert_eq!(
            names,
            vec![
                vec!["adapterconfig::memory()".to_owned()],
                vec!["mesh".to_owned(), "net".to_owned()],
            ]
        );
    }

    #[test]
    fn planned_is_flagged_only_next_to_something_shipped() {
        check("| Mesh protocol | the handshake | planned |\n", &[1]);
        check("ok\nThe `net` feature is planned.\n", &[2]);
        check(
            "Benchmarks belong in `cargo xtask bench` (planned).\n",
            &[1],
        );
        check("Kafka support is planned.\n", &[]);
        check("The mesh is shipped.\n", &[]);
        // Whole words only: "meshes" and "internet" are other words.
        check("Planned: meshes of internet hosts.\n", &[]);
        check("Unplanned mesh outage.\n", &[]);
    }

    #[test]
    fn members_are_read_from_one_or_many_lines() {
        let one = "[workspace]\nmembers = [\"crates/a\", \"xtask\"]\nexclude = [\"fuzz\"]\n";
        assert_eq!(workspace_members(one), vec!["crates/a", "xtask"]);
        let many = "[workspace]\nmembers = [\n  \"crates/a\", # first\n  \"crates/b\",\n]\n";
        assert_eq!(workspace_members(many), vec!["crates/a", "crates/b"]);
    }

    #[test]
    fn every_member_needs_a_code_map_heading() {
        let members = vec!["crates/a".to_owned(), "crates/b".to_owned()];
        let map = "# A\n\n## Code map\n\n### `crates/a`\n\ntext about `crates/b`\n\n## Other\n\n### `crates/b`\n";
        let found = missing_from_code_map(&members, map);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, 3);
        assert!(found[0].1.contains("crates/b"), "{found:?}");
        assert_eq!(
            missing_from_code_map(&members, "# A\n")
                .first()
                .map(|f| f.0),
            Some(1)
        );
    }

    #[test]
    fn every_command_needs_a_mention_in_contributing() {
        let text = "| `cargo xtask fmt` | x |\nrun `cargo xtask bench --quick`\n";
        assert!(commands_missing(&["fmt", "bench"], text).is_empty());
        let missing = commands_missing(&["fmt", "fuzz"], text);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(missing[0].1.contains("cargo xtask fuzz"), "{missing:?}");
    }
}
