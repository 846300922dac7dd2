//! The seam between the server and the sync workers (arbor-sync). With no sink
//! configured nothing runs.

use crate::config::ServeConfig;
use crate::http::health::SinkHealth;
use crate::http::SinkReport;
use arbor_storage::Store;

/// The running sync workers.
pub struct Sinks {}

/// Reports the workers' state to health and metrics.
pub struct Reporter {}

impl SinkReport for Reporter {
    fn sinks(&self) -> Vec<SinkHealth> {
        Vec::new()
    }
}

impl Sinks {
    /// Starts a worker per configured sink; `None` when no sink is configured.
    pub async fn start(_store: &Store, cfg: &ServeConfig) -> Option<Sinks> {
        if cfg.redis_url.is_none() && cfg.postgres_url.is_none() && cfg.neo4j.is_none() {
            return None;
        }
        tracing::warn!("sink URLs given but sync workers are not wired yet");
        None
    }

    /// A reporter for health and metrics.
    pub fn reporter(&self) -> Reporter {
        Reporter {}
    }

    /// Stops every worker.
    pub async fn shutdown(self) {}
}
