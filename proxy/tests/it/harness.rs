//! Real-socket test harness: upstream servers that count what they see, a
//! sidecar started in-process on port 0, and small HTTP/1.1 and HTTP/2 clients.

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::{Proxy, ProxyOptions, Running};

pub type Reply = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;
pub type Behaviour = Arc<dyn Fn(Seen) -> Reply + Send + Sync>;

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// 1-based number of this request at this upstream.
    pub n: usize,
}

/// An upstream app on a port chosen by the OS.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    /// Answers 200 with its name as body and `x-upstream: name`.
    pub async fn named(name: &str) -> Self {
        let n = name.to_string();
        Self::with(name, move |_| {
            let n = n.clone();
            Box::pin(async move { ok(&n) })
        })
        .await
    }

    /// Answers as `behaviour` says; speaks HTTP/1.1 and h2c.
    pub async fn with(name: &str, behaviour: impl Fn(Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = Upstream {
            addr: listener.local_addr().unwrap(),
            name: name.to_string(),
            requests: Arc::default(),
            connections: Arc::default(),
            seen: Arc::default(),
        };
        let behaviour: Behaviour = Arc::new(behaviour);
        let me = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                me.connections.fetch_add(1, Ordering::SeqCst);
                let me = me.clone();
                let behaviour = behaviour.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let me = me.clone();
                        let behaviour = behaviour.clone();
                        async move {
                            let n = me.requests.fetch_add(1, Ordering::SeqCst) + 1;
                            let (parts, body) = req.into_parts();
                            let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
                                return Ok(status(StatusCode::BAD_REQUEST, "unreadable body"));
                            };
                            let seen = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path_and_query().map_or("/".into(), |p| p.to_string()),
                                version: parts.version,
                                headers: parts.headers,
                                body,
                                n,
                            };
                            me.seen.lock().unwrap().push(seen.clone());
                            Ok::<_, Infallible>(behaviour(seen).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        up
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("upstream saw no request")
    }
}

pub fn ok(name: &str) -> Response<Full<Bytes>> {
    status(StatusCode::OK, name)
}

pub fn status(code: StatusCode, name: &str) -> Response<Full<Bytes>> {
    Response::builder().status(code).header("x-upstream", name).body(Full::new(Bytes::from(name.to_string()))).unwrap()
}

/// A port with nothing listening: bound but never listening, and kept bound for
/// the life of the test process, so no other test's server can take it (a
/// released port was reused under parallel tests, turning "dead" endpoints alive).
pub async fn dead_addr() -> SocketAddr {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    std::mem::forget(socket);
    addr
}

/// A config with the given `services:` and `clusters:` YAML blocks (indented two spaces).
pub fn config_yaml(services: &str, clusters: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nversion: t1\nworkload: {{ name: client, namespace: test, labels: {{ app: client }} }}\nservices:\n{services}\nclusters:\n{clusters}\n"
    )
}

/// A cluster block with the given endpoints.
pub fn cluster(name: &str, extra: &str, endpoints: &[&Upstream]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|u| format!("      - {{ address: \"{}\", labels: {{ app: svc, version: {} }} }}", u.addr, u.name))
        .collect();
    format!("  {name}:\n    service: svc.test.svc.cluster.local\n{extra}    endpoints:\n{}\n", eps.join("\n"))
}

pub fn parse(yaml: &str) -> weft_model::ProxyConfig {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad test config: {e}\n{yaml}"))
}

pub async fn start(yaml: &str) -> Running {
    start_with(yaml, None).await
}

pub async fn start_with(yaml: &str, app: Option<SocketAddr>) -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let options = ProxyOptions {
        outbound: any,
        inbound: any,
        admin: any,
        app,
        access_log: false,
        drain_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    Proxy::start(options, parse(yaml), prometheus::Registry::new()).await.unwrap()
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Got {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

/// A keep-alive HTTP/1.1 or HTTP/2 client on one connection.
pub struct Client {
    h1: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    h2: Option<hyper::client::conn::http2::SendRequest<Full<Bytes>>>,
}

impl Client {
    pub async fn h1(addr: SocketAddr) -> Self {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        Client { h1: Some(tx), h2: None }
    }

    pub async fn h2(addr: SocketAddr) -> Self {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        Client { h1: None, h2: Some(tx) }
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Got {
        self.send("GET", host, path, &[], "").await
    }

    pub async fn send(&mut self, method: &str, host: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Got {
        let mut b = Request::builder().method(method);
        if self.h2.is_some() {
            b = b.uri(format!("http://{host}{path}"));
        } else {
            b = b.uri(path).header("host", host);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let resp = match (&mut self.h1, &mut self.h2) {
            (Some(tx), _) => {
                tx.ready().await.unwrap();
                tx.send_request(req).await.unwrap()
            }
            (_, Some(tx)) => {
                tx.ready().await.unwrap();
                tx.send_request(req).await.unwrap()
            }
            _ => unreachable!(),
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Got { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&body).into_owned() }
    }
}

/// One request on a fresh connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    Client::h1(addr).await.send("GET", host, path, headers, "").await
}

/// The admin page at `path` as text.
pub async fn admin(running: &Running, path: &str) -> String {
    get(running.admin, "admin", path, &[]).await.body
}

/// Sum of a metric's samples whose line contains every one of `parts`.
pub fn metric(text: &str, name: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{') || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Counts of response bodies over `n` requests.
pub async fn tally(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> HashMap<String, usize> {
    let mut c = Client::h1(addr).await;
    let mut counts = HashMap::new();
    for _ in 0..n {
        let got = c.send("GET", host, path, headers, "").await;
        *counts.entry(format!("{} {}", got.status.as_u16(), got.body)).or_default() += 1;
    }
    counts
}

/// A body made of the given frames (data, then trailers).
pub struct Frames(pub std::collections::VecDeque<http_body::Frame<bytes::Bytes>>);

impl http_body::Body for Frames {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}
