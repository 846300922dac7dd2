//! Fan-out: M subscribers on one workflow (arbor SSE) or one channel (Redis pub/sub),
//! latency from the moment an event is sent by the appender to the moment each
//! subscriber receives it.
//!
//! Every event carries its number `n` (arbor: in the node id, see
//! [`IdAlloc::Counted`]; Redis: as the payload's prefix `n|`). The appender marks
//! `n`'s send time in a shared table just before sending; a subscriber that receives
//! `n` looks the send time up and records the difference. Subscribers parse only what
//! they need (the SSE `data:` line's first `"id":"…"`, or the prefix), so the client
//! side stays cheap.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use memchr::memmem::Finder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::stats::Recorder;
use super::workload::IdAlloc;

/// Send times of events `0..len`, in nanoseconds since the table's epoch (+1; 0 = not
/// sent yet).
pub struct SendTimes {
    epoch: Instant,
    slots: Vec<AtomicU64>,
}

impl SendTimes {
    /// A table for events `0..len`.
    pub fn new(len: usize) -> SendTimes {
        SendTimes {
            epoch: Instant::now(),
            slots: (0..len).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Marks event `n` as sent now.
    pub fn mark(&self, n: u64) {
        if let Some(s) = usize::try_from(n).ok().and_then(|i| self.slots.get(i)) {
            let ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            s.store(ns + 1, Ordering::Release);
        }
    }

    /// Time from the send of `n` to `at`, if `n` was marked.
    pub fn since_sent(&self, n: u64, at: Instant) -> Option<u64> {
        let s = self.slots.get(usize::try_from(n).ok()?)?;
        let sent = s.load(Ordering::Acquire);
        if sent == 0 {
            return None;
        }
        let at = u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).ok()?;
        Some(at.saturating_sub(sent - 1))
    }

    /// Events marked.
    pub fn marked(&self) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != 0)
            .count() as u64
    }
}

/// What the subscribers saw.
#[derive(Debug, Default)]
pub struct Receipts {
    /// Delivery latency of every matched receipt.
    pub latency: Recorder,
    /// Frames that carried no known event number (heartbeats excluded).
    pub unmatched: u64,
    /// Subscribers that failed to connect or broke off.
    pub failed_subscribers: u64,
    /// The first subscriber error.
    pub first_error: Option<String>,
}

impl Receipts {
    fn merge(&mut self, o: Receipts) {
        self.latency.merge(&o.latency);
        self.unmatched += o.unmatched;
        self.failed_subscribers += o.failed_subscribers;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

/// Splits SSE frames off a byte stream fed chunk by chunk, scanning each byte once.
///
/// Bytes are appended with [`FrameSplitter::push`]; every complete frame (`…\n\n`)
/// is handed over by its `data:` payloads. The position where the previous search for
/// the frame end stopped is remembered, so a frame split over many chunks is not
/// rescanned from its start on every chunk.
#[derive(Debug, Default)]
pub struct FrameSplitter {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for `\n\n` without finding one (less the
    /// last byte, which may be the first half of a `\n\n` split over two chunks).
    scanned: usize,
}

impl FrameSplitter {
    /// A splitter with `capacity` bytes of buffer reserved.
    pub fn with_capacity(capacity: usize) -> FrameSplitter {
        FrameSplitter {
            buf: Vec::with_capacity(capacity),
            scanned: 0,
        }
    }

    /// Appends `chunk`, then calls `frame` on the `data:` payload of each complete frame
    /// (frames without data, such as heartbeats, are skipped).
    pub fn push(&mut self, chunk: &[u8], mut frame: impl FnMut(&[u8])) {
        if self.buf.is_empty() {
            // Nothing held back: split the chunk where it lies and keep only its
            // incomplete tail (a server writes whole frames, so usually nothing).
            let consumed = split_frames(chunk, 0, &mut frame);
            self.buf.extend_from_slice(&chunk[consumed..]);
            self.scanned = self.buf.len().saturating_sub(1);
            return;
        }
        self.buf.extend_from_slice(chunk);
        let consumed = split_frames(&self.buf, self.scanned, frame);
        self.buf.drain(..consumed);
        // Keep one byte back: it may be the first '\n' of a "\n\n" that the next
        // chunk completes.
        self.scanned = self.buf.len().saturating_sub(1);
    }

    /// Bytes held back as an incomplete frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Calls `frame` on the `data:` payloads of the complete frames at the front of `buf`,
/// where no frame end starts before `scanned`; returns the bytes consumed.
fn split_frames(buf: &[u8], scanned: usize, mut frame: impl FnMut(&[u8])) -> usize {
    let mut start = 0;
    let mut from = scanned.min(buf.len());
    while let Some(end) = FRAME_END.find(&buf[from..]).map(|i| from + i) {
        let mut line = start;
        while line < end {
            let line_end = memchr::memchr(b'\n', &buf[line..end]).map_or(end, |i| line + i);
            if let Some(d) = buf[line..line_end].strip_prefix(b"data:") {
                frame(d.strip_prefix(b" ").unwrap_or(d));
            }
            line = line_end + 1;
        }
        start = end + 2;
        from = start;
    }
    start
}

/// Searchers built once: `\n\n` (a frame's end), `"id":"` and `\r\n\r\n` (a response
/// head's end).
static FRAME_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));
static HEAD_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\r\n\r\n"));
static ID_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"id\":\""));

/// The first `"id":"<uuid>"` of an event's JSON (the event id; for `node.created` it is
/// the node id).
pub fn event_id(data: &[u8]) -> Option<Uuid> {
    let at = ID_KEY.find(data)? + 6;
    let s = std::str::from_utf8(data.get(at..at + 36)?).ok()?;
    Uuid::parse_str(s).ok()
}

/// The `n|` prefix of a Redis payload.
pub fn payload_index(p: &[u8]) -> Option<u64> {
    let bar = p.iter().position(|b| *b == b'|')?;
    std::str::from_utf8(&p[..bar]).ok()?.parse().ok()
}

/// Shared state of one fan-out run.
pub struct Fan {
    /// Send times.
    pub times: Arc<SendTimes>,
    /// Receipts so far, all subscribers together.
    pub received: Arc<AtomicU64>,
    /// Set when the subscribers should stop.
    pub stop: watch::Sender<bool>,
}

impl Fan {
    /// State for up to `events` events.
    pub fn new(events: usize) -> Fan {
        Fan {
            times: Arc::new(SendTimes::new(events)),
            received: Arc::new(AtomicU64::new(0)),
            stop: watch::channel(false).0,
        }
    }

    /// Waits until `expected` receipts arrived or `grace` passed, then stops the
    /// subscribers.
    pub async fn finish(&self, expected: u64, grace: Duration) {
        let until = Instant::now() + grace;
        while self.received.load(Ordering::Relaxed) < expected && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.send_replace(true);
    }
}

/// Opens `m` subscribers (at most 64 connecting at once) and returns once every one is
/// established (or failed), with their join handles. `open` makes one subscriber: its
/// connection (a future of a stream of items) and how an item turns into event numbers
/// (`each` calls its `found` once per event in the item, `None` for one it cannot place).
async fn subscribe<S, T, O, OFut, E>(m: usize, fan: &Fan, open: O) -> Vec<JoinHandle<Receipts>>
where
    O: Fn() -> (OFut, E),
    OFut: Future<Output = anyhow::Result<S>> + Send + 'static,
    S: Stream<Item = anyhow::Result<T>> + Unpin + Send + 'static,
    T: Send + 'static,
    E: FnMut(T, &mut dyn FnMut(Option<u64>)) + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(64));
    let mut ready = Vec::with_capacity(m);
    let mut handles = Vec::with_capacity(m);
    for _ in 0..m {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        ready.push(rx);
        let (connect, mut each) = open();
        let times = fan.times.clone();
        let received = fan.received.clone();
        let mut stop = fan.stop.subscribe();
        let gate = gate.clone();
        handles.push(tokio::spawn(async move {
            let mut out = Receipts {
                latency: Recorder::with_precision(2),
                ..Receipts::default()
            };
            let permit = gate.acquire_owned().await;
            let stream = connect.await;
            drop(permit);
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    out.failed_subscribers = 1;
                    out.first_error = Some(format!("{e:#}"));
                    return out;
                }
            };
            let _ = tx.send(());
            loop {
                let item = tokio::select! {
                    i = stream.next() => i,
                    _ = stop.wait_for(|s| *s) => break,
                };
                let now = Instant::now();
                match item {
                    Some(Ok(item)) => {
                        let mut got = 0;
                        each(
                            item,
                            &mut |n| match n.and_then(|n| times.since_sent(n, now)) {
                                Some(ns) => {
                                    out.latency.record_ns(ns);
                                    got += 1;
                                }
                                None => out.unmatched += 1,
                            },
                        );
                        received.fetch_add(got, Ordering::Relaxed);
                    }
                    Some(Err(e)) => {
                        out.failed_subscribers = 1;
                        out.first_error = Some(format!("{e:#}"));
                        break;
                    }
                    None => break,
                }
            }
            out
        }));
    }
    for r in ready {
        // A subscriber that failed dropped its sender; its handle reports why.
        let _ = r.await;
    }
    handles
}

/// Opens `m` SSE subscriptions to `path` at `base` (`http://127.0.0.1:PORT`) with the
/// raw client: one TCP connection each, the request written by hand, the response
/// read into one buffer and decoded in place (HTTP/1.1 chunked or until close), with
/// no HTTP library and no copy of whole frames. It is the cheapest subscriber this
/// harness has, so that the fan-out measures the server, not the client. An event's
/// number is recovered from its node id (`ids`).
pub async fn raw_subscribers(
    base: &str,
    path: &str,
    m: usize,
    ids: IdAlloc,
    fan: &Fan,
) -> anyhow::Result<Vec<JoinHandle<Receipts>>> {
    let host = base
        .strip_prefix("http://")
        .context("the raw SSE client speaks plain http only")?
        .trim_end_matches('/')
        .to_owned();
    let request = Bytes::from(format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    ));
    Ok(subscribe(m, fan, || {
        let (host, request) = (host.clone(), request.clone());
        let connect = async move {
            let mut tcp = tokio::net::TcpStream::connect(&host)
                .await
                .context("SSE connect")?;
            tcp.set_nodelay(true)?;
            tcp.write_all(&request).await.context("SSE request")?;
            let (chunked, rest) = read_head(&mut tcp).await?;
            let first =
                futures_util::stream::once(async move { Ok(RawRead::Head { chunked, rest }) });
            let reads = futures_util::stream::unfold(
                (tcp, BytesMut::with_capacity(64 * 1024)),
                |(mut tcp, mut buf)| async move {
                    buf.reserve(16 * 1024);
                    match tcp.read_buf(&mut buf).await {
                        Ok(0) => None,
                        Ok(_) => {
                            let b = buf.split().freeze();
                            Some((Ok(RawRead::Body(b)), (tcp, buf)))
                        }
                        Err(e) => {
                            Some((Err(anyhow::Error::from(e).context("SSE read")), (tcp, buf)))
                        }
                    }
                },
            );
            Ok(Box::pin(first.chain(reads)))
        };
        let ids = ids.clone();
        let mut body = RawBody::default();
        let each = move |read: RawRead, found: &mut dyn FnMut(Option<u64>)| {
            let bytes = match read {
                RawRead::Head { chunked, rest } => {
                    body.chunked = chunked;
                    rest
                }
                RawRead::Body(b) => b,
            };
            let ok = body.push(&bytes, |data| {
                found(event_id(data).and_then(|id| ids.index_of(&id)));
            });
            if !ok {
                // A malformed chunk: counted, and the rest of the stream is lost.
                found(None);
            }
        };
        (connect, each)
    })
    .await)
}

/// What the raw client reads: the end of the response head, then body bytes.
enum RawRead {
    /// The head was read: whether the body is chunked, and what came after the head.
    Head { chunked: bool, rest: Bytes },
    /// Body bytes as read from the socket.
    Body(Bytes),
}

/// Reads a response head off `tcp`; fails on a status other than 200. Returns whether
/// the body is chunked and the bytes read past the head.
async fn read_head(tcp: &mut tokio::net::TcpStream) -> anyhow::Result<(bool, Bytes)> {
    let mut head = BytesMut::with_capacity(1024);
    loop {
        if tcp.read_buf(&mut head).await.context("SSE response")? == 0 {
            anyhow::bail!("SSE: the server closed before its response head");
        }
        if let Some(end) = HEAD_END.find(&head) {
            let rest = head.split_off(end + 4).freeze();
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let status = text.split_whitespace().nth(1).unwrap_or("");
            if status != "200" {
                anyhow::bail!("SSE subscribe: status {status}");
            }
            let chunked = text
                .lines()
                .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
            return Ok((chunked, rest));
        }
        if head.len() > 64 * 1024 {
            anyhow::bail!("SSE: response head over 64 KiB");
        }
    }
}

/// An SSE body decoded as it arrives: HTTP/1.1 chunked framing (when `chunked`) is
/// taken off in place, and the payload goes through a [`FrameSplitter`].
#[derive(Debug, Default)]
pub struct RawBody {
    /// Whether the body is chunked (else it runs until the connection closes).
    pub chunked: bool,
    state: ChunkState,
    /// The chunk-size line read so far.
    line: Vec<u8>,
    frames: FrameSplitter,
}

#[derive(Debug, Default)]
enum ChunkState {
    /// Reading a chunk-size line.
    #[default]
    Size,
    /// This many payload bytes left in the current chunk.
    Data(usize),
    /// This many bytes of the CRLF after a chunk's payload left.
    DataEnd(u8),
    /// After the last chunk, or after a framing error.
    Done,
}

impl RawBody {
    /// Takes `bytes` of the body; calls `frame` on the `data:` payload of every frame
    /// completed. `false` on malformed chunked framing (the stream is then dead).
    pub fn push(&mut self, mut bytes: &[u8], mut frame: impl FnMut(&[u8])) -> bool {
        if !self.chunked {
            self.frames.push(bytes, frame);
            return true;
        }
        while !bytes.is_empty() {
            match self.state {
                ChunkState::Done => return false,
                ChunkState::Size => {
                    let Some(nl) = memchr::memchr(b'\n', bytes) else {
                        self.line.extend_from_slice(bytes);
                        if self.line.len() > 1024 {
                            self.state = ChunkState::Done;
                            return false;
                        }
                        return true;
                    };
                    self.line.extend_from_slice(&bytes[..nl]);
                    bytes = &bytes[nl + 1..];
                    let digits = self
                        .line
                        .split(|b| *b == b';' || *b == b'\r')
                        .next()
                        .unwrap_or_default();
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| usize::from_str_radix(d.trim(), 16).ok());
                    self.line.clear();
                    self.state = match size {
                        Some(0) | None => {
                            self.state = ChunkState::Done;
                            return size.is_some();
                        }
                        Some(n) => ChunkState::Data(n),
                    };
                }
                ChunkState::Data(left) => {
                    let take = left.min(bytes.len());
                    self.frames.push(&bytes[..take], &mut frame);
                    bytes = &bytes[take..];
                    self.state = if take == left {
                        ChunkState::DataEnd(2)
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd(left) => {
                    let take = usize::from(left).min(bytes.len());
                    bytes = &bytes[take..];
                    self.state = if take == usize::from(left) {
                        ChunkState::Size
                    } else {
                        ChunkState::DataEnd(left - 1)
                    };
                }
            }
        }
        true
    }
}

/// Opens `m` Redis pub/sub subscriptions to `channel`, each on its own connection;
/// `index` recovers an event's number from a payload.
pub async fn redis_subscribers(
    client: &redis::Client,
    channel: &str,
    m: usize,
    fan: &Fan,
    index: impl Fn(&[u8]) -> Option<u64> + Clone + Send + 'static,
) -> Vec<JoinHandle<Receipts>> {
    subscribe(m, fan, || {
        let (client, channel) = (client.clone(), channel.to_owned());
        let connect = async move {
            let mut ps = client.get_async_pubsub().await.context("redis subscribe")?;
            ps.subscribe(&channel).await.context("redis subscribe")?;
            Ok(ps.into_on_message().map(Ok))
        };
        let index = index.clone();
        let each = move |msg: redis::Msg, found: &mut dyn FnMut(Option<u64>)| {
            found(index(msg.get_payload_bytes()));
        };
        (connect, each)
    })
    .await
}

/// Collects the subscribers' receipts.
pub async fn collect(handles: Vec<JoinHandle<Receipts>>) -> Receipts {
    let mut all = Receipts::default();
    for h in handles {
        match h.await {
            Ok(r) => all.merge(r),
            Err(e) => {
                all.failed_subscribers += 1;
                if all.first_error.is_none() {
                    all.first_error = Some(format!("subscriber task: {e}"));
                }
            }
        }
    }
    all
}

/// The soft limit on open files of this process (from `/proc/self/limits`), if known.
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_across_chunks() {
        let id = Uuid::from_u64_pair(7, 3);
        let mut frames = FrameSplitter::default();
        let mut seen = Vec::new();
        let frame = format!(
            "id: 12\nevent: node.created\ndata: {{\"seq\":12,\"id\":\"{id}\",\"x\":1}}\n\n:\n\n"
        );
        let (a, b) = frame.as_bytes().split_at(30);
        frames.push(a, |d| seen.push(d.to_vec()));
        assert!(seen.is_empty(), "incomplete frame kept");
        assert_eq!(frames.pending(), 30);
        frames.push(b, |d| seen.push(d.to_vec()));
        assert_eq!(seen.len(), 1, "heartbeat has no data");
        assert_eq!(frames.pending(), 0);
        assert_eq!(event_id(&seen[0]), Some(id));
        let ids = IdAlloc::Counted {
            tag: 7,
            next: Arc::new(AtomicU64::new(0)),
        };
        assert_eq!(event_id(&seen[0]).and_then(|i| ids.index_of(&i)), Some(3));
    }

    /// Every way of cutting a stream into chunks gives the same payloads, including
    /// cuts between the two newlines of a frame's end.
    #[test]
    fn any_chunking_gives_the_same_frames() {
        let stream = b"id: 1\nevent: a\ndata: one\n\n: heartbeat\n\n:\n\nid: 2\ndata: two\ndata:three\n\ndata: four\n\n";
        let expected: Vec<&[u8]> = vec![b"one", b"two", b"three", b"four"];
        for size in 1..stream.len() {
            let mut frames = FrameSplitter::default();
            let mut seen = Vec::new();
            for chunk in stream.chunks(size) {
                frames.push(chunk, |d| seen.push(d.to_vec()));
            }
            assert_eq!(seen, expected, "chunks of {size}");
            assert_eq!(frames.pending(), 0, "chunks of {size}");
        }
        for cut in 1..stream.len() {
            let mut frames = FrameSplitter::default();
            let mut seen = Vec::new();
            let (a, b) = stream.split_at(cut);
            frames.push(a, |d| seen.push(d.to_vec()));
            frames.push(b, |d| seen.push(d.to_vec()));
            assert_eq!(seen, expected, "cut at {cut}");
        }
    }

    /// A long frame fed byte by byte is found once complete, and what follows it
    /// stays pending.
    #[test]
    fn long_frame_byte_by_byte() {
        let data = "x".repeat(10_000);
        let stream = format!("data: {data}\n\ndata: tail");
        let mut frames = FrameSplitter::default();
        let mut seen = Vec::new();
        for b in stream.as_bytes() {
            frames.push(std::slice::from_ref(b), |d| seen.push(d.len()));
        }
        assert_eq!(seen, [10_000]);
        assert_eq!(frames.pending(), "data: tail".len());
    }

    /// A chunked body cut at every byte gives the same frames as the plain one, and
    /// a zero-size chunk ends it.
    #[test]
    fn chunked_bodies_decode_at_any_cut() {
        let frames = "id: 1\ndata: one\n\nid: 2\ndata: two\n\n:\n\ndata: three\n\n";
        let (a, b) = frames.split_at(17);
        let body = format!(
            "{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        let expected: Vec<&[u8]> = vec![b"one", b"two", b"three"];
        for size in 1..body.len() {
            let mut raw = RawBody {
                chunked: true,
                ..RawBody::default()
            };
            let mut seen = Vec::new();
            for chunk in body.as_bytes().chunks(size) {
                raw.push(chunk, |d| seen.push(d.to_vec()));
            }
            assert_eq!(seen, expected, "reads of {size}");
        }
        let mut plain = RawBody::default();
        let mut seen = Vec::new();
        assert!(plain.push(frames.as_bytes(), |d| seen.push(d.to_vec())));
        assert_eq!(seen, expected);
        let mut bad = RawBody {
            chunked: true,
            ..RawBody::default()
        };
        assert!(!bad.push(b"zz\r\nxx", |_| {}), "a size that is not hex");
    }

    #[test]
    fn payload_prefixes() {
        assert_eq!(payload_index(b"42|{\"a\":1}"), Some(42));
        assert_eq!(payload_index(b"{\"a\":1}"), None);
        assert_eq!(payload_index(b"x|"), None);
        assert_eq!(event_id(b"{\"seq\":1}"), None);
        assert_eq!(
            event_id(b"{\"id\":\"not-a-uuid-at-all-but-36-chars-long\"}"),
            None
        );
    }

    #[test]
    fn send_times() {
        let t = SendTimes::new(4);
        assert_eq!(t.since_sent(1, Instant::now()), None, "not sent yet");
        t.mark(1);
        t.mark(99); // out of range: ignored
        std::thread::sleep(Duration::from_millis(2));
        let ns = t.since_sent(1, Instant::now()).unwrap_or(0);
        assert!(ns >= 2_000_000, "{ns}");
        assert_eq!(t.since_sent(99, Instant::now()), None);
        assert_eq!(t.marked(), 1);
    }
}
