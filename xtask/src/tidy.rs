//! The tidy check: source hygiene rules that the compiler does not enforce.
//!
//! Rules, checked over `crates/*/src` and `xtask/src`:
//! - every `.rs` file starts with a `//!` module doc (blank lines and `#![...]` attributes
//!   may come first);
//! - no `todo!(`, `unimplemented!(` or `dbg!(` in `crates/*/src` (shipped code), even in code
//!   that is compiled out;
//! - every `unsafe` block has a `// SAFETY:` comment within the three lines above it (or in
//!   the comment block directly above it).
//!
//! [`cycles`] adds one over `crates/*/src`: no two files of one crate import each other
//! (crates still being taken apart are listed there and only reported).
//!
//! [`docs`] adds rules over the documents: every workspace member in ARCHITECTURE.md's code
//! map, every `cargo xtask` command in CONTRIBUTING.md, nothing shipped called "planned".
//!
//! The patterns are assembled with `concat!` so this file does not trip its own scan, and
//! `tests::repo_is_tidy` runs the check over the real repository so `cargo test` catches
//! violations too.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cmd::workspace_root;

mod cycles;
mod docs;

/// Macros that must not appear in shipped code, each with the opening parenthesis.
const FORBIDDEN_MACROS: [&str; 3] = [
    concat!("todo", "!("),
    concat!("unimplemented", "!("),
    concat!("dbg", "!("),
];

/// The keyword that opens an unsafe block when followed by `{`.
const UNSAFE_KEYWORD: &str = concat!("un", "safe");

/// The comment that must justify an unsafe block.
const SAFETY_COMMENT: &str = concat!("// ", "SAFETY:");

/// How many lines above an unsafe block the SAFETY comment may start.
const SAFETY_WINDOW: usize = 3;

/// One broken rule at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    /// The file, relative to the workspace root.
    pub(crate) path: PathBuf,
    /// The 1-based line number.
    pub(crate) line: usize,
    /// What is wrong there.
    pub(crate) message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

/// Runs the check over the workspace and prints every violation as `file:line: message`.
pub(crate) fn run() -> Result<()> {
    let root = workspace_root();
    let (files, mut violations) = check_repo(&root)?;
    violations.extend(docs::check(&root, &xtask_commands())?);
    violations.extend(import_cycles(&root)?);
    for violation in &violations {
        println!("{violation}");
    }
    if !violations.is_empty() {
        bail!(
            "tidy found {} violation(s) in {} file(s) checked",
            violations.len(),
            files
        );
    }
    println!("tidy: {files} files checked, no violations");
    Ok(())
}

/// The import cycles between files of one crate: those of the crates in
/// [`cycles::TOLERATED`] are printed as notes, every other one is a violation.
fn import_cycles(root: &Path) -> Result<Vec<Violation>> {
    let mut violations = Vec::new();
    for cycle in cycles::find(root)? {
        if cycles::TOLERATED.contains(&cycle.krate.as_str()) {
            eprintln!(
                "tidy: note: {cycle} (crate {} is not yet held to the import-cycle rule)",
                cycle.krate
            );
        } else {
            violations.push(cycle.violation());
        }
    }
    Ok(violations)
}

/// Every subcommand of `cargo xtask`: `ci`, its steps, and `bench`.
fn xtask_commands() -> Vec<&'static str> {
    let mut commands = vec!["ci"];
    commands.extend(crate::STEPS.iter().map(|step| step.name));
    commands.push("bench");
    commands
}

/// Checks every Rust file under `crates/*/src` and `xtask/src` of `root`.
///
/// Returns the number of files checked and the violations, sorted by file and line.
pub(crate) fn check_repo(root: &Path) -> Result<(usize, Vec<Violation>)> {
    let mut sources: Vec<(PathBuf, bool)> = Vec::new();
    let crates_dir = root.join("crates");
    if crates_dir.is_dir() {
        for entry in read_dir_sorted(&crates_dir)? {
            let src = entry.join("src");
            if src.is_dir() {
                sources.push((src, true));
            }
        }
    }
    sources.push((root.join("xtask").join("src"), false));

    let mut files = 0;
    let mut violations = Vec::new();
    for (dir, shipped) in sources {
        let mut paths = Vec::new();
        collect_rust_files(&dir, &mut paths)?;
        for path in paths {
            let text = fs::read_to_string(&path)
                .with_context(|| format!("could not read {}", path.display()))?;
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            files += 1;
            violations.extend(
                check_source(&text, shipped)
                    .into_iter()
                    .map(|(line, message)| Violation {
                        path: relative.clone(),
                        line,
                        message,
                    }),
            );
        }
    }
    Ok((files, violations))
}

/// The entries of a directory, sorted so the report is stable.
fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = fs::read_dir(dir)
        .with_context(|| format!("could not list {}", dir.display()))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("could not list {}", dir.display()))?;
    entries.sort();
    Ok(entries)
}

/// Appends every `.rs` file below `dir` (recursively) to `out`; a missing `dir` adds nothing.
fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for path in read_dir_sorted(dir)? {
        if path.is_dir() {
            collect_rust_files(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Checks one file's text; `shipped` enables the forbidden-macro rule.
///
/// Returns `(1-based line, message)` pairs in line order.
fn check_source(text: &str, shipped: bool) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    found.extend(check_module_doc(text));
    if shipped {
        found.extend(check_forbidden_macros(text));
    }
    found.extend(check_unsafe_blocks(text));
    found.sort_by_key(|(line, _)| *line);
    found
}

/// The file must open with `//!`, after optional blank lines and `#![...]` attributes.
fn check_module_doc(text: &str) -> Option<(usize, String)> {
    let mut in_attribute = false;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if in_attribute {
            in_attribute = !trimmed.ends_with(']');
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with("#![") {
            in_attribute = !trimmed.ends_with(']');
            continue;
        }
        if trimmed.starts_with("//!") {
            return None;
        }
        return Some((
            index + 1,
            "file must start with a `//!` module doc comment".to_owned(),
        ));
    }
    Some((
        1,
        "file has no code and no `//!` module doc comment".to_owned(),
    ))
}

/// Whether `c` can be part of an identifier (so a match preceded by it is another name).
fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Byte offsets of `pattern` in `line` that do not continue a longer identifier on the left.
fn word_matches<'a>(line: &'a str, pattern: &'a str) -> impl Iterator<Item = usize> + 'a {
    line.match_indices(pattern)
        .map(|(offset, _)| offset)
        .filter(move |&offset| {
            !line[..offset]
                .chars()
                .next_back()
                .is_some_and(is_ident_char)
        })
}

/// Every use of a forbidden macro, anywhere in the file (comments included).
fn check_forbidden_macros(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        for pattern in FORBIDDEN_MACROS {
            if word_matches(line, pattern).next().is_some() {
                let name = pattern.trim_end_matches('(');
                found.push((
                    index + 1,
                    format!("`{name}` is not allowed in shipped code"),
                ));
            }
        }
    }
    found
}

/// Whether the line opens an unsafe block (`unsafe` followed by `{`), outside a line comment.
fn opens_unsafe_block(line: &str) -> bool {
    if line.trim_start().starts_with("//") {
        return false;
    }
    word_matches(line, UNSAFE_KEYWORD).any(|offset| {
        let rest = &line[offset + UNSAFE_KEYWORD.len()..];
        rest.trim_start().starts_with('{')
    })
}

/// Every unsafe block without a SAFETY comment close above it.
fn check_unsafe_blocks(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if !opens_unsafe_block(line) || has_safety_comment(&lines, index) {
            continue;
        }
        found.push((
            index + 1,
            format!("`{UNSAFE_KEYWORD}` block without a `{SAFETY_COMMENT}` comment in the {SAFETY_WINDOW} lines above it"),
        ));
    }
    found
}

/// Whether a SAFETY comment starts within [`SAFETY_WINDOW`] lines above `index`, or anywhere
/// in the run of comment lines directly above it.
fn has_safety_comment(lines: &[&str], index: usize) -> bool {
    let window_start = index.saturating_sub(SAFETY_WINDOW);
    if lines[window_start..index]
        .iter()
        .any(|line| line.contains(SAFETY_COMMENT))
    {
        return true;
    }
    lines[..index]
        .iter()
        .rev()
        .take_while(|line| line.trim_start().starts_with("//"))
        .any(|line| line.contains(SAFETY_COMMENT))
}

#[cfg(test)]
mod tests {
    use super::{check_repo, check_source, FORBIDDEN_MACROS, SAFETY_COMMENT, UNSAFE_KEYWORD};
    use std::path::Path;

    /// Checks `input` as a shipped file and compares the lines that were flagged.
    fn check(input: &str, expected_lines: &[usize]) {
        let found: Vec<usize> = check_source(input, true)
            .into_iter()
            .map(|(line, _)| line)
            .collect();
        assert_eq!(found, expected_lines, "input:\n{input}");
    }

    /// An unsafe block opener, built so this file does not contain the pattern itself.
    fn unsafe_block() -> String {
        [UNSAFE_KEYWORD, " {"].concat()
    }

    #[test]
    fn module_doc_is_required() {
        check("//! Doc.\nfn f() {}\n", &[]);
        check("\n\n//! Doc after blank lines.\n", &[]);
        check("#![allow(dead_code)]\n//! Doc after an attribute.\n", &[]);
        check(
            "#![cfg_attr(\n    loom,\n    allow(dead_code)\n)]\n//! Doc.\n",
            &[],
        );
        check("/// Item doc, not a module doc.\nfn f() {}\n", &[1]);
        check("use std::fmt;\n//! Too late.\n", &[1]);
        check("\n\nfn f() {}\n", &[3]);
        check("", &[1]);
    }

    #[test]
    fn forbidden_macros_are_reported_with_their_line() {
        for pattern in FORBIDDEN_MACROS {
            let input = format!("//! Doc.\nfn f() {{\n    {pattern}\"x\");\n}}\n");
            check(&input, &[3]);
        }
        let two = format!(
            "//! Doc.\nfn f() {{ {} }}\nfn g() {{ {}) }}\n",
            FORBIDDEN_MACROS[0], FORBIDDEN_MACROS[2]
        );
        check(&two, &[2, 3]);
    }

    #[test]
    fn longer_names_and_unshipped_code_are_not_forbidden() {
        let input = format!("//! Doc.\nfn f() {{ my_{}) }}\n", FORBIDDEN_MACROS[0]);
        check(&input, &[]);
        let xtask = format!("//! Doc.\nfn f() {{ {}) }}\n", FORBIDDEN_MACROS[2]);
        assert!(check_source(&xtask, false).is_empty());
    }

    #[test]
    fn unsafe_blocks_need_a_safety_comment() {
        let block = unsafe_block();
        check(
            &format!("//! Doc.\nfn f() {{\n    {block} g() }}\n}}\n"),
            &[3],
        );
        check(
            &format!("//! Doc.\nfn f() {{\n    {SAFETY_COMMENT} g has no preconditions.\n    {block} g() }}\n}}\n"),
            &[],
        );
        // Three lines above is still close enough; four is not.
        check(
            &format!("//! Doc.\n{SAFETY_COMMENT} reason.\nlet a = 1;\nlet b = 2;\nlet c = {block} g() }};\n"),
            &[],
        );
        check(
            &format!("//! Doc.\n{SAFETY_COMMENT} reason.\nlet a = 1;\nlet b = 2;\nlet c = 3;\nlet d = {block} g() }};\n"),
            &[6],
        );
        // A long SAFETY comment directly above counts, however many lines it spans.
        check(
            &format!("//! Doc.\n{SAFETY_COMMENT} one\n// two\n// three\n// four\n{block} g() }}\n"),
            &[],
        );
    }

    #[test]
    fn unsafe_outside_blocks_is_ignored() {
        let keyword = UNSAFE_KEYWORD;
        check(&format!("//! Doc.\n{keyword} fn f() {{}}\n"), &[]);
        check(&format!("//! Doc.\n{keyword} impl Send for X {{}}\n"), &[]);
        check(
            &format!("//! Doc.\n// an {} }} in a comment\n", unsafe_block()),
            &[],
        );
    }

    #[test]
    fn violations_name_the_file_relative_to_the_root() {
        let root = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        let src = root.join("crates").join("demo").join("src");
        std::fs::create_dir_all(src.join("nested")).expect("create temp tree");
        std::fs::write(src.join("lib.rs"), "//! Demo.\nmod nested;\n").expect("write");
        let bad = format!("fn f() {{\n    {}1);\n}}\n", FORBIDDEN_MACROS[2]);
        std::fs::write(src.join("nested").join("mod.rs"), bad).expect("write");
        let result = check_repo(&root);
        std::fs::remove_dir_all(&root).expect("remove temp tree");
        let (files, violations) = result.expect("temp tree is readable");
        let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert_eq!(files, 2);
        assert_eq!(report.len(), 2, "{report:?}");
        assert!(
            report[0].starts_with("crates/demo/src/nested/mod.rs:1: "),
            "{report:?}"
        );
        assert!(
            report[1].starts_with("crates/demo/src/nested/mod.rs:2: "),
            "{report:?}"
        );
    }

    #[test]
    fn repo_is_tidy() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives inside the workspace");
        let (files, violations) = check_repo(root).expect("the workspace is readable");
        assert!(
            files > 0,
            "tidy found no Rust files under {}",
            root.display()
        );
        let docs =
            super::docs::check(root, &super::xtask_commands()).expect("the documents are readable");
        let cycles = super::import_cycles(root).expect("the sources are readable");
        let report: Vec<String> = violations
            .iter()
            .chain(&docs)
            .chain(&cycles)
            .map(ToString::to_string)
            .collect();
        assert!(
            report.is_empty(),
            "tidy violations (see `cargo xtask tidy`):\n{}",
            report.join("\n")
        );
    }
}
