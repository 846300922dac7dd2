//! `arbor serve`: opens the store, starts the sync workers, serves HTTP, and shuts
//! down gracefully (stop accepting, finish in-flight appends, end SSE streams,
//! final flush, stop sinks).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use arbor_storage::{Store, StoreOptions};

use crate::config::ServeConfig;
use crate::http::{self, AppState, Shared, SinkReport};
use crate::metrics::Metrics;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is refused.
    #[error("{0}")]
    Config(String),
    /// The store could not be opened.
    #[error("opening the store in {dir}: {source}")]
    Store {
        /// Data directory.
        dir: String,
        /// Why.
        source: arbor_storage::StorageError,
    },
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A background task failed.
    #[error("{0}")]
    Task(String),
}

/// A running server.
pub struct Running {
    addr: SocketAddr,
    store: Store,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), std::io::Error>>,
    /// Closed when every SSE stream (a response body holding a sender) has ended.
    tasks: mpsc::Receiver<()>,
    sinks: Option<crate::sinks::Sinks>,
    connections: prometheus::IntGauge,
}

impl Running {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// HTTP connections open now (the `arbor_http_connections` gauge).
    pub fn open_connections(&self) -> i64 {
        self.connections.get()
    }

    /// Graceful shutdown: see the module docs.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.shutdown.send_replace(true);
        let served = self
            .task
            .await
            .map_err(|e| ServeError::Task(e.to_string()))?;
        let mut tasks = self.tasks;
        let _ = tasks.recv().await;
        self.store.close().await;
        // Sinks last: they drain what the final group made durable.
        if let Some(sinks) = self.sinks {
            sinks.shutdown().await;
        }
        served.map_err(|e| ServeError::Task(e.to_string()))
    }

    /// Waits for SIGINT/SIGTERM, then shuts down.
    pub async fn run_until_signal(self) -> Result<(), ServeError> {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        self.shutdown().await
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// DESIGN §8: a store without tokens runs open, so only on loopback; a non-loopback
/// bind needs tokens. Checked before binding.
fn check_access(cfg: &ServeConfig, store: &Store) -> Result<(), ServeError> {
    if store.has_tokens() || cfg.listen.ip().is_loopback() {
        return Ok(());
    }
    Err(ServeError::Config(format!(
        "refusing to listen on non-loopback {} without access tokens: create one first \
         (`arbor token create --data-dir DIR --name NAME --role admin`) or bind 127.0.0.1",
        cfg.listen
    )))
}

/// The warnings of DESIGN §8, once listening: running open (no tokens, loopback), or
/// tokens travelling in clear text (beyond loopback without TLS).
fn warn_about_access(cfg: &ServeConfig, store: &Store) {
    if !store.has_tokens() {
        tracing::warn!(
            "no access tokens: running open on loopback (every request acts as \
             `anonymous` with every right); create a token to require one"
        );
    } else if !cfg.listen.ip().is_loopback() && cfg.tls.is_none() {
        tracing::warn!(
            listen = %cfg.listen,
            "listening beyond loopback without TLS: tokens travel in clear text"
        );
    }
}

/// Opens the store and starts serving; returns once the listener is bound.
pub async fn start(cfg: ServeConfig) -> Result<Running, ServeError> {
    let metrics = Arc::new(Metrics::new()?);
    let connections = metrics.http_connections.clone();
    let observer = metrics.clone();
    let options = StoreOptions {
        durability: cfg.durability,
        cache_mb: cfg.cache_mb,
        node_cache_mb: cfg.node_cache_mb,
        broadcast_capacity: cfg.broadcast_capacity,
        commit_delay: cfg.commit_delay,
        on_group: Some(Arc::new(move |g| observer.observe_group(g))),
        ..StoreOptions::default()
    };
    let dir = cfg.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, options))
        .await
        .map_err(|e| ServeError::Task(e.to_string()))?
        .map_err(|source| ServeError::Store {
            dir: cfg.data_dir.display().to_string(),
            source,
        })?;
    check_access(&cfg, &store)?;
    let tls = match &cfg.tls {
        None => None,
        Some(files) => Some(
            crate::listen::tls_acceptor(&files.cert, &files.key)
                .map_err(|e| ServeError::Config(format!("TLS: {e}")))?,
        ),
    };
    let sinks = crate::sinks::Sinks::start(&store, &cfg)
        .map_err(|e| ServeError::Task(format!("starting sync workers: {e}")))?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (task_tx, tasks) = mpsc::channel(1);
    let state = AppState::new(Shared {
        tasks: task_tx,
        access: Arc::new(http::auth::Access::new(
            cfg.rate_limit,
            cfg.auth_failure_rate,
        )),
        store: store.clone(),
        live: http::sse::Live::start(&store, cfg.broadcast_capacity),
        limits: cfg.limits.clone(),
        metrics,
        shutdown: shutdown_rx.clone(),
        sinks: sinks
            .as_ref()
            .map(|s| Arc::new(s.reporter()) as Arc<dyn SinkReport>),
        cors_origins: cfg.cors_origins.clone(),
    });
    let app = http::router(state);
    let stop = shutdown_rx;
    let listen = crate::listen::ListenOptions {
        header_timeout: cfg.header_timeout,
        max_connections: cfg.max_connections,
        connections: Some(connections.clone()),
        tls,
    };
    let task = tokio::spawn(crate::listen::serve(listener, app, listen, stop));
    tracing::info!(config = %cfg, "configuration (passwords masked)");
    warn_about_access(&cfg, &store);
    tracing::info!(%addr, data_dir = %cfg.data_dir.display(), durability = ?cfg.durability, "arbor listening");
    Ok(Running {
        addr,
        store,
        shutdown,
        task,
        tasks,
        sinks,
        connections,
    })
}
