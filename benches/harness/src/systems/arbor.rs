//! arbor over HTTP (the DESIGN §4 API), and the in-process server the harness starts
//! when no `--url` is given.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use arbor_storage::{Durability, Node};

use crate::http::HttpClient;
use crate::workload::{NodeOp, Op};
use ::arbor::config::ServeConfig;
use ::arbor::server::Running;

/// A client of one arbor server, on the harness's keep-alive client ([`HttpClient`]).
#[derive(Clone)]
pub struct ArborHttp {
    client: HttpClient,
}

#[derive(Deserialize)]
struct Created {
    workflow_id: Uuid,
    root_id: Uuid,
}

#[derive(Deserialize)]
struct Nodes {
    nodes: Vec<Node>,
}

/// An answer of a node query that was decoded: its length and node count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    /// Bytes of the body.
    pub bytes: usize,
    /// Nodes in it.
    pub nodes: usize,
}

#[derive(Deserialize)]
struct Count {
    node_count: usize,
}

impl ArborHttp {
    /// A client of `base` (`http://127.0.0.1:PORT`); checks `/healthz`.
    pub async fn connect(base: &str, timeout: Duration) -> anyhow::Result<ArborHttp> {
        let a = ArborHttp {
            client: HttpClient::new(base, timeout)?,
        };
        a.healthz()
            .await
            .with_context(|| format!("arbor at {base} does not answer"))?;
        Ok(a)
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        self.client.base()
    }

    /// The HTTP client (SSE subscriptions open their streams on it).
    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    async fn post(&self, path: &str, body: &impl serde::Serialize) -> anyhow::Result<Bytes> {
        let json = Bytes::from(serde_json::to_vec(body)?);
        self.client
            .post(path, json)
            .await?
            .ok(&format!("POST {path}"))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Bytes> {
        self.client.get(path).await?.ok(&format!("GET {path}"))
    }

    /// Creates a workflow: `(workflow_id, root_id)`.
    pub async fn create_workflow(&self, prompt: &str) -> anyhow::Result<(Uuid, Uuid)> {
        let b = self
            .post(
                "/v1/workflows",
                &json!({ "system_prompt": prompt, "user_id": "bench" }),
            )
            .await?;
        let c: Created = serde_json::from_slice(&b)?;
        Ok((c.workflow_id, c.root_id))
    }

    /// Applies one op to workflow `wf`.
    pub async fn apply(&self, wf: Uuid, op: &Op) -> anyhow::Result<()> {
        match op {
            Op::Node(n) => self.append(wf, n).await,
            Op::Edge { kind, from, to } => self
                .post(
                    &format!("/v1/workflows/{wf}/edges"),
                    &json!({ "type": kind.as_str(), "from": from, "to": to }),
                )
                .await
                .map(drop),
            Op::Choose { decision, option } => self
                .post(
                    &format!("/v1/nodes/{decision}/choose"),
                    &json!({ "option_id": option }),
                )
                .await
                .map(drop),
        }
    }

    /// Appends one node.
    pub async fn append(&self, wf: Uuid, n: &NodeOp) -> anyhow::Result<()> {
        self.post(&format!("/v1/workflows/{wf}/nodes"), n)
            .await
            .map(drop)
    }

    /// Appends one node; returns its seq.
    pub async fn append_seq(&self, wf: Uuid, n: &NodeOp) -> anyhow::Result<u64> {
        #[derive(Deserialize)]
        struct Seq {
            seq: u64,
        }
        let b = self.post(&format!("/v1/workflows/{wf}/nodes"), n).await?;
        Ok(serde_json::from_slice::<Seq>(&b)?.seq)
    }

    /// Appends nodes atomically (one request).
    pub async fn append_batch(&self, wf: Uuid, nodes: &[NodeOp]) -> anyhow::Result<()> {
        self.post(
            &format!("/v1/workflows/{wf}/nodes/batch"),
            &json!({ "nodes": nodes }),
        )
        .await
        .map(drop)
    }

    /// `GET /v1/nodes/{id}/path`: the number of nodes (see [`ArborHttp::nodes`]).
    pub async fn path(&self, id: Uuid, known: Option<Known>) -> anyhow::Result<Known> {
        self.nodes(&format!("/v1/nodes/{id}/path"), known).await
    }

    /// `GET /v1/nodes/{id}/subtree`: the number of nodes (see [`ArborHttp::nodes`]).
    pub async fn subtree(&self, id: Uuid, known: Option<Known>) -> anyhow::Result<Known> {
        self.nodes(&format!("/v1/nodes/{id}/subtree"), known).await
    }

    /// `GET path`, an answer `{"nodes": [...]}` read to its end; its node count. An
    /// answer is decoded into arbor's `Node`s unless it is byte for byte as long as
    /// `known`, an earlier answer to the same request that was decoded (the data of a
    /// query series does not change, so the client's decoding stays out of the
    /// server's figure, as a database client's row decoding is cheap next to JSON).
    pub async fn nodes(&self, path: &str, known: Option<Known>) -> anyhow::Result<Known> {
        let b = self.get(path).await?;
        match known {
            Some(k) if k.bytes == b.len() => Ok(k),
            _ => {
                let n: Nodes = serde_json::from_slice(&b)?;
                Ok(Known {
                    bytes: b.len(),
                    nodes: n.nodes.len(),
                })
            }
        }
    }

    /// Nodes of workflow `wf`, root included.
    pub async fn node_count(&self, wf: Uuid) -> anyhow::Result<usize> {
        let b = self.get(&format!("/v1/workflows/{wf}")).await?;
        let c: Count = serde_json::from_slice(&b)?;
        Ok(c.node_count)
    }

    /// `GET /healthz`.
    pub async fn healthz(&self) -> anyhow::Result<()> {
        self.get("/healthz").await.map(drop)
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> anyhow::Result<Value> {
        let b = self.get("/v1/health").await?;
        Ok(serde_json::from_slice(&b)?)
    }

    /// Waits until every sink is `ok` (each has set up its schema and loaded its cursor:
    /// no longer `starting`, nor `degraded` by a failing setup), polling `/v1/health`
    /// every 50 ms; how long that took.
    pub async fn wait_sinks_started(&self, limit: Duration) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        loop {
            let h = self.health().await?;
            let starting: Vec<&str> = sinks_of(&h)
                .filter(|s| s.get("state").and_then(Value::as_str) != Some("ok"))
                .filter_map(|s| s.get("name").and_then(Value::as_str))
                .collect();
            if starting.is_empty() {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > limit {
                bail!("sinks not ready after {limit:?}: {}", starting.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Names of the sinks the server reports in `/v1/health`.
    pub async fn sink_names(&self) -> anyhow::Result<Vec<String>> {
        let h = self.health().await?;
        Ok(sinks_of(&h)
            .filter_map(|s| s.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }
}

/// The sinks of a `/v1/health` body (none if it has no sink list).
fn sinks_of(health: &Value) -> impl Iterator<Item = &Value> {
    health
        .pointer("/components/sinks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A server the harness started in-process, with its temporary data directory.
///
/// It runs on a tokio runtime of its own (as many worker threads as `arbor serve` has:
/// one per core), not on the harness's: the load generator and the server get threads
/// of their own, as a client process and `arbor serve` would, and neither is scheduled
/// behind the other's tasks.
pub struct LocalArbor {
    running: Running,
    runtime: ServerRuntime,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

/// The server's runtime; dropped without blocking (allowed inside the harness's own).
struct ServerRuntime(Option<tokio::runtime::Runtime>);

impl ServerRuntime {
    fn new() -> anyhow::Result<ServerRuntime> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("arbor-server")
            .enable_all()
            .build()
            .context("starting the server's runtime")?;
        Ok(ServerRuntime(Some(rt)))
    }

    /// Runs `f` on the server's runtime and waits for it.
    async fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let rt = self.0.as_ref().context("the server's runtime is gone")?;
        rt.spawn(f)
            .await
            .context("a task of the server's runtime failed")
    }
}

impl Drop for ServerRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Sinks for an in-process server (sync-lag scenario).
#[derive(Clone, Debug, Default)]
pub struct LocalSinks {
    /// Redis URL.
    pub redis_url: Option<String>,
    /// PostgreSQL URL.
    pub postgres_url: Option<String>,
    /// PostgreSQL schema of the replica tables (None: the server's default).
    pub postgres_schema: Option<String>,
    /// Neo4j (url, user, password).
    pub neo4j: Option<(String, String, String)>,
}

impl LocalArbor {
    /// Starts a server on 127.0.0.1:0 with a fresh temporary data directory.
    pub async fn start(durability: Durability, sinks: LocalSinks) -> anyhow::Result<LocalArbor> {
        let dir = tempfile::Builder::new()
            .prefix("arbor-bench-")
            .tempdir()
            .context("creating a temporary data directory")?;
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let mut cfg = ServeConfig::new(dir.path(), listen);
        cfg.durability = durability;
        // SSE fan-out: a thousand subscribers on one workflow at a thousand events a
        // second; a bigger broadcast buffer keeps them on the fast path.
        cfg.broadcast_capacity = 16_384;
        cfg.sync.redis_url = sinks.redis_url;
        cfg.sync.postgres_url = sinks.postgres_url;
        if let Some(schema) = sinks.postgres_schema {
            cfg.sync.postgres_schema = schema;
        }
        cfg.sync.neo4j = sinks
            .neo4j
            .map(|(url, user, password)| arbor_sync::Neo4jConfig {
                url,
                user,
                password,
            });
        let runtime = ServerRuntime::new()?;
        let running = runtime
            .run(::arbor::server::start(cfg))
            .await?
            .context("starting the in-process arbor server")?;
        let base = format!("http://{}", running.addr());
        Ok(LocalArbor {
            running,
            runtime,
            _dir: dir,
            base,
        })
    }

    /// The server's store (in-process scenarios).
    pub fn store(&self) -> &arbor_storage::Store {
        self.running.store()
    }

    /// Graceful shutdown; the data directory is removed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.runtime.run(self.running.shutdown()).await??;
        Ok(())
    }
}
