//! The serving loop shared by every listener: HTTP/1.1 and HTTP/2 (h2c prior
//! knowledge) on one port, Envoy's header limits, sleep-and-continue on accept
//! errors, and a graceful drain on shutdown.
//!
//! Size: the accept loop, its three guards (open, inbound mutual TLS, outbound
//! capture) and the one `serve_io` they all end in, with the idle timeout; they share
//! private types, and splitting them would only move those types into a public seam.

use crate::http::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::{IntCounter, IntGauge};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use weft_model::MtlsMode;

/// Envoy's default `max_request_headers_kb`: larger header blocks get 431.
pub(crate) const MAX_HEADER_BYTES: usize = 60 * 1024;
/// Envoy's default `max_headers_count`.
pub(crate) const MAX_HEADERS: usize = 100;

/// Serves `listener` with `handler` until `stop` turns true, then lets open
/// connections finish for at most `drain`.
/// What a connection knows about itself, made once per connection and handed
/// to the handler with each of its requests (no per-request allocation).
#[derive(Debug, Clone, Default)]
pub(crate) struct Conn {
    /// The peer's proven SPIFFE ID, when the connection is mutual TLS (inbound).
    pub peer: Option<Arc<str>>,
    /// The downstream's address.
    pub remote: Option<std::net::SocketAddr>,
    /// Where a captured connection was going (transparent interception); absent
    /// when the peer dialled the listener itself.
    pub original_dst: Option<std::net::SocketAddr>,
    /// TLS was terminated here (inbound mTLS, a gateway's HTTPS server).
    pub tls: bool,
    /// The name the ClientHello asked for (SNI): a gateway's server, or, from a mesh peer,
    /// Istio's `outbound_.PORT_.SUBSET_.HOST` naming the port it is for.
    pub sni: Option<Arc<str>>,
    /// The fingerprint of the TLS policy a gateway connection was accepted under (its
    /// settings and client CA; none: plaintext): a request on it is served only while its
    /// server still has that policy (a server turned MUTUAL, or given another client CA,
    /// takes no request on a connection that never showed such a certificate).
    pub accepted: Option<u64>,
}

/// What a listener checks before serving HTTP on a connection.
#[derive(Clone)]
pub(crate) enum Guard {
    /// Serve every connection (admin).
    Open,
    /// Inbound: mTLS by the PeerAuthentication mode.
    Inbound(Arc<dyn InboundSecurity>),
    /// Outbound: a connection redirected by iptables is sniffed; HTTP is served
    /// (with its [`OriginalDst`]), anything else is passed through or refused,
    /// and reported to the telemetry.
    Outbound(Arc<dyn crate::net::intercept::Capture>),
    /// A gateway's port: TLS with the certificate the ClientHello's SNI selects, or
    /// plaintext where the port's servers are plaintext.
    Edge(Arc<dyn EdgeTls>),
}

/// What a gateway port needs to accept a client.
pub(crate) trait EdgeTls: Send + Sync + 'static {
    /// Whether the port serves plaintext HTTP.
    fn plaintext(&self) -> bool;
    /// The TLS config for a ClientHello naming `sni`, with the fingerprint of its policy;
    /// `None`: no server takes it.
    fn config_for(&self, sni: Option<&str>) -> Option<(Arc<rustls::ServerConfig>, u64)>;
    /// Counts a connection refused, by reason.
    fn refused(&self, reason: &'static str);
}

/// What the inbound listener needs to speak mesh mTLS (and to relay mesh TCP to the app).
pub(crate) trait InboundSecurity: crate::net::tcp::InboundTcp {
    fn mode(&self) -> MtlsMode;
    /// The server config for the current certificate, if this sidecar has one.
    fn server_config(&self) -> Option<Arc<rustls::ServerConfig>>;
    /// Counts a connection refused, by reason.
    fn refused(&self, reason: &'static str);
    /// Whether a peer SPIFFE ID is in this mesh's trust domain.
    fn trusts(&self, peer: &str) -> bool;
}

/// Binds `addr` and, when it is IPv4's wildcard or loopback, its IPv6 twin on
/// the same port (`[::]` or `[::1]`, IPv6 only, so IPv4 peers keep their own
/// addresses): in a dual-stack pod ip6tables redirects IPv6 to the twin. No
/// twin where IPv6 is off; where it is on, a twin that cannot be bound fails
/// the start, as the first address would (IPv6 must never reach a port some
/// other process holds).
pub(crate) async fn bind(addr: std::net::SocketAddr) -> std::io::Result<Vec<TcpListener>> {
    use std::net::{IpAddr, Ipv6Addr, SocketAddr};
    let first = TcpListener::bind(addr).await?;
    let twin_ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => Ipv6Addr::UNSPECIFIED,
        IpAddr::V4(ip) if ip.is_loopback() => Ipv6Addr::LOCALHOST,
        _ => return Ok(vec![first]),
    };
    if !crate::net::iptables::ipv6_on() {
        return Ok(vec![first]);
    }
    let twin = SocketAddr::new(IpAddr::V6(twin_ip), first.local_addr()?.port());
    let second = bind_v6_only(twin)
        .map_err(|e| std::io::Error::new(e.kind(), format!("the IPv6 twin {twin} of {addr}: {e}")))?;
    Ok(vec![first, second])
}

fn bind_v6_only(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, None)?;
    socket.set_only_v6(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// How long a new connection may take to send its first byte.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// Envoy's default downstream `idle_timeout`: a connection with no request in
/// flight and nothing read or written for this long is closed (HTTP/1.1, h2c and TLS alike).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// A listener's timeouts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// How long open connections may finish after shutdown starts.
    pub drain: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle: Duration,
}

impl Timeouts {
    /// `drain`, and Envoy's idle timeout.
    pub(crate) fn new(drain: Duration) -> Self {
        Timeouts { drain, idle: IDLE_TIMEOUT }
    }
}

/// Reads and writes on a connection, counted (the idle timeout's clock is the
/// watchdog's: a count that stood still).
struct Tracked<I> {
    io: I,
    activity: Arc<std::sync::atomic::AtomicU64>,
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for Tracked<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if r.is_ready() {
            self.activity.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for Tracked<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        if r.is_ready() {
            self.activity.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if r.is_ready() {
            self.activity.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

/// Resolves once `activity` has stood still with no request in flight for `idle`
/// (checked every quarter of it: closed after idle to 1.25 × idle).
async fn idle_for(idle: Duration, activity: &std::sync::atomic::AtomicU64, in_flight: &std::sync::atomic::AtomicUsize) {
    use std::sync::atomic::Ordering::Relaxed;
    let step = (idle / 4).max(Duration::from_millis(10));
    let (mut seen, mut quiet) = (activity.load(Relaxed), Duration::ZERO);
    loop {
        tokio::time::sleep(step).await;
        let now = activity.load(Relaxed);
        if now != seen || in_flight.load(Relaxed) > 0 {
            (seen, quiet) = (now, Duration::ZERO);
        } else {
            quiet += step;
            if quiet >= idle {
                return;
            }
        }
    }
}

/// Serves `listener` with `handler` until `stop` turns true, then lets open
/// connections finish for at most `drain`. With `security`, connections are
/// told apart by their first bytes: TLS is terminated (client certificate
/// required, peer identity attached to requests), plaintext is served or
/// refused by the mTLS mode.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    mut stop: watch::Receiver<bool>,
    timeouts: Timeouts,
    (active, accepted_total): (IntGauge, IntCounter),
    guard: Guard,
) where
    H: Fn(Request<Incoming>, Arc<Conn>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own header-read timeout (30 s by default) also runs while a keep-alive
    // connection waits for its next request: it would close idle HTTP/1.1 connections
    // long before the idle timeout, racing clients that reuse them. It bounds one head's
    // arrival instead, at the idle timeout (a client dribbling a head keeps the watchdog
    // below awake).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.idle)
        .max_buf_size(MAX_HEADER_BYTES + 4096)
        .max_headers(MAX_HEADERS);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEADER_BYTES as u32);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let remote = stream.peer_addr().ok();
                let (handler, builder, guard) = (handler.clone(), builder.clone(), guard.clone());
                let watcher = (graceful.watcher(), timeouts.idle);
                let active = active.clone();
                active.inc();
                accepted_total.inc();
                tokio::spawn(async move {
                    match guard {
                        Guard::Open => {
                            let conn = Conn { remote, ..Conn::default() };
                            serve_io(builder, watcher, TokioIo::new(stream), handler, conn, None).await
                        }
                        Guard::Inbound(sec) => secure(builder, watcher, stream, handler, sec, remote).await,
                        Guard::Outbound(capture) => captured(builder, watcher, stream, handler, &*capture, remote).await,
                        Guard::Edge(tls) => edge(builder, watcher, stream, handler, &*tls, remote).await,
                    }
                    active.dec();
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let drain = timeouts.drain;
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain deadline of {drain:?} passed with connections still open");
    }
}

/// The first bytes of a new connection, within [`FIRST_BYTE_TIMEOUT`]; none when it
/// closes, fails or stays silent.
async fn first_bytes(stream: &tokio::net::TcpStream) -> Option<([u8; 3], usize)> {
    let mut first = [0u8; 3];
    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => Some((first, n)),
        _ => None,
    }
}

/// A TLS handshake within [`FIRST_BYTE_TIMEOUT`]; a failure or a timeout is counted by
/// `refused` and gives none.
async fn handshake<T, E: std::fmt::Display>(
    shake: impl Future<Output = Result<T, E>>,
    refused: impl Fn(&'static str),
) -> Option<T> {
    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, shake).await {
        Ok(Ok(done)) => Some(done),
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake refused: {e}");
            refused("handshake");
            None
        }
        Err(_) => {
            refused("handshake timeout");
            None
        }
    }
}

async fn secure<H, F>(
    builder: auto::Builder<TokioExecutor>,
    watcher: (hyper_util::server::graceful::Watcher, Duration),
    stream: tokio::net::TcpStream,
    handler: H,
    sec: Arc<dyn InboundSecurity>,
    remote: Option<std::net::SocketAddr>,
) where
    H: Fn(Request<Incoming>, Arc<Conn>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    // Where a captured peer was going: authorization's `ports` is that port, not the app's.
    let original_dst = crate::net::intercept::original_dst(&stream);
    // Captured to one of the app's TCP ports: a caller outside Weft's mesh (a Weft peer dials
    // the inbound listener itself), relayed as it comes, server-first protocols and the app's
    // own TLS included, without waiting for a byte; refused under STRICT.
    if let Some(dst) = original_dst.filter(|d| sec.serves_tcp(d.port())) {
        return crate::net::tcp::inbound(stream, Some(dst.port()), None, remote, &*sec).await;
    }
    let Some((first, n)) = first_bytes(&stream).await else { return };
    let mode = sec.mode();
    if !crate::security::tls::looks_like_tls(&first[..n]) {
        if mode == MtlsMode::Strict {
            sec.refused("plaintext under STRICT");
            return;
        }
        // Served while the mode allows it: a switch to STRICT refuses this connection's next request.
        let conn = Conn { remote, original_dst, ..Conn::default() };
        return serve_io(builder, watcher, TokioIo::new(stream), handler, conn, Some(sec)).await;
    }
    let Some(config) = sec.server_config().filter(|_| mode != MtlsMode::Disable) else {
        sec.refused("tls without a workload certificate or under DISABLE");
        return;
    };
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    let Some(tls) = handshake(accept, |why| sec.refused(why)).await else { return };
    let peer =
        tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| crate::security::tls::spiffe_id(c));
    let Some(peer) = peer else {
        sec.refused("no SPIFFE ID");
        return;
    };
    // The chain is ours, so the trust domain should be too; a mismatch means a misissued certificate.
    if !sec.trusts(&peer) {
        sec.refused("foreign trust domain");
        return;
    }
    // Mesh TCP: relayed to the app's port the SNI names, if the app serves TCP there.
    let session = tls.get_ref().1;
    if session.alpn_protocol() == Some(crate::net::tcp::ALPN) {
        let port = session.server_name().and_then(crate::net::tcp::port_of_sni);
        return crate::net::tcp::inbound(tls, port, Some(&peer), remote, &*sec).await;
    }
    // The SNI names the port the peer is for (a multi-port service's other HTTP port).
    let sni = session.server_name().map(Arc::from);
    let conn = Conn { peer: Some(peer.into()), remote, original_dst, tls: true, sni, ..Conn::default() };
    serve_io(builder, watcher, TokioIo::new(tls), handler, conn, None).await
}

/// A gateway client: TLS is terminated with the config of the server its ClientHello
/// names (read before choosing, so each name gets its own certificate and client
/// check), plaintext is served where the port is plaintext, anything else closed.
async fn edge<H, F>(
    builder: auto::Builder<TokioExecutor>,
    watcher: (hyper_util::server::graceful::Watcher, Duration),
    stream: tokio::net::TcpStream,
    handler: H,
    edge: &dyn EdgeTls,
    remote: Option<std::net::SocketAddr>,
) where
    H: Fn(Request<Incoming>, Arc<Conn>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let Some((first, n)) = first_bytes(&stream).await else { return };
    if !crate::security::tls::looks_like_tls(&first[..n]) {
        if !edge.plaintext() {
            edge.refused("plaintext on a TLS port");
            return;
        }
        let conn = Conn { remote, ..Conn::default() };
        return serve_io(builder, watcher, TokioIo::new(stream), handler, conn, None).await;
    }
    let shake = async {
        let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
        let start = acceptor.await.map_err(|e| e.to_string())?;
        let sni: Option<Arc<str>> = start.client_hello().server_name().map(|s| s.to_ascii_lowercase().into());
        let (config, accepted) = edge.config_for(sni.as_deref()).ok_or("no server for this name")?;
        let tls = start.into_stream(config).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((tls, sni, accepted))
    };
    let Some((tls, sni, accepted)) = handshake(shake, |why| edge.refused(why)).await else { return };
    let conn = Conn { remote, tls: true, sni, accepted: Some(accepted), ..Conn::default() };
    serve_io(builder, watcher, TokioIo::new(tls), handler, conn, None).await
}

/// The outbound side of a connection: explicit (the app dialled the listener)
/// or captured (iptables redirected it; the original destination says where it
/// was going). Captured HTTP is served and routed by `Host`; other protocols are
/// passed through to the original destination, or closed under REGISTRY_ONLY.
async fn captured<H, F>(
    builder: auto::Builder<TokioExecutor>,
    watcher: (hyper_util::server::graceful::Watcher, Duration),
    stream: tokio::net::TcpStream,
    handler: H,
    capture: &dyn crate::net::intercept::Capture,
    remote: Option<std::net::SocketAddr>,
) where
    H: Fn(Request<Incoming>, Arc<Conn>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    use crate::net::intercept::{self, Egress, PASSTHROUGH_CLUSTER};
    let Some(dst) = intercept::original_dst(&stream) else {
        let conn = Conn { remote, ..Conn::default() };
        return serve_io(builder, watcher, TokioIo::new(stream), handler, conn, None).await;
    };
    // A mesh service's TCP port on one of its endpoints: by port, whatever the bytes (Istio).
    match capture.mesh_tcp(dst) {
        Some(Ok(target)) => return crate::net::tcp::outbound(stream, dst, target, capture).await,
        Some(Err(cluster)) => return intercept::tcp_unreachable(dst, cluster, capture),
        None => {}
    }
    let mut first = [0u8; 16];
    let n = match tokio::time::timeout(intercept::PROTOCOL_DETECTION_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return,
        Ok(Ok(n)) => n,
        Err(_) => 0, // silent: a server-first protocol
    };
    if intercept::looks_like_http(&first[..n]) {
        let conn = Conn { remote, original_dst: Some(dst), ..Conn::default() };
        return serve_io(builder, watcher, TokioIo::new(stream), handler, conn, None).await;
    }
    // A TLS ClientHello names the server: TLS and HTTPS entries are matched by it (Istio's SNI match).
    let sni = match first[..n].first() {
        Some(22) => intercept::client_hello_sni(&intercept::peek_client_hello(&stream).await),
        _ => None,
    };
    match capture.egress(dst, sni.as_deref()) {
        Egress::Entry(cluster) => intercept::tcp_passthrough(stream, dst, capture, cluster).await,
        Egress::Passthrough => intercept::tcp_passthrough(stream, dst, capture, PASSTHROUGH_CLUSTER.into()).await,
        Egress::Refused => intercept::tcp_refused(dst, capture),
    }
}

/// A request being handled on a connection (the idle timeout waits for none).
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A response future behind a pointer: the handler's future is large, and
/// moving it by value costs a memcpy of kilobytes per request (callgrind:
/// +28k instructions per request when it was moved into a wrapper first).
type Responding = std::pin::Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

#[allow(clippy::too_many_arguments)]
async fn serve_io<I, H, F>(
    builder: auto::Builder<TokioExecutor>,
    watcher: (hyper_util::server::graceful::Watcher, Duration),
    io: I,
    handler: H,
    conn: Conn,
    plaintext: Option<Arc<dyn InboundSecurity>>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, Arc<Conn>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let (watcher, idle) = watcher;
    let activity = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = in_flight.clone();
    let conn = Arc::new(conn);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        // Boxed where it is made: the request future is large, and hyper moves what it is
        // given into place; the wrapper holding it and the in-flight guard stays small.
        let fut: Responding = match plaintext.as_ref().filter(|s| s.mode() == MtlsMode::Strict) {
            // A plaintext connection accepted under PERMISSIVE: once the mode is STRICT, its next
            // request is refused and the connection closed (in-flight requests finish).
            Some(sec) => {
                sec.refused("plaintext under STRICT");
                let mut r = Response::new(crate::http::body::full("plaintext connection closed: mTLS is STRICT now\n"));
                *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                Box::pin(std::future::ready(r))
            }
            None => Box::pin(handler(req, conn.clone())),
        };
        let guard = InFlight::enter(&counter);
        async move {
            let response = fut.await;
            drop(guard);
            Ok::<_, Infallible>(response)
        }
    });
    let io = Tracked { io, activity: activity.clone() };
    tokio::select! {
        served = watcher.watch(builder.serve_connection(io, service).into_owned()) => {
            if let Err(e) = served {
                tracing::debug!("connection ended with error: {e}");
            }
        }
        // Dropping the connection closes it: nothing is in flight.
        () = idle_for(idle, &activity, &in_flight) => tracing::debug!("connection closed after {idle:?} idle"),
    }
}
