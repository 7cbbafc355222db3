//! The app behind the sidecar in benchmarks: answers every request, whatever
//! its method and path, with `200` and a fixed body. HTTP/1.1 and h2c on one
//! port, like the proxy's own listeners, so it never is the bottleneck.

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::time::Duration;
use tokio::net::TcpListener;

/// Istio's performance benchmark answers with 1 KB payloads.
pub const DEFAULT_BODY_BYTES: usize = 1024;

/// Serves `listener` until the task is dropped, every response carrying `body_bytes` bytes.
pub async fn serve(listener: TcpListener, body_bytes: usize) {
    let body = Bytes::from(vec![b'x'; body_bytes]);
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                eprintln!("upstream: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
            let mut resp = Response::new(Full::new(body.clone()));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            async move { Ok::<_, Infallible>(resp) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
