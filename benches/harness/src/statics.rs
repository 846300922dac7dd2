//! The floor of a query over HTTP: a server that answers every request with the same
//! bytes, already in memory.
//!
//! [`StaticAnswer`] holds one complete response (head and body) and writes it for each
//! request head it reads on a kept-alive connection: no routing, no store, no JSON. A
//! query series against it, by the same client, gives what moving an answer of that
//! size costs on this machine (the server's write, the loopback, the client's read). An
//! arbor figure close to it is bound by the bytes, not by arbor.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running static server (see the module docs); stops when dropped.
pub struct StaticAnswer {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl StaticAnswer {
    /// Listens on a free loopback port and answers every request with `body` as
    /// `200 OK` JSON.
    pub async fn start(body: &[u8]) -> anyhow::Result<StaticAnswer> {
        let mut response = BytesMut::with_capacity(body.len() + 128);
        response.extend_from_slice(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        response.extend_from_slice(body);
        let response = response.freeze();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    // A client gone ends its connection, nothing more.
                    let _ = serve(tcp, response).await;
                });
            }
        });
        Ok(StaticAnswer { addr, accept })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for StaticAnswer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Answers each request head (requests carry no body) with `response`.
async fn serve(mut tcp: TcpStream, response: Bytes) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let end = Finder::new(b"\r\n\r\n");
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        while let Some(at) = end.find(&buf) {
            let _ = buf.split_to(at + 4);
            tcp.write_all(&response).await?;
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
        if tcp.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HttpClient;
    use std::time::Duration;

    #[tokio::test]
    async fn answers_every_request_with_the_same_body() -> anyhow::Result<()> {
        let server = StaticAnswer::start(br#"{"nodes":[1,2,3]}"#).await?;
        let client = HttpClient::new(&server.base(), Duration::from_secs(10))?;
        for path in ["/a", "/b", "/a"] {
            let body = client.get(path).await?.ok("GET")?;
            assert_eq!(&body[..], br#"{"nodes":[1,2,3]}"#);
        }
        Ok(())
    }
}
