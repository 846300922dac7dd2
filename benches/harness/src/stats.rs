//! Latency recording: an HdrHistogram of nanoseconds per measured series, and the
//! summary the reports print (count, errors, throughput, p50/p99/p99.9/max, mean).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency a histogram holds (longer ones are clamped to it): one hour.
const HIGHEST_NS: u64 = 3_600_000_000_000;

/// Latencies of one series, in nanoseconds, plus a count of failed operations.
#[derive(Clone, Debug)]
pub struct Recorder {
    hist: Histogram<u64>,
    errors: u64,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::with_precision(3)
    }
}

impl Recorder {
    /// A recorder keeping `sigfig` significant decimal digits (3 = 0.1 % resolution;
    /// 2 = 1 % at a tenth of the memory, for the thousand SSE subscribers).
    pub fn with_precision(sigfig: u8) -> Recorder {
        // Creation fails only for sigfig > 5 or low < 1 or high < 2 × low: with these
        // constant bounds and the clamp it cannot (no input reaches it).
        #[allow(clippy::expect_used)]
        let hist = Histogram::new_with_bounds(1, HIGHEST_NS, sigfig.clamp(1, 5))
            .expect("constant histogram bounds are valid");
        Recorder { hist, errors: 0 }
    }

    /// Records one successful operation that took `d`.
    pub fn record(&mut self, d: Duration) {
        self.record_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one latency in nanoseconds (clamped to 1 ns ..= 1 h).
    pub fn record_ns(&mut self, ns: u64) {
        self.hist.saturating_record(ns.clamp(1, HIGHEST_NS));
    }

    /// Counts one failed operation (not in the latency figures).
    pub fn error(&mut self) {
        self.errors += 1;
    }

    /// Successful operations recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Failed operations.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Adds another recorder's figures to this one.
    pub fn merge(&mut self, other: &Recorder) {
        // Both have the same bounds, so adding cannot fail; if it ever did, fall back to
        // re-recording every value.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.errors += other.errors;
    }

    /// The latency at quantile `q` (0..=1) in nanoseconds; 0 when empty.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(q.clamp(0.0, 1.0))
        }
    }

    /// The summary over `elapsed` wall time.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let us = |ns: u64| ns as f64 / 1_000.0;
        let secs = elapsed.as_secs_f64();
        let n = self.count();
        Summary {
            count: n,
            errors: self.errors,
            seconds: round3(secs),
            per_second: if secs > 0.0 {
                round3(n as f64 / secs)
            } else {
                0.0
            },
            p50_us: round3(us(self.quantile_ns(0.50))),
            p99_us: round3(us(self.quantile_ns(0.99))),
            p999_us: round3(us(self.quantile_ns(0.999))),
            max_us: round3(us(if n == 0 { 0 } else { self.hist.max() })),
            mean_us: round3(if n == 0 {
                0.0
            } else {
                self.hist.mean() / 1_000.0
            }),
        }
    }
}

/// Rounds to three decimals (keeps the JSON readable; the histogram itself has at most
/// three significant digits).
pub fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1_000.0).round() / 1_000.0
    } else {
        0.0
    }
}

/// Figures of one measured series. Latencies in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Successful operations.
    pub count: u64,
    /// Failed operations (not in the latencies).
    pub errors: u64,
    /// Wall time of the series.
    pub seconds: f64,
    /// Successful operations per second of wall time.
    pub per_second: f64,
    /// Median latency.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest latency.
    pub max_us: f64,
    /// Mean latency.
    pub mean_us: f64,
}

/// A latency in µs, printed with a unit that keeps three significant figures.
pub fn fmt_us(us: f64) -> String {
    if !us.is_finite() || us <= 0.0 {
        return "–".to_owned();
    }
    if us < 1.0 {
        format!("{:.0} ns", us * 1_000.0)
    } else if us < 10.0 {
        format!("{us:.2} µs")
    } else if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 10_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else if us < 1_000_000.0 {
        format!("{:.0} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

/// A rate, rounded sensibly.
pub fn fmt_rate(x: f64) -> String {
    if !x.is_finite() || x <= 0.0 {
        "–".to_owned()
    } else if x >= 100.0 {
        group_thousands(x.round() as u64)
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// `1234567` → `1 234 567` (thin groups, as the issue writes numbers).
pub fn group_thousands(n: u64) -> String {
    let digits: Vec<char> = n.to_string().chars().collect();
    let mut groups: Vec<String> = digits.rchunks(3).map(|c| c.iter().collect()).collect();
    groups.reverse();
    groups.join(" ")
}

/// A ratio such as `23.4×`.
pub fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() || r <= 0.0 {
        "–".to_owned()
    } else if r >= 100.0 {
        format!("{}×", group_thousands(r.round() as u64))
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_series() {
        let mut r = Recorder::default();
        // 1..=10_000 µs, one each.
        for us in 1..=10_000u64 {
            r.record(Duration::from_micros(us));
        }
        let s = r.summary(Duration::from_secs(2));
        assert_eq!(s.count, 10_000);
        assert_eq!(s.per_second, 5_000.0);
        // Three significant digits: within 0.1 %.
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(near(s.p50_us, 5_000.0), "p50 {}", s.p50_us);
        assert!(near(s.p99_us, 9_900.0), "p99 {}", s.p99_us);
        assert!(near(s.p999_us, 9_990.0), "p99.9 {}", s.p999_us);
        assert!(near(s.max_us, 10_000.0), "max {}", s.max_us);
        assert!(near(s.mean_us, 5_000.5), "mean {}", s.mean_us);
    }

    #[test]
    fn a_tail_shows_only_in_the_high_percentiles() {
        let mut r = Recorder::default();
        for _ in 0..990 {
            r.record(Duration::from_micros(100));
        }
        for _ in 0..10 {
            r.record(Duration::from_millis(50));
        }
        let s = r.summary(Duration::from_secs(1));
        assert!((s.p50_us - 100.0).abs() < 0.2, "{}", s.p50_us);
        assert!(
            (s.p99_us - 100.0).abs() < 0.2,
            "p99 is the 990th value: {}",
            s.p99_us
        );
        assert!((s.p999_us - 50_000.0).abs() < 50.0, "{}", s.p999_us);
        assert!((s.max_us - 50_000.0).abs() < 50.0);
    }

    #[test]
    fn merge_adds_counts_and_errors() {
        let mut a = Recorder::default();
        let mut b = Recorder::with_precision(2);
        a.record_ns(1_000);
        a.error();
        b.record_ns(2_000_000);
        b.record_ns(3_000_000);
        b.error();
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.errors(), 2);
        let max = a.summary(Duration::from_secs(1)).max_us;
        assert!((max - 3_000.0).abs() <= 30.0, "{max}");
    }

    #[test]
    fn empty_and_out_of_range_values() {
        let r = Recorder::default();
        let s = r.summary(Duration::ZERO);
        assert_eq!(s, Summary::default());
        let mut r = Recorder::default();
        r.record_ns(0);
        r.record(Duration::from_secs(10_000));
        let s = r.summary(Duration::from_secs(1));
        assert_eq!(s.count, 2);
        assert!(
            s.max_us >= 3_599_000_000.0,
            "clamped to one hour: {}",
            s.max_us
        );
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_us(0.25), "250 ns");
        assert_eq!(fmt_us(3.456), "3.46 µs");
        assert_eq!(fmt_us(456.0), "456 µs");
        assert_eq!(fmt_us(4_560.0), "4.56 ms");
        assert_eq!(fmt_us(45_600.0), "46 ms");
        assert_eq!(fmt_us(4_560_000.0), "4.56 s");
        assert_eq!(fmt_us(0.0), "–");
        assert_eq!(group_thousands(1_234_567), "1 234 567");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(fmt_rate(12_345.4), "12 345");
        assert_eq!(fmt_ratio(23.44), "23.4×");
        assert_eq!(fmt_ratio(1_520.0), "1 520×");
        assert_eq!(fmt_ratio(f64::NAN), "–");
    }
}
