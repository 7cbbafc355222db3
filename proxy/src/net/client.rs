//! One request on a fresh, unpooled HTTP/1.1 connection: what the sidecar and the control
//! plane send where no pool is worth keeping — captured traffic passed through, the app's
//! probes, span export, a certificate request, a key-set fetch, a Prometheus query, the tap.

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;

/// `req` on a fresh HTTP/1.1 connection over `io` (TCP or TLS); the connection lives while
/// the response body is read.
pub async fn send_over<I, B>(io: I, req: Request<B>) -> Result<Response<Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// `req` on a fresh TCP connection to `addr` (`IP:port` or `host:port`).
pub async fn send_to<A, B>(addr: A, req: Request<B>) -> Result<Response<Incoming>, String>
where
    A: tokio::net::ToSocketAddrs,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    send_over(hyper_util::rt::TokioIo::new(stream), req).await
}

/// A response body read whole, refused past `limit` bytes.
pub async fn read_body(response: Response<Incoming>, limit: usize) -> Result<Bytes, String> {
    use http_body_util::BodyExt;
    let body = http_body_util::Limited::new(response.into_body(), limit).collect().await;
    body.map(|c| c.to_bytes()).map_err(|e| e.to_string())
}
