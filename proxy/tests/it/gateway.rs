//! The ingress gateway (`weft-proxy gateway`) through real sockets: TLS terminated with
//! the certificate the SNI selects, MUTUAL clients, httpsRedirect, a request kept to the
//! hosts of the server its handshake reached, edge headers as Envoy writes them,
//! certificates read again when their files change, listeners that follow the config.
//!
//! Size: the gateway's listener behaviours, a test each, sharing the TLS fixtures.

use crate::harness::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use weft_proxy::gateway::GatewayOptions;
use weft_proxy::{Proxy, ProxyOptions, Running};

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    /// A leaf for `names` (PEM certificate, PEM key), its CN `cn`.
    fn leaf(&self, names: &[&str], cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A directory of mounted TLS Secrets, removed at the end.
struct Secrets(PathBuf);

impl Secrets {
    fn new() -> Secrets {
        let n = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-gw-{}-{}-{}",
            std::process::id(),
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Secrets(dir)
    }

    /// Writes a Secret's keys (replacing the files atomically, as kubelet swaps a mount).
    fn put(&self, name: &str, files: &[(&str, &str)]) {
        let d = self.0.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (file, content) in files {
            let tmp = d.join(format!(".{file}.tmp"));
            std::fs::write(&tmp, content).unwrap();
            std::fs::rename(&tmp, d.join(file)).unwrap();
        }
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn gateway_config(app: &Upstream, tls_port: u16, http_port: u16) -> String {
    let route = "    routes: [ { route: [ { cluster: app } ] } ]\n";
    let services: String = ["a.example.test", "b.example.test", "m.example.test", "plain.example.test", "*.wild.test"]
        .iter()
        .map(|h| format!("  \"{h}\":\n{route}"))
        .collect();
    let clusters = cluster("app", "", &[app]);
    let servers = format!(
        r#"gateway:
  - {{ name: gw/a, port: {tls_port}, hosts: [a.example.test], routes: [a.example.test], tls: {{ mode: SIMPLE, credential: cert-a }} }}
  - {{ name: gw/b, port: {tls_port}, hosts: ["b.example.test", "*.wild.test"], routes: ["b.example.test", "*.wild.test"], tls: {{ mode: SIMPLE, credential: cert-b, minProtocolVersion: TLSV1_3 }} }}
  - {{ name: gw/m, port: {tls_port}, hosts: [m.example.test], routes: [m.example.test], tls: {{ mode: MUTUAL, credential: cert-m }} }}
  - {{ name: gw/m2, port: {tls_port}, hosts: [admin.wild.test], routes: [admin.wild.test], tls: {{ mode: MUTUAL, credential: cert-m }} }}
  - {{ name: gw/plain, port: {http_port}, hosts: [plain.example.test], routes: [plain.example.test] }}
  - {{ name: gw/redirect, port: {http_port}, hosts: [a.example.test], routes: [a.example.test], httpsRedirect: true }}
  - {{ name: gw/wide, port: {http_port}, hosts: ["*.example.test"], routes: ["*.example.test"] }}
"#
    );
    format!(
        "apiVersion: weft.dev/v1alpha1\nversion: g1\nworkload: {{ name: istio-ingressgateway, namespace: istio-system, labels: {{ istio: ingressgateway }} }}\nservices:\n{services}clusters:\n{clusters}{servers}"
    )
}

struct Fixture {
    gw: Running,
    secrets: Secrets,
    servers: Ca,
    clients: Ca,
    app: Upstream,
    tls: SocketAddr,
    http: SocketAddr,
}

async fn fixture(num_trusted_proxies: usize) -> Fixture {
    let (servers, clients) = (Ca::new("server root"), Ca::new("client root"));
    let secrets = Secrets::new();
    let (a, ak) = servers.leaf(&["a.example.test"], "a-1");
    let (b, bk) = servers.leaf(&["b.example.test", "*.wild.test"], "b-1");
    let (m, mk) = servers.leaf(&["m.example.test"], "m-1");
    secrets.put("cert-a", &[("tls.crt", &a), ("tls.key", &ak)]);
    secrets.put("cert-b", &[("tls.crt", &b), ("tls.key", &bk)]);
    secrets.put("cert-m", &[("tls.crt", &m), ("tls.key", &mk), ("ca.crt", &clients.cert.pem())]);
    let app = Upstream::with("app", |seen| {
        let echo = format!(
            "xff={};proto={};ext={};rid={};retry={};xfcc={}",
            h(&seen, "x-forwarded-for"),
            h(&seen, "x-forwarded-proto"),
            h(&seen, "x-envoy-external-address"),
            h(&seen, "x-request-id"),
            h(&seen, "x-envoy-retry-on"),
            h(&seen, "x-forwarded-client-cert"),
        );
        Box::pin(async move { ok(&echo) })
    })
    .await;
    let (tls_port, http_port) = (free_port(), free_port());
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let options = ProxyOptions {
        outbound: any,
        inbound: any,
        admin: any,
        drain_timeout: Duration::from_secs(1),
        gateway: Some(GatewayOptions {
            address: [127, 0, 0, 1].into(),
            credentials_dir: secrets.0.clone(),
            num_trusted_proxies,
        }),
        ..Default::default()
    };
    let config = parse(&gateway_config(&app, tls_port, http_port));
    let gw = Proxy::start(options, config, prometheus::Registry::new()).await.unwrap();
    let (tls, http) = (SocketAddr::from(([127, 0, 0, 1], tls_port)), SocketAddr::from(([127, 0, 0, 1], http_port)));
    for addr in [tls, http] {
        eventually(|| async move { tokio::net::TcpStream::connect(addr).await.is_ok() }).await;
    }
    Fixture { gw, secrets, servers, clients, app, tls, http }
}

fn h(seen: &Seen, name: &str) -> String {
    seen.headers.get(name).map_or("-".into(), |v| v.to_str().unwrap_or("?").to_string())
}

async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a TLS client got: the server's certificate CN, the ALPN, and the response.
#[derive(Debug)]
struct Answer {
    cn: String,
    status: u16,
    body: String,
}

fn roots(ca: &Ca) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    roots
}

fn client_config(ca: &Ca, client: Option<(String, String)>, h2: bool) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca));
    let mut config = match client {
        Some((cert, key)) => b
            .with_client_auth_cert(
                vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    config.alpn_protocols = if h2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    config
}

fn common_name(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let cn = cert.subject().iter_common_name().next().and_then(|c| c.as_str().ok()).unwrap_or("").to_string();
    cn
}

/// One HTTPS request to the gateway: `sni` in the ClientHello, `host` in the request.
async fn https(
    addr: SocketAddr,
    config: rustls::ClientConfig,
    sni: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let h2 = config.alpn_protocols == [b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let cn = tls.get_ref().1.peer_certificates().map(|c| common_name(&c[0])).unwrap_or_default();
    let io = TokioIo::new(tls);
    let mut req = http::Request::builder().method("GET");
    req = if h2 { req.uri(format!("https://{host}/path?q=1")) } else { req.uri("/path?q=1").header("host", host) };
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let response = if h2 {
        let (mut tx, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        tx.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        tx.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Answer { cn, status, body: String::from_utf8_lossy(&body).into_owned() })
}

#[tokio::test]
async fn the_sni_picks_the_certificate_and_the_server() {
    let f = fixture(0).await;
    let a =
        https(f.tls, client_config(&f.servers, None, false), "a.example.test", "a.example.test", &[]).await.unwrap();
    assert_eq!((a.cn.as_str(), a.status), ("a-1", 200), "{a:?}");
    let b = https(f.tls, client_config(&f.servers, None, true), "b.example.test", "b.example.test", &[]).await.unwrap();
    assert_eq!((b.cn.as_str(), b.status), ("b-1", 200), "HTTP/2 by ALPN: {b:?}");
    let w = https(f.tls, client_config(&f.servers, None, false), "x.wild.test", "x.wild.test", &[]).await.unwrap();
    assert_eq!((w.cn.as_str(), w.status), ("b-1", 200), "a wildcard host: {w:?}");

    // Domain fronting: the handshake reached server a; a Host of server m (MUTUAL) is not a's.
    let fronted =
        https(f.tls, client_config(&f.servers, None, false), "a.example.test", "m.example.test", &[]).await.unwrap();
    assert_eq!(fronted.status, 421, "another server's name on this connection: {fronted:?}");
    // The same with a wildcard: x.wild.test reaches server b, whose `*.wild.test` also covers
    // admin.wild.test — but that name is a MUTUAL server's own.
    let fronted =
        https(f.tls, client_config(&f.servers, None, false), "x.wild.test", "admin.wild.test", &[]).await.unwrap();
    assert_eq!(fronted.status, 421, "{fronted:?}");
    // A name no server has: no certificate at all.
    let unknown =
        https(f.tls, client_config(&f.servers, None, false), "nobody.example.test", "a.example.test", &[]).await;
    assert!(unknown.is_err(), "{unknown:?}");
    // Plaintext on the TLS port is closed without an answer.
    let plain = tokio::time::timeout(Duration::from_secs(5), async {
        let mut c = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(
            tokio::net::TcpStream::connect(f.tls).await.unwrap(),
        ))
        .await
        .unwrap();
        tokio::spawn(c.1);
        c.0.send_request(
            http::Request::get("/").header("host", "a.example.test").body(Full::new(Bytes::new())).unwrap(),
        )
        .await
    })
    .await
    .unwrap();
    assert!(plain.is_err(), "{plain:?}");
    assert_eq!(f.app.requests(), 3, "only the three good requests reached the app");
}

#[tokio::test]
async fn a_mutual_server_takes_only_clients_of_its_ca() {
    let f = fixture(0).await;
    let none = https(f.tls, client_config(&f.servers, None, false), "m.example.test", "m.example.test", &[]).await;
    assert!(none.is_err(), "no client certificate: {none:?}");
    let stranger = Ca::new("stranger");
    let foreign = stranger.leaf(&["client.example.test"], "client");
    let got =
        https(f.tls, client_config(&f.servers, Some(foreign), false), "m.example.test", "m.example.test", &[]).await;
    assert!(got.is_err(), "a client of another CA: {got:?}");
    let ours = f.clients.leaf(&["client.example.test"], "client");
    let got = https(f.tls, client_config(&f.servers, Some(ours), false), "m.example.test", "m.example.test", &[])
        .await
        .unwrap();
    assert_eq!((got.cn.as_str(), got.status), ("m-1", 200), "{got:?}");
    assert_eq!(f.app.requests(), 1);
}

#[tokio::test]
async fn a_plaintext_server_redirects_or_serves_its_hosts() {
    let f = fixture(0).await;
    let r = get(f.http, "a.example.test", "/path?q=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), "https://a.example.test/path?q=1");
    let r = get(f.http, "a.example.test:8080", "/", &[]).await;
    assert_eq!((r.status.as_u16(), r.header("location")), (301, "https://a.example.test:8080/"), "Envoy keeps a port");
    let plain = get(f.http, "plain.example.test", "/", &[]).await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert!(plain.body.contains("proto=http;"), "{}", plain.body);
    // gw/wide's `*.example.test` covers b.example.test, but the service that name takes is
    // routed by server b's Gateway (TLS) only: the exact key must be in gw/wide's routes.
    assert_eq!(get(f.http, "b.example.test", "/", &[]).await.status, 404, "a host of the TLS port only");
    assert_eq!(f.app.requests(), 1);
}

#[tokio::test]
async fn outside_headers_are_cleaned_and_forwarding_written() {
    let spoof = [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-request-id", "chosen-by-client"),
        ("x-envoy-retry-on", "5xx"),
        ("x-forwarded-client-cert", "By=spiffe://cluster.local/ns/x/sa/y"),
    ];
    let f = fixture(0).await;
    let got =
        https(f.tls, client_config(&f.servers, None, false), "a.example.test", "a.example.test", &spoof).await.unwrap();
    assert!(got.body.starts_with("xff=203.0.113.9, 127.0.0.1;proto=https;ext=127.0.0.1;rid="), "{}", got.body);
    assert!(!got.body.contains("chosen-by-client"), "the request id is the gateway's: {}", got.body);
    assert!(got.body.ends_with("retry=-;xfcc=-"), "{}", got.body);
    drop(f);

    // Behind one trusted proxy, the client is the address that proxy saw.
    let f = fixture(1).await;
    let got =
        https(f.tls, client_config(&f.servers, None, false), "a.example.test", "a.example.test", &spoof).await.unwrap();
    assert!(got.body.contains(";ext=203.0.113.9;"), "{}", got.body);
}

#[tokio::test]
async fn certificates_are_read_again_when_their_files_change() {
    let f = fixture(0).await;
    let (cert, key) = f.servers.leaf(&["a.example.test"], "a-2");
    f.secrets.put("cert-a", &[("tls.crt", &cert), ("tls.key", &key)]);
    let (addr, servers) = (f.tls, &f.servers);
    eventually(|| async move {
        let got = https(addr, client_config(servers, None, false), "a.example.test", "a.example.test", &[]).await;
        got.is_ok_and(|a| a.cn == "a-2" && a.status == 200)
    })
    .await;
    // A broken file keeps the last good certificate: checked once the gateway has tried to read it.
    let gw = &f.gw;
    let failed = || async move {
        metric(&admin(gw, "/stats/prometheus").await, "weft_gateway_credential_loads_total", &["failed"])
    };
    let before = failed().await;
    f.secrets.put("cert-a", &[("tls.crt", "not a certificate")]);
    eventually(|| async move { failed().await > before }).await;
    let got = https(f.tls, client_config(&f.servers, None, false), "a.example.test", "a.example.test", &[]).await;
    assert!(got.as_ref().is_ok_and(|a| a.cn == "a-2" && a.status == 200), "{got:?}");
    // A Secret deleted is withdrawn: its name gets no certificate any more.
    std::fs::remove_dir_all(f.secrets.0.join("cert-a")).unwrap();
    eventually(|| async move {
        https(addr, client_config(servers, None, false), "a.example.test", "a.example.test", &[]).await.is_err()
    })
    .await;
}

#[tokio::test]
async fn a_connection_accepted_before_its_server_turned_mutual_takes_no_more_requests() {
    let f = fixture(0).await;
    let name = rustls::pki_types::ServerName::try_from("a.example.test").unwrap();
    let tcp = tokio::net::TcpStream::connect(f.tls).await.unwrap();
    let config = Arc::new(client_config(&f.servers, None, false));
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let get = || http::Request::get("/").header("host", "a.example.test").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(tx.send_request(get()).await.unwrap().status(), 200);
    // Server a now wants client certificates (of the client CA in cert-m).
    let yaml = gateway_config(&f.app, f.tls.port(), f.http.port())
        .replace("tls: { mode: SIMPLE, credential: cert-a }", "tls: { mode: MUTUAL, credential: cert-m }");
    f.gw.shared.apply(parse(&yaml)).unwrap();
    let (addr, servers) = (f.tls, &f.servers);
    eventually(|| async move {
        // A new connection without a client certificate is refused once the gateway has the change.
        https(addr, client_config(servers, None, false), "a.example.test", "a.example.test", &[]).await.is_err()
    })
    .await;
    tx.ready().await.unwrap();
    let r = tx.send_request(get()).await.unwrap();
    assert_eq!(r.status(), 421, "the old connection's next request");
    assert_eq!(r.headers()["connection"], "close");
    assert_eq!(f.app.requests(), 1, "nothing on the old connection reached the app after the change");
}

#[tokio::test]
async fn a_plaintext_connection_takes_no_request_once_its_port_speaks_tls() {
    let f = fixture(0).await;
    let mut c = Client::h1(f.http).await;
    assert_eq!(c.get("plain.example.test", "/").await.status, 200);
    // The plaintext port's servers become TLS ones (the listener stays; new connections need TLS).
    let yaml = gateway_config(&f.app, f.tls.port(), f.http.port())
        .replace(
            "hosts: [plain.example.test], routes: [plain.example.test] }",
            "hosts: [plain.example.test], routes: [plain.example.test], tls: { mode: SIMPLE, credential: cert-a } }",
        )
        .replace("  - { name: gw/redirect", "#")
        .replace("  - { name: gw/wide", "#");
    f.gw.shared.apply(parse(&yaml)).unwrap();
    let http = f.http;
    eventually(|| async move {
        // Once the gateway has the change, a new plaintext connection is closed unanswered.
        let mut fresh = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(
            tokio::net::TcpStream::connect(http).await.unwrap(),
        ))
        .await
        .unwrap();
        tokio::spawn(fresh.1);
        let req = http::Request::get("/").header("host", "plain.example.test").body(Full::new(Bytes::new())).unwrap();
        fresh.0.send_request(req).await.is_err()
    })
    .await;
    let got = c.get("plain.example.test", "/").await;
    assert_eq!(got.status, 421, "the old plaintext connection's next request: {}", got.body);
    assert_eq!(f.app.requests(), 1);
}

#[tokio::test]
async fn a_client_ca_replaced_in_its_secret_ends_the_connections_it_accepted() {
    let f = fixture(0).await;
    let client = f.clients.leaf(&["client.example.test"], "client");
    let name = rustls::pki_types::ServerName::try_from("m.example.test").unwrap();
    let tcp = tokio::net::TcpStream::connect(f.tls).await.unwrap();
    let config = Arc::new(client_config(&f.servers, Some(client.clone()), false));
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let get = || http::Request::get("/").header("host", "m.example.test").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(tx.send_request(get()).await.unwrap().status(), 200);
    // The client CA is revoked by replacing ca.crt in the same Secret.
    let (m, mk) = f.servers.leaf(&["m.example.test"], "m-1");
    f.secrets.put("cert-m", &[("tls.crt", &m), ("tls.key", &mk), ("ca.crt", &Ca::new("new client root").cert.pem())]);
    let (addr, servers, client) = (f.tls, &f.servers, &client);
    eventually(|| async move {
        let c = client_config(servers, Some(client.clone()), false);
        https(addr, c, "m.example.test", "m.example.test", &[]).await.is_err()
    })
    .await;
    let before = f.app.requests();
    tx.ready().await.unwrap();
    assert_eq!(tx.send_request(get()).await.unwrap().status(), 421, "a connection of the revoked CA");
    assert_eq!(f.app.requests(), before, "it did not reach the app");
}

#[tokio::test]
async fn listeners_follow_the_config() {
    let f = fixture(0).await;
    let next = free_port();
    let yaml = gateway_config(&f.app, f.tls.port(), next);
    f.gw.shared.apply(parse(&yaml)).unwrap();
    let (old, new) = (f.http, SocketAddr::from(([127, 0, 0, 1], next)));
    eventually(|| async move { tokio::net::TcpStream::connect(old).await.is_err() }).await;
    eventually(|| async move { tokio::net::TcpStream::connect(new).await.is_ok() }).await;
    assert_eq!(get(new, "plain.example.test", "/", &[]).await.status, 200);
    // A config whose TLS port also has a plaintext server is refused whole.
    let bad = yaml.replace(&format!("port: {next}, hosts: [plain"), &format!("port: {}, hosts: [plain", f.tls.port()));
    let err = f.gw.shared.apply(parse(&bad)).unwrap_err();
    assert!(err.message.contains("both plaintext and TLS"), "{err}");
}
