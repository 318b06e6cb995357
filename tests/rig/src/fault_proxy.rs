//! A fault-injecting HTTP/1.1 proxy in front of a test registry: downloads broken mid-way,
//! injected error statuses, stalls and corrupted bodies, with a log of every request.
//!
//! Clients talk to the proxy as if it were the registry (plain HTTP, keep-alive allowed); each
//! request goes upstream on a fresh connection with `Connection: close`. The `Host` header is
//! forwarded unchanged, so the registry's `Location` URLs point back at the proxy.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a client connection may sit idle between requests before the proxy closes it.
const CLIENT_IDLE: Duration = Duration::from_secs(30);

/// How long the proxy waits on the registry.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// One injected fault; it applies to the first `times` requests whose path (with query)
/// contains `path_contains`, later ones pass through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Sends the response head and the first `bytes` of the body, then closes the connection.
    DropAfter {
        /// Substring of the request path (with query) to match.
        path_contains: String,
        /// Body bytes sent before closing.
        bytes: u64,
        /// How many matching requests are faulted.
        times: usize,
    },
    /// Answers `status` (with `Retry-After` when given) without contacting the registry.
    Status {
        /// Substring of the request path (with query) to match.
        path_contains: String,
        /// The HTTP status to answer, e.g. 429 or 503.
        status: u16,
        /// Seconds for the `Retry-After` header.
        retry_after: Option<u64>,
        /// How many matching requests are faulted.
        times: usize,
    },
    /// Sends the head and `bytes` of the body, stops sending for `stall`, then closes.
    Stall {
        /// Substring of the request path (with query) to match.
        path_contains: String,
        /// Body bytes sent before stalling.
        bytes: u64,
        /// How long to stay silent before closing.
        stall: Duration,
        /// How many matching requests are faulted.
        times: usize,
    },
    /// Answers `307 Temporary Redirect` to `location_base` + the request path, as a registry
    /// sends blob downloads to object storage.
    Redirect {
        /// Substring of the request path (with query) to match.
        path_contains: String,
        /// Scheme and host to redirect to, e.g. `http://localhost:5001`.
        location_base: String,
        /// How many matching requests are faulted.
        times: usize,
    },
    /// Flips every bit of the body byte at `offset` (a tampered blob).
    Corrupt {
        /// Substring of the request path (with query) to match.
        path_contains: String,
        /// Offset in the body of the byte to flip.
        offset: u64,
        /// How many matching requests are faulted.
        times: usize,
    },
    /// Like `Corrupt`, but only on requests with a `Range` header (a resumed download): the
    /// first request is served intact, the resumed one with a flipped byte.
    CorruptRanged {
        /// Substring of the request path (with query) to match.
        path_contains: String,
        /// Offset in the (partial) body of the byte to flip.
        offset: u64,
        /// How many matching ranged requests are faulted.
        times: usize,
    },
    /// Announces `Content-Length` as the real length plus `delta` and sends the whole real
    /// body. More than sent (`delta > 0`): the connection then stays open, the client waits for
    /// bytes that never come. Fewer (`delta < 0`): the surplus follows, then the proxy closes.
    LyingLength {
        /// Substring of the request path (with query) to match.
        path_contains: String,
        /// Announced minus real length.
        delta: i64,
        /// How many matching requests are faulted.
        times: usize,
    },
    /// Slowloris: sends the response one byte every `interval` (from its first byte when
    /// `in_head`, else the head at once and then the body), until it ends or the client leaves.
    Trickle {
        /// Substring of the request path (with query) to match.
        path_contains: String,
        /// Time between two bytes.
        interval: Duration,
        /// Whether the head trickles too.
        in_head: bool,
        /// How many matching requests are faulted.
        times: usize,
    },
    /// Answers `status` without `Content-Length` and an endless body of zeros, as fast as the
    /// client reads, without contacting the registry.
    Endless {
        /// Substring of the request path (with query) to match.
        path_contains: String,
        /// The status, e.g. 200, or 500 for an endless error body.
        status: u16,
        /// How many matching requests are faulted.
        times: usize,
    },
    /// Answers 200 with one `X-Filler` header of `bytes` bytes (then an empty body), without
    /// contacting the registry.
    HugeHeader {
        /// Substring of the request path (with query) to match.
        path_contains: String,
        /// Length of the header's value.
        bytes: u64,
        /// How many matching requests are faulted.
        times: usize,
    },
}

impl Fault {
    fn path_contains(&self) -> &str {
        match self {
            Fault::DropAfter { path_contains, .. }
            | Fault::Status { path_contains, .. }
            | Fault::Stall { path_contains, .. }
            | Fault::Redirect { path_contains, .. }
            | Fault::Corrupt { path_contains, .. }
            | Fault::CorruptRanged { path_contains, .. }
            | Fault::LyingLength { path_contains, .. }
            | Fault::Trickle { path_contains, .. }
            | Fault::Endless { path_contains, .. }
            | Fault::HugeHeader { path_contains, .. } => path_contains,
        }
    }

    fn times(&self) -> usize {
        match self {
            Fault::DropAfter { times, .. }
            | Fault::Status { times, .. }
            | Fault::Stall { times, .. }
            | Fault::Redirect { times, .. }
            | Fault::Corrupt { times, .. }
            | Fault::CorruptRanged { times, .. }
            | Fault::LyingLength { times, .. }
            | Fault::Trickle { times, .. }
            | Fault::Endless { times, .. }
            | Fault::HugeHeader { times, .. } => *times,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Fault::DropAfter { .. } => "DropAfter",
            Fault::Status { .. } => "Status",
            Fault::Stall { .. } => "Stall",
            Fault::Redirect { .. } => "Redirect",
            Fault::Corrupt { .. } => "Corrupt",
            Fault::CorruptRanged { .. } => "CorruptRanged",
            Fault::LyingLength { .. } => "LyingLength",
            Fault::Trickle { .. } => "Trickle",
            Fault::Endless { .. } => "Endless",
            Fault::HugeHeader { .. } => "HugeHeader",
        }
    }

    /// Whether it applies to a request (`ranged`: the request carries a `Range` header).
    fn applies(&self, path: &str, ranged: bool) -> bool {
        path.contains(self.path_contains())
            && (ranged || !matches!(self, Fault::CorruptRanged { .. }))
    }
}

/// One request the proxy handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// The `Range` header, when sent.
    pub range: Option<String>,
    /// The status the proxy sent to the client (502 when the registry could not be reached).
    pub status: u16,
    /// The fault applied (`DropAfter`, `Status`, `Stall`, `Redirect`, `Corrupt`, …), if any.
    pub fault: Option<&'static str>,
    /// Whether the request carried an `Authorization` header.
    pub authorization: bool,
    /// The scheme of its `Authorization` header (`Basic`, `Bearer`), when sent.
    pub auth_scheme: Option<String>,
}

struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Vec<(Fault, usize)>>,
    log: Mutex<Vec<RequestLog>>,
    shutdown: AtomicBool,
    clients: Mutex<Vec<(u64, TcpStream)>>,
    next_id: AtomicU64,
    link: Mutex<Link>,
    /// When the shared link is next free to send (the bandwidth limit's clock).
    link_free_at: Mutex<Instant>,
}

/// A worker-like link between skiff and the registry: a bandwidth shared by every connection
/// through the proxy, and a round-trip delay (one per request, one more per new connection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Link {
    /// Response body bytes per second, all connections together; `None`: unlimited.
    pub bytes_per_sec: Option<u64>,
    /// The round-trip time added before each response (and once for each new connection).
    pub round_trip: Duration,
}

/// Bytes sent in one step of the bandwidth limit.
const LINK_STEP: usize = 16 * 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// The first fault that matches `path` and has not been used up; counts the use.
    fn take_fault(&self, path: &str, ranged: bool) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let (fault, used) = faults
            .iter_mut()
            .find(|(f, used)| f.applies(path, ranged) && *used < f.times())?;
        *used += 1;
        Some(fault.clone())
    }

    /// Waits until the shared link has carried `bytes` more (nothing with no limit).
    fn pace(&self, bytes: usize) {
        let Some(rate) = lock(&self.link).bytes_per_sec.filter(|r| *r > 0) else {
            return;
        };
        let cost = Duration::from_secs_f64(bytes as f64 / rate as f64);
        let done = {
            let mut free = lock(&self.link_free_at);
            let start = (*free).max(Instant::now());
            *free = start + cost;
            *free
        };
        self.sleep(done.saturating_duration_since(Instant::now()));
    }

    /// One round trip of the link.
    fn round_trip(&self) {
        let rtt = lock(&self.link).round_trip;
        if !rtt.is_zero() {
            self.sleep(rtt);
        }
    }

    /// Sleeps for `duration`, waking early on shutdown.
    fn sleep(&self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while !self.shutdown.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
        }
    }
}

/// A running fault-injecting proxy; stopped on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free 127.0.0.1 port, injecting `faults`.
    pub fn start(upstream: SocketAddr, faults: Vec<Fault>) -> Result<FaultProxy> {
        Self::start_on("127.0.0.1:0".parse()?, upstream, faults)
    }

    /// Starts a proxy to `upstream` listening on `listen`, injecting `faults`.
    pub fn start_on(
        listen: SocketAddr,
        upstream: SocketAddr,
        faults: Vec<Fault>,
    ) -> Result<FaultProxy> {
        let listener = TcpListener::bind(listen)
            .with_context(|| format!("binding the fault proxy to {listen}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(faults.into_iter().map(|f| (f, 0)).collect()),
            log: Mutex::new(Vec::new()),
            shutdown: AtomicBool::new(false),
            clients: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            link: Mutex::new(Link::default()),
            link_free_at: Mutex::new(Instant::now()),
        });
        let connections = Arc::new(Mutex::new(Vec::<JoinHandle<()>>::new()));
        let accept_shared = Arc::clone(&shared);
        let accept_connections = Arc::clone(&connections);
        let accept = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_shared.shutdown.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    // As Go's net/http (most registries) does: without it, Nagle holds each
                    // paced step of a body until the client's delayed ACK (40 ms) on a
                    // reused connection.
                    let _ = stream.set_nodelay(true);
                    let id = accept_shared.next_id.fetch_add(1, Ordering::SeqCst);
                    if let Ok(clone) = stream.try_clone() {
                        lock(&accept_shared.clients).push((id, clone));
                    }
                    let shared = Arc::clone(&accept_shared);
                    let spawned = std::thread::Builder::new()
                        .name("fault-proxy-conn".into())
                        .spawn(move || {
                            let _ = serve_client(&shared, &stream);
                            let _ = stream.shutdown(Shutdown::Both);
                            lock(&shared.clients).retain(|(i, _)| *i != id);
                        });
                    if let Ok(handle) = spawned {
                        let mut handles = lock(&accept_connections);
                        handles.retain(|h| !h.is_finished());
                        handles.push(handle);
                    }
                }
            })?;
        Ok(FaultProxy {
            addr,
            shared,
            accept: Some(accept),
            connections,
        })
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference through the proxy.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request handled so far, in the order their responses started.
    pub fn requests(&self) -> Vec<RequestLog> {
        lock(&self.shared.log).clone()
    }

    /// Sets the link's bandwidth and round-trip delay from now on (a worker's real link).
    pub fn set_link(&self, link: Link) {
        *lock(&self.shared.link) = link;
    }

    /// Adds a fault (with a fresh count) after the ones given at start.
    pub fn add_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push((fault, 0));
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Unblock accept(), then every connection blocked reading from its client.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for (_, stream) in lock(&self.shared.clients).iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let handles = std::mem::take(&mut *lock(&self.connections));
        for handle in handles {
            let _ = handle.join();
        }
    }
}

/// A parsed request or response head.
struct Head {
    /// The request or status line, without CRLF.
    start: String,
    /// Header lines as (name, value).
    headers: Vec<(String, String)>,
}

impl Head {
    /// Reads a head; `None` at a clean EOF before any byte.
    fn read(reader: &mut impl BufRead) -> Result<Option<Head>> {
        let mut start = String::new();
        loop {
            start.clear();
            if reader.read_line(&mut start)? == 0 {
                return Ok(None);
            }
            // Tolerate stray CRLFs between requests.
            if !start.trim().is_empty() {
                break;
            }
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                bail!("connection closed inside a message head");
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
            if headers.len() > 200 {
                bail!("too many header lines");
            }
        }
        Ok(Some(Head {
            start: start.trim_end_matches(['\r', '\n']).to_owned(),
            headers,
        }))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> Result<Option<u64>> {
        self.get("content-length")
            .map(|v| v.parse().context("bad Content-Length"))
            .transpose()
    }

    fn is_chunked(&self) -> bool {
        self.get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    /// The head as sent, with hop-by-hop headers in `drop` left out and `extra` added.
    fn serialize(&self, drop: &[&str], extra: &[(&str, String)]) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (name, value) in &self.headers {
            if !drop.iter().any(|d| name.eq_ignore_ascii_case(d)) {
                out += &format!("{name}: {value}\r\n");
            }
        }
        for (name, value) in extra {
            out += &format!("{name}: {value}\r\n");
        }
        out += "\r\n";
        out.into_bytes()
    }
}

/// Handles the requests of one client connection until it closes, errs or asks to close.
fn serve_client(shared: &Shared, client: &TcpStream) -> Result<()> {
    client.set_read_timeout(Some(CLIENT_IDLE))?;
    client.set_write_timeout(Some(UPSTREAM_TIMEOUT))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut writer = client.try_clone()?;
    // The TCP handshake's round trip.
    shared.round_trip();
    while !shared.shutdown.load(Ordering::SeqCst) {
        let Some(head) = Head::read(&mut reader)? else {
            return Ok(());
        };
        // The request's way there and the response's way back.
        shared.round_trip();
        let mut parts = head.start.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let version = parts.next().unwrap_or("HTTP/1.1").to_owned();
        if head.is_chunked() {
            send_simple(
                &mut writer,
                &method,
                501,
                None,
                "chunked request bodies unsupported",
            )?;
            log(shared, &method, &path, &head, 501, None);
            return Ok(());
        }
        let mut body = Vec::new();
        (&mut reader)
            .take(head.content_length()?.unwrap_or(0))
            .read_to_end(&mut body)?;
        let close = version == "HTTP/1.0"
            || head
                .get("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));

        let fault = shared.take_fault(&path, head.get("range").is_some());
        let keep_going = handle(shared, &mut writer, &method, &path, &head, &body, fault)?;
        if close || !keep_going {
            return Ok(());
        }
    }
    Ok(())
}

fn log(
    shared: &Shared,
    method: &str,
    path: &str,
    head: &Head,
    status: u16,
    fault: Option<&'static str>,
) {
    lock(&shared.log).push(RequestLog {
        method: method.to_owned(),
        path: path.to_owned(),
        range: head.get("range").map(str::to_owned),
        status,
        fault,
        authorization: head.get("authorization").is_some(),
        auth_scheme: head
            .get("authorization")
            .and_then(|v| v.split_whitespace().next())
            .map(str::to_owned),
    });
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected",
    }
}

/// Sends a small registry-style error response.
fn send_simple(
    writer: &mut TcpStream,
    method: &str,
    status: u16,
    retry_after: Option<u64>,
    message: &str,
) -> Result<()> {
    let code = match status {
        429 => "TOOMANYREQUESTS",
        503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    };
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nDocker-Distribution-Api-Version: registry/2.0\r\n",
        reason(status),
        body.len()
    );
    if let Some(secs) = retry_after {
        head += &format!("Retry-After: {secs}\r\n");
    }
    head += "\r\n";
    writer.write_all(head.as_bytes())?;
    if method != "HEAD" {
        writer.write_all(body.as_bytes())?;
    }
    writer.flush()?;
    Ok(())
}

/// Answers one request; `Ok(false)` when the client connection must be closed.
fn handle(
    shared: &Shared,
    writer: &mut TcpStream,
    method: &str,
    path: &str,
    head: &Head,
    body: &[u8],
    fault: Option<Fault>,
) -> Result<bool> {
    let name = fault.as_ref().map(Fault::name);
    if let Some(Fault::Redirect { location_base, .. }) = &fault {
        log(shared, method, path, head, 307, name);
        let response = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location_base}{path}\r\nContent-Length: 0\r\n\r\n"
        );
        writer.write_all(response.as_bytes())?;
        writer.flush()?;
        return Ok(true);
    }
    if let Some(Fault::Status {
        status,
        retry_after,
        ..
    }) = &fault
    {
        log(shared, method, path, head, *status, name);
        send_simple(
            writer,
            method,
            *status,
            *retry_after,
            "injected by the fault proxy",
        )?;
        return Ok(true);
    }

    if let Some(Fault::Endless { status, .. }) = &fault {
        log(shared, method, path, head, *status, name);
        writer.write_all(
            format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                 Connection: close\r\n\r\n",
                reason(*status)
            )
            .as_bytes(),
        )?;
        let filler = vec![0u8; 64 * 1024];
        while !shared.shutdown.load(Ordering::SeqCst) {
            writer.write_all(&filler)?;
        }
        return Ok(false);
    }
    if let Some(Fault::HugeHeader { bytes, .. }) = &fault {
        log(shared, method, path, head, 200, name);
        writer.write_all(b"HTTP/1.1 200 OK\r\nX-Filler: ")?;
        let filler = vec![b'a'; 64 * 1024];
        let mut left = *bytes;
        while left > 0 && !shared.shutdown.load(Ordering::SeqCst) {
            let n = usize::try_from(left.min(filler.len() as u64)).unwrap_or(filler.len());
            writer.write_all(&filler[..n])?;
            left -= n as u64;
        }
        writer.write_all(b"\r\nContent-Length: 0\r\n\r\n")?;
        writer.flush()?;
        return Ok(false);
    }

    let upstream = match forward(shared, head, body) {
        Ok(upstream) => upstream,
        Err(err) => {
            log(shared, method, path, head, 502, name);
            send_simple(writer, method, 502, None, &format!("{err:#}"))?;
            return Ok(true);
        }
    };
    let (response, mut reader) = upstream;
    let status: u16 = response
        .start
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("bad upstream status line")?;
    let no_body = method == "HEAD" || status / 100 == 1 || status == 204 || status == 304;

    // The body: streamed when its length is known, else read whole (chunked or until EOF).
    let mut buffered = None;
    let length = if no_body {
        0
    } else if response.is_chunked() {
        let whole = read_chunked(&mut reader)?;
        let len = whole.len() as u64;
        buffered = Some(whole);
        len
    } else if let Some(len) = response.content_length()? {
        len
    } else {
        let mut whole = Vec::new();
        reader.read_to_end(&mut whole)?;
        let len = whole.len() as u64;
        buffered = Some(whole);
        len
    };
    let lie = match &fault {
        Some(Fault::LyingLength { delta, .. }) if !no_body => Some(*delta),
        _ => None,
    };
    let mut extra = Vec::new();
    if let Some(delta) = lie {
        let announced = i64::try_from(length)
            .unwrap_or(i64::MAX)
            .saturating_add(delta);
        extra.push(("Content-Length", announced.max(0).to_string()));
    } else if buffered.is_some() {
        extra.push(("Content-Length", length.to_string()));
    }
    let mut hop_by_hop = vec!["connection", "keep-alive", "transfer-encoding"];
    if buffered.is_some() || lie.is_some() {
        hop_by_hop.push("content-length");
    }
    let out_head = response.serialize(&hop_by_hop, &extra);
    log(shared, method, path, head, status, name);
    if let Some(Fault::Trickle {
        interval, in_head, ..
    }) = &fault
    {
        let source: &mut dyn Read = match &mut buffered {
            Some(whole) => &mut std::io::Cursor::new(std::mem::take(whole)),
            None => &mut reader,
        };
        let head_bytes: &[u8] = if *in_head { &out_head } else { &[] };
        if !*in_head {
            writer.write_all(&out_head)?;
        }
        trickle(
            shared,
            head_bytes.chain(source.take(length)),
            writer,
            *interval,
        )?;
        return Ok(false);
    }
    writer.write_all(&out_head)?;

    let source: &mut dyn Read = match &mut buffered {
        Some(whole) => &mut std::io::Cursor::new(std::mem::take(whole)),
        None => &mut reader,
    };
    let (cut, corrupt) = match &fault {
        Some(Fault::DropAfter { bytes, .. }) | Some(Fault::Stall { bytes, .. }) => {
            (Some(*bytes), None)
        }
        Some(Fault::Corrupt { offset, .. }) | Some(Fault::CorruptRanged { offset, .. }) => {
            (None, Some(*offset))
        }
        _ => (None, None),
    };
    let to_send = cut.map_or(length, |c| c.min(length));
    copy_body(source, writer, to_send, corrupt, &|n| shared.pace(n))?;
    writer.flush()?;
    match &fault {
        Some(Fault::DropAfter { .. }) => Ok(false),
        Some(Fault::Stall { stall, .. }) => {
            shared.sleep(*stall);
            Ok(false)
        }
        // The client waits for the missing bytes, then hangs up: the next read sees EOF.
        Some(Fault::LyingLength { delta, .. }) => Ok(*delta > 0),
        _ => Ok(true),
    }
}

/// Sends `source` one byte every `interval`, until it ends, the client leaves or the proxy
/// stops.
fn trickle(
    shared: &Shared,
    mut source: impl Read,
    writer: &mut TcpStream,
    interval: Duration,
) -> Result<()> {
    let mut byte = [0u8; 1];
    while !shared.shutdown.load(Ordering::SeqCst) {
        if source.read(&mut byte)? == 0 {
            break;
        }
        writer.write_all(&byte)?;
        writer.flush()?;
        shared.sleep(interval);
    }
    Ok(())
}

/// Sends the request upstream on a fresh connection; returns the response head and a reader
/// positioned at its body.
fn forward(shared: &Shared, head: &Head, body: &[u8]) -> Result<(Head, BufReader<TcpStream>)> {
    let mut upstream = TcpStream::connect_timeout(&shared.upstream, UPSTREAM_TIMEOUT)
        .with_context(|| format!("connecting to {}", shared.upstream))?;
    upstream.set_nodelay(true)?;
    upstream.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    upstream.set_write_timeout(Some(UPSTREAM_TIMEOUT))?;
    let mut request = head.serialize(
        &[
            "connection",
            "keep-alive",
            "proxy-connection",
            "content-length",
        ],
        &[("Connection", "close".to_owned())],
    );
    if !body.is_empty() || head.get("content-length").is_some() {
        // Re-insert Content-Length before the blank line.
        request.truncate(request.len() - 2);
        request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    }
    upstream.write_all(&request)?;
    upstream.write_all(body)?;
    upstream.flush()?;
    let mut reader = BufReader::new(upstream);
    let response = loop {
        let response = Head::read(&mut reader)?.context("registry closed without answering")?;
        // Skip interim 1xx answers (100 Continue).
        if !response
            .start
            .split_whitespace()
            .nth(1)
            .is_some_and(|s| s.starts_with('1'))
        {
            break response;
        }
    };
    Ok((response, reader))
}

/// Reads a whole chunked body (trailers discarded).
fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("chunked body ended early");
        }
        let size = line.trim().split(';').next().unwrap_or_default();
        let size = u64::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if size == 0 {
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
                    return Ok(out);
                }
            }
        }
        reader.take(size).read_to_end(&mut out)?;
        let mut crlf = String::new();
        reader.read_line(&mut crlf)?;
    }
}

/// Copies `len` bytes, flipping the byte at `corrupt`; fails if the source ends early.
fn copy_body(
    source: &mut dyn Read,
    writer: &mut TcpStream,
    len: u64,
    corrupt: Option<u64>,
    pace: &dyn Fn(usize),
) -> Result<()> {
    let mut buf = vec![0u8; LINK_STEP];
    let mut sent = 0u64;
    while sent < len {
        let want = usize::try_from((len - sent).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = source.read(&mut buf[..want])?;
        if n == 0 {
            bail!("registry body ended after {sent} of {len} bytes");
        }
        if let Some(offset) = corrupt.filter(|o| (sent..sent + n as u64).contains(o)) {
            let i = usize::try_from(offset - sent).unwrap_or(0);
            buf[i] ^= 0xff;
        }
        pace(n);
        writer.write_all(&buf[..n])?;
        sent += n as u64;
    }
    Ok(())
}
