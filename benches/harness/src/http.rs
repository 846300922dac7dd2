//! The harness's HTTP/1.1 client: keep-alive connections driven by hyper's low-level
//! `client::conn::http1`, one TCP connection per concurrent caller.
//!
//! A request checks out an idle connection (or dials a new one), sends, reads the whole
//! answer and puts the connection back, so N agents of a closed loop keep N connections
//! busy back to back, the way wrk does. There is no pool policy, no redirect, proxy,
//! decompression or JSON layer in between: what a request costs the client is a header
//! block to write and an answer to read. `arbor-bench` measures this client's floor
//! (`GET /healthz`) against wrk's in the same run, so a figure it reports can be told
//! apart from the client's own limit.
//!
//! Only loopback addresses may be targeted (checked when the client is made).

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;

type Sender = SendRequest<Full<Bytes>>;

/// A keep-alive HTTP/1.1 client of one server (`http://host:port`).
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    addr: SocketAddr,
    host: HeaderValue,
    timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

/// An idle connection and the thread its connection task runs on.
struct Idle {
    home: ThreadId,
    sender: Sender,
}

/// An answer read to its end.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The whole body.
    pub body: Bytes,
}

impl Answer {
    /// The body if the status is a success, else an error naming the request.
    pub fn ok(self, what: &str) -> anyhow::Result<Bytes> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            let b = &self.body[..self.body.len().min(300)];
            bail!("{what}: {}: {}", self.status, String::from_utf8_lossy(b))
        }
    }
}

impl HttpClient {
    /// A client of `base` (`http://127.0.0.1:PORT`, loopback only); every request must
    /// be answered within `timeout`. Dials nothing yet.
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<HttpClient> {
        crate::check_loopback("arbor URL", base)?;
        let url = url::Url::parse(base).with_context(|| format!("{base}: not a URL"))?;
        if url.scheme() != "http" {
            bail!("{base}: only http:// is supported by the harness's client");
        }
        let addrs = url
            .socket_addrs(|| Some(80))
            .with_context(|| format!("resolving {base}"))?;
        let addr = addrs
            .into_iter()
            .find(|a| a.ip().is_loopback())
            .with_context(|| format!("{base} resolves to no loopback address"))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => bail!("{base}: no host"),
        };
        Ok(HttpClient {
            inner: Arc::new(Inner {
                base: base.trim_end_matches('/').to_owned(),
                addr,
                host: HeaderValue::from_str(&host).with_context(|| format!("host {host}"))?,
                timeout,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.inner.base
    }

    /// A fresh connection (not pooled): TCP with `TCP_NODELAY`, the HTTP/1.1 handshake,
    /// and its connection task.
    async fn dial(&self) -> anyhow::Result<Sender> {
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(self.inner.addr))
            .await
            .with_context(|| format!("connecting to {}: timed out", self.inner.addr))?
            .with_context(|| format!("connecting to {}", self.inner.addr))?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes; an error here is
            // also seen by the request that was in flight.
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// An idle connection (one whose task runs on this thread if there is one: the
    /// load runs one event loop per thread), or a new one.
    async fn checkout(&self) -> anyhow::Result<(Sender, ThreadId)> {
        let here = std::thread::current().id();
        loop {
            let idle = {
                let mut idle = self.inner.idle.lock();
                match idle.iter().rposition(|c| c.home == here) {
                    Some(i) => Some(idle.swap_remove(i)),
                    None => idle.pop(),
                }
            };
            match idle {
                Some(mut c) => {
                    // Ready once its connection task has seen the previous answer end;
                    // an error means the server closed it: drop it, try the next.
                    if c.sender.ready().await.is_ok() {
                        return Ok((c.sender, c.home));
                    }
                }
                None => return Ok((self.dial().await?, here)),
            }
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.inner.host.clone());
        if body.is_some() {
            b = b.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(b.body(Full::new(body.unwrap_or_default()))?)
    }

    /// Sends one request on a pooled connection and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Answer> {
        let req = self.request(method, path, body)?;
        let exchange = async {
            let (mut s, home) = self.checkout().await?;
            let res = s.send_request(req).await?;
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            // Read to its end: the connection is free for the next request.
            if !s.is_closed() {
                self.inner.idle.lock().push(Idle { home, sender: s });
            }
            Ok::<_, anyhow::Error>(Answer { status, body })
        };
        tokio::time::timeout(self.inner.timeout, exchange)
            .await
            .with_context(|| format!("{path}: no answer within {:?}", self.inner.timeout))?
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, json: Bytes) -> anyhow::Result<Answer> {
        self.send(Method::POST, path, Some(json)).await
    }

    /// `GET path` on a connection of its own whose body is handed over unread (a
    /// stream such as SSE); the connection closes when the body is dropped.
    pub async fn stream(&self, path: &str) -> anyhow::Result<(StatusCode, Incoming)> {
        let req = self.request(Method::GET, path, None)?;
        let open = async {
            let mut s = self.dial().await?;
            let res = s.send_request(req).await?;
            Ok::<_, anyhow::Error>((res.status(), res.into_body()))
        };
        tokio::time::timeout(self.inner.timeout, open)
            .await
            .with_context(|| format!("{path}: no answer within {:?}", self.inner.timeout))?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers every request on a connection with `200 hello` and counts
    /// the connections it accepted.
    async fn hello_server() -> (String, Arc<AtomicUsize>) {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request = headers up to the blank line (no bodies here).
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                        buf.drain(..end);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                        if sock.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), conns)
    }

    #[tokio::test]
    async fn connections_are_kept_and_reused() {
        let (base, conns) = hello_server().await;
        let c = HttpClient::new(&base, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..20 {
            let a = c.get("/healthz").await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(a.status, StatusCode::OK);
            assert_eq!(&a.body[..], b"hello");
        }
        assert_eq!(
            conns.load(Ordering::Relaxed),
            1,
            "one kept-alive connection"
        );
        // Concurrent callers get one connection each.
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.get("/x").await.map(|a| a.status) })
            })
            .collect();
        for t in calls {
            assert!(matches!(t.await, Ok(Ok(StatusCode::OK))));
        }
        assert!(conns.load(Ordering::Relaxed) <= 4);
    }

    #[test]
    fn only_loopback_http() {
        assert!(HttpClient::new("http://10.0.0.1:80", Duration::from_secs(1)).is_err());
        assert!(HttpClient::new("https://127.0.0.1:80", Duration::from_secs(1)).is_err());
        assert!(HttpClient::new("http://127.0.0.1:8080/", Duration::from_secs(1)).is_ok());
        assert!(HttpClient::new("http://localhost:8080", Duration::from_secs(1)).is_ok());
    }
}
