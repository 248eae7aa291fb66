//! What a check returns: [`Outcome`] when the property holds or was skipped,
//! [`ConformanceFailure`] with evidence when it does not, and the [`Report`] of a whole run.

use super::Property;
use std::collections::HashMap;
use std::fmt;

/// The result of a property that did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The property holds for this adapter.
    Passed {
        /// The property checked.
        property: Property,
        /// Observations worth knowing that do not make the property fail (for example that
        /// redelivered copies were stored and are only filterable by dedup id).
        notes: Vec<String>,
    },
    /// The property was not checked, because the fixture lacks a hook or does not declare a
    /// capability it needs. Never counts as passed.
    Skipped {
        /// The property not checked.
        property: Property,
        /// Why, naming the missing hook or capability.
        reason: String,
    },
}

impl Outcome {
    /// The property this outcome is about.
    pub fn property(&self) -> Property {
        match self {
            Outcome::Passed { property, .. } | Outcome::Skipped { property, .. } => *property,
        }
    }

    /// True when the property was checked and holds.
    pub fn is_passed(&self) -> bool {
        matches!(self, Outcome::Passed { .. })
    }

    /// True when the property was not checked.
    pub fn is_skipped(&self) -> bool {
        matches!(self, Outcome::Skipped { .. })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Passed { property, notes } => {
                write!(f, "{property}: passed")?;
                for note in notes {
                    write!(f, "\n    note: {note}")?;
                }
                Ok(())
            }
            Outcome::Skipped { property, reason } => {
                write!(f, "{property}: SKIPPED: {reason}")
            }
        }
    }
}

/// What the kit expected and what the adapter returned, item by item (event labels such as
/// `s0#5` for the event of sequence 5 on shard 0, or descriptions of fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// What a conforming adapter returns.
    pub expected: Vec<String>,
    /// What this adapter returned.
    pub seen: Vec<String>,
}

/// How many items of a long list the failure message shows around the first difference.
const SHOWN: usize = 24;

impl Evidence {
    /// The position of the first difference, if the lists differ.
    pub fn first_difference(&self) -> Option<usize> {
        let common = self.expected.len().min(self.seen.len());
        (0..common)
            .find(|&i| self.expected[i] != self.seen[i])
            .or((self.expected.len() != self.seen.len()).then_some(common))
    }

    /// Items expected but not seen, and items seen more often than expected (or not at all
    /// expected), each with the count of the difference.
    fn differences(&self) -> (Vec<String>, Vec<String>) {
        let mut balance: HashMap<&str, i64> = HashMap::new();
        for item in &self.expected {
            *balance.entry(item).or_default() += 1;
        }
        for item in &self.seen {
            *balance.entry(item).or_default() -= 1;
        }
        let mut missing = Vec::new();
        let mut extra = Vec::new();
        // Keep list order so the summary reads like the lists.
        for item in self.expected.iter().chain(&self.seen) {
            if let Some(count) = balance.remove(item.as_str()) {
                match count {
                    n if n > 0 => missing.push(counted(item, n)),
                    n if n < 0 => extra.push(counted(item, -n)),
                    _ => {}
                }
            }
        }
        (missing, extra)
    }
}

fn counted(item: &str, n: i64) -> String {
    if n == 1 {
        item.to_owned()
    } else {
        format!("{item} (x{n})")
    }
}

/// Renders `items[from..]`, at most [`SHOWN`] of them, with the total and the elided parts.
pub(crate) fn window(items: &[String], from: usize) -> String {
    let from = from.min(items.len());
    let to = (from + SHOWN).min(items.len());
    let mut out = format!("({}) ", items.len());
    if from > 0 {
        out.push_str(&format!("[{from} before] "));
    }
    out.push_str(&items[from..to].join(" "));
    if to < items.len() {
        out.push_str(&format!(" [{} more]", items.len() - to));
    }
    out
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(at) = self.first_difference() else {
            writeln!(
                f,
                "  expected and seen agree: {}",
                window(&self.expected, 0)
            )?;
            return Ok(());
        };
        // Show short lists whole; start long ones a few items before the first difference.
        let longest = self.expected.len().max(self.seen.len());
        let from = if longest <= SHOWN {
            0
        } else {
            at.saturating_sub(4)
        };
        writeln!(f, "  expected {}", window(&self.expected, from))?;
        writeln!(f, "  seen     {}", window(&self.seen, from))?;
        let expected = self.expected.get(at).map_or("nothing", String::as_str);
        let seen = self.seen.get(at).map_or("nothing", String::as_str);
        writeln!(
            f,
            "  first difference at position {at}: expected {expected}, seen {seen}"
        )?;
        let (missing, extra) = self.differences();
        if !missing.is_empty() {
            writeln!(f, "  missing:    {}", window(&missing, 0))?;
        }
        if !extra.is_empty() {
            writeln!(f, "  unexpected: {}", window(&extra, 0))?;
        }
        if missing.is_empty() && extra.is_empty() {
            writeln!(f, "  same items, different order")?;
        }
        Ok(())
    }
}

/// A property the adapter does not hold, with the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConformanceFailure {
    /// The property that failed.
    pub property: Property,
    /// The adapter's [`name`](crate::Adapter::name).
    pub adapter: String,
    /// What went wrong, naming the call and its arguments.
    pub message: String,
    /// Expected and seen items, when the failure is about what came back.
    pub evidence: Option<Box<Evidence>>,
}

impl ConformanceFailure {
    /// A failure of `property` on `adapter` described by `message`.
    pub fn new(property: Property, adapter: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            property,
            adapter: adapter.into(),
            message: message.into(),
            evidence: None,
        }
    }

    /// Attaches what was expected and what was seen.
    pub fn with_evidence(mut self, expected: Vec<String>, seen: Vec<String>) -> Self {
        self.evidence = Some(Box::new(Evidence { expected, seen }));
        self
    }
}

impl fmt::Display for ConformanceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conformance property `{}` failed on adapter {:?}: {}",
            self.property, self.adapter, self.message
        )?;
        if let Some(evidence) = &self.evidence {
            write!(f, "{evidence}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConformanceFailure {}

/// The results of [`run_all`](super::run_all): one entry per property, in run order.
#[derive(Clone, Debug)]
pub struct Report {
    results: Vec<Result<Outcome, ConformanceFailure>>,
}

impl Report {
    /// A report of these results.
    pub fn new(results: Vec<Result<Outcome, ConformanceFailure>>) -> Self {
        Self { results }
    }

    /// Every result, in run order.
    pub fn results(&self) -> &[Result<Outcome, ConformanceFailure>] {
        &self.results
    }

    /// The result for `property`, if it ran.
    pub fn result(&self, property: Property) -> Option<&Result<Outcome, ConformanceFailure>> {
        self.results.iter().find(|r| match r {
            Ok(outcome) => outcome.property() == property,
            Err(failure) => failure.property == property,
        })
    }

    /// The properties that passed.
    pub fn passed(&self) -> Vec<Property> {
        self.results
            .iter()
            .filter_map(|r| match r {
                Ok(outcome @ Outcome::Passed { .. }) => Some(outcome.property()),
                _ => None,
            })
            .collect()
    }

    /// The properties that were skipped, with the reason.
    pub fn skipped(&self) -> Vec<(Property, &str)> {
        self.results
            .iter()
            .filter_map(|r| match r {
                Ok(Outcome::Skipped { property, reason }) => Some((*property, reason.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The failures.
    pub fn failures(&self) -> Vec<&ConformanceFailure> {
        self.results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .collect()
    }

    /// The failure of `property`, if it failed.
    pub fn failure(&self, property: Property) -> Option<&ConformanceFailure> {
        self.result(property).and_then(|r| r.as_ref().err())
    }

    /// True when no property failed (skipped ones do not count as failures, nor as passes).
    pub fn is_success(&self) -> bool {
        self.results.iter().all(Result::is_ok)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conformance: {} passed, {} skipped, {} failed",
            self.passed().len(),
            self.skipped().len(),
            self.failures().len()
        )?;
        for result in &self.results {
            match result {
                Ok(outcome) => writeln!(f, "  {outcome}")?,
                Err(failure) => writeln!(f, "  {}: FAILED: {}", failure.property, failure.message)?,
            }
        }
        Ok(())
    }
}
