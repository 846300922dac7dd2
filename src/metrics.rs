//! Prometheus metrics of the server.
//!
//! Two kinds of series, every `_total` one a real counter:
//! - Recorded here as things happen, in the registry: append latency, group size and
//!   flush time, events appended, open SSE streams and their catch-ups.
//! - Read at scrape time from their owners, which keep the running totals and levels:
//!   the index size and head (the store), the decoded-node cache (the store), each
//!   sink's lag and counters (the sync workers' stats). [`Metrics::render`] builds these
//!   families from the owners' figures — a custom collector, in effect — instead of
//!   copying them into registered metrics. A copied total exported as a gauge is typed
//!   wrong (`rate()` does not treat its resets as resets); `IntCounter::inc_by(delta)`
//!   would type it right but needs a last-seen value per series, a lock so two scrapes
//!   do not both add the same delta, and a rule for a source that restarted from zero.
//!   Reading the owner's value at scrape time has none of that: it is the exact value,
//!   monotonic because the owner's is, and a restart is an ordinary counter reset.
//!
//! Neither `/metrics` nor `/v1/health` scans anything per request: every figure read at
//! scrape time is a running value kept by its owner.

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Registry, TextEncoder};

use arbor_storage::Store;
use arbor_sync::{SinkState, SinkStatus};

/// The metrics recorded as things happen (the rest is read at scrape time).
pub struct Metrics {
    registry: Registry,
    /// Seconds from submit to durable acknowledgement, per API append.
    pub append_latency: Histogram,
    /// Events per committed group.
    pub group_size: Histogram,
    /// Seconds to make one group durable.
    pub group_flush: Histogram,
    /// Events appended since start.
    pub events_total: IntCounter,
    /// Open SSE streams.
    pub sse_subscribers: IntGauge,
    /// Times an SSE stream fell behind the broadcast and caught up from the log.
    pub sse_lagged: IntCounter,
    /// Open HTTP connections (counted by the accept loop, `crate::listen`).
    pub http_connections: IntGauge,
    /// Requests refused 401: no, a malformed, unknown, expired or revoked token.
    pub auth_failures: IntCounter,
    /// Requests refused 429 (a token over its rate, an address over its failures).
    pub rate_limited: IntCounter,
}

fn buckets(start: f64, factor: f64, n: usize) -> Vec<f64> {
    prometheus::exponential_buckets(start, factor, n).unwrap_or_default()
}

impl Metrics {
    /// Creates and registers every recorded metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let append_latency = Histogram::with_opts(
            HistogramOpts::new(
                "arbor_append_latency_seconds",
                "Submit-to-ack latency of appends",
            )
            .buckets(buckets(0.000_05, 2.0, 18)),
        )?;
        let group_size = Histogram::with_opts(
            HistogramOpts::new("arbor_group_commit_events", "Events per group commit")
                .buckets(buckets(1.0, 2.0, 15)),
        )?;
        let group_flush = Histogram::with_opts(
            HistogramOpts::new(
                "arbor_group_flush_seconds",
                "Time to make one group durable",
            )
            .buckets(buckets(0.000_05, 2.0, 18)),
        )?;
        let events_total = IntCounter::new("arbor_events_total", "Events appended since start")?;
        let sse_subscribers = IntGauge::new("arbor_sse_subscribers", "Open SSE streams")?;
        let sse_lagged = IntCounter::new(
            "arbor_sse_catchups_total",
            "Times an SSE stream fell behind the broadcast and caught up from the log",
        )?;
        registry.register(Box::new(append_latency.clone()))?;
        registry.register(Box::new(group_size.clone()))?;
        registry.register(Box::new(group_flush.clone()))?;
        registry.register(Box::new(events_total.clone()))?;
        registry.register(Box::new(sse_subscribers.clone()))?;
        registry.register(Box::new(sse_lagged.clone()))?;
        let http_connections = IntGauge::new("arbor_http_connections", "Open HTTP connections")?;
        registry.register(Box::new(http_connections.clone()))?;
        let auth_failures = IntCounter::new(
            "arbor_auth_failures_total",
            "Requests refused for a missing or invalid access token",
        )?;
        let rate_limited = IntCounter::new(
            "arbor_rate_limited_total",
            "Requests refused 429 for going over a rate limit",
        )?;
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        Ok(Metrics {
            registry,
            append_latency,
            group_size,
            group_flush,
            events_total,
            sse_subscribers,
            sse_lagged,
            http_connections,
            auth_failures,
            rate_limited,
        })
    }

    /// Records one committed group.
    pub fn observe_group(&self, g: arbor_storage::GroupStats) {
        self.group_size.observe(g.events as f64);
        self.group_flush.observe(g.flush.as_secs_f64());
        self.events_total.inc_by(g.events as u64);
    }

    /// The Prometheus text exposition: the recorded metrics, and the figures of `store`
    /// and of the sinks in `sinks` as they are now.
    pub fn render(&self, store: &Store, sinks: &[SinkStatus]) -> Result<String, prometheus::Error> {
        let mut families = self.registry.gather();
        families.extend(store_families(store));
        families.extend(sink_families(sinks));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut buf = Vec::new();
        TextEncoder::new().encode(&families, &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// A family read at scrape time: name, help, type.
struct Family(&'static str, &'static str, MetricType);

impl Family {
    /// The family with one sample per `(sink label, value)`; None when there is none
    /// (the text format has no empty family).
    fn with<'a>(
        &self,
        samples: impl IntoIterator<Item = (Option<&'a str>, f64)>,
    ) -> Option<MetricFamily> {
        self.labelled(samples.into_iter().map(|(sink, value)| {
            let labels = sink.map(|s| vec![("sink", s.to_owned())]);
            (labels.unwrap_or_default(), value)
        }))
    }

    /// The family with one sample per `(labels, value)`; None when there is none.
    fn labelled(
        &self,
        samples: impl IntoIterator<Item = (Vec<(&'static str, String)>, f64)>,
    ) -> Option<MetricFamily> {
        let metrics: Vec<Metric> = samples
            .into_iter()
            .map(|(labels, value)| {
                let mut m = Metric::default();
                if !labels.is_empty() {
                    let pairs = labels.into_iter().map(|(name, value)| {
                        let mut label = LabelPair::default();
                        label.set_name(name.to_owned());
                        label.set_value(value);
                        label
                    });
                    m.set_label(pairs.collect());
                }
                match self.2 {
                    MetricType::COUNTER => {
                        let mut c = Counter::default();
                        c.set_value(value);
                        m.set_counter(c);
                    }
                    _ => {
                        let mut g = Gauge::default();
                        g.set_value(value);
                        m.set_gauge(g);
                    }
                }
                m
            })
            .collect();
        if metrics.is_empty() {
            return None;
        }
        let mut f = MetricFamily::default();
        f.set_name(self.0.to_owned());
        f.set_help(self.1.to_owned());
        f.set_field_type(self.2);
        f.set_metric(metrics);
        Some(f)
    }

    /// The family with one unlabelled sample.
    fn one(&self, value: u64) -> Option<MetricFamily> {
        self.with([(None, value as f64)])
    }
}

use MetricType::{COUNTER, GAUGE};

/// The store's figures: index size, head, decoded-node cache.
fn store_families(store: &Store) -> Vec<MetricFamily> {
    let (nodes, workflows) = store.index_size();
    let c = store.node_cache_stats();
    [
        Family("arbor_index_nodes", "Nodes in the in-memory index", GAUGE).one(nodes as u64),
        Family("arbor_index_workflows", "Workflows in the index", GAUGE).one(workflows as u64),
        Family("arbor_head_seq", "Durable head of the log", GAUGE).one(store.head()),
        Family(
            "arbor_log_flushes_total",
            "Flushes (each an fdatasync) that made appends durable",
            COUNTER,
        )
        .one(store.flushes()),
        Family(
            "arbor_node_cache_hits_total",
            "Node reads answered from the decoded-node cache",
            COUNTER,
        )
        .one(c.hits),
        Family(
            "arbor_node_cache_misses_total",
            "Node reads that loaded the node from disk",
            COUNTER,
        )
        .one(c.misses),
        Family(
            "arbor_node_cache_evictions_total",
            "Nodes evicted from the decoded-node cache",
            COUNTER,
        )
        .one(c.evictions),
        Family(
            "arbor_node_cache_bytes",
            "Approximate bytes held by the decoded-node cache",
            GAUGE,
        )
        .one(c.bytes),
        Family(
            "arbor_node_cache_entries",
            "Nodes held by the decoded-node cache",
            GAUGE,
        )
        .one(c.entries),
        Family(
            "arbor_node_cache_capacity_bytes",
            "Byte budget of the decoded-node cache (0: disabled)",
            GAUGE,
        )
        .one(c.capacity),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// A family of per-sink figures and how to read its value from a sink's status.
type SinkSeries = (Family, fn(&SinkStatus) -> f64);

/// Each sink's figures, labelled `sink`.
fn sink_families(sinks: &[SinkStatus]) -> Vec<MetricFamily> {
    let series: [SinkSeries; 11] = [
        (
            Family("arbor_sink_lag_events", "Events not yet replicated", GAUGE),
            |s| s.lag_events as f64,
        ),
        (
            Family(
                "arbor_sink_lag_seconds",
                "Age of the oldest unreplicated event",
                GAUGE,
            ),
            |s| s.lag_seconds,
        ),
        (
            Family("arbor_sink_batches_total", "Batches written", COUNTER),
            |s| s.batches as f64,
        ),
        (
            Family("arbor_sink_events_total", "Events written", COUNTER),
            |s| s.events as f64,
        ),
        (
            Family("arbor_sink_retries_total", "Retried writes", COUNTER),
            |s| s.retries as f64,
        ),
        (
            Family("arbor_sink_errors_total", "Failed writes", COUNTER),
            |s| s.errors as f64,
        ),
        (
            Family(
                "arbor_sink_dead_letters",
                "Unresolved dead letters (events the sink refused)",
                GAUGE,
            ),
            |s| s.dead_letters as f64,
        ),
        (
            Family(
                "arbor_sink_audited_workflows_total",
                "Workflows anti-entropy compared with the log",
                COUNTER,
            ),
            |s| s.anti_entropy.workflows_audited as f64,
        ),
        (
            Family(
                "arbor_sink_divergences_total",
                "Workflows anti-entropy found diverged from the log",
                COUNTER,
            ),
            |s| s.anti_entropy.divergences as f64,
        ),
        (
            Family(
                "arbor_sink_repairs_total",
                "Diverged workflows anti-entropy repaired",
                COUNTER,
            ),
            |s| s.anti_entropy.repaired as f64,
        ),
        (
            Family(
                "arbor_sink_unrepaired_workflows",
                "Workflows diverged from the log that the repair did not mend",
                GAUGE,
            ),
            |s| s.anti_entropy.unrepaired as f64,
        ),
    ];
    let states = [
        SinkState::Starting,
        SinkState::Ok,
        SinkState::Degraded,
        SinkState::Stopped,
    ];
    let state = Family(
        "arbor_sink_state",
        "1 for the state each sink is in, 0 for the others",
        GAUGE,
    )
    .labelled(sinks.iter().flat_map(|s| {
        states.iter().map(move |st| {
            let labels = vec![("sink", s.name.clone()), ("state", st.as_str().to_owned())];
            (labels, f64::from(u8::from(s.state == *st)))
        })
    }));
    series
        .iter()
        .filter_map(|(family, value)| {
            family.with(sinks.iter().map(|s| (Some(s.name.as_str()), value(s))))
        })
        .chain(state)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_storage::StoreOptions;

    fn status(name: &str, batches: u64) -> SinkStatus {
        SinkStatus {
            name: name.to_owned(),
            state: SinkState::Ok,
            cursor: 7,
            lag_events: 2,
            lag_seconds: 0.5,
            last_error: None,
            batches,
            events: 11,
            retries: 3,
            errors: 4,
            dead_letters: 1,
            anti_entropy: arbor_sync::AuditStatus {
                divergences: 3,
                repaired: 2,
                unrepaired: 1,
                ..Default::default()
            },
            reasons: Vec::new(),
        }
    }

    /// The `# TYPE` of every family, by name.
    fn types(text: &str) -> std::collections::BTreeMap<&str, &str> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect()
    }

    #[tokio::test]
    async fn totals_are_counters_with_the_owners_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let m = Metrics::new().unwrap();
        let text = m
            .render(&store, &[status("redis", 5), status("postgres", 9)])
            .unwrap();
        store.close().await;
        let types = types(&text);
        let sink_counters = types
            .iter()
            .filter(|(n, k)| n.starts_with("arbor_sink_") && **k == "counter")
            .count();
        assert_eq!(
            sink_counters, 7,
            "batches, events, retries, errors, audited workflows, divergences, repairs"
        );
        // Unresolved dead letters go down when resolved: a gauge.
        assert_eq!(types.get("arbor_sink_dead_letters"), Some(&"gauge"));
        for (name, kind) in &types {
            assert_eq!(
                name.ends_with("_total"),
                *kind == "counter",
                "{name}: {kind}"
            );
        }
        assert_eq!(types.get("arbor_sink_lag_events"), Some(&"gauge"));
        assert_eq!(types.get("arbor_head_seq"), Some(&"gauge"));
        assert!(
            text.contains("arbor_sink_batches_total{sink=\"redis\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("arbor_sink_batches_total{sink=\"postgres\"} 9\n"));
        assert!(text.contains("arbor_sink_lag_seconds{sink=\"redis\"} 0.5\n"));
        assert!(text.contains("arbor_sink_dead_letters{sink=\"redis\"} 1\n"));
        assert!(text.contains("arbor_sink_divergences_total{sink=\"redis\"} 3\n"));
        assert!(text.contains("arbor_sink_repairs_total{sink=\"redis\"} 2\n"));
        assert!(text.contains("arbor_sink_unrepaired_workflows{sink=\"redis\"} 1\n"));
        assert_eq!(types.get("arbor_sink_repairs_total"), Some(&"counter"));
        assert!(
            text.contains("arbor_sink_state{sink=\"redis\",state=\"ok\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("arbor_sink_state{sink=\"redis\",state=\"degraded\"} 0\n"));
        assert!(text.contains("arbor_head_seq 0\n"));
        assert!(text.contains("arbor_log_flushes_total 0\n"), "{text}");
    }

    #[tokio::test]
    async fn no_sink_no_sink_families() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let text = Metrics::new().unwrap().render(&store, &[]).unwrap();
        store.close().await;
        assert!(!text.contains("arbor_sink_"), "{text}");
        assert!(text.contains("# TYPE arbor_node_cache_hits_total counter\n"));
    }
}
