//! The results of a run: a JSON document ([`Report`]) and its markdown rendering.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::machine::Machine;
use super::stats::{fmt_rate, fmt_ratio, fmt_us, Summary};

/// Version of the JSON layout.
pub const SCHEMA: u32 = 1;

/// Everything a run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Version of this layout.
    pub schema: u32,
    /// The command line that produced it.
    pub command: String,
    /// Reduced (`--quick`) run.
    pub quick: bool,
    /// arbor's version.
    pub arbor_version: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// Wall time of the whole run.
    pub seconds: f64,
    /// The machine.
    pub machine: Machine,
    /// The systems measured and how they were configured.
    pub systems: Vec<SystemInfo>,
    /// Workload and plan settings.
    pub settings: Map<String, Value>,
    /// This disk's fdatasync latency (4 KiB appends).
    pub fsync: Option<Summary>,
    /// One row per (scenario, case, system).
    pub results: Vec<Row>,
    /// arbor against each baseline.
    pub comparisons: Vec<Comparison>,
    /// The goals and whether this run met them.
    pub goals: Vec<Goal>,
    /// Scenarios or systems not run, and why.
    pub skipped: Vec<Skipped>,
    /// Wall time of each scenario in seconds.
    pub timings: Map<String, Value>,
}

/// A system under test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemInfo {
    /// Name used in the rows.
    pub name: String,
    /// What it is and how durable its writes are.
    pub detail: String,
}

/// One measured series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// `append`, `batch`, `path`, `subtree`, `fanout`, `sync_lag`.
    pub scenario: String,
    /// The case within the scenario (`closed loop, 8 agents`, `depth 1000`, …).
    pub case: String,
    /// The system (`arbor`, `seeds`, `postgres`, `redis`, with a variant).
    pub system: String,
    /// What one operation is (`event`, `batch of 100`, `query`, `delivery`).
    pub unit: String,
    /// Latency from due time (open loop) or send time; throughput.
    pub summary: Summary,
    /// Open loop: latency from send time.
    pub service: Option<Summary>,
    /// Events per second when an operation carries several.
    pub events_per_second: Option<f64>,
    /// Scenario-specific figures (delivered fraction, verified counts, …).
    pub extra: Map<String, Value>,
    /// The first error, if any operation failed.
    pub error: Option<String>,
}

/// arbor against one baseline on one figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    /// Scenario.
    pub scenario: String,
    /// Case.
    pub case: String,
    /// `throughput` (higher is better) or `p50`/`p99` (lower is better).
    pub metric: String,
    /// The arbor row's system.
    pub arbor: String,
    /// The baseline row's system.
    pub baseline: String,
    /// arbor's figure (events/s or µs).
    pub arbor_value: f64,
    /// The baseline's figure.
    pub baseline_value: f64,
    /// How many times better arbor is (> 1 = arbor better).
    pub ratio: f64,
}

/// A goal from the issue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    /// The goal.
    pub goal: String,
    /// What this run measured.
    pub measured: String,
    /// Whether it was met (None: not measured in this run).
    pub met: Option<bool>,
}

/// Something not run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Skipped {
    /// Scenario (or `*`).
    pub scenario: String,
    /// System (or `*`).
    pub system: String,
    /// Why.
    pub reason: String,
}

/// Which figure a comparison uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Operations (or events) per second: higher is better.
    Throughput,
    /// Median latency: lower is better.
    P50,
    /// 99th percentile: lower is better.
    P99,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Throughput => "throughput",
            Metric::P50 => "p50",
            Metric::P99 => "p99",
        }
    }

    fn of(self, r: &Row) -> f64 {
        match self {
            Metric::Throughput => r.events_per_second.unwrap_or(r.summary.per_second),
            Metric::P50 => r.summary.p50_us,
            Metric::P99 => r.summary.p99_us,
        }
    }
}

impl Report {
    /// The row of (`scenario`, `case`, `system`).
    pub fn row(&self, scenario: &str, case: &str, system: &str) -> Option<&Row> {
        self.results
            .iter()
            .find(|r| r.scenario == scenario && r.case == case && r.system == system)
    }

    /// Adds the comparison of arbor row `arbor` with row `baseline` (same scenario and
    /// case) on `metric`, when both exist and have figures; returns the ratio.
    pub fn compare(
        &mut self,
        scenario: &str,
        case: &str,
        arbor: &str,
        baseline: &str,
        metric: Metric,
    ) -> Option<f64> {
        let a = self.row(scenario, case, arbor)?;
        let b = self.row(scenario, case, baseline)?;
        let (av, bv) = (metric.of(a), metric.of(b));
        if a.summary.count == 0 || b.summary.count == 0 || av <= 0.0 || bv <= 0.0 {
            return None;
        }
        let ratio = match metric {
            Metric::Throughput => av / bv,
            Metric::P50 | Metric::P99 => bv / av,
        };
        self.comparisons.push(Comparison {
            scenario: scenario.to_owned(),
            case: case.to_owned(),
            metric: metric.name().to_owned(),
            arbor: arbor.to_owned(),
            baseline: baseline.to_owned(),
            arbor_value: a_round(av),
            baseline_value: a_round(bv),
            ratio: a_round(ratio),
        });
        Some(ratio)
    }

    /// Renders the report as markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let kind = if self.quick { " --quick" } else { "" };
        let _ = writeln!(s, "# arbor bench compare{kind}\n");
        let _ = writeln!(s, "- command: `{}`", self.command);
        let _ = writeln!(
            s,
            "- arbor {}, started {}, took {:.0} s",
            self.arbor_version, self.started_at, self.seconds
        );
        let m = &self.machine;
        let _ = writeln!(
            s,
            "- machine: {} CPU ({}), {:.1} GiB memory, disk {}, Linux {}; load average at \
             start {}",
            m.nproc,
            if m.cpu.is_empty() { "unknown" } else { &m.cpu },
            m.memory_bytes as f64 / (1u64 << 30) as f64,
            if m.disk.is_empty() {
                "unknown"
            } else {
                &m.disk
            },
            m.kernel,
            if m.load_at_start.is_empty() {
                "unknown"
            } else {
                &m.load_at_start
            }
        );
        if let Some(f) = &self.fsync {
            let _ = writeln!(
                s,
                "- this disk's fdatasync (4 KiB append): p50 {}, p99 {}, max {} → at most \
                 ~{} durable group commits/s from one writer",
                fmt_us(f.p50_us),
                fmt_us(f.p99_us),
                fmt_us(f.max_us),
                fmt_rate(if f.p50_us > 0.0 { 1e6 / f.p50_us } else { 0.0 })
            );
        }
        if !self.systems.is_empty() {
            let _ = writeln!(s, "\n## Systems\n");
            let _ = writeln!(s, "| system | what it is |\n|---|---|");
            for sys in &self.systems {
                let _ = writeln!(s, "| {} | {} |", sys.name, cell(&sys.detail));
            }
        }
        let mut groups: Vec<(&str, &str)> = Vec::new();
        for r in &self.results {
            if !groups.contains(&(r.scenario.as_str(), r.case.as_str())) {
                groups.push((&r.scenario, &r.case));
            }
        }
        let mut last_scenario = "";
        for (scenario, case) in groups {
            if scenario != last_scenario {
                let _ = writeln!(s, "\n## {}", scenario_title(scenario));
                last_scenario = scenario;
            }
            let _ = writeln!(s, "\n### {}\n", cell(case));
            let _ = writeln!(
                s,
                "| system | unit | ops/s | events/s | p50 | p99 | p99.9 | max | errors | notes |"
            );
            let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
            for r in self
                .results
                .iter()
                .filter(|r| r.scenario == scenario && r.case == case)
            {
                let x = &r.summary;
                let mut notes: Vec<String> = r
                    .extra
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(t) => format!("{k}: {t}"),
                        v => format!("{k}: {v}"),
                    })
                    .collect();
                if let Some(sv) = &r.service {
                    notes.push(format!(
                        "service p50 {} / p99 {}",
                        fmt_us(sv.p50_us),
                        fmt_us(sv.p99_us)
                    ));
                }
                if let Some(e) = &r.error {
                    notes.push(format!("first error: {}", truncate(e, 160)));
                }
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    cell(&r.system),
                    cell(&r.unit),
                    fmt_rate(x.per_second),
                    r.events_per_second.map_or("".to_owned(), fmt_rate),
                    fmt_us(x.p50_us),
                    fmt_us(x.p99_us),
                    fmt_us(x.p999_us),
                    fmt_us(x.max_us),
                    x.errors,
                    cell(&notes.join("; "))
                );
            }
        }
        if !self.comparisons.is_empty() {
            let _ = writeln!(s, "\n## arbor against the baselines (same run)\n");
            let _ = writeln!(
                s,
                "Ratio > 1 means arbor is better: throughput arbor ÷ baseline, latency \
                 baseline ÷ arbor.\n"
            );
            let _ = writeln!(
                s,
                "| scenario | case | metric | arbor | baseline | arbor | baseline | ratio |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---:|---:|---:|");
            for c in &self.comparisons {
                let fmt = |v: f64| {
                    if c.metric == "throughput" {
                        format!("{}/s", fmt_rate(v))
                    } else {
                        fmt_us(v)
                    }
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    cell(&c.scenario),
                    cell(&c.case),
                    c.metric,
                    cell(&c.arbor),
                    cell(&c.baseline),
                    fmt(c.arbor_value),
                    fmt(c.baseline_value),
                    fmt_ratio(c.ratio)
                );
            }
        }
        if !self.goals.is_empty() {
            let _ = writeln!(s, "\n## Goals (issue 4)\n");
            let _ = writeln!(s, "| goal | measured | met |\n|---|---|---|");
            for g in &self.goals {
                let met = match g.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "not measured",
                };
                let _ = writeln!(s, "| {} | {} | {} |", cell(&g.goal), cell(&g.measured), met);
            }
        }
        if !self.timings.is_empty() {
            let t: Vec<String> = self
                .timings
                .iter()
                .map(|(k, v)| format!("{k} {:.0} s", v.as_f64().unwrap_or(0.0)))
                .collect();
            let _ = writeln!(s, "\nScenario wall times: {}.", t.join(", "));
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(s, "\n## Not run\n");
            for k in &self.skipped {
                let _ = writeln!(s, "- {} / {}: {}", k.scenario, k.system, k.reason);
            }
        }
        s
    }
}

fn a_round(x: f64) -> f64 {
    super::stats::round3(x)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

/// Escapes a table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn scenario_title(s: &str) -> String {
    match s {
        "append" => "Single-node appends".to_owned(),
        "batch" => "Batch appends".to_owned(),
        "path" => "Path to root".to_owned(),
        "subtree" => "Subtree".to_owned(),
        "fanout" => "Fan-out: append → subscriber delivery".to_owned(),
        "idle" => "Idle SSE subscribers: server memory per subscriber".to_owned(),
        "sync_lag" => "Sync lag (append acknowledged → visible in the sink)".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &str, case: &str, system: &str, per_second: f64, p50: f64) -> Row {
        Row {
            scenario: scenario.into(),
            case: case.into(),
            system: system.into(),
            unit: "event".into(),
            summary: Summary {
                count: 100,
                per_second,
                p50_us: p50,
                p99_us: p50 * 3.0,
                ..Summary::default()
            },
            service: None,
            events_per_second: None,
            extra: Map::new(),
            error: None,
        }
    }

    fn sample() -> Report {
        let mut r = Report {
            schema: SCHEMA,
            command: "arbor-bench compare --quick".into(),
            quick: true,
            ..Report::default()
        };
        r.results
            .push(row("append", "closed", "arbor", 20_000.0, 400.0));
        r.results
            .push(row("append", "closed", "seeds", 500.0, 16_000.0));
        let mut pg = row("append", "closed", "postgres | x", 2_000.0, 4_000.0);
        pg.error = Some("boom".into());
        pg.extra
            .insert("verified".into(), Value::from("100 of 100"));
        r.results.push(pg);
        r.results
            .push(row("path", "depth 1000", "arbor", 1_000.0, 50.0));
        r
    }

    #[test]
    fn ratios_say_how_many_times_better_arbor_is() {
        let mut r = sample();
        let t = r
            .compare("append", "closed", "arbor", "seeds", Metric::Throughput)
            .unwrap_or(0.0);
        assert!((t - 40.0).abs() < 1e-9);
        let l = r
            .compare("append", "closed", "arbor", "seeds", Metric::P50)
            .unwrap_or(0.0);
        assert!((l - 40.0).abs() < 1e-9);
        assert_eq!(
            r.compare("append", "closed", "arbor", "neo", Metric::P50),
            None,
            "missing baseline"
        );
        assert_eq!(r.comparisons.len(), 2);
        assert_eq!(r.comparisons[0].ratio, 40.0);
    }

    #[test]
    fn batch_throughput_counts_events() {
        let mut r = Report::default();
        let mut a = row("batch", "b", "arbor", 100.0, 1.0);
        a.events_per_second = Some(10_000.0);
        let mut b = row("batch", "b", "pg", 50.0, 1.0);
        b.events_per_second = Some(5_000.0);
        r.results.extend([a, b]);
        assert_eq!(
            r.compare("batch", "b", "arbor", "pg", Metric::Throughput),
            Some(2.0)
        );
    }

    #[test]
    fn markdown_has_a_table_per_case_and_escapes_cells() {
        let mut r = sample();
        r.compare("append", "closed", "arbor", "seeds", Metric::Throughput);
        r.goals.push(Goal {
            goal: "appends ≥ 20× seeds".into(),
            measured: "40×".into(),
            met: Some(true),
        });
        r.skipped.push(Skipped {
            scenario: "sync_lag".into(),
            system: "*".into(),
            reason: "not wired".into(),
        });
        let md = r.markdown();
        assert!(md.starts_with("# arbor bench compare --quick\n"));
        assert!(md.contains("## Single-node appends"));
        assert!(md.contains("### closed"));
        assert!(md.contains("### depth 1000"));
        assert!(md.contains("| arbor | event | 20 000 |"));
        assert!(md.contains("postgres \\| x"), "pipes escaped");
        assert!(md.contains("first error: boom"));
        assert!(md.contains(
            "| append | closed | throughput | arbor | seeds | 20 000/s | 500/s | 40.0× |"
        ));
        assert!(md.contains("| appends ≥ 20× seeds | 40× | yes |"));
        assert!(md.contains("- sync_lag / *: not wired"));
        // Every table row has as many cells as its header.
        for block in md.split("\n\n") {
            let lines: Vec<&str> = block.lines().filter(|l| l.starts_with('|')).collect();
            if let Some(h) = lines.first() {
                let cols = h.matches(" | ").count();
                for l in &lines[2..] {
                    assert_eq!(l.replace("\\|", "").matches(" | ").count(), cols, "{l}");
                }
            }
        }
    }

    #[test]
    fn json_round_trips_and_rejects_unknown_fields() {
        let r = sample();
        let text = serde_json::to_string_pretty(&r).unwrap_or_default();
        let back: Report = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, r);
        let mut v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        v["surprise"] = Value::from(1);
        assert!(serde_json::from_value::<Report>(v).is_err());
    }
}
