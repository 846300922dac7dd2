//! Prometheus metrics of the server.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the server exports.
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
    /// Nodes in the index (set at scrape).
    pub index_nodes: IntGauge,
    /// Workflows in the index (set at scrape).
    pub index_workflows: IntGauge,
    /// Durable head seq (set at scrape).
    pub head_seq: IntGauge,
    /// Open SSE streams.
    pub sse_subscribers: IntGauge,
    /// Times an SSE stream fell behind the broadcast and caught up from the log.
    pub sse_lagged: IntCounter,
    /// Per-sink gauges (set at scrape): lag in events.
    pub sink_lag_events: IntGaugeVec,
    /// Per-sink lag in seconds (age of the oldest unreplicated event).
    pub sink_lag_seconds: prometheus::GaugeVec,
    /// Per-sink counters, exported as gauges of the worker's running totals.
    pub sink_batches: IntGaugeVec,
    /// Per-sink retries.
    pub sink_retries: IntGaugeVec,
    /// Per-sink errors.
    pub sink_errors: IntGaugeVec,
    /// Per-sink dead letters.
    pub sink_dead_letters: IntGaugeVec,
    /// Node-cache figures (set at scrape from the store's running totals).
    pub node_cache: NodeCacheGauges,
}

/// Gauges of the store's decoded-node cache, set at scrape.
pub struct NodeCacheGauges {
    /// Lookups answered from the cache.
    pub hits: IntGauge,
    /// Lookups that went to disk.
    pub misses: IntGauge,
    /// Nodes evicted to stay within the budget.
    pub evictions: IntGauge,
    /// Approximate bytes held.
    pub bytes: IntGauge,
    /// Nodes held.
    pub entries: IntGauge,
    /// The byte budget (0: disabled).
    pub capacity_bytes: IntGauge,
}

impl NodeCacheGauges {
    fn new(registry: &Registry) -> Result<NodeCacheGauges, prometheus::Error> {
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(NodeCacheGauges {
            hits: gauge(
                "arbor_node_cache_hits_total",
                "Node reads answered from the decoded-node cache",
            )?,
            misses: gauge(
                "arbor_node_cache_misses_total",
                "Node reads that loaded the node from disk",
            )?,
            evictions: gauge(
                "arbor_node_cache_evictions_total",
                "Nodes evicted from the decoded-node cache",
            )?,
            bytes: gauge(
                "arbor_node_cache_bytes",
                "Approximate bytes held by the decoded-node cache",
            )?,
            entries: gauge(
                "arbor_node_cache_entries",
                "Nodes held by the decoded-node cache",
            )?,
            capacity_bytes: gauge(
                "arbor_node_cache_capacity_bytes",
                "Byte budget of the decoded-node cache (0: disabled)",
            )?,
        })
    }

    /// Sets every gauge from the store's figures.
    pub fn set(&self, s: arbor_storage::NodeCacheStats) {
        let v = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        self.hits.set(v(s.hits));
        self.misses.set(v(s.misses));
        self.evictions.set(v(s.evictions));
        self.bytes.set(v(s.bytes));
        self.entries.set(v(s.entries));
        self.capacity_bytes.set(v(s.capacity));
    }
}

fn buckets(start: f64, factor: f64, n: usize) -> Vec<f64> {
    prometheus::exponential_buckets(start, factor, n).unwrap_or_default()
}

impl Metrics {
    /// Creates and registers every metric.
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
        let index_nodes = IntGauge::new("arbor_index_nodes", "Nodes in the in-memory index")?;
        let index_workflows = IntGauge::new("arbor_index_workflows", "Workflows in the index")?;
        let head_seq = IntGauge::new("arbor_head_seq", "Durable head of the log")?;
        let sse_subscribers = IntGauge::new("arbor_sse_subscribers", "Open SSE streams")?;
        let sse_lagged = IntCounter::new(
            "arbor_sse_catchups_total",
            "Times an SSE stream fell behind the broadcast and caught up from the log",
        )?;
        let sink = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["sink"]);
        let sink_lag_events = sink("arbor_sink_lag_events", "Events not yet replicated")?;
        let sink_lag_seconds = prometheus::GaugeVec::new(
            Opts::new(
                "arbor_sink_lag_seconds",
                "Age of the oldest unreplicated event",
            ),
            &["sink"],
        )?;
        let sink_batches = sink("arbor_sink_batches_total", "Batches written")?;
        let sink_retries = sink("arbor_sink_retries_total", "Retried writes")?;
        let sink_errors = sink("arbor_sink_errors_total", "Failed writes")?;
        let sink_dead_letters = sink("arbor_sink_dead_letters_total", "Dead-lettered events")?;
        registry.register(Box::new(append_latency.clone()))?;
        registry.register(Box::new(group_size.clone()))?;
        registry.register(Box::new(group_flush.clone()))?;
        registry.register(Box::new(events_total.clone()))?;
        registry.register(Box::new(index_nodes.clone()))?;
        registry.register(Box::new(index_workflows.clone()))?;
        registry.register(Box::new(head_seq.clone()))?;
        registry.register(Box::new(sse_subscribers.clone()))?;
        registry.register(Box::new(sse_lagged.clone()))?;
        registry.register(Box::new(sink_lag_events.clone()))?;
        registry.register(Box::new(sink_lag_seconds.clone()))?;
        registry.register(Box::new(sink_batches.clone()))?;
        registry.register(Box::new(sink_retries.clone()))?;
        registry.register(Box::new(sink_errors.clone()))?;
        registry.register(Box::new(sink_dead_letters.clone()))?;
        let node_cache = NodeCacheGauges::new(&registry)?;
        Ok(Metrics {
            registry,
            append_latency,
            group_size,
            group_flush,
            events_total,
            index_nodes,
            index_workflows,
            head_seq,
            sse_subscribers,
            sse_lagged,
            sink_lag_events,
            sink_lag_seconds,
            sink_batches,
            sink_retries,
            sink_errors,
            sink_dead_letters,
            node_cache,
        })
    }

    /// Records one committed group.
    pub fn observe_group(&self, g: arbor_storage::GroupStats) {
        self.group_size.observe(g.events as f64);
        self.group_flush.observe(g.flush.as_secs_f64());
        self.events_total.inc_by(g.events as u64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
