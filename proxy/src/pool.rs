//! Upstream connections of one endpoint: a keep-alive pool of HTTP/1.1
//! connections and one multiplexed HTTP/2 connection. Never a new connection
//! per request.
//!
//! The keep-alive race (the upstream closes an idle connection just as we
//! reuse it, Istio's best-known intermittent 503) is absorbed here: when hyper
//! hands the request back unsent, it goes out again on a fresh connection.

use crate::body::Body;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            connect_timeout: weft_model::DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: weft_model::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// The protocol spoken to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
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
}

impl UpstreamError {
    /// True when the upstream provably did not process the request, so a retry is safe for any method.
    pub fn not_processed(&self) -> bool {
        !matches!(self, UpstreamError::Reset(_))
    }
}

#[derive(Debug)]
struct Idle {
    tx: http1::SendRequest<Body>,
    since: Instant,
}

#[derive(Debug)]
struct Inner {
    addr: SocketAddr,
    settings: PoolSettings,
    idle: Mutex<Vec<Idle>>,
    h2: tokio::sync::Mutex<Option<http2::SendRequest<Body>>>,
    /// Connections open now (HTTP/1.1 and HTTP/2), shared with the connection tasks.
    open: Arc<AtomicUsize>,
    /// Connections opened since start.
    opened: AtomicU64,
}

/// The connections of one endpoint.
#[derive(Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    pub fn new(addr: SocketAddr, settings: PoolSettings) -> Self {
        Pool {
            inner: Arc::new(Inner {
                addr,
                settings,
                idle: Mutex::new(Vec::new()),
                h2: tokio::sync::Mutex::new(None),
                open: Arc::new(AtomicUsize::new(0)),
                opened: AtomicU64::new(0),
            }),
        }
    }

    pub fn settings(&self) -> PoolSettings {
        self.inner.settings
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Connections opened since the endpoint appeared.
    pub fn opened_connections(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// Idle HTTP/1.1 connections ready for reuse.
    pub fn idle_connections(&self) -> usize {
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
        loop {
            let (mut tx, reused) = match self.checkout() {
                Some(tx) => (tx, true),
                None => {
                    fresh_attempts += 1;
                    (self.connect_h1().await?, false)
                }
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    self.checkin_when_ready(tx);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // Not written: a stale pooled connection (or a fresh one that died at once).
                    Some(unsent) if reused || fresh_attempts < 2 => req = unsent,
                    Some(_) => return Err(UpstreamError::ResetBeforeRequest(e.into_error())),
                    None => return Err(UpstreamError::Reset(e.into_error())),
                },
            }
        }
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

    fn checkout(&self) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(Idle { tx, since }) = idle.pop() {
            if since.elapsed() < self.inner.settings.idle_timeout && !tx.is_closed() && tx.is_ready() {
                return Some(tx);
            }
        }
        None
    }

    /// Returns the connection to the pool once its response is fully read.
    fn checkin_when_ready(&self, mut tx: http1::SendRequest<Body>) {
        let pool: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            if tx.ready().await.is_ok() {
                if let Some(inner) = pool.upgrade() {
                    inner.idle.lock().unwrap_or_else(|p| p.into_inner()).push(Idle { tx, since: Instant::now() });
                }
            }
        });
    }

    async fn h2_sender(&self, force_new: bool) -> Result<http2::SendRequest<Body>, UpstreamError> {
        let mut slot = self.inner.h2.lock().await;
        if let Some(tx) = slot.as_ref() {
            if !force_new && !tx.is_closed() {
                return Ok(tx.clone());
            }
        }
        let io = self.connect_tcp().await?;
        let (tx, conn) =
            http2::Builder::new(TokioExecutor::new()).handshake(io).await.map_err(UpstreamError::ResetBeforeRequest)?;
        self.track(conn);
        *slot = Some(tx.clone());
        Ok(tx)
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<Body>, UpstreamError> {
        let io = self.connect_tcp().await?;
        let (tx, conn) = http1::Builder::new().handshake(io).await.map_err(UpstreamError::ResetBeforeRequest)?;
        self.track(conn);
        Ok(tx)
    }

    async fn connect_tcp(&self) -> Result<TokioIo<TcpStream>, UpstreamError> {
        let timeout = self.inner.settings.connect_timeout;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(self.inner.addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(timeout))?
            .map_err(UpstreamError::ConnectFailure)?;
        let _ = stream.set_nodelay(true);
        Ok(TokioIo::new(stream))
    }

    /// Runs a connection's task and counts it while it lives.
    fn track<F>(&self, conn: F)
    where
        F: std::future::Future + Send + 'static,
    {
        let open = self.inner.open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        self.inner.opened.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _ = conn.await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
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
