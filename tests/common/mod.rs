//! Shared helpers of the integration tests: a real server on 127.0.0.1:0 in a
//! temporary directory, a JSON client, an SSE reader, and runners of the real binary
//! (`arbor serve` in the background, an offline command to completion).
#![allow(dead_code)]

pub mod browser;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use arbor::config::ServeConfig;
use arbor::server::Running;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// A server started in-process on a free loopback port with its own data dir.
pub struct TestServer {
    pub running: Option<Running>,
    pub base: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub fn config(dir: &std::path::Path) -> ServeConfig {
    let mut cfg = ServeConfig::new(dir, "127.0.0.1:0".parse().unwrap());
    cfg.cache_mb = 16;
    cfg
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        tweak(&mut cfg);
        let running = arbor::server::start(cfg).await.unwrap();
        let base = format!("http://{}", running.addr());
        TestServer {
            running: Some(running),
            base,
            client: reqwest::Client::new(),
            dir,
        }
    }

    /// Stops the server gracefully and starts a new one on the same data directory.
    pub async fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.unwrap();
        }
        let running = arbor::server::start(config(self.dir.path())).await.unwrap();
        self.base = format!("http://{}", running.addr());
        self.running = Some(running);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        decode(r).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        decode(r).await
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        decode(r).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .patch(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        decode(r).await
    }

    /// The durable head seq.
    pub async fn head(&self) -> u64 {
        let (s, h) = self.get("/v1/health").await;
        assert_eq!(s, 200, "{h}");
        h["components"]["storage"]["head_seq"].as_u64().unwrap()
    }

    /// Creates a workflow; returns (workflow_id, root_id).
    pub async fn workflow(&self, prompt: &str) -> (String, String) {
        let (s, b) = self
            .post("/v1/workflows", json!({ "system_prompt": prompt }))
            .await;
        assert_eq!(s, 201, "{b}");
        (
            b["workflow_id"].as_str().unwrap().to_owned(),
            b["root_id"].as_str().unwrap().to_owned(),
        )
    }

    /// Appends a node; returns its id.
    pub async fn node(&self, wf: &str, parent: &str, ty: &str, content: &str) -> String {
        let (s, b) = self
            .post(
                &format!("/v1/workflows/{wf}/nodes"),
                json!({ "parent_id": parent, "type": ty, "content": content }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        b["id"].as_str().unwrap().to_owned()
    }
}

pub async fn decode(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = r.text().await.unwrap();
    if status >= 400 {
        assert_eq!(
            ctype, "application/problem+json",
            "error without problem+json: {text}"
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["status"].as_u64(), Some(u64::from(status)), "{v}");
        assert!(v["type"].is_string() && v["title"].is_string() && v["detail"].is_string());
        return (status, v);
    }
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

/// One SSE message.
#[derive(Debug, Clone)]
pub struct SseMessage {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: String,
}

/// Reads SSE messages from a streaming response.
pub struct SseReader {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl SseReader {
    pub async fn open(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<u64>,
    ) -> SseReader {
        let mut req = client.get(url);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers().get("content-type").unwrap().to_str().unwrap(),
            "text/event-stream"
        );
        SseReader {
            stream: Box::pin(r.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next message that carries data (heartbeat comments are skipped), or
    /// None if the stream ended. Panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseMessage> {
        tokio::time::timeout(timeout, self.next_inner())
            .await
            .expect("timed out waiting for an SSE message")
    }

    async fn next_inner(&mut self) -> Option<SseMessage> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf[..end].to_owned();
                self.buf.drain(..end + 2);
                let mut msg = SseMessage {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        msg.id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        msg.event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        msg.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if msg.data.is_empty() {
                    continue;
                }
                return Some(msg);
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Some(Err(e)) => panic!("SSE stream error: {e}"),
                None => return None,
            }
        }
    }
}

/// Starts `arbor serve` (the real binary) on a free loopback port over data directory
/// `dir`, with `extra` flags; returns the child and the base URL once it listens. Its
/// stderr is drained on a thread, so the server never blocks on a full pipe.
pub fn spawn_serve<S: AsRef<OsStr>>(
    dir: &Path,
    extra: impl IntoIterator<Item = S>,
) -> (Child, String) {
    spawn_serve_at(dir, "127.0.0.1:0", extra)
}

/// [`spawn_serve`] on address `listen` (a restart on the port a page already uses).
pub fn spawn_serve_at<S: AsRef<OsStr>>(
    dir: &Path,
    listen: &str,
    extra: impl IntoIterator<Item = S>,
) -> (Child, String) {
    let mut args: Vec<std::ffi::OsString> = vec!["--cache-mb".into(), "16".into()];
    args.extend(extra.into_iter().map(|s| s.as_ref().to_owned()));
    arbor_testkit::serve::spawn_serve(Path::new(env!("CARGO_BIN_EXE_arbor")), dir, listen, args)
        .expect("arbor serve starts and listens")
}

/// Runs the real binary's offline command `args` over data directory `dir` to
/// completion, at `RUST_LOG=debug` (so a test sees everything it could log).
pub fn arbor(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "debug")
        .output()
        .expect("run arbor")
}

/// The stdout of a run of [`arbor`], which must have succeeded (else the test fails
/// showing its stdout and stderr).
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "arbor failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
