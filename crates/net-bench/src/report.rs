//! The report: rows and their ratios, written as JSON, a Markdown table and an SVG chart.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::plan::{Plan, Summary};

/// What a row's numbers count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Events per second (higher is better).
    EventsPerSec,
    /// Nanoseconds (lower is better).
    Nanos,
    /// Heap bytes per queued event (lower is better).
    BytesPerEvent,
    /// Bytes (lower is better).
    Bytes,
}

impl Unit {
    /// The unit as written in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Unit::EventsPerSec => "events/s",
            Unit::Nanos => "ns",
            Unit::BytesPerEvent => "B/event",
            Unit::Bytes => "bytes",
        }
    }

    /// Formats `value` for people: `12.3 M/s`, `2.51 ms`, `70.1 B`.
    pub(crate) fn format(self, value: f64) -> String {
        match self {
            Unit::EventsPerSec if value >= 1e6 => format!("{:.2} M/s", value / 1e6),
            Unit::EventsPerSec if value >= 1e3 => format!("{:.1} k/s", value / 1e3),
            Unit::EventsPerSec => format!("{value:.0} /s"),
            Unit::Nanos if value >= 1e6 => format!("{:.2} ms", value / 1e6),
            Unit::Nanos if value >= 1e3 => format!("{:.1} µs", value / 1e3),
            Unit::Nanos => format!("{value:.0} ns"),
            Unit::BytesPerEvent => format!("{value:.1} B"),
            Unit::Bytes => format!("{:.1} MB", value / 1e6),
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    /// Unique name, also how other rows refer to it as their baseline.
    pub(crate) name: String,
    /// What the numbers count.
    pub(crate) unit: Unit,
    /// The repeated measurements.
    pub(crate) summary: Summary,
    /// Payload bytes per event, for rows where MB/s means something.
    pub(crate) payload_bytes: Option<usize>,
    /// The row this one is compared with (its ratio is `median / baseline median`).
    pub(crate) baseline: Option<String>,
    /// Further rows to give a ratio against.
    pub(crate) also_against: Vec<String>,
    /// Why the row's numbers cannot be trusted (events lost, counts wrong), if they cannot.
    pub(crate) invalid: Option<String>,
    /// Anything a reader should know about how the row was measured.
    pub(crate) note: Option<String>,
}

impl Row {
    /// A row without baseline, payload size or notes.
    pub(crate) fn new(name: impl Into<String>, unit: Unit, summary: Summary) -> Self {
        Self {
            name: name.into(),
            unit,
            summary,
            payload_bytes: None,
            baseline: None,
            also_against: Vec::new(),
            invalid: None,
            note: None,
        }
    }

    /// Compares the row with `baseline`.
    pub(crate) fn baseline(mut self, baseline: impl Into<String>) -> Self {
        self.baseline = Some(baseline.into());
        self
    }

    /// Also gives the ratio against `other`.
    pub(crate) fn also_against(mut self, other: impl Into<String>) -> Self {
        self.also_against.push(other.into());
        self
    }

    /// Reports MB/s for `bytes`-byte events.
    pub(crate) fn payload(mut self, bytes: usize) -> Self {
        self.payload_bytes = Some(bytes);
        self
    }

    /// Adds a note.
    pub(crate) fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// Marks the row invalid when `problems` is not empty.
    pub(crate) fn problems(mut self, problems: Vec<String>) -> Self {
        if !problems.is_empty() {
            self.invalid = Some(problems.join("; "));
        }
        self
    }

    /// Median throughput in MB/s (10^6 bytes), when the row has a payload size.
    fn mb_per_s(&self) -> Option<f64> {
        let bytes = self.payload_bytes?;
        (self.unit == Unit::EventsPerSec).then(|| self.summary.median * bytes as f64 / 1e6)
    }
}

/// Facts about the machine and toolchain that produced a report.
#[derive(Clone, Debug)]
pub(crate) struct Machine {
    /// Logical cores available to the process.
    pub(crate) cores: usize,
    /// The CPU model, when the OS tells.
    pub(crate) cpu: String,
    /// `rustc -V`.
    pub(crate) rustc: String,
    /// The date of the run, `YYYY-MM-DD` (UTC).
    pub(crate) date: String,
    /// `debug` or `release`.
    pub(crate) profile: &'static str,
    /// The 1-minute load average when the run started, when the OS tells: other work on
    /// the machine skews the numbers (the ratios less so).
    pub(crate) load_before: Option<f64>,
    /// The 1-minute load average when the run ended.
    pub(crate) load_after: Option<f64>,
}

/// The 1-minute load average, from `/proc/loadavg` where there is one.
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Machine {
    /// Looks the facts up.
    pub(crate) fn detect() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let rustc = std::process::Command::new(std::env::var_os("RUSTC").unwrap_or("rustc".into()))
            .arg("-V")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let days = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() / 86_400);
        Self {
            cores,
            cpu,
            rustc,
            date: civil_date(days),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            load_before: load_average(),
            load_after: None,
        }
    }
}

/// `YYYY-MM-DD` of the day `days` after 1970-01-01 (proleptic Gregorian calendar).
fn civil_date(days: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm, for non-negative day counts.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// A finished run: what was measured, on what, and how it compares.
#[derive(Debug)]
pub(crate) struct Report {
    /// The sizes of the run.
    pub(crate) plan: Plan,
    /// Where it ran.
    pub(crate) machine: Machine,
    /// The rows, in the order they are shown.
    pub(crate) rows: Vec<Row>,
    /// Wall-clock seconds of the whole run.
    pub(crate) elapsed_secs: f64,
}

/// The rows whose ratio is the first thing to read: the bus against the bare ring.
pub(crate) const HEADLINE: (&str, &str) = ("ingest_raw, 1 producer", "ArrayQueue, 1 producer");

impl Report {
    /// The row called `name`.
    fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|row| row.name == name)
    }

    /// `row median / other median`, when `other` exists and is not zero.
    fn ratio(&self, row: &Row, other: &str) -> Option<f64> {
        let other = self.row(other)?;
        (other.summary.median != 0.0).then(|| row.summary.median / other.summary.median)
    }

    /// The rows marked invalid, as `name: reason`.
    pub(crate) fn invalid_rows(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter_map(|row| Some(format!("{}: {}", row.name, row.invalid.as_ref()?)))
            .collect()
    }

    /// The machine-readable report.
    pub(crate) fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let ratios: serde_json::Map<String, Value> = row
                    .also_against
                    .iter()
                    .filter_map(|other| Some((other.clone(), json!(self.ratio(row, other)?))))
                    .collect();
                json!({
                    "name": row.name,
                    "unit": row.unit.name(),
                    "median": row.summary.median,
                    "min": row.summary.min,
                    "max": row.summary.max,
                    "samples": row.summary.samples,
                    "mb_per_s": row.mb_per_s(),
                    "baseline": row.baseline,
                    "ratio": row.baseline.as_deref().and_then(|b| self.ratio(row, b)),
                    "other_ratios": ratios,
                    "valid": row.invalid.is_none(),
                    "invalid_reason": row.invalid,
                    "note": row.note,
                })
            })
            .collect();
        let headline = self
            .row(HEADLINE.0)
            .and_then(|row| self.ratio(row, HEADLINE.1));
        let plan = &self.plan;
        json!({
            "mode": plan.mode.name(),
            "date": self.machine.date,
            "machine": {
                "cores": self.machine.cores,
                "cpu": self.machine.cpu,
                "os": std::env::consts::OS,
                "arch": std::env::consts::ARCH,
                "rustc": self.machine.rustc,
                "profile": self.machine.profile,
                "load_before": self.machine.load_before,
                "load_after": self.machine.load_after,
            },
            "plan": {
                "repeats": plan.repeats,
                "warm_up": plan.warm_up,
                "raw_events": plan.raw_events,
                "json_events": plan.json_events,
                "memory_events": plan.memory_events,
                "latency_rate": plan.latency_rate,
                "latency_ms": plan.latency_ms,
                "heap_ring": plan.heap_ring,
            },
            "headline": {
                "row": HEADLINE.0,
                "baseline": HEADLINE.1,
                "ratio": headline,
            },
            "elapsed_secs": self.elapsed_secs,
            "rows": rows,
        })
    }

    /// The human-readable report: a header and one table.
    pub(crate) fn to_markdown(&self) -> String {
        let m = &self.machine;
        let p = &self.plan;
        let mut out = String::new();
        let _ = writeln!(out, "# net bench ({} mode)\n", p.mode.name());
        let _ = writeln!(
            out,
            "{} · {} cores · {} · {} build · {} · {} repeat(s) per row{} · {:.1} s\n",
            m.date,
            m.cores,
            m.cpu,
            m.profile,
            m.rustc,
            p.repeats,
            if p.warm_up {
                " after one untimed warm-up"
            } else {
                ""
            },
            self.elapsed_secs
        );
        if let (Some(before), Some(after)) = (m.load_before, m.load_after) {
            let _ = writeln!(
                out,
                "Load average (1 min) {before:.2} at the start, {after:.2} at the end.\n"
            );
        }
        out.push_str(
            "ratio = median of the row / median of its baseline (events/s: higher is better; \
             ns and B/event: lower is better).\n\n",
        );
        out.push_str("| row | median | min | max | MB/s | baseline | ratio |\n");
        out.push_str("| --- | ---: | ---: | ---: | ---: | --- | ---: |\n");
        for row in &self.rows {
            let unit = row.unit;
            let mut ratio = row
                .baseline
                .as_deref()
                .and_then(|b| self.ratio(row, b))
                .map_or_else(String::new, |r| format!("{r:.2}×"));
            for other in &row.also_against {
                if let Some(r) = self.ratio(row, other) {
                    let _ = write!(ratio, "<br>{r:.2}× vs {other}");
                }
            }
            let flag = if row.invalid.is_some() {
                " **(invalid)**"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "| {}{flag} | {} | {} | {} | {} | {} | {ratio} |",
                row.name,
                unit.format(row.summary.median),
                unit.format(row.summary.min),
                unit.format(row.summary.max),
                row.mb_per_s()
                    .map_or_else(String::new, |mb| format!("{mb:.0}")),
                row.baseline.as_deref().unwrap_or(""),
            );
        }
        let notes: Vec<String> = self
            .rows
            .iter()
            .flat_map(|row| {
                let invalid = row
                    .invalid
                    .as_ref()
                    .map(|why| format!("- **{}** is invalid: {why}", row.name));
                let note = row.note.as_ref().map(|n| format!("- {}: {n}", row.name));
                invalid.into_iter().chain(note)
            })
            .collect();
        if !notes.is_empty() {
            out.push_str("\nNotes:\n\n");
            out.push_str(&notes.join("\n"));
            out.push('\n');
        }
        out
    }

    /// A horizontal bar chart of every events/s row that has a baseline, each followed by
    /// its baselines.
    pub(crate) fn to_svg(&self) -> String {
        const LABEL_W: f64 = 300.0;
        const BAR_W: f64 = 460.0;
        const VALUE_W: f64 = 110.0;
        const BAR_H: f64 = 18.0;
        const STEP: f64 = 22.0;
        const GROUP_GAP: f64 = 14.0;
        const TOP: f64 = 56.0;

        let mut groups: Vec<Vec<(&Row, bool)>> = Vec::new();
        for row in &self.rows {
            if row.unit != Unit::EventsPerSec {
                continue;
            }
            let Some(baseline) = &row.baseline else {
                continue;
            };
            let mut group = vec![(row, true)];
            for name in std::iter::once(baseline).chain(&row.also_against) {
                if let Some(other) = self.row(name) {
                    group.push((other, false));
                }
            }
            groups.push(group);
        }
        let max = groups
            .iter()
            .flatten()
            .map(|(row, _)| row.summary.max)
            .fold(1.0, f64::max);
        let bars: usize = groups.iter().map(Vec::len).sum();
        let height =
            TOP + bars as f64 * STEP + groups.len().saturating_sub(1) as f64 * GROUP_GAP + 40.0;
        let width = LABEL_W + BAR_W + VALUE_W + 20.0;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            svg,
            r##"<rect width="100%" height="100%" fill="#ffffff"/>
<text x="10" y="20" font-size="15" font-weight="bold">net bench: events/s ({} mode, {}, {} cores)</text>
<text x="10" y="38" fill="#555">median of each row, whisker from min to max; dark: the bus, light: its baselines</text>"##,
            self.plan.mode.name(),
            escape(&self.machine.date),
            self.machine.cores
        );
        // Grid lines at round fractions of the largest value.
        for tick in 0..=4 {
            let value = max * f64::from(tick) / 4.0;
            let x = LABEL_W + BAR_W * f64::from(tick) / 4.0;
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>
<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
                TOP - 6.0,
                height - 30.0,
                height - 16.0,
                escape(&Unit::EventsPerSec.format(value))
            );
        }
        let scale = |value: f64| BAR_W * (value / max).clamp(0.0, 1.0);
        let mut y = TOP;
        for group in &groups {
            for &(row, is_bus) in group {
                let fill = if row.invalid.is_some() {
                    "#c53030"
                } else if is_bus {
                    "#2b6cb0"
                } else {
                    "#a3bfe0"
                };
                let s = &row.summary;
                let mid = y + BAR_H / 2.0;
                let _ = writeln!(
                    svg,
                    r##"<text x="{:.1}" y="{:.1}" text-anchor="end" dominant-baseline="middle">{}</text>
<rect x="{LABEL_W}" y="{y:.1}" width="{:.1}" height="{BAR_H}" fill="{fill}"/>
<line x1="{:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="#333"/>
<text x="{:.1}" y="{mid:.1}" dominant-baseline="middle">{}</text>"##,
                    LABEL_W - 8.0,
                    mid,
                    escape(&row.name),
                    scale(s.median),
                    LABEL_W + scale(s.min),
                    LABEL_W + scale(s.max),
                    LABEL_W + scale(s.max).max(scale(s.median)) + 6.0,
                    escape(&Unit::EventsPerSec.format(s.median)),
                );
                y += STEP;
            }
            y += GROUP_GAP;
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// Writes `report.json`, `report.md` and `report.svg` into `dir` (created if missing) and
    /// returns their paths.
    pub(crate) fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
        let json = serde_json::to_string_pretty(&self.to_json())?;
        let files = [
            ("report.json", json + "\n"),
            ("report.md", self.to_markdown()),
            ("report.svg", self.to_svg()),
        ];
        let mut written = Vec::new();
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("could not write {}", path.display()))?;
            written.push(path);
        }
        Ok(written)
    }
}

/// `text` with the five XML special characters escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{civil_date, escape, Machine, Report, Row, Unit, HEADLINE};
    use crate::plan::{Mode, Plan, Summary};

    #[test]
    fn dates() {
        for (days, expected) in [
            (0, "1970-01-01"),
            (59, "1970-03-01"),
            (11_016, "2000-02-29"),
            (19_723, "2024-01-01"),
            (20_513, "2026-03-01"),
        ] {
            assert_eq!(civil_date(days), expected, "day {days}");
        }
    }

    #[test]
    fn units_format_for_people() {
        for (unit, value, expected) in [
            (Unit::EventsPerSec, 12_345_678.0, "12.35 M/s"),
            (Unit::EventsPerSec, 45_600.0, "45.6 k/s"),
            (Unit::Nanos, 2_510_000.0, "2.51 ms"),
            (Unit::Nanos, 850.0, "850 ns"),
            (Unit::BytesPerEvent, 70.06, "70.1 B"),
            (Unit::Bytes, 12_340_000.0, "12.3 MB"),
        ] {
            assert_eq!(unit.format(value), expected);
        }
        assert_eq!(escape(r#"a<b & "c">"#), "a&lt;b &amp; &quot;c&quot;&gt;");
    }

    fn sample_report() -> Report {
        let rate = |v: f64| Summary::of(vec![v, v * 0.9, v * 1.1]).expect("samples");
        Report {
            plan: Plan::new(Mode::Smoke),
            machine: Machine {
                cores: 2,
                cpu: "test cpu".into(),
                rustc: "rustc test".into(),
                date: "2026-01-01".into(),
                profile: "debug",
                load_before: Some(0.5),
                load_after: Some(1.25),
            },
            rows: vec![
                Row::new(HEADLINE.0, Unit::EventsPerSec, rate(20e6))
                    .baseline(HEADLINE.1)
                    .also_against("flume, 1 producer")
                    .payload(100),
                Row::new(HEADLINE.1, Unit::EventsPerSec, rate(40e6)).payload(100),
                Row::new("flume, 1 producer", Unit::EventsPerSec, rate(10e6))
                    .problems(vec!["lost 3 events".into()]),
            ],
            elapsed_secs: 1.0,
        }
    }

    #[test]
    fn ratios_and_validity_reach_every_format() {
        let report = sample_report();
        let json = report.to_json();
        assert_eq!(json["headline"]["ratio"], 0.5);
        let rows = json["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0]["ratio"], 0.5);
        assert_eq!(rows[0]["other_ratios"]["flume, 1 producer"], 2.0);
        assert_eq!(rows[0]["mb_per_s"], 2000.0);
        assert_eq!(rows[2]["valid"], false);
        assert_eq!(
            report.invalid_rows(),
            vec!["flume, 1 producer: lost 3 events"]
        );
        let table = report.to_markdown();
        assert!(
            table.contains("| 0.50×<br>2.00× vs flume, 1 producer |"),
            "{table}"
        );
        assert!(table.contains("flume, 1 producer **(invalid)**"), "{table}");
        assert!(
            table.contains("0.50 at the start, 1.25 at the end"),
            "{table}"
        );
        let svg = report.to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), 3, "{svg}");
    }
}
