//! Keep-alive HTTP/1.1 connections to peers: a call takes an idle connection to
//! the address (with a sidecar, always the sidecar's outbound port) or opens
//! one, and gives it back once the answer is read. Without this every peer call
//! paid a TCP handshake and left a socket in TIME_WAIT, which under load runs a
//! host out of ephemeral ports.
//!
//! A connection the peer closed while it sat idle can fail the next request
//! before anything was sent (the keep-alive race). Such a request is sent again
//! on another connection when that is safe: always when hyper says it was never
//! written, and for idempotent methods when the connection closed before any
//! answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A peer's answer, read whole.
#[derive(Debug)]
pub struct PeerResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl PeerResponse {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Idle connections kept per address; more are closed when given back.
pub const MAX_IDLE_PER_ADDR: usize = 32;

type Sender = SendRequest<Full<Bytes>>;

#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Sender>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle: usize = self.idle.lock().map(|m| m.values().map(Vec::len).sum()).unwrap_or(0);
        f.debug_struct("Pool").field("idle", &idle).finish()
    }
}

impl Pool {
    /// Sends the request `make` builds (again, if it must be resent) to `addr` and reads the whole answer.
    pub async fn send(
        &self,
        addr: SocketAddr,
        make: impl Fn() -> Result<Request<Full<Bytes>>, String>,
    ) -> Result<PeerResponse, String> {
        loop {
            let (mut sender, reused) = match self.take(addr) {
                Some(s) => (s, true),
                None => (connect(addr).await?, false),
            };
            let req = make()?;
            let idempotent = req.method().is_idempotent();
            match sender.send_request(req).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
                    self.give_back(addr, sender);
                    return Ok(PeerResponse { status: parts.status, headers: parts.headers, body });
                }
                Err(e) if reused && (e.is_canceled() || (idempotent && e.is_incomplete_message())) => {
                    tracing::debug!(%addr, error = %e, "idle connection was closed by the peer; sending again");
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Idle connections currently held for `addr`.
    pub fn idle(&self, addr: SocketAddr) -> usize {
        self.idle.lock().map(|m| m.get(&addr).map_or(0, Vec::len)).unwrap_or(0)
    }

    fn take(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        let senders = idle.get_mut(&addr)?;
        while let Some(s) = senders.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn give_back(&self, addr: SocketAddr, sender: Sender) {
        if !sender.is_ready() {
            return; // closing (`Connection: close`, or the peer hung up)
        }
        if let Ok(mut idle) = self.idle.lock() {
            let senders = idle.entry(addr).or_default();
            if senders.len() < MAX_IDLE_PER_ADDR {
                senders.push(sender);
            }
        }
    }
}

/// A new HTTP/1.1 connection to `addr`, its driver running on the runtime.
pub async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
