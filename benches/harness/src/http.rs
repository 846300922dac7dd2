//! The harness's HTTP/1.1 client: one keep-alive TCP connection per concurrent caller,
//! driven by the caller's own task.
//!
//! A request checks out an idle connection (or dials a new one), writes the request in
//! one `write`, reads the answer to its end (`Content-Length`, parsed by `httparse`) and
//! puts the connection back, so N agents of a closed loop keep N connections busy back
//! to back, the way wrk does: no connection task, no channel between the caller and the
//! socket, no pool policy, redirect, decompression or JSON layer in between. What a
//! request costs the client is one write and a read or two. `arbor-bench` measures this
//! client's floor (`GET /healthz`) against wrk's in the same run, so a figure it reports
//! can be told apart from the client's own limit. Streams (SSE) are read by the raw
//! client of `fanout` ([`crate::fanout::raw_subscribers`]), on connections of their own.
//!
//! Only loopback addresses may be targeted (checked when the client is made).

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    idle: Mutex<Vec<Conn>>,
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

    /// A fresh TCP connection with `TCP_NODELAY`.
    async fn tcp(&self) -> anyhow::Result<TcpStream> {
        let addr = self.inner.addr;
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to {addr}: timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    /// A fresh connection dialed from this thread.
    async fn dial(&self) -> anyhow::Result<Conn> {
        Ok(Conn {
            tcp: self.tcp().await?,
            buf: BytesMut::with_capacity(16 * 1024),
            home: std::thread::current().id(),
        })
    }

    /// An idle connection (one dialed on this thread if there is one: the load runs
    /// one event loop per thread), or a new one; whether it was used before.
    async fn checkout(&self) -> anyhow::Result<(Conn, bool)> {
        let here = std::thread::current().id();
        let idle = {
            let mut idle = self.inner.idle.lock();
            match idle.iter().rposition(|c| c.home == here) {
                Some(i) => Some(idle.swap_remove(i)),
                None => idle.pop(),
            }
        };
        Ok(match idle {
            Some(c) => (c, true),
            None => (self.dial().await?, false),
        })
    }

    /// The request's bytes: request line, headers, body.
    fn encode(&self, method: &Method, path: &str, body: Option<&[u8]>) -> Vec<u8> {
        let host = self.inner.host.as_bytes();
        let len = body.map_or(0, <[u8]>::len);
        let mut req = Vec::with_capacity(96 + path.len() + host.len() + len);
        req.extend_from_slice(method.as_str().as_bytes());
        req.push(b' ');
        req.extend_from_slice(path.as_bytes());
        req.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        req.extend_from_slice(host);
        if let Some(b) = body {
            req.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
            req.extend_from_slice(len.to_string().as_bytes());
            req.extend_from_slice(b"\r\n\r\n");
            req.extend_from_slice(b);
        } else {
            req.extend_from_slice(b"\r\n\r\n");
        }
        req
    }

    /// Sends one request on a pooled connection and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Answer> {
        let req = self.encode(&method, path, body.as_deref());
        let exchange = async {
            let (mut c, reused) = self.checkout().await?;
            let (answer, keep) = match c.exchange(&req).await {
                Ok(a) => a,
                // The server closed an idle connection before it read the request (its
                // keep-alive timeout): nothing was done, so send it on a fresh one.
                Err(Exchange::ClosedBeforeAnswer) if reused => {
                    c = self.dial().await?;
                    c.exchange(&req).await.map_err(Exchange::into_error)?
                }
                Err(e) => return Err(e.into_error()),
            };
            if keep {
                self.inner.idle.lock().push(c);
            }
            Ok::<_, anyhow::Error>(answer)
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
}

/// A kept-alive connection: its socket, its read buffer, and the thread it was dialed on.
struct Conn {
    tcp: TcpStream,
    buf: BytesMut,
    home: ThreadId,
}

/// Why an exchange failed.
enum Exchange {
    /// The connection ended before any byte of the answer.
    ClosedBeforeAnswer,
    /// Anything else.
    Failed(anyhow::Error),
}

impl Exchange {
    fn into_error(self) -> anyhow::Error {
        match self {
            Exchange::ClosedBeforeAnswer => anyhow::anyhow!("the server closed the connection"),
            Exchange::Failed(e) => e,
        }
    }
}

impl From<std::io::Error> for Exchange {
    fn from(e: std::io::Error) -> Exchange {
        Exchange::Failed(e.into())
    }
}

impl Conn {
    /// Writes `req` and reads one answer; whether the connection may be kept.
    async fn exchange(&mut self, req: &[u8]) -> Result<(Answer, bool), Exchange> {
        self.buf.clear();
        self.tcp.write_all(req).await?;
        // The answer's whole length, once its head is in: room for all of it is made
        // at once (one allocation, big reads), not grown 16 KiB at a time.
        let mut whole: Option<usize> = None;
        loop {
            if !self.buf.is_empty() && whole.is_none_or(|n| self.buf.len() >= n) {
                match parse(&mut self.buf).map_err(Exchange::Failed)? {
                    Parsed::Complete(answer, keep) => return Ok((answer, keep)),
                    Parsed::Body(n) => whole = Some(n),
                    Parsed::Head => {}
                }
            }
            let want = whole.map_or(4096, |n| n.saturating_sub(self.buf.len()));
            if self.buf.capacity() - self.buf.len() < want.max(4096) {
                self.buf.reserve(want.max(16 * 1024));
            }
            if self.tcp.read_buf(&mut self.buf).await? == 0 {
                return Err(if self.buf.is_empty() {
                    Exchange::ClosedBeforeAnswer
                } else {
                    Exchange::Failed(anyhow::anyhow!(
                        "the server closed the connection mid-answer"
                    ))
                });
            }
        }
    }
}

/// One complete answer at the front of `buf` (taken off it) and whether the connection
/// may be kept; `None` while incomplete. Only `Content-Length` bodies: a chunked answer
/// is an error (arbor sends one only for streams, which `fanout`'s raw client reads).
pub fn parse_answer(buf: &mut BytesMut) -> anyhow::Result<Option<(Answer, bool)>> {
    Ok(match parse(buf)? {
        Parsed::Complete(answer, keep) => Some((answer, keep)),
        Parsed::Head | Parsed::Body(_) => None,
    })
}

/// How far an answer at the front of a buffer is.
enum Parsed {
    /// Its head is not complete yet.
    Head,
    /// Its head is in; the whole answer is this many bytes.
    Body(usize),
    /// Complete (taken off the buffer), and whether the connection may be kept.
    Complete(Answer, bool),
}

fn parse(buf: &mut BytesMut) -> anyhow::Result<Parsed> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut res = httparse::Response::new(&mut headers);
    let head = match res.parse(buf).context("an invalid HTTP answer")? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(Parsed::Head),
    };
    let status = StatusCode::from_u16(res.code.unwrap_or(0)).context("an invalid status")?;
    let mut length = 0;
    let mut keep = res.version == Some(1);
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
            length = v.context("an invalid content-length")?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("a chunked answer: the harness's client reads only Content-Length bodies");
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep = !h.value.eq_ignore_ascii_case(b"close");
        }
    }
    if buf.len() < head + length {
        return Ok(Parsed::Body(head + length));
    }
    let mut whole = buf.split_to(head + length);
    let body = whole.split_off(head).freeze();
    Ok(Parsed::Complete(Answer { status, body }, keep))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

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
    fn answers_are_split_at_their_length() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel"[..]);
        assert!(
            matches!(parse_answer(&mut buf), Ok(None)),
            "incomplete body"
        );
        buf.extend_from_slice(
            b"loHTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        );
        let Ok(Some((a, keep))) = parse_answer(&mut buf) else {
            panic!("one answer")
        };
        assert_eq!(
            (a.status, &a.body[..], keep),
            (StatusCode::OK, &b"hello"[..], true)
        );
        let Ok(Some((b, keep))) = parse_answer(&mut buf) else {
            panic!("a second answer")
        };
        assert_eq!(
            (b.status, b.body.len(), keep),
            (StatusCode::NOT_FOUND, 0, false)
        );
        assert!(buf.is_empty());
        let mut chunked =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..]);
        assert!(parse_answer(&mut chunked).is_err());
    }

    #[test]
    fn only_loopback_http() {
        assert!(HttpClient::new("http://10.0.0.1:80", Duration::from_secs(1)).is_err());
        assert!(HttpClient::new("https://127.0.0.1:80", Duration::from_secs(1)).is_err());
        assert!(HttpClient::new("http://127.0.0.1:8080/", Duration::from_secs(1)).is_ok());
        assert!(HttpClient::new("http://localhost:8080", Duration::from_secs(1)).is_ok());
    }
}
