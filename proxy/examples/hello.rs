//! A tiny upstream app for the canary example: answers every request with
//! `hello from <name>` and its own version in `x-version`.
//!
//! cargo run --example hello -- 127.0.0.1:18181 order-service-v1

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18181".into());
    let name: &'static str = Box::leak(args.next().unwrap_or_else(|| "hello".into()).into_boxed_str());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("{name} listening on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| async move {
                let body = format!("hello from {name} ({} {})\n", req.method(), req.uri().path());
                Ok::<_, Infallible>(
                    hyper::Response::builder().header("x-version", name).body(Full::new(Bytes::from(body))).unwrap(),
                )
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
