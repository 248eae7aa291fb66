//! `net bench` through the real binary: a small run prints a summary with a non-zero rate
//! and no drops, and `--json` prints one parseable object.

mod support;

use support::{one_error_line, run, stdout};

/// The value of the summary row `name`, digits only.
fn row(text: &str, name: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(name))
        .unwrap_or_else(|| panic!("no `{name}` row in:\n{text}"));
    line.trim_start()[name.len()..].trim().to_owned()
}

#[test]
fn a_small_run_prints_a_summary() {
    let output = run(&["bench", "--events", "50000"]);
    let text = stdout(&output);
    assert!(
        output.status.success(),
        "{text}\n{}",
        support::stderr(&output)
    );
    assert_eq!(row(&text, "events "), "50,000");
    let rate: u64 = row(&text, "events/s").replace(',', "").parse().unwrap();
    assert!(rate > 0, "{text}");
    assert_eq!(row(&text, "dropped"), "0");
    assert_eq!(row(&text, "rejected"), "0");
    assert!(row(&text, "latency p50") != "-", "{text}");
    assert!(row(&text, "latency p99") != "-", "{text}");
}

#[test]
fn json_output_parses() {
    for adapter in ["noop", "memory"] {
        let output = run(&[
            "bench",
            "--events",
            "30000",
            "--json",
            "--adapter",
            adapter,
            "--producers",
            "2",
        ]);
        assert!(output.status.success(), "{}", support::stderr(&output));
        let text = stdout(&output);
        assert_eq!(text.lines().count(), 1, "{text}");
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(report["events"], 30000, "{report}");
        assert_eq!(report["dropped"], 0, "{report}");
        assert_eq!(report["adapter"], adapter);
        assert!(report["seconds"].as_f64().unwrap() > 0.0);
        assert!(report["events_per_sec"].as_f64().unwrap() > 0.0);
        assert!(
            report["latency_ns"]["p99"].as_u64().unwrap()
                >= report["latency_ns"]["p50"].as_u64().unwrap()
        );
    }
}

#[test]
fn a_paced_run_takes_as_long_as_its_rate_says() {
    let output = run(&[
        "bench",
        "--events",
        "20000",
        "--rate",
        "100000",
        "--json",
        "--adapter",
        "noop",
    ]);
    assert!(output.status.success(), "{}", support::stderr(&output));
    let report: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(report["offered_rate"], 100000);
    assert_eq!(report["dropped"], 0);
    // The last events are due about 0.2 s after the start: pacing cannot finish sooner.
    assert!(report["seconds"].as_f64().unwrap() >= 0.15, "{report}");
}

#[test]
fn bad_flags_print_one_line() {
    for (args, code) in [
        (&["bench", "--events", "0"][..], 2),
        (&["bench", "--no-such-flag"][..], 2),
        (&["bench", "--adapter", "kafka"][..], 2),
        (
            &["bench", "--events", "10", "--ring-capacity", "1000"][..],
            2,
        ),
        (
            &[
                "bench",
                "--events",
                "10",
                "--adapter",
                "redis",
                "--url",
                "redis://127.0.0.1:1",
            ][..],
            1,
        ),
        (&["frobnicate"][..], 2),
    ] {
        let line = one_error_line(&run(args), code);
        assert!(line.len() < 400, "{line}");
    }
}

#[test]
fn help_explains_every_flag() {
    for command in ["bench", "produce", "consume", "tail"] {
        let output = run(&[command, "-h"]);
        assert!(output.status.success());
        let text = stdout(&output);
        let lines: Vec<&str> = text.lines().collect();
        let mut flags = 0;
        for (index, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            if !trimmed.starts_with('-') {
                continue;
            }
            flags += 1;
            // clap puts the help beside the flag, or on the next, deeper indented line.
            let beside = trimmed.split_once("  ").map(|(_, h)| h.trim());
            let below = lines.get(index + 1).filter(|next| {
                let indent = |l: &str| l.len() - l.trim_start().len();
                indent(next) > indent(line) && !next.trim_start().starts_with('-')
            });
            assert!(
                beside.is_some_and(|h| !h.is_empty()) || below.is_some(),
                "`net {command} -h`: flag without help: {line}\n{text}"
            );
        }
        assert!(flags >= 5, "{text}");
    }
}
