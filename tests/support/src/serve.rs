//! The real `arbor serve`, started from tests and benches: [`spawn_serve`] waits for its
//! "arbor listening" log line (so a test never races the bind), [`KillOnDrop`] kills
//! and reaps it when the test ends, however it ends.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Kills the process now (kill -9) and reaps it.
    pub fn kill(&mut self) -> io::Result<()> {
        self.0.kill()?;
        self.0.wait().map(drop)
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin serve --listen LISTEN --log-format json EXTRA… --data-dir DIR` (at
/// `RUST_LOG=info`) and waits until it logs "arbor listening". Returns the child and
/// its base URL (`http://ADDR`, the address it bound: `LISTEN` may be port 0). The rest
/// of its stderr is drained on a thread so the server never blocks on a full pipe.
pub fn spawn_serve<S: AsRef<OsStr>>(
    bin: &Path,
    dir: &Path,
    listen: &str,
    extra: impl IntoIterator<Item = S>,
) -> io::Result<(Child, String)> {
    let mut child = Command::new(bin)
        .args(["serve", "--listen", listen, "--log-format", "json"])
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let Some(stderr) = child.stderr.take() else {
        let _ = KillOnDrop(child);
        return Err(io::Error::other("no stderr pipe"));
    };
    let mut lines = BufReader::new(stderr).lines();
    match listening_addr(&mut lines) {
        Ok(addr) => {
            std::thread::spawn(move || lines.for_each(drop));
            Ok((child, format!("http://{addr}")))
        }
        Err(e) => {
            drop(KillOnDrop(child));
            Err(e)
        }
    }
}

/// The address in the "arbor listening" line of a server's JSON log.
fn listening_addr(lines: &mut impl Iterator<Item = io::Result<String>>) -> io::Result<String> {
    for line in lines {
        let line = line?;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if v["fields"]["message"] == "arbor listening" {
                return v["fields"]["addr"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| io::Error::other(format!("no addr in {line}")));
            }
        }
    }
    Err(io::Error::other("arbor serve exited before listening"))
}
