//! The floor under Weft's sidecar: the least a hyper proxy can do for one
//! HTTP/1.1 hop, measured in the same harness as Weft, nginx and HAProxy
//! (`weft-bench-sidecar --scenarios hyper-floor`). It is what Weft's sidecar is
//! built on and nothing else: hyper's server connection (`auto::Builder`, the
//! same settings as Weft's listeners) on the same tokio runtime, and for each
//! downstream connection one upstream HTTP/1.1 connection (`http1::handshake`,
//! as Weft's pool makes them) that every request of it is sent over, the
//! request and response bodies passed through as hyper gives them. No routing,
//! no balancing, no metrics, no logging, no header rewriting: the instruction
//! count of this binary is the part of a Weft hop that is hyper's and tokio's
//! (issue 17: "if a profile proves hyper itself is the floor, show the numbers").
//!
//! `weft-bench-floor LISTEN UPSTREAM [WORKERS [hyper|httparse|httparse-http]]`; built with
//! the sidecar's profile by `make bench-deps`. The `httparse` engine
//! (`parsed.rs`) is the other floor: the same hop without hyper; `httparse-http`
//! the same with each head held as the `http` crate's types on the way.

use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

mod parsed;

type Body = BoxBody<Bytes, hyper::Error>;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: weft-bench-floor LISTEN UPSTREAM [WORKERS [hyper|httparse|httparse-http]]";
    let listen: SocketAddr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let upstream: SocketAddr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let workers: usize = args.next().map(|w| w.parse()).transpose()?.unwrap_or(1);
    let engine = args.next();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?;
    match engine.as_deref() {
        None | Some("hyper") => rt.block_on(serve(listen, upstream)),
        Some("httparse") => rt.block_on(parsed::serve(listen, upstream, false)),
        Some("httparse-http") => rt.block_on(parsed::serve(listen, upstream, true)),
        Some(other) => anyhow::bail!("unknown engine {other:?}; {usage}"),
    }
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    // Weft's listener settings (net/listen.rs): 60 KiB heads, 100 headers.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).max_buf_size(60 * 1024 + 4096).max_headers(100);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        // One upstream connection per downstream connection, made at its first request.
        let sender: Arc<Mutex<Option<http1::SendRequest<Body>>>> = Arc::default();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let sender = sender.clone();
            async move { Ok::<_, std::convert::Infallible>(forward(&sender, upstream, req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

async fn forward(
    sender: &Mutex<Option<http1::SendRequest<Body>>>,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let mut slot = sender.lock().await;
    if slot.as_ref().is_none_or(|s| s.is_closed()) {
        match connect(upstream).await {
            Ok(s) => *slot = Some(s),
            Err(_) => return status(StatusCode::SERVICE_UNAVAILABLE),
        }
    }
    let Some(tx) = slot.as_mut() else { return status(StatusCode::SERVICE_UNAVAILABLE) };
    if tx.ready().await.is_err() {
        *slot = None;
        return status(StatusCode::SERVICE_UNAVAILABLE);
    }
    match tx.send_request(req.map(BodyExt::boxed)).await {
        Ok(resp) => resp.map(BodyExt::boxed),
        Err(_) => status(StatusCode::BAD_GATEWAY),
    }
}

async fn connect(upstream: SocketAddr) -> anyhow::Result<http1::SendRequest<Body>> {
    let stream = TcpStream::connect(upstream).await?;
    let _ = stream.set_nodelay(true);
    let (tx, conn) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *r.status_mut() = code;
    r
}
