//! Helpers shared by the end-to-end tests: apps, sidecars in control-plane
//! mode (optionally with a workload identity), and polling.
//!
//! Size: the end-to-end tests' one shared harness.
#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use weft_control_plane::ca::{Ca, CaParts};
use weft_control_plane::push::ControlPlane;
use weft_control_plane::store::Store;
use weft_model::stream::Hello;
use weft_model::Workload;
use weft_proxy::config::control::ControlOptions;
use weft_proxy::security::identity::{Identity, IdentityOptions};
use weft_proxy::{Proxy, ProxyOptions, Running};
use weft_testkit::Etcd;

/// An app answering its name.
pub async fn app(name: &'static str) -> SocketAddr {
    app_with(move |_| name.to_string()).await
}

/// An app answering each request with the body `answer` makes of it.
pub async fn app_with(
    answer: impl Fn(&hyper::Request<hyper::body::Incoming>) -> String + Clone + Send + Sync + 'static,
) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let body = answer(&req);
                    async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A workload in `production`; its service account is its `app` label (the
/// service it serves, as in the shop), or its name when it has none.
pub fn workload(name: &str, labels: &[(&str, &str)]) -> Workload {
    let sa = labels.iter().find(|(k, _)| *k == "app").map_or(name, |(_, v)| *v);
    Workload {
        name: name.into(),
        namespace: "production".into(),
        service_account: sa.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

/// The mesh CA of one test (every control plane of the test shares it).
pub fn test_ca() -> Arc<Ca> {
    Arc::new(Ca::from_parts(&CaParts::generate("cluster.local").unwrap(), "cluster.local").unwrap())
}

/// What a sidecar needs to join a test mesh: the control planes' addresses,
/// the store tokens are minted in, and the mesh root.
#[derive(Clone)]
pub struct Cp {
    pub urls: Vec<String>,
    pub store: Store,
    pub ca: Arc<Ca>,
}

impl Cp {
    /// Starts one control plane with the default options on a new port; it
    /// reaches etcd as `weft-control-plane`, the returned [`Cp`] mints tokens as `weft-admin`.
    pub async fn start(etcd: &Etcd, id: &str, ca: Arc<Ca>) -> (Cp, ControlPlane) {
        Self::start_with(&[etcd.url()], etcd, id, ca, Default::default()).await
    }

    /// [`Cp::start`] on the etcd members `urls` (whose certificates `etcd` holds), with options.
    pub async fn start_with(
        urls: &[String],
        etcd: &Etcd,
        id: &str,
        ca: Arc<Ca>,
        options: weft_control_plane::push::Options,
    ) -> (Cp, ControlPlane) {
        let own = Store::connect(urls, "/weft/", Some(&etcd.tls(weft_etcd::CONTROL_PLANE))).await.unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let cp = weft_control_plane::push::start_with(own, id.into(), l, ca.clone(), options).await.unwrap();
        (Cp { urls: vec![url], store: admin_store(urls, etcd).await, ca }, cp)
    }

    /// A bootstrap token for `production`/`sa`, valid an hour.
    pub async fn token(&self, sa: &str) -> String {
        let audience = weft_control_plane::token::DEFAULT_AUDIENCE;
        weft_control_plane::token::mint(
            &self.store,
            "production",
            sa,
            audience,
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .await
        .unwrap()
        .0
    }

    /// TLS to the control planes, trusting the mesh root.
    pub fn tls(&self) -> weft_proxy::security::identity::ControlPlaneTls {
        weft_proxy::security::identity::ControlPlaneTls::from_pem(&self.ca.root_pem(), "cluster.local").unwrap()
    }
}

/// The store as `weftctl` reaches it (etcd user `weft-admin`: policies and tokens).
pub async fn admin_store(urls: &[String], etcd: &Etcd) -> Store {
    Store::connect(urls, "/weft/", Some(&etcd.admin())).await.unwrap()
}

/// A sidecar in control-plane mode with a workload certificate for its
/// service account (mTLS in and out); the sender says goodbye to the control plane.
pub async fn sidecar(
    cp: &Cp,
    w: Workload,
    service: Option<&str>,
    app: Option<SocketAddr>,
) -> (Running, tokio::sync::watch::Sender<bool>) {
    sidecar_with(cp, w, service, app, None).await
}

/// [`sidecar`] that asks for its certificate with `token` (default: a fresh one for its service account).
pub async fn sidecar_with(
    cp: &Cp,
    w: Workload,
    service: Option<&str>,
    app: Option<SocketAddr>,
    token: Option<String>,
) -> (Running, tokio::sync::watch::Sender<bool>) {
    sidecar_full(cp, w, service, app, token, None, None).await
}

/// [`sidecar`] registering its service port as speaking `protocol` (`--app-protocol`).
pub async fn sidecar_speaking(
    cp: &Cp,
    w: Workload,
    service: Option<&str>,
    app: Option<SocketAddr>,
    protocol: weft_model::AppProtocol,
) -> (Running, tokio::sync::watch::Sender<bool>) {
    sidecar_full(cp, w, service, app, None, None, Some(protocol)).await
}

/// [`sidecar_with`], and: `tls` trusts its root for the control plane instead of the mesh's;
/// `protocol` is what the service port speaks (`--app-protocol`).
pub async fn sidecar_full(
    cp: &Cp,
    w: Workload,
    service: Option<&str>,
    app: Option<SocketAddr>,
    token: Option<String>,
    tls: Option<weft_proxy::security::identity::ControlPlaneTls>,
    protocol: Option<weft_model::AppProtocol>,
) -> (Running, tokio::sync::watch::Sender<bool>) {
    join(cp, w, service, app, token, tls, Ports { protocol, other: Vec::new() }, None).await
}

/// [`sidecar`] registering the service's other ports too (`--other-ports`).
pub async fn sidecar_with_ports(
    cp: &Cp,
    w: Workload,
    service: Option<&str>,
    app: Option<SocketAddr>,
    other: Vec<weft_model::ServicePort>,
) -> (Running, tokio::sync::watch::Sender<bool>) {
    join(cp, w, service, app, None, None, Ports { protocol: None, other }, None).await
}

/// What a sidecar registers of its service's ports: the service port's protocol, the others.
#[derive(Default)]
struct Ports {
    protocol: Option<weft_model::AppProtocol>,
    other: Vec<weft_model::ServicePort>,
}

/// An ingress gateway (`weft-proxy gateway`) in control-plane mode with its workload
/// certificate: it listens where the Gateway resources that select it say.
pub async fn gateway(
    cp: &Cp,
    w: Workload,
    options: weft_proxy::gateway::GatewayOptions,
) -> (Running, tokio::sync::watch::Sender<bool>) {
    let mut w = w;
    let (k, v) = weft_model::gateway::ROLE_LABEL;
    w.labels.insert(k.into(), v.into());
    join(cp, w, None, None, None, None, Ports::default(), Some(options)).await
}

#[allow(clippy::too_many_arguments)]
async fn join(
    cp: &Cp,
    w: Workload,
    service: Option<&str>,
    app: Option<SocketAddr>,
    token: Option<String>,
    tls: Option<weft_proxy::security::identity::ControlPlaneTls>,
    ports: Ports,
    gateway: Option<weft_proxy::gateway::GatewayOptions>,
) -> (Running, tokio::sync::watch::Sender<bool>) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let token = match token {
        Some(t) => t,
        None => cp.token(&w.service_account).await,
    };
    let mut tls = tls.unwrap_or_else(|| cp.tls());
    let identity = Arc::new(Identity::default());
    let options = IdentityOptions { urls: cp.urls.clone(), token, tls: Some(tls.clone()) };
    tokio::spawn(weft_proxy::security::identity::run(identity.clone(), options));
    tls.identity = Some(identity.clone());
    let options = ProxyOptions {
        identity: Some(identity),
        outbound: any,
        inbound: any,
        admin: any,
        app,
        declared_ports: Some(weft_proxy::state::DeclaredPorts::new(ports.protocol, 80, &ports.other)),
        access_log: false,
        wait_for_config: true,
        gateway: gateway.clone(),
        ..Default::default()
    };
    let placeholder = weft_model::ProxyConfig {
        api_version: weft_model::API_VERSION.into(),
        version: String::new(),
        workload: w.clone(),
        services: Default::default(),
        clusters: Default::default(),
        inbound: Default::default(),
        outbound_traffic_policy: None,
        trust: None,
        path_normalization: None,
        access_log: None,
        egress: Vec::new(),
        tcp: Vec::new(),
        gateway: Vec::new(),
    };
    let running = Proxy::start(options, placeholder, prometheus::Registry::new()).await.unwrap();
    let hello = Hello {
        workload: w.clone(),
        instance: format!("{}-{}", w.name, running.inbound.port()),
        service: service.map(str::to_string),
        address: gateway.is_none().then(|| running.inbound.to_string()),
        port: Some(80),
        applied_version: None,
        protocol: ports.protocol,
        other_ports: ports.other,
        metrics_port: None,
    };
    let (goodbye, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(weft_proxy::config::control::run(
        running.shared.clone(),
        ControlOptions { urls: cp.urls.clone(), hello, tls: Some(tls) },
        rx,
    ));
    (running, goodbye)
}

pub async fn get(addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut b = hyper::Request::builder().uri("/").header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = tx.send_request(b.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    (status, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
}

/// Requests to order-service through `addr`, one after another, until finished.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    counts: Arc<(std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize)>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub fn start(addr: SocketAddr) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let counts: Arc<(std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize)> = Arc::default();
        let (s, c) = (stop.clone(), counts.clone());
        let task = tokio::spawn(async move {
            while !s.load(Relaxed) {
                if get(addr, "order-service", &[]).await.0 != 200 {
                    c.1.fetch_add(1, Relaxed);
                }
                c.0.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Load { stop, counts, task }
    }

    /// Stops; (requests sent, requests that failed).
    pub async fn finish(self) -> (usize, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stop.store(true, Relaxed);
        self.task.await.unwrap();
        (self.counts.0.load(Relaxed), self.counts.1.load(Relaxed))
    }
}

/// Polls `check` until it holds or 15 s pass.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

pub fn endpoints(r: &Running, cluster_part: &str) -> usize {
    let snap = r.shared.snapshot();
    snap.clusters().filter(|c| c.name.contains(cluster_part)).map(|c| c.balancer.endpoints().len()).sum()
}

pub async fn tally(addr: SocketAddr, headers: &[(&str, &str)], n: usize) -> (usize, usize, usize) {
    let (mut v1, mut v2, mut other) = (0, 0, 0);
    for _ in 0..n {
        match get(addr, "order-service", headers).await {
            (200, b) if b == "v1" => v1 += 1,
            (200, b) if b == "v2" => v2 += 1,
            _ => other += 1,
        }
    }
    (v1, v2, other)
}

pub fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// Requests a sidecar sent and saw finish (`istio_requests_total{reporter="source"}` on its admin page).
pub async fn sent(r: &Running) -> f64 {
    metric(&metrics(r).await, "istio_requests_total{", &["reporter=\"source\""])
}

/// A sidecar's Prometheus page (`/stats/prometheus` on its admin listener).
pub async fn metrics(r: &Running) -> String {
    let io = TokioIo::new(tokio::net::TcpStream::connect(r.admin).await.unwrap());
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/stats/prometheus").header("host", "admin").body(Full::new(Bytes::new())).unwrap();
    let body =
        http_body_util::BodyExt::collect(tx.send_request(req).await.unwrap().into_body()).await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The sum of a metric's samples whose line holds every one of `parts`.
pub fn metric(text: &str, name: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An issuer's ES256 signing key and its JWK.
pub struct Signer {
    key: EncodingKey,
    pub jwk: Value,
    kid: String,
    iss: String,
}

pub fn signer(iss: &str, kid: &str) -> Signer {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let pk = pair.public_key().as_ref();
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let jwk =
        json!({"kty": "EC", "crv": "P-256", "x": b64(&pk[1..33]), "y": b64(&pk[33..65]), "kid": kid, "use": "sig"});
    Signer { key: EncodingKey::from_ec_der(pkcs8.as_ref()), jwk, kid: kid.into(), iss: iss.into() }
}

impl Signer {
    /// A token for `sub`, audience `shop`, expiring `exp_from_now` seconds from now.
    pub fn token(&self, sub: &str, exp_from_now: i64, groups: &[&str]) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        let exp = jsonwebtoken::get_current_timestamp() as i64 + exp_from_now;
        let claims = json!({"iss": self.iss, "sub": sub, "aud": ["shop"], "exp": exp, "groups": groups});
        jsonwebtoken::encode(&h, &claims, &self.key).unwrap()
    }
}
