//! Headless Debian chromium, driven one command at a time through
//! `tests/browser/drive.py` (playwright with the system browser). Used by the UI tests
//! (`tests/ui.rs`) and the UI benchmark (`benches/ui.rs`).
//!
//! `tests/browser/ensure.sh` installs chromium and playwright and prints the two
//! variables this needs (`ARBOR_TEST_BROWSER_PYTHON`, `ARBOR_TEST_CHROMIUM`);
//! `tests/run-all.sh` evaluates them. Without them [`Browser::start`] fails and says how
//! to get them.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

/// One page of headless chromium.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    log: tempfile_log::Log,
}

/// What went wrong with the browser or a command.
#[derive(Debug)]
pub struct BrowserError(pub String);

impl std::fmt::Display for BrowserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BrowserError {}

impl Browser {
    /// Opens a page of `width`×`height` CSS pixels.
    pub fn start(width: u32, height: u32) -> Result<Browser, BrowserError> {
        let python = std::env::var("ARBOR_TEST_BROWSER_PYTHON").map_err(|_| {
            BrowserError(
                "ARBOR_TEST_BROWSER_PYTHON is not set: run through `bash tests/run-all.sh` \
                 (it installs chromium and playwright via tests/browser/ensure.sh), or \
                 `eval \"$(bash tests/browser/ensure.sh)\"` first"
                    .into(),
            )
        })?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../browser/drive.py");
        let log = tempfile_log::Log::new()?;
        let mut child = Command::new(python)
            .arg(script)
            .args([
                "--width",
                &width.to_string(),
                "--height",
                &height.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.stdio()?)
            .spawn()
            .map_err(|e| BrowserError(format!("start tests/browser/drive.py: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(BrowserError("drive.py has no pipes".into()));
        };
        Ok(Browser {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            log,
        })
    }

    /// Sends one command (see `tests/browser/drive.py`) and returns its value.
    pub fn send(&mut self, cmd: Value) -> Result<Value, BrowserError> {
        let fail = |what: String, log: &tempfile_log::Log| {
            BrowserError(format!("{what}\n--- browser log ---\n{}", log.read()))
        };
        writeln!(self.stdin, "{cmd}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| fail(format!("send {cmd}: {e}"), &self.log))?;
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => return Err(fail(format!("drive.py exited during {cmd}"), &self.log)),
            Err(e) => return Err(fail(format!("read the answer to {cmd}: {e}"), &self.log)),
            Ok(_) => {}
        }
        let answer: Value = serde_json::from_str(&line).map_err(|e| {
            fail(
                format!("answer to {cmd} is not JSON ({e}): {line}"),
                &self.log,
            )
        })?;
        if answer["ok"] == true {
            Ok(answer["value"].clone())
        } else {
            Err(fail(
                format!("{cmd} failed: {}", answer["error"]),
                &self.log,
            ))
        }
    }

    /// Loads `url`.
    pub fn goto(&mut self, url: &str) -> Result<Value, BrowserError> {
        self.send(json!({"op": "goto", "url": url}))
    }

    /// Waits up to `timeout_s` until the JavaScript expression `js` is truthy; its value.
    pub fn wait(&mut self, js: &str, timeout_s: u32) -> Result<Value, BrowserError> {
        self.send(json!({"op": "wait", "js": js, "timeout": timeout_s}))
    }

    /// The value of the JavaScript expression `js`.
    pub fn eval(&mut self, js: &str) -> Result<Value, BrowserError> {
        self.send(json!({"op": "eval", "js": js}))
    }

    /// Clicks the first element matching `selector`.
    pub fn click(&mut self, selector: &str) -> Result<Value, BrowserError> {
        self.send(json!({"op": "click", "selector": selector}))
    }

    /// Types `text` into the input matching `selector`.
    pub fn fill(&mut self, selector: &str, text: &str) -> Result<Value, BrowserError> {
        self.send(json!({"op": "fill", "selector": selector, "text": text}))
    }

    /// Presses `key` (playwright's names: `ArrowDown`, `Enter`, …) on the focused element.
    pub fn press(&mut self, key: &str) -> Result<Value, BrowserError> {
        self.send(json!({"op": "press", "key": key}))
    }

    /// Resizes the page.
    pub fn viewport(&mut self, width: u32, height: u32) -> Result<Value, BrowserError> {
        self.send(json!({"op": "viewport", "width": width, "height": height}))
    }

    /// A PNG of the viewport at `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<Value, BrowserError> {
        self.send(json!({"op": "screenshot", "path": path}))
    }

    /// What the page and the driver wrote to stderr so far (console, page errors).
    pub fn log(&self) -> String {
        self.log.read()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "close"}));
        let _ = self.stdin.flush();
        // The browser closes itself on `close`; a wedged one is killed.
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where tests and benchmarks keep screenshots: `target/test-artifacts/` of the
/// workspace (kept after the run).
pub fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

/// The driver's stderr, in a file (a pipe nobody reads could fill and block it).
mod tempfile_log {
    use super::BrowserError;
    use std::fs::File;
    use std::path::PathBuf;
    use std::process::Stdio;

    pub struct Log {
        path: PathBuf,
    }

    impl Log {
        pub fn new() -> Result<Log, BrowserError> {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("arbor-browser-{}-{n}.log", std::process::id()));
            File::create(&path)
                .map_err(|e| BrowserError(format!("create {}: {e}", path.display())))?;
            Ok(Log { path })
        }

        pub fn stdio(&self) -> Result<Stdio, BrowserError> {
            File::options()
                .append(true)
                .open(&self.path)
                .map(Stdio::from)
                .map_err(|e| BrowserError(format!("open {}: {e}", self.path.display())))
        }

        pub fn read(&self) -> String {
            std::fs::read_to_string(&self.path).unwrap_or_default()
        }
    }

    impl Drop for Log {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
