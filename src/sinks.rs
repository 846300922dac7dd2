//! The seam between the server and the sync workers of `arbor-sync`: builds the
//! sync configuration from the server's, starts one worker per configured sink, and
//! hands their status ([`arbor_sync::SinkStatus`], as it is) to `/v1/health` and
//! `/metrics`. With no sink configured nothing runs.

use std::sync::Arc;

use arbor_storage::Store;
use arbor_sync::{Neo4jConfig, SinkStatus, SyncConfig, SyncSet};

use crate::config::ServeConfig;
use crate::http::SinkReport;

/// The sync configuration for a server configuration.
pub fn sync_config(cfg: &ServeConfig) -> SyncConfig {
    SyncConfig {
        redis_url: cfg.redis_url.clone(),
        postgres_url: cfg.postgres_url.clone(),
        postgres_schema: cfg.postgres_schema.clone(),
        neo4j: cfg.neo4j.as_ref().map(|n| Neo4jConfig {
            url: n.url.clone(),
            user: n.user.clone(),
            password: n.password.clone(),
        }),
        ..SyncConfig::default()
    }
}

/// The running sync workers.
pub struct Sinks {
    set: Arc<SyncSet>,
}

/// Reports the workers' state to health and metrics.
pub struct Reporter {
    set: Arc<SyncSet>,
}

impl SinkReport for Reporter {
    fn sinks(&self) -> Vec<SinkStatus> {
        self.set.status()
    }
}

impl Sinks {
    /// Starts a worker per configured sink; `None` when no sink is configured. A sink
    /// that cannot be reached at start is not an error: it shows as degraded and retries.
    pub fn start(store: &Store, cfg: &ServeConfig) -> Result<Option<Sinks>, arbor_sync::SyncError> {
        let config = sync_config(cfg);
        if config.sink_names().is_empty() {
            return Ok(None);
        }
        let set = arbor_sync::start(store.clone(), config)?;
        Ok(Some(Sinks { set: Arc::new(set) }))
    }

    /// A reporter for health and metrics.
    pub fn reporter(&self) -> Reporter {
        Reporter {
            set: self.set.clone(),
        }
    }

    /// Stops every worker (after the in-flight write, within the grace period).
    pub async fn shutdown(self) {
        match Arc::try_unwrap(self.set) {
            Ok(set) => set.shutdown().await,
            Err(_) => tracing::warn!("sync workers still referenced at shutdown; dropping them"),
        }
    }
}
