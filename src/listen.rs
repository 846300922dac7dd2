//! The accept loop: TCP (optionally TLS) connections served by hyper with limits that
//! keep slow or idle clients from holding the server.
//!
//! `axum::serve` offers no header-read timeout and no connection cap, so arbor runs its
//! own small loop over hyper-util:
//! - at most `max_connections` at once: the loop stops accepting while the cap is
//!   reached (new clients wait in the kernel's backlog, they are not refused);
//! - a client must finish its TLS handshake and show its protocol (its first bytes:
//!   hyper's own detection waits for ever) within `header_timeout`, and send each
//!   request head within `header_timeout` (hyper's `header_read_timeout`), else the
//!   connection is closed —
//!   slowloris clients cannot pin a connection slot for longer than that; a slow *body*
//!   is bounded by the request timeout of the HTTP layer;
//! - the same timeout is the idle timeout of an HTTP/1 keep-alive connection: hyper
//!   starts it when it waits for the next request head, so a connection that sends
//!   nothing after its response is closed `header_timeout` later (a response still
//!   being written, such as an SSE stream, is not waiting for a head: it is not cut);
//! - the open connections are counted in a gauge (`arbor_http_connections`);
//! - the peer address rides along as `ConnectInfo<SocketAddr>` (per-address limits);
//! - shutdown: stop accepting, ask every connection to finish its in-flight requests
//!   (hyper's graceful shutdown), wait for them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Limits of the accept loop.
#[derive(Clone)]
pub struct ListenOptions {
    /// Longest a client may take to send a request head (and to finish a TLS handshake).
    pub header_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// TLS, when configured.
    pub tls: Option<TlsAcceptor>,
    /// Counts the open connections, when given.
    pub connections: Option<prometheus::IntGauge>,
}

impl Default for ListenOptions {
    /// 10 s for a request head, 4 096 connections, no TLS.
    fn default() -> ListenOptions {
        ListenOptions {
            header_timeout: Duration::from_secs(10),
            max_connections: 4096,
            tls: None,
            connections: None,
        }
    }
}

impl std::fmt::Debug for ListenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenOptions")
            .field("header_timeout", &self.header_timeout)
            .field("max_connections", &self.max_connections)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Errors of loading a certificate and key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The PEM had no certificate or no private key.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the pair.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS acceptor from PEM files (a certificate chain and its private key).
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError::Pem(format!("{}: no certificate", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::Pem(format!("{}: no private key ({e})", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// One accepted connection's slot: its permit, and its count in the gauge while it is
/// open.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gauge: Option<prometheus::IntGauge>,
}

impl Slot {
    fn new(permit: tokio::sync::OwnedSemaphorePermit, gauge: Option<prometheus::IntGauge>) -> Slot {
        if let Some(g) = &gauge {
            g.inc();
        }
        Slot {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(g) = &self.gauge {
            g.dec();
        }
    }
}

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream whose first bytes were read ahead (to learn the protocol) and are given
/// back before the rest.
struct Prefixed<S> {
    prefix: Vec<u8>,
    given: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.given < this.prefix.len() {
            let n = (this.prefix.len() - this.given).min(buf.remaining());
            buf.put_slice(&this.prefix[this.given..this.given + n]);
            this.given += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads `io` until its protocol is known — the whole HTTP/2 preface, or a byte that
/// departs from it (HTTP/1) — by `deadline`. hyper's own protocol detection has no
/// timeout: a client that sends nothing, or half a preface, would hold its slot for
/// ever. None when the client is too slow or gone (the connection is then dropped).
async fn first_bytes<S: AsyncRead + Unpin>(
    mut io: S,
    deadline: tokio::time::Instant,
    peer: std::net::SocketAddr,
) -> Option<Prefixed<S>> {
    let read = async {
        let mut prefix = Vec::with_capacity(H2_PREFACE.len());
        let mut buf = [0u8; 24];
        while prefix.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&prefix) {
            let n = io.read(&mut buf[..H2_PREFACE.len() - prefix.len()]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            prefix.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(prefix)
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(prefix)) => Some(Prefixed {
            prefix,
            given: 0,
            inner: io,
        }),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection ended before a request");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "no request within the header timeout");
            None
        }
    }
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Serves `app` on `listener` until `shutdown` turns true, then drains connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ListenOptions,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut shutdown) => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let _ = tcp.set_nodelay(true);
        let slot = Slot::new(permit, opts.connections.clone());
        let service = app
            .clone()
            .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let service = TowerToHyperService::new(service);
        let watcher = graceful.watcher();
        let tls = opts.tls.clone();
        let header_timeout = opts.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let deadline = tokio::time::Instant::now() + header_timeout;
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            builder.http2().timer(TokioTimer::new());
            let result = match tls {
                None => {
                    let Some(io) = first_bytes(tcp, deadline, peer).await else {
                        return;
                    };
                    let conn = builder.serve_connection(TokioIo::new(io), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let Some(io) = first_bytes(stream, deadline, peer).await else {
                        return;
                    };
                    let conn = builder.serve_connection(TokioIo::new(io), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
