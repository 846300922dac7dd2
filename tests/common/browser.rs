//! Headless Chromium for integration tests: pages served from other origins (loopback
//! ports of their own) and run by `tests/browser/page.py` with Debian's chromium.
//!
//! `tests/run-all.sh` sets `ARBOR_TEST_BROWSER_PYTHON` and `ARBOR_TEST_CHROMIUM` (from
//! `tests/browser/ensure.sh`); a test that runs without them fails and says so.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Html;
use axum::Router;
use serde_json::Value;

/// A request an [`Origin`] received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub body: String,
}

/// An HTTP server on its own loopback port (so its own origin) that serves fixed HTML
/// pages and records every other request it gets (answering 204).
pub struct Origin {
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    /// Starts the server with `pages` (path → HTML).
    pub async fn start(pages: Vec<(&'static str, String)>) -> Origin {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let mut router = Router::new();
        for (path, html) in pages {
            router = router.route(path, axum::routing::get(move || async move { Html(html) }));
        }
        let record = seen.clone();
        let router = router.fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                record.lock().expect("recorder lock").push(Seen {
                    method: method.to_string(),
                    path: uri.path().to_owned(),
                    content_type,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                axum::http::StatusCode::NO_CONTENT
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr: SocketAddr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Origin {
            base: format!("http://{addr}"),
            seen,
            task,
        }
    }

    /// Every request recorded so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("recorder lock").clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens `url` in headless chromium and returns the page's `window.__result` once it
/// sets `window.__done` (see `tests/browser/page.py`). Panics with the page's console
/// output if it does not finish within `timeout_s`.
pub async fn run_page(url: &str, timeout_s: u32, screenshot: Option<&Path>) -> Value {
    let python = std::env::var("ARBOR_TEST_BROWSER_PYTHON").unwrap_or_else(|_| {
        panic!(
            "ARBOR_TEST_BROWSER_PYTHON is not set: run the browser tests through \
             `bash tests/run-all.sh` (it installs chromium and playwright via \
             tests/browser/ensure.sh), or `eval \"$(bash tests/browser/ensure.sh)\"` first"
        )
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/page.py");
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(script)
        .arg(url)
        .arg("--timeout")
        .arg(timeout_s.to_string());
    if let Some(p) = screenshot {
        cmd.arg("--screenshot").arg(p);
    }
    let out = cmd.output().await.expect("run tests/browser/page.py");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "page {url} failed ({}):\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("page {url} printed no JSON ({e}): {stdout}\n{stderr}"))
}

/// Where tests keep their screenshots: `target/test-artifacts/` (kept after the run).
pub fn artifact(name: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir.join(name)
}
