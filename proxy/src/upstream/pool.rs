//! Upstream connections of one endpoint: a keep-alive pool of HTTP/1.1
//! connections and one multiplexed HTTP/2 connection. Never a new connection
//! per request.
//!
//! The keep-alive race (the upstream closes an idle connection just as we
//! reuse it, Istio's best-known intermittent 503) is absorbed here: when hyper
//! hands the request back unsent, it goes out again on a fresh connection.
//!
//! Size: HTTP/1.1 and HTTP/2 pooling, its limits and the keep-alive race share one
//! endpoint's connection state.

use crate::http::body::Body;
use crate::security::tls::Conn;
use crate::upstream::limits::{Limits, Overflow, Permit};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Connection settings of a cluster, applied to each of its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Mesh mTLS: the SPIFFE IDs the server may prove (when this sidecar has an identity).
    pub tls: Option<Arc<[String]>>,
    /// TLS to a server outside the mesh (DestinationRule `tls.mode: SIMPLE`).
    pub origination: Option<Arc<crate::security::tls::Origination>>,
    /// The SNI of mesh mTLS: Istio's `outbound_.PORT_.SUBSET_.HOST`, which names the port
    /// for the server's sidecar (a multi-port service); else [`crate::security::tls::MESH_SNI`].
    pub(crate) mesh_sni: Option<rustls::pki_types::ServerName<'static>>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            connect_timeout: weft_model::DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: weft_model::DEFAULT_IDLE_TIMEOUT,
            tls: None,
            origination: None,
            mesh_sni: None,
        }
    }
}

/// The protocol spoken to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    /// HTTP/2 downstream goes upstream as HTTP/2, anything else as HTTP/1.1.
    pub fn of(version: http::Version) -> Protocol {
        if version == http::Version::HTTP_2 {
            Protocol::Http2
        } else {
            Protocol::Http1
        }
    }
}

/// Why an upstream exchange produced no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection could not be made (refused, unreachable).
    #[error("connection failure: {0}")]
    ConnectFailure(std::io::Error),
    /// The TCP connection was not made within the connect timeout.
    #[error("connection failure: connect timeout after {0:?}")]
    ConnectTimeout(Duration),
    /// The connection failed before the request was written: the upstream never saw it.
    #[error("reset before request: {0}")]
    ResetBeforeRequest(hyper::Error),
    /// HTTP/2 REFUSED_STREAM: the upstream did not process the request.
    #[error("refused stream")]
    RefusedStream,
    /// The connection failed after the request was written; the upstream may have processed it.
    #[error("connection termination: {0}")]
    Reset(hyper::Error),
    /// A reused keep-alive connection failed before any response byte: almost
    /// always the upstream closing it as idle while the request was on its way.
    #[error("connection termination on a reused connection: {0}")]
    StaleReset(hyper::Error),
    /// A connection-pool limit turned the request away (never retried).
    #[error("overflow: {} limit of the cluster reached", .0.label())]
    Overflow(Overflow),
}

impl UpstreamError {
    /// True when the upstream provably did not process the request, so a retry is safe for any method.
    pub(crate) fn not_processed(&self) -> bool {
        !matches!(self, UpstreamError::Reset(_) | UpstreamError::StaleReset(_))
    }
}

#[derive(Debug)]
struct Idle {
    tx: http1::SendRequest<Body>,
    since: Instant,
    /// Requests this connection has carried.
    served: u32,
    /// Where it goes back to its own task after each request.
    back: Arc<Returning>,
}

/// A sent-on HTTP/1.1 connection on its way back to the pool: its connection's own
/// task waits until the response has been read and puts it back in the idle list
/// (no task per request).
#[derive(Debug, Default)]
struct Returning {
    slot: Mutex<Option<Idle>>,
    arrived: tokio::sync::Notify,
    /// The connection's task has ended: nothing waits for the slot any more.
    closed: std::sync::atomic::AtomicBool,
}

impl Returning {
    fn take(&self) -> Option<Idle> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Hands `conn` to its task; dropped (closing it) when the task has ended. The
    /// slot is emptied again after `closed` on both sides, so an `Idle` (which points
    /// back here) never stays in it.
    fn send(&self, conn: Idle) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
        if self.closed.load(Ordering::Acquire) {
            drop(self.take());
        } else {
            self.arrived.notify_one();
        }
    }
}

#[derive(Debug)]
struct H2 {
    tx: http2::SendRequest<Body>,
    streams: u32,
}

#[derive(Debug)]
struct Inner {
    addr: SocketAddr,
    identity: Option<Arc<crate::security::identity::Identity>>,
    settings: PoolSettings,
    limits: Arc<Limits>,
    idle: Mutex<Vec<Idle>>,
    h2: tokio::sync::Mutex<Option<H2>>,
    /// Connections open now (HTTP/1.1 and HTTP/2), shared with the connection tasks.
    open: Arc<AtomicUsize>,
    /// Connections being made now.
    connecting: AtomicUsize,
    /// Connections opened since start.
    opened: AtomicU64,
}

/// The connections of one endpoint.
#[derive(Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    pub fn new(
        addr: SocketAddr,
        settings: PoolSettings,
        limits: Arc<Limits>,
        identity: Option<Arc<crate::security::identity::Identity>>,
    ) -> Self {
        Pool {
            inner: Arc::new(Inner {
                addr,
                identity,
                settings,
                limits,
                idle: Mutex::new(Vec::new()),
                h2: tokio::sync::Mutex::new(None),
                open: Arc::new(AtomicUsize::new(0)),
                connecting: AtomicUsize::new(0),
                opened: AtomicU64::new(0),
            }),
        }
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    pub fn limits(&self) -> &Arc<Limits> {
        &self.inner.limits
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Connections opened since the endpoint appeared.
    pub(crate) fn opened_connections(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// Idle HTTP/1.1 connections ready for reuse.
    pub(crate) fn idle_connections(&self) -> usize {
        self.inner.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Sends one request. The request's URI must already be in the form the
    /// protocol wants (origin-form for HTTP/1.1, absolute for HTTP/2).
    pub async fn send(&self, req: Request<Body>, protocol: Protocol) -> Result<Response<Incoming>, UpstreamError> {
        match protocol {
            Protocol::Http1 => self.send_h1(req).await,
            Protocol::Http2 => self.send_h2(req).await,
        }
    }

    async fn send_h1(&self, mut req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        let mut fresh_attempts = 0;
        // Held while this request waits for a connection (`http1MaxPendingRequests`).
        let mut pending: Option<Permit> = None;
        loop {
            let (mut conn, reused) = match self.checkout() {
                Some(idle) => (idle, true),
                None => match self.connection_permit() {
                    Some(permit) => {
                        fresh_attempts += 1;
                        (self.connect_h1(permit).await?, false)
                    }
                    None => {
                        if pending.is_none() {
                            pending = Some(self.inner.limits.pending().map_err(UpstreamError::Overflow)?);
                        }
                        self.wait_for_connection().await;
                        continue;
                    }
                },
            };
            drop(pending.take());
            conn.served += 1;
            match conn.tx.try_send_request(req).await {
                Ok(resp) => {
                    self.checkin_when_ready(conn);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // Not written: a stale pooled connection (or a fresh one that died at once).
                    Some(unsent) if reused || fresh_attempts < 2 => req = unsent,
                    Some(_) => return Err(UpstreamError::ResetBeforeRequest(e.into_error())),
                    None if reused => return Err(UpstreamError::StaleReset(e.into_error())),
                    None => return Err(UpstreamError::Reset(e.into_error())),
                },
            }
        }
    }

    /// A permit for a new connection: within `maxConnections`, or the first
    /// connection of an endpoint that has none (Envoy lets every host pool
    /// make progress; otherwise a request could wait forever behind idle
    /// connections of other endpoints).
    fn connection_permit(&self) -> Option<Option<Permit>> {
        match self.inner.limits.connection() {
            Some(permit) => Some(Some(permit)),
            None if self.open_connections() == 0 && self.inner.connecting.load(Ordering::Acquire) == 0 => Some(None),
            None => None,
        }
    }

    /// Waits until a connection returns to a pool or closes somewhere in the cluster.
    async fn wait_for_connection(&self) {
        let freed = self.inner.limits.freed().notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if self.idle_connections() > 0 || self.inner.limits.connections() == 0 {
            return;
        }
        // Re-checked on wake-up; a bounded wait guards against a missed limit change.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(250), freed).await;
    }

    async fn send_h2(&self, mut req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        for attempt in 0..2 {
            let mut tx = self.h2_sender(attempt > 0).await?;
            if tx.ready().await.is_err() {
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => {
                        let err = e.into_error();
                        return Err(if is_refused_stream(&err) {
                            UpstreamError::RefusedStream
                        } else {
                            UpstreamError::Reset(err)
                        });
                    }
                },
            }
        }
        Err(UpstreamError::ConnectFailure(std::io::Error::other(
            "HTTP/2 connection closed before the request could be sent",
        )))
    }

    fn checkout(&self) -> Option<Idle> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.since.elapsed() < self.inner.settings.idle_timeout && !conn.tx.is_closed() && conn.tx.is_ready() {
                return Some(conn);
            }
        }
        None
    }

    /// Returns the connection to the pool once its response is fully read,
    /// unless it has carried `maxRequestsPerConnection` requests.
    fn checkin_when_ready(&self, conn: Idle) {
        let max = self.inner.limits.max_requests_per_connection();
        if max > 0 && conn.served >= max {
            return; // Dropping the sender closes the connection after this response.
        }
        conn.back.clone().send(conn);
    }

    async fn h2_sender(&self, force_new: bool) -> Result<http2::SendRequest<Body>, UpstreamError> {
        let max = self.inner.limits.max_requests_per_connection();
        let mut slot = self.inner.h2.lock().await;
        if let Some(h2) = slot.as_mut() {
            if !force_new && !h2.tx.is_closed() && (max == 0 || h2.streams < max) {
                h2.streams += 1;
                return Ok(h2.tx.clone());
            }
        }
        // One multiplexed connection per endpoint: it may exceed maxConnections only as an endpoint's first.
        let permit = self.inner.limits.connection();
        let io = self.connect(true).await?;
        let (tx, conn) =
            http2::Builder::new(TokioExecutor::new()).handshake(io).await.map_err(UpstreamError::ResetBeforeRequest)?;
        self.track(conn, permit);
        *slot = Some(H2 { tx: tx.clone(), streams: 1 });
        Ok(tx)
    }

    async fn connect_h1(&self, permit: Option<Permit>) -> Result<Idle, UpstreamError> {
        let io = self.connect(false).await?;
        let (tx, conn) = http1::Builder::new().handshake(io).await.map_err(UpstreamError::ResetBeforeRequest)?;
        let back = Arc::new(Returning::default());
        self.track(returns(conn, back.clone(), Arc::downgrade(&self.inner)), permit);
        Ok(Idle { tx, since: Instant::now(), served: 0, back })
    }

    async fn connect(&self, h2: bool) -> Result<TokioIo<Conn>, UpstreamError> {
        self.inner.connecting.fetch_add(1, Ordering::AcqRel);
        let timeout = self.inner.settings.connect_timeout;
        let result = tokio::time::timeout(timeout, self.connect_counted(h2))
            .await
            .unwrap_or(Err(UpstreamError::ConnectTimeout(timeout)));
        self.inner.connecting.fetch_sub(1, Ordering::AcqRel);
        result
    }

    /// TCP, then mesh mTLS when the cluster asks for it and this sidecar has an
    /// identity (auto mTLS). A failed handshake is a connect failure (503 `UF`).
    async fn connect_counted(&self, h2: bool) -> Result<TokioIo<Conn>, UpstreamError> {
        let stream = TcpStream::connect(self.inner.addr).await.map_err(UpstreamError::ConnectFailure)?;
        let _ = stream.set_nodelay(true);
        let fail = |m: String| UpstreamError::ConnectFailure(std::io::Error::other(m));
        if let Some(o) = &self.inner.settings.origination {
            let tls = tokio_rustls::TlsConnector::from(o.config(h2))
                .connect(o.name.clone(), stream)
                .await
                .map_err(|e| fail(format!("TLS handshake with {}: {e}", o.spec.sni)))?;
            return Ok(TokioIo::new(Conn::Tls(Box::new(tls))));
        }
        let (Some(allowed), Some(identity)) = (&self.inner.settings.tls, &self.inner.identity) else {
            return Ok(TokioIo::new(Conn::Plain(stream)));
        };
        let leaf = identity.current().ok_or_else(|| fail("no workload certificate yet".into()))?;
        let config =
            crate::security::identity::client_config(&leaf, allowed, h2).map_err(|e| fail(format!("tls: {e}")))?;
        let name = match &self.inner.settings.mesh_sni {
            Some(name) => name.clone(),
            None => rustls::pki_types::ServerName::try_from(crate::security::tls::MESH_SNI)
                .map_err(|e| fail(e.to_string()))?,
        };
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| fail(format!("mTLS handshake: {e}")))?;
        Ok(TokioIo::new(Conn::Tls(Box::new(tls))))
    }

    /// Runs a connection's task and counts it while it lives; the cluster's
    /// connection permit is released when it ends.
    fn track<F>(&self, conn: F, permit: Option<Permit>)
    where
        F: std::future::Future + Send + 'static,
    {
        let open = self.inner.open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        self.inner.opened.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _ = conn.await;
            open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// An HTTP/1.1 connection's task: drives `conn`, and puts each connection handed
/// back ([`Returning::send`]) into the pool's idle list once its response has
/// been read, while the pool still exists.
async fn returns<F: std::future::Future>(conn: F, back: Arc<Returning>, pool: Weak<Inner>) {
    /// Closes the hand-over however the task ends (dropped at shutdown too).
    struct Closing(Arc<Returning>);
    impl Drop for Closing {
        fn drop(&mut self) {
            self.0.closed.store(true, Ordering::Release);
            drop(self.0.take());
        }
    }
    let _closing = Closing(back.clone());
    tokio::pin!(conn);
    'serving: loop {
        tokio::select! {
            biased;
            _ = &mut conn => break 'serving,
            () = back.arrived.notified() => {
                let Some(mut idle) = back.take() else { continue };
                let ready = tokio::select! {
                    biased;
                    ready = idle.tx.ready() => ready.is_ok(),
                    _ = &mut conn => break 'serving,
                };
                if let (true, Some(inner)) = (ready, pool.upgrade()) {
                    idle.since = Instant::now();
                    inner.idle.lock().unwrap_or_else(|p| p.into_inner()).push(idle);
                    inner.limits.notify_freed();
                }
            }
        }
    }
}

fn is_refused_stream(err: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = e.source();
    }
    false
}
