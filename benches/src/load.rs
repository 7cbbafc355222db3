//! Open-loop HTTP load, the way wrk2 and `fortio -uniform` make it.
//!
//! A pacer thread hands out send times on a fixed schedule, `t0 + i / rate`,
//! round-robin over the connections. Latency is measured from that *intended*
//! time: when the server stalls, the requests that queue behind the stall are
//! charged for their wait, instead of the generator quietly sending fewer
//! (coordinated omission). The latency from the actual send is kept beside it
//! as `uncorrected`, so the gap between the two shows how far behind the
//! schedule the connections ran.
//!
//! The pacer is an OS thread with `std::thread::sleep` (tens of microseconds of
//! slop) rather than a tokio timer (one millisecond of granularity), because a
//! late timer would be charged to the server as latency.
//!
//! `rate == 0` is closed-loop: every connection sends its next request as soon
//! as the previous one is answered, and latency counts from the actual send.
//!
//! Size: one engine (the pacer, the connection workers, the tally and the report)
//! whose parts share private types; about 620 lines before its tests.

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Highest latency the histograms hold (longer ones are recorded as this): one minute.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Significant digits of the histograms: 0.1 % precision, as wrk2 and fortio keep.
const SIGFIG: u8 = 3;
/// How long the closing requests may take after the schedule ends before they are abandoned.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to send, how often, and over what.
#[derive(Debug, Clone)]
pub struct Options {
    /// `http://host:port/path?query` (h2c for `--http2`), or `https://` with [`Options::tls`].
    pub url: Uri,
    /// Requests per second over all connections; 0 means closed-loop (as fast as possible).
    pub rate: f64,
    /// Keep-alive connections (HTTP/1.1), or concurrent streams of the one
    /// connection in closed-loop HTTP/2.
    pub connections: usize,
    /// Length of the measured window.
    pub duration: Duration,
    /// Load sent before the measured window and not recorded: fills pools and caches.
    pub warmup: Duration,
    /// Extra request headers; a `host` entry replaces the URL's authority
    /// (`Host` in HTTP/1.1, `:authority` in HTTP/2), as a sidecar routes by it.
    pub headers: HeaderMap,
    /// HTTP/2 with prior knowledge (h2c), every request multiplexed on one connection.
    pub http2: bool,
    /// Per-request limit; a request not answered in time counts as a `timeout` error.
    pub timeout: Duration,
    /// TLS to the target (`https://` URLs): the client config (roots, ALPN) and the
    /// name sent as SNI and checked in the certificate.
    pub tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
}

impl Options {
    /// One connection, closed-loop, ten seconds, no extra headers.
    pub fn new(url: Uri) -> Self {
        Options {
            url,
            rate: 0.0,
            connections: 1,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            headers: HeaderMap::new(),
            http2: false,
            timeout: DEFAULT_TIMEOUT,
            tls: None,
        }
    }
}

/// Parses a `--header` argument, `name: value`.
pub fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s.split_once(':').ok_or_else(|| format!("header {s:?} is not `name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
        .map_err(|e| format!("header name in {s:?}: {e}"))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|e| format!("header value in {s:?}: {e}"))?;
    Ok((name, value))
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("url {0}: {1}")]
    Url(String, &'static str),
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, String),
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// The outcome of a run (or of several runs merged with [`Report::merge`]).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub protocol: &'static str,
    /// `open-loop` (constant rate) or `closed-loop` (as fast as possible).
    pub mode: &'static str,
    /// The configured rate; `None` in closed-loop.
    pub target_rps: Option<f64>,
    pub connections: usize,
    /// Configured length of the measured window, seconds.
    pub duration_s: f64,
    /// From the start of the measured window to the last response, seconds.
    pub elapsed_s: f64,
    /// Responses received in the measured window, whatever their status.
    pub requests: u64,
    /// Of which 2xx.
    pub ok: u64,
    pub achieved_rps: f64,
    /// From the intended send time (coordinated omission corrected).
    pub latency_ms: Percentiles,
    /// From the actual send time.
    pub uncorrected_latency_ms: Percentiles,
    /// Responses by status code.
    pub status: BTreeMap<u16, u64>,
    pub non_2xx: u64,
    /// Requests that got no response, by reason: connect, send, body, timeout.
    pub transport_errors: BTreeMap<String, u64>,
    /// Scheduled requests never sent: still queued when the run's deadline passed.
    pub unsent: u64,
    pub bytes_received: u64,
    /// Latency in microseconds from the intended send time.
    #[serde(skip)]
    pub histogram: Histogram<u64>,
    /// Latency in microseconds from the actual send time.
    #[serde(skip)]
    pub uncorrected: Histogram<u64>,
}

impl Report {
    /// Adds `other` (another round of the same load) to this report: counts
    /// and durations add up, percentiles come from the merged histograms.
    pub fn merge(&mut self, other: &Report) {
        let _ = self.histogram.add(&other.histogram);
        let _ = self.uncorrected.add(&other.uncorrected);
        self.duration_s += other.duration_s;
        self.elapsed_s += other.elapsed_s;
        self.requests += other.requests;
        self.ok += other.ok;
        self.non_2xx += other.non_2xx;
        self.unsent += other.unsent;
        self.bytes_received += other.bytes_received;
        for (k, v) in &other.status {
            *self.status.entry(*k).or_default() += v;
        }
        for (k, v) in &other.transport_errors {
            *self.transport_errors.entry(k.clone()).or_default() += v;
        }
        self.achieved_rps = rate(self.requests, self.elapsed_s);
        self.latency_ms = Percentiles::of(&self.histogram);
        self.uncorrected_latency_ms = Percentiles::of(&self.uncorrected);
    }

    /// Transport errors and unsent requests together.
    pub fn failed(&self) -> u64 {
        self.transport_errors.values().sum::<u64>() + self.unsent
    }

    /// A human-readable summary, as `weft-load` prints it.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let load = match self.target_rps {
            Some(r) => format!("{r} rps"),
            None => "max rate".to_string(),
        };
        let _ = writeln!(
            out,
            "{} {} {load} for {:.1}s over {} connection(s): {}",
            self.protocol, self.mode, self.duration_s, self.connections, self.url
        );
        let _ = writeln!(
            out,
            "requests {}  2xx {}  achieved {:.1} rps  in {:.2}s  ({} bytes received)\n",
            self.requests, self.ok, self.achieved_rps, self.elapsed_s, self.bytes_received
        );
        let _ = writeln!(out, "| latency (ms)               |      p50 |      p90 |      p99 |    p99.9 |      max |");
        let _ = writeln!(out, "|----------------------------|---------:|---------:|---------:|---------:|---------:|");
        for (name, p) in [("from intended send", &self.latency_ms), ("from actual send", &self.uncorrected_latency_ms)]
        {
            let _ = writeln!(
                out,
                "| {name:<26} | {:>8.3} | {:>8.3} | {:>8.3} | {:>8.3} | {:>8.3} |",
                p.p50, p.p90, p.p99, p.p999, p.max
            );
        }
        let _ = writeln!(out);
        let non_2xx: Vec<String> =
            self.status.iter().filter(|(s, _)| !(200..300).contains(*s)).map(|(s, n)| format!("{s} x {n}")).collect();
        let _ = writeln!(out, "non-2xx: {}", if non_2xx.is_empty() { "none".to_string() } else { non_2xx.join(", ") });
        let errors: Vec<String> = self.transport_errors.iter().map(|(k, n)| format!("{k} x {n}")).collect();
        let _ = writeln!(
            out,
            "transport errors: {}",
            if errors.is_empty() { "none".to_string() } else { errors.join(", ") }
        );
        if self.unsent > 0 {
            let _ = writeln!(out, "unsent (still queued at the deadline): {}", self.unsent);
        }
        out
    }
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGFIG).expect("static histogram bounds are valid")
}

/// Counts kept by one connection (or one stream dispatcher), merged at the end.
#[derive(Debug)]
struct Tally {
    latency: Histogram<u64>,
    uncorrected: Histogram<u64>,
    status: BTreeMap<u16, u64>,
    errors: BTreeMap<&'static str, u64>,
    unsent: u64,
    bytes: u64,
    last_done: Option<Instant>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latency: histogram(),
            uncorrected: histogram(),
            status: BTreeMap::new(),
            errors: BTreeMap::new(),
            unsent: 0,
            bytes: 0,
            last_done: None,
        }
    }

    /// Records one request unless it was scheduled during the warm-up.
    fn record(&mut self, o: Outcome, measure_from: Instant) {
        if o.intended < measure_from {
            return;
        }
        self.last_done = Some(self.last_done.map_or(o.done, |d| d.max(o.done)));
        match o.result {
            Ok((status, bytes)) => {
                let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
                self.latency.saturating_record(us(o.done - o.intended));
                self.uncorrected.saturating_record(us(o.done - o.sent));
                *self.status.entry(status.as_u16()).or_default() += 1;
                self.bytes += bytes;
            }
            Err(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latency.add(&other.latency);
        let _ = self.uncorrected.add(&other.uncorrected);
        for (k, v) in other.status {
            *self.status.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.unsent += other.unsent;
        self.bytes += other.bytes;
        self.last_done = match (self.last_done, other.last_done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// One request's fate.
struct Outcome {
    intended: Instant,
    sent: Instant,
    done: Instant,
    /// Status and body bytes, or the kind of transport error.
    result: Result<(StatusCode, u64), &'static str>,
}

/// Where to connect and what to send; shared by every connection of a run.
struct Target {
    addr: SocketAddr,
    uri: Uri,
    headers: HeaderMap,
    http2: bool,
    timeout: Duration,
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    /// The one HTTP/2 connection, replaced when it dies.
    h2: tokio::sync::Mutex<Option<http2::SendRequest<Empty<Bytes>>>>,
}

impl Target {
    async fn new(opts: &Options) -> Result<Self, LoadError> {
        let url = opts.url.to_string();
        match (opts.url.scheme_str(), &opts.tls) {
            (Some("http"), None) | (Some("https"), Some(_)) => {}
            (Some("https"), None) => return Err(LoadError::Url(url, "https:// needs a TLS client config")),
            _ => return Err(LoadError::Url(url, "only http:// (h2c with --http2) and https:// are supported")),
        }
        let authority = opts.url.authority().ok_or_else(|| LoadError::Url(url.clone(), "has no host"))?.clone();
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await
            .map_err(|e| LoadError::Resolve(url.clone(), e))?
            .next()
            .ok_or_else(|| LoadError::Url(url.clone(), "resolves to no address"))?;
        let path = opts.url.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let mut headers = opts.headers.clone();
        let host = headers.remove(HOST);
        let uri = if opts.http2 {
            // :authority carries the host in HTTP/2; a Host header beside it would be a second opinion.
            let authority = match &host {
                Some(h) => h.to_str().map_err(|_| LoadError::Url(url.clone(), "host header is not ASCII"))?.to_string(),
                None => authority.to_string(),
            };
            let scheme = if opts.tls.is_some() { "https" } else { "http" };
            Uri::builder().scheme(scheme).authority(authority).path_and_query(path).build()
        } else {
            headers.insert(
                HOST,
                host.unwrap_or_else(|| {
                    HeaderValue::from_str(authority.as_str()).expect("an authority is a valid header value")
                }),
            );
            Uri::builder().path_and_query(path).build()
        }
        .map_err(|_| LoadError::Url(url.clone(), "host header does not make a valid authority"))?;
        let tls = opts.tls.clone().map(|(config, name)| (tokio_rustls::TlsConnector::from(config), name));
        Ok(Target {
            addr,
            uri,
            headers,
            http2: opts.http2,
            timeout: opts.timeout,
            tls,
            h2: tokio::sync::Mutex::new(None),
        })
    }

    fn request(&self) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        if self.http2 {
            *req.version_mut() = http::Version::HTTP_2;
        }
        req
    }

    async fn connect(&self) -> Result<TokioIo<Stream>, String> {
        let stream = TcpStream::connect(self.addr).await.map_err(|e| e.to_string())?;
        // Small requests must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        Ok(TokioIo::new(match &self.tls {
            None => Stream::Plain(stream),
            Some((connector, name)) => {
                Stream::Tls(Box::new(connector.connect(name.clone(), stream).await.map_err(|e| e.to_string())?))
            }
        }))
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<Empty<Bytes>>, String> {
        let (sender, conn) = http1::handshake(self.connect().await?).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// The shared HTTP/2 connection, opened (again) when there is none.
    async fn h2_sender(&self) -> Result<http2::SendRequest<Empty<Bytes>>, String> {
        let mut slot = self.h2.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let (sender, conn) =
            http2::handshake(TokioExecutor::new(), self.connect().await?).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        *slot = Some(sender.clone());
        Ok(sender)
    }
}

/// A connection to the target: plaintext or TLS (one branch per read or write, no boxing of
/// the plaintext path the other scenarios take).
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Sends a request on `conn` (HTTP/1.1: this worker's connection, opened when
/// missing; HTTP/2: the shared one) and reads the whole response.
async fn exchange(target: &Target, conn: &mut Option<http1::SendRequest<Empty<Bytes>>>, intended: Instant) -> Outcome {
    let mut sent = Instant::now();
    let result = async {
        let response = if target.http2 {
            let mut s = target.h2_sender().await.map_err(|_| "connect")?;
            sent = Instant::now();
            s.ready().await.map_err(|_| "send")?;
            s.send_request(target.request()).await
        } else {
            if conn.as_ref().is_none_or(|c| c.is_closed()) {
                *conn = Some(target.connect_h1().await.map_err(|_| "connect")?);
                sent = Instant::now();
            }
            let s = conn.as_mut().expect("connected above");
            s.ready().await.map_err(|_| "send")?;
            s.send_request(target.request()).await
        };
        let response = response.map_err(|_| "send")?;
        let status = response.status();
        Ok((status, drain(response.into_body()).await?))
    };
    let result = match tokio::time::timeout(target.timeout, result).await {
        Ok(r) => r,
        Err(_) => Err("timeout"),
    };
    if result.is_err() {
        // The connection's state is unknown after a failure: start over on a new one.
        *conn = None;
    }
    Outcome { intended, sent, done: Instant::now(), result }
}

async fn drain(mut body: Incoming) -> Result<u64, &'static str> {
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(|_| "body")?.into_data() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

/// Hands out send times `t0 + i / rate` for `i` while they fall before `end`,
/// round-robin over `outs`. Sends every due time at once when it wakes late,
/// so the schedule holds at rates above the sleep granularity.
fn spawn_pacer(t0: Instant, rate: f64, end: Instant, outs: Vec<mpsc::UnboundedSender<Instant>>) -> std::io::Result<()> {
    std::thread::Builder::new().name("weft-load-pacer".into()).spawn(move || {
        let period = 1.0 / rate;
        for i in 0u64.. {
            let due = t0 + Duration::from_secs_f64(i as f64 * period);
            if due >= end {
                break;
            }
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            // A closed receiver means its worker gave up; its share is simply not sent.
            let _ = outs[(i % outs.len() as u64) as usize].send(due);
        }
    })?;
    Ok(())
}

/// Runs one load: warm-up, then the measured window, then waits for the
/// last answers (at most `timeout` past the end of the schedule).
pub async fn run(opts: &Options) -> Result<Report, LoadError> {
    let target = Arc::new(Target::new(opts).await?);
    let connections = opts.connections.max(1);

    // Open the connections before the clock starts: a handshake is not a request's latency.
    let mut conns = Vec::with_capacity(connections);
    if target.http2 {
        target.h2_sender().await.map_err(|e| LoadError::Connect(target.addr, e))?;
    } else {
        for _ in 0..connections {
            conns.push(Some(target.connect_h1().await.map_err(|e| LoadError::Connect(target.addr, e))?));
        }
    }

    let t0 = Instant::now();
    let measure_from = t0 + opts.warmup;
    let end = measure_from + opts.duration;
    let deadline = end + opts.timeout;
    let mut workers: JoinSet<Tally> = JoinSet::new();

    if opts.rate > 0.0 {
        let mut outs = Vec::new();
        if target.http2 {
            let (tx, rx) = mpsc::unbounded_channel();
            outs.push(tx);
            workers.spawn(h2_dispatcher(target.clone(), rx, measure_from, deadline));
        } else {
            for conn in conns.drain(..) {
                let (tx, rx) = mpsc::unbounded_channel();
                outs.push(tx);
                workers.spawn(h1_scheduled(target.clone(), conn, rx, measure_from, deadline));
            }
        }
        spawn_pacer(t0, opts.rate, end, outs)
            .map_err(|e| LoadError::Connect(target.addr, format!("pacer thread: {e}")))?;
    } else {
        for i in 0..connections {
            let conn = conns.get_mut(i).and_then(Option::take);
            workers.spawn(closed_loop(target.clone(), conn, measure_from, end));
        }
    }

    let mut tally = Tally::new();
    while let Some(done) = workers.join_next().await {
        if let Ok(t) = done {
            tally.merge(t);
        }
    }

    let elapsed =
        tally.last_done.map_or(opts.duration, |d| d.saturating_duration_since(measure_from)).max(opts.duration);
    let requests: u64 = tally.status.values().sum();
    let ok = tally.status.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum();
    Ok(Report {
        url: opts.url.to_string(),
        protocol: if opts.http2 { "http2" } else { "http1" },
        mode: if opts.rate > 0.0 { "open-loop" } else { "closed-loop" },
        target_rps: (opts.rate > 0.0).then_some(opts.rate),
        connections: if opts.http2 && opts.rate > 0.0 { 1 } else { connections },
        duration_s: opts.duration.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        requests,
        ok,
        achieved_rps: rate(requests, elapsed.as_secs_f64()),
        latency_ms: Percentiles::of(&tally.latency),
        uncorrected_latency_ms: Percentiles::of(&tally.uncorrected),
        non_2xx: requests - ok,
        status: tally.status,
        transport_errors: tally.errors.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        unsent: tally.unsent,
        bytes_received: tally.bytes,
        histogram: tally.latency,
        uncorrected: tally.uncorrected,
    })
}

/// One HTTP/1.1 connection on the schedule: send times queue in `rx` while
/// the connection is busy, and their wait counts.
async fn h1_scheduled(
    target: Arc<Target>,
    mut conn: Option<http1::SendRequest<Empty<Bytes>>>,
    mut rx: mpsc::UnboundedReceiver<Instant>,
    measure_from: Instant,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::new();
    while let Some(intended) = rx.recv().await {
        if Instant::now() >= deadline {
            tally.unsent += 1;
            continue;
        }
        let outcome = exchange(&target, &mut conn, intended).await;
        tally.record(outcome, measure_from);
    }
    tally
}

/// HTTP/2 on the schedule: every send time becomes its own stream.
async fn h2_dispatcher(
    target: Arc<Target>,
    mut rx: mpsc::UnboundedReceiver<Instant>,
    measure_from: Instant,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::new();
    let mut streams: JoinSet<Outcome> = JoinSet::new();
    loop {
        tokio::select! {
            next = rx.recv() => match next {
                Some(intended) => {
                    let target = target.clone();
                    streams.spawn(async move { exchange(&target, &mut None, intended).await });
                }
                None => break,
            },
            Some(Ok(outcome)) = streams.join_next() => tally.record(outcome, measure_from),
        }
    }
    let rest = async {
        while let Some(done) = streams.join_next().await {
            if let Ok(outcome) = done {
                tally.record(outcome, measure_from);
            }
        }
    };
    // Every stream has its own timeout; the deadline only guards against a wedged runtime.
    let _ = tokio::time::timeout_at(deadline.into(), rest).await;
    tally.unsent += streams.len() as u64;
    tally
}

/// One connection (HTTP/1.1) or one stream at a time (HTTP/2), back to back.
async fn closed_loop(
    target: Arc<Target>,
    mut conn: Option<http1::SendRequest<Empty<Bytes>>>,
    measure_from: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::new();
    while Instant::now() < end {
        let outcome = exchange(&target, &mut conn, Instant::now()).await;
        tally.record(outcome, measure_from);
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_with_spaces_and_case() {
        let (n, v) = parse_header("Host:  app ").unwrap();
        assert_eq!(n, HOST);
        assert_eq!(v, "app");
        assert!(parse_header("no-colon").is_err());
    }

    #[test]
    fn merged_reports_add_up() {
        let mut t = Tally::new();
        let t0 = Instant::now();
        for ms in [1u64, 2, 3, 100] {
            let done = t0 + Duration::from_millis(ms);
            t.record(Outcome { intended: t0, sent: t0, done, result: Ok((StatusCode::OK, 10)) }, t0);
        }
        t.record(Outcome { intended: t0, sent: t0, done: t0, result: Err("timeout") }, t0);
        // Scheduled before the measured window: ignored.
        t.record(
            Outcome { intended: t0 - Duration::from_secs(1), sent: t0, done: t0, result: Ok((StatusCode::OK, 10)) },
            t0,
        );
        assert_eq!(t.status[&200], 4);
        assert_eq!(t.errors["timeout"], 1);
        let p = Percentiles::of(&t.latency);
        assert!((1.9..2.1).contains(&p.p50), "{p:?}");
        assert!((99.0..101.0).contains(&p.max), "{p:?}");
    }
}
