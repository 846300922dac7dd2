//! The fan-out's floor: the least an SSE server can do to deliver the same frames.
//!
//! [`NullSse`] is a raw tokio server in the harness's process: no HTTP framework, no
//! store, no JSON. Each connection gets a minimal response head, then every frame
//! published to a broadcast, written with the same coalescing as arbor's streams (after
//! a write, wait out the window, then write everything that arrived as one chunk). The
//! subscribers are the fan-out's own (same client, same parsing). What this floor
//! reaches is what the client and the machine allow: if it cannot deliver M × rate on
//! this machine, no server measured by this client can be shown to.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinHandle;

/// Largest chunk one write takes.
const CHUNK: usize = 64 * 1024;

/// A running null SSE server (see the module docs); stops when dropped.
pub struct NullSse {
    addr: SocketAddr,
    tx: broadcast::Sender<Bytes>,
    accept: JoinHandle<()>,
}

impl NullSse {
    /// Listens on a free loopback port; streams coalesce over `window`.
    pub async fn start(window: Duration) -> anyhow::Result<NullSse> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, _) = broadcast::channel(16 * 1024);
        let streams = tx.clone();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let rx = streams.subscribe();
                tokio::spawn(async move {
                    // A client gone is the end of its stream, nothing more.
                    let _ = serve(tcp, rx, window).await;
                });
            }
        });
        Ok(NullSse { addr, tx, accept })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends `frame` (a whole SSE frame) to every stream.
    pub fn publish(&self, frame: Bytes) {
        // No stream listening is fine.
        let _ = self.tx.send(frame);
    }

    /// A handle that publishes to this server.
    pub fn publisher(&self) -> broadcast::Sender<Bytes> {
        self.tx.clone()
    }
}

impl Drop for NullSse {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One stream: read the request head, answer, then forward frames until the client
/// goes or the broadcast closes. A stream that lags loses frames (the floor does not
/// catch up from anywhere; the fan-out counts what was delivered).
async fn serve(
    mut tcp: TcpStream,
    mut rx: broadcast::Receiver<Bytes>,
    window: Duration,
) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    tcp.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
          connection: close\r\n\r\n",
    )
    .await?;
    let mut out = BytesMut::with_capacity(CHUNK);
    loop {
        let first = match rx.recv().await {
            Ok(f) => f,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return Ok(()),
        };
        out.extend_from_slice(&first);
        while out.len() < CHUNK {
            match rx.try_recv() {
                Ok(f) => out.extend_from_slice(&f),
                Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        let drained = out.len() < CHUNK;
        tcp.write_all(&out).await?;
        out.clear();
        if drained && !window.is_zero() {
            tokio::time::sleep(window).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::FrameSplitter;

    #[tokio::test]
    async fn streams_published_frames() -> anyhow::Result<()> {
        let server = NullSse::start(Duration::from_millis(1)).await?;
        let mut tcp = TcpStream::connect(server.addr).await?;
        tcp.write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        let mut got = Vec::new();
        let mut frames = FrameSplitter::default();
        let mut buf = vec![0u8; 4096];
        let mut published = false;
        while got.len() < 3 {
            let n = tcp.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "stream ended early");
            let text = &buf[..n];
            // The head comes first; publish only once the stream is subscribed.
            let body = match text.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(at) if !published => {
                    anyhow::ensure!(text.starts_with(b"HTTP/1.1 200 OK"));
                    for i in 0..3 {
                        server.publish(Bytes::from(format!("id: {i}\ndata: f{i}\n\n")));
                    }
                    published = true;
                    &text[at + 4..]
                }
                _ => text,
            };
            frames.push(body, |d| got.push(d.to_vec()));
        }
        assert_eq!(got, [b"f0".to_vec(), b"f1".to_vec(), b"f2".to_vec()]);
        Ok(())
    }
}
