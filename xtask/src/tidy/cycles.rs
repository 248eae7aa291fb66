//! The import-cycle rule: no two files of one crate import each other.
//!
//! A file imports another when its code names a path `crate::…` that leads into the other
//! file's module (in a `use` declaration, grouped imports expanded, or inline in an
//! expression). Two files that import each other cannot be read, tested or split one at a
//! time, so such a pair is reported with both names.
//!
//! What counts: code before the file's `#[cfg(test)]` module (tests may reach anywhere), with
//! line comments removed. Paths through `self::`, `super::` or a child module's bare name are
//! not followed, and a path that ends at the crate root (`lib.rs` or `main.rs`, which
//! re-export everything) is not an import of a file.
//!
//! Crates listed in [`TOLERATED`] (none today) would have their pairs printed as notes
//! without failing the check, while a cycle is being taken apart; every other crate under
//! `crates/` must have none.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{collect_rust_files, read_dir_sorted, Violation};

/// Crates whose import cycles are reported but do not fail the check yet.
pub(crate) const TOLERATED: &[&str] = &[];

/// Two files of one crate that import each other.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cycle {
    /// The crate's directory name under `crates/`.
    pub(crate) krate: String,
    /// The first file (in path order), relative to the workspace root.
    pub(crate) first: PathBuf,
    /// The line of the first import in `first` that leads into `second`.
    pub(crate) first_line: usize,
    /// The second file.
    pub(crate) second: PathBuf,
    /// The line of the first import in `second` that leads into `first`.
    pub(crate) second_line: usize,
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (line {}) and {} (line {}) import each other",
            self.first.display(),
            self.first_line,
            self.second.display(),
            self.second_line
        )
    }
}

impl Cycle {
    /// The cycle as a violation at its first file's import.
    pub(crate) fn violation(&self) -> Violation {
        Violation {
            path: self.first.clone(),
            line: self.first_line,
            message: format!(
                "imports {} (line {}), which imports this file back",
                self.second.display(),
                self.second_line
            ),
        }
    }
}

/// Every import cycle between two files of a crate under `root/crates`, sorted.
pub(crate) fn find(root: &Path) -> Result<Vec<Cycle>> {
    let crates_dir = root.join("crates");
    let mut cycles = Vec::new();
    if !crates_dir.is_dir() {
        return Ok(cycles);
    }
    for dir in read_dir_sorted(&crates_dir)? {
        let src = dir.join("src");
        if !src.is_dir() {
            continue;
        }
        let krate = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut paths = Vec::new();
        collect_rust_files(&src, &mut paths)?;
        let mut files = Vec::new();
        for path in paths {
            let text = fs::read_to_string(&path)
                .with_context(|| format!("could not read {}", path.display()))?;
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            let module = module_path(path.strip_prefix(&src).unwrap_or(&path));
            files.push((relative, module, text));
        }
        cycles.extend(crate_cycles(&krate, &files));
    }
    cycles.sort();
    Ok(cycles)
}

/// The cycles among `files` of crate `krate`: `(path, module path, text)` each.
fn crate_cycles(krate: &str, files: &[(PathBuf, Vec<String>, String)]) -> Vec<Cycle> {
    let modules: HashMap<&[String], usize> = files
        .iter()
        .enumerate()
        .map(|(index, (_, module, _))| (module.as_slice(), index))
        .collect();
    // For each file, the files it imports, each with the line of its first import.
    let edges: Vec<HashMap<usize, usize>> = files
        .iter()
        .enumerate()
        .map(|(from, (_, _, text))| {
            let mut targets = HashMap::new();
            for (line, path) in crate_paths(text) {
                if let Some(to) = resolve(&modules, &path) {
                    if to != from {
                        targets.entry(to).or_insert(line);
                    }
                }
            }
            targets
        })
        .collect();
    let mut found = BTreeSet::new();
    for (a, targets) in edges.iter().enumerate() {
        for (&b, &a_line) in targets {
            if a < b {
                if let Some(&b_line) = edges[b].get(&a) {
                    found.insert((a, a_line, b, b_line));
                }
            }
        }
    }
    found
        .into_iter()
        .map(|(a, a_line, b, b_line)| {
            let (first, first_line, second, second_line) = if files[a].0 <= files[b].0 {
                (a, a_line, b, b_line)
            } else {
                (b, b_line, a, a_line)
            };
            Cycle {
                krate: krate.to_owned(),
                first: files[first].0.clone(),
                first_line,
                second: files[second].0.clone(),
                second_line,
            }
        })
        .collect()
}

/// The file a crate-relative path leads into: the deepest module that is a prefix of it,
/// unless that is the crate root.
fn resolve(modules: &HashMap<&[String], usize>, path: &[String]) -> Option<usize> {
    (1..=path.len())
        .rev()
        .find_map(|len| modules.get(&path[..len]).copied())
}

/// The module path of a file, given its path relative to `src`: `lib.rs` and `main.rs` are
/// the root (empty), `a/mod.rs` and `a.rs` are `a`, `a/b.rs` is `a::b`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut segments: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = segments.pop() {
        let stem = last.strip_suffix(".rs").unwrap_or(&last).to_owned();
        let is_root = segments.is_empty() && (stem == "lib" || stem == "main");
        if stem != "mod" && !is_root {
            segments.push(stem);
        }
    }
    segments
}

/// Every `crate::…` path in the code of `text` before its `#[cfg(test)]` module, as
/// `(1-based line, segments after crate)`; grouped imports are expanded into one path each.
fn crate_paths(text: &str) -> Vec<(usize, Vec<String>)> {
    // The code, comments removed, with the line each byte came from.
    let mut code = String::new();
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let line = line.find("//").map_or(line, |at| &line[..at]);
        code.push_str(line);
        code.push('\n');
        lines.extend(std::iter::repeat_n(index + 1, line.len() + 1));
    }
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| super::is_ident_char(c) || c == '$' || c == ':') {
            continue;
        }
        let mut parser = TreeParser {
            bytes,
            at: at + "crate::".len(),
        };
        for path in parser.tree() {
            found.push((lines[at], path));
        }
    }
    found
}

/// Reads one use tree (`a::b`, `a::{b, c::d}`, `*`) and expands it into paths.
struct TreeParser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl TreeParser<'_> {
    /// The paths of the tree at the current position.
    fn tree(&mut self) -> Vec<Vec<String>> {
        self.skip_space();
        match self.bytes.get(self.at) {
            Some(b'{') => {
                self.at += 1;
                let mut paths = Vec::new();
                loop {
                    self.skip_space();
                    match self.bytes.get(self.at) {
                        None => break,
                        Some(b'}') => {
                            self.at += 1;
                            break;
                        }
                        Some(b',') => self.at += 1,
                        Some(_) => {
                            let before = self.at;
                            paths.extend(self.tree());
                            self.skip_alias();
                            if self.at == before {
                                // Something that is not a tree: skip it rather than loop.
                                self.at += 1;
                            }
                        }
                    }
                }
                paths
            }
            Some(b'*') => {
                self.at += 1;
                vec![Vec::new()]
            }
            _ => {
                let ident = self.ident();
                if ident.is_empty() {
                    return Vec::new();
                }
                if self.bytes[self.at..].starts_with(b"::") {
                    self.at += 2;
                    let rest = self.tree();
                    let head = if ident == "self" { None } else { Some(ident) };
                    return rest
                        .into_iter()
                        .map(|tail| head.iter().cloned().chain(tail).collect())
                        .collect();
                }
                if ident == "self" {
                    vec![Vec::new()]
                } else {
                    vec![vec![ident]]
                }
            }
        }
    }

    /// An identifier at the current position (empty when there is none).
    fn ident(&mut self) -> String {
        let start = self.at;
        while self
            .bytes
            .get(self.at)
            .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.at += 1;
        }
        String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned()
    }

    /// Skips `as name` after a tree inside braces.
    fn skip_alias(&mut self) {
        self.skip_space();
        if self.bytes[self.at..].starts_with(b"as")
            && self
                .bytes
                .get(self.at + 2)
                .is_some_and(u8::is_ascii_whitespace)
        {
            self.at += 2;
            self.skip_space();
            self.ident();
        }
    }

    fn skip_space(&mut self) {
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{crate_cycles, crate_paths, module_path};
    use std::path::{Path, PathBuf};

    /// The `crate::` paths found in `input`, joined with `::`, with their lines.
    fn check(input: &str, expected: &[(usize, &str)]) {
        let found: Vec<(usize, String)> = crate_paths(input)
            .into_iter()
            .map(|(line, path)| (line, path.join("::")))
            .collect();
        let expected: Vec<(usize, String)> = expected
            .iter()
            .map(|&(line, path)| (line, path.to_owned()))
            .collect();
        assert_eq!(found, expected, "input:\n{input}");
    }

    #[test]
    fn paths_are_read_from_use_declarations_and_code() {
        check("use crate::a::B;\n", &[(1, "a::B")]);
        check(
            "use crate::{a, b::{C, d::E}};\n",
            &[(1, "a"), (1, "b::C"), (1, "b::d::E")],
        );
        check(
            "use crate::{\n    a::B as Bee,\n    c,\n};\n",
            &[(1, "a::B"), (1, "c")],
        );
        check("use crate::a::{self, B};\n", &[(1, "a"), (1, "a::B")]);
        check("use crate::a::*;\n", &[(1, "a")]);
        check("fn f() { crate::a::g(); }\n", &[(1, "a::g")]);
        check("pub(crate) use crate::x::Y;\n", &[(1, "x::Y")]);
    }

    #[test]
    fn comments_tests_and_other_crates_are_not_imports() {
        check("// use crate::a;\n/// [`X`](crate::a::X)\n", &[]);
        check("use net_crate::a;\nuse other_crate::b;\n", &[]);
        check("macro_rules! m { () => { $crate::a::f() } }\n", &[]);
        check(
            "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\n",
            &[(1, "a")],
        );
    }

    #[test]
    fn module_paths_follow_the_file_layout() {
        let check = |path: &str, expected: &[&str]| {
            assert_eq!(module_path(Path::new(path)), expected, "{path}");
        };
        check("lib.rs", &[]);
        check("main.rs", &[]);
        check("adapter.rs", &["adapter"]);
        check("conformance/mod.rs", &["conformance"]);
        check(
            "conformance/checks/reads.rs",
            &["conformance", "checks", "reads"],
        );
        check("node/main.rs", &["node", "main"]);
    }

    /// The cycles among files given as `(name, text)`, as `first-second` names.
    fn cycles(files: &[(&str, &str)]) -> Vec<String> {
        let files: Vec<(PathBuf, Vec<String>, String)> = files
            .iter()
            .map(|(name, text)| {
                (
                    PathBuf::from(name),
                    module_path(Path::new(name)),
                    (*text).to_owned(),
                )
            })
            .collect();
        crate_cycles("demo", &files)
            .into_iter()
            .map(|cycle| {
                format!(
                    "{}:{}-{}:{}",
                    cycle.first.display(),
                    cycle.first_line,
                    cycle.second.display(),
                    cycle.second_line
                )
            })
            .collect()
    }

    #[test]
    fn two_files_importing_each_other_are_a_cycle() {
        assert_eq!(
            cycles(&[
                ("lib.rs", "mod a;\nmod b;\n"),
                ("a.rs", "//! A.\nuse crate::b::B;\n"),
                ("b.rs", "//! B.\n\nuse crate::{a::A, c};\n"),
                ("c.rs", "//! C.\n"),
            ]),
            ["a.rs:2-b.rs:3"]
        );
        // A chain is not a cycle, and neither is a file importing the crate root.
        assert!(cycles(&[
            ("lib.rs", "use crate::a::A;\n"),
            ("a.rs", "use crate::b::B;\nuse crate::Root;\n"),
            ("b.rs", "use crate::c::C;\n"),
            ("c.rs", "//! C.\n"),
        ])
        .is_empty());
        // Nested modules resolve to the deepest file.
        assert_eq!(
            cycles(&[
                ("x/mod.rs", "use crate::x::y::Y;\n"),
                ("x/y.rs", "use crate::x::X;\n"),
            ]),
            ["x/mod.rs:1-x/y.rs:1"]
        );
    }
}
