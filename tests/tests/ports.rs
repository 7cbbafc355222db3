//! A multi-port service through two sidecars over mesh mTLS: each of its HTTP ports
//! reaches the app's own port, is routed by that port's routes and authorized by that port,
//! its TCP port is relayed and judged again when policies change, and a peer cannot name a
//! port the app's own sidecar did not declare to reach anything else.

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_control_plane::istio::load_str;
use weft_testkit::Etcd;

/// A mesh peer of our own (a certificate from the mesh CA for production/intruder) opening
/// mesh mTLS to a sidecar's inbound `addr`, its SNI naming `port` as a client sidecar's
/// would, offering `alpn`.
async fn intruder(c: &Cp, addr: SocketAddr, port: u16, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
    let cert = c.ca.sign(&csr, "production", "intruder", Duration::from_secs(600)).unwrap();
    let leaf = std::sync::Arc::new(
        weft_proxy::security::identity::Leaf::new(key.serialize_der(), &cert, &c.ca.root_pem()).unwrap(),
    );
    let server = "spiffe://cluster.local/ns/production/sa/order-service".to_string();
    let mut config = (*weft_proxy::security::identity::client_config(&leaf, &[server], false).unwrap()).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    let cluster = format!("outbound|{port}||order-service.production.svc.cluster.local");
    let name =
        rustls::pki_types::ServerName::try_from(weft_proxy::net::tcp::sni_of_cluster(&cluster).unwrap()).unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, stream).await.unwrap()
}

/// One HTTP/1.1 request as [`intruder`]; the response as text.
async fn as_intruder(c: &Cp, addr: SocketAddr, port: u16, path: &str) -> String {
    let mut tls = intruder(c, addr, port, b"http/1.1").await;
    let request = format!("GET {path} HTTP/1.1\r\nhost: order-service\r\nconnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A line protocol on 127.0.0.1 (a database's place): every line comes back, until the end.
async fn line_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// One line over mesh TCP as [`intruder`]: what came back (empty: closed).
async fn line(tls: &mut tokio_rustls::client::TlsStream<TcpStream>, text: &str) -> String {
    let _ = tls.write_all(text.as_bytes()).await;
    let mut buf = vec![0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_port_of_a_multi_port_service_reaches_its_own_app_port() {
    let etcd = Etcd::start();
    let store = admin_store(&[etcd.url()], &etcd).await;
    let (c, _cp) = Cp::start(&etcd, "cp-a", test_ca()).await;
    // The app serves its API on one port, its admin pages on another and a line protocol on
    // a third (TCP), all on 127.0.0.1.
    let (api, admin, db) = (app("orders api").await, app("orders admin").await, line_echo().await);
    let other = [format!("http-admin:{}", admin.port()), format!("tcp-db:{}", db.port())]
        .map(|p| weft_model::ServicePort::parse(&p).unwrap())
        .to_vec();
    let w = workload("order-service-v1", &[("app", "order-service"), ("version", "v1")]);
    let (orders, _g1) = sidecar_with_ports(&c, w.clone(), Some("order-service"), Some(api), other).await;
    let (caller, _g2) = sidecar(&c, workload("api-gateway", &[("app", "api-gateway")]), None, None).await;
    let admin_cluster = format!("outbound|{}||order-service", admin.port());
    eventually("the caller knows both ports, both hold certificates", || async {
        endpoints(&caller, &admin_cluster) == 1
            && [&orders, &caller].iter().all(|r| r.shared.identity.as_ref().unwrap().current().is_some())
    })
    .await;
    assert_eq!(orders.shared.snapshot().config.inbound.http_ports, [admin.port()]);
    assert_eq!(orders.shared.snapshot().config.inbound.tcp_ports, [db.port()]);

    // The service port reaches the API; the other port, named in the Host, the admin pages.
    let admin_host = format!("order-service:{}", admin.port());
    assert_eq!(get(caller.outbound, "order-service", &[]).await, (200, "orders api".into()));
    assert_eq!(get(caller.outbound, "order-service:80", &[]).await, (200, "orders api".into()));
    assert_eq!(get(caller.outbound, &admin_host, &[]).await, (200, "orders admin".into()));
    // Over mesh mTLS: the server's sidecar saw the caller's identity on the admin port's cluster.
    let stats = metrics(&orders).await;
    assert!(
        stats.lines().any(|l| l.starts_with("istio_requests_total{")
            && l.contains("reporter=\"destination\"")
            && l.contains("source_principal=\"spiffe://cluster.local/ns/production/sa/api-gateway\"")),
        "{stats}"
    );

    // Authorization judges the port the call was for: a DENY on the admin port leaves the API alone.
    let deny = format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: no-admin, namespace: production}}\nspec:\n  selector: {{matchLabels: {{app: order-service}}}}\n  action: DENY\n  rules:\n  - to:\n    - operation: {{ports: ['{}']}}\n", admin.port());
    store.apply(&load_str(Path::new("deny.yaml"), &deny).unwrap()).await.unwrap();
    eventually("the DENY on the admin port holds", || async { get(caller.outbound, &admin_host, &[]).await.0 == 403 })
        .await;
    assert_eq!(get(caller.outbound, "order-service", &[]).await, (200, "orders api".into()));

    // A VirtualService's match on `port` routes that port only (Istio's route configuration per port).
    let vs = format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: orders, namespace: production}}\nspec:\n  hosts: [order-service]\n  http:\n  - match:\n    - port: {}\n    directResponse: {{status: 204}}\n  - route:\n    - destination: {{host: order-service}}\n", admin.port());
    store.apply(&load_str(Path::new("vs.yaml"), &vs).unwrap()).await.unwrap();
    eventually("the admin port's own route", || async { get(caller.outbound, &admin_host, &[]).await.0 == 204 }).await;
    assert_eq!(get(caller.outbound, "order-service", &[]).await, (200, "orders api".into()));

    // As the attacker, with a mesh certificate of our own: naming the sidecar's admin port, or
    // any port the app did not register, in the SNI reaches the app's main port and nothing else.
    let admin_port = orders.admin.port();
    let answer = as_intruder(&c, orders.inbound, admin_port, "/config_dump").await;
    assert!(answer.ends_with("orders api"), "the sidecar's admin is not reachable: {answer}");
    let answer = as_intruder(&c, orders.inbound, 1, "/").await;
    assert!(answer.ends_with("orders api"), "{answer}");

    // Mesh TCP to the line protocol; a port no TCP port of the app (its HTTP port) is closed.
    let mut tcp = intruder(&c, orders.inbound, db.port(), weft_proxy::net::tcp::ALPN).await;
    assert_eq!(line(&mut tcp, "one\n").await, "one\n");
    let mut http_port_as_tcp = intruder(&c, orders.inbound, admin.port(), weft_proxy::net::tcp::ALPN).await;
    assert_eq!(line(&mut http_port_as_tcp, "GET / HTTP/1.1\r\n\r\n").await, "", "not a TCP port");
    // Another instance with the same labels and service account (a second replica, or a pod
    // copying them) registering a port — here the sidecar's own admin port — opens nothing
    // on this one: a sidecar opens only the ports its own flags declared.
    let sibling_port = weft_model::ServicePort::parse(&format!("tcp-x:{}", orders.admin.port())).unwrap();
    let (sibling, _g3) = sidecar_with_ports(&c, w, Some("order-service"), Some(api), vec![sibling_port]).await;
    eventually("the caller sees the sibling's port", || async {
        let snap = caller.shared.snapshot();
        snap.config.tcp.iter().any(|t| t.port == orders.admin.port())
    })
    .await;
    assert_eq!(sibling.shared.snapshot().config.inbound.tcp_ports, [orders.admin.port()], "its own");
    assert_eq!(orders.shared.snapshot().config.inbound.tcp_ports, [db.port()], "not the sibling's");
    let mut to_admin = intruder(&c, orders.inbound, orders.admin.port(), weft_proxy::net::tcp::ALPN).await;
    assert_eq!(line(&mut to_admin, "GET /config_dump HTTP/1.1\r\nhost: x\r\n\r\n").await, "");
    // A DENY applied while the connection is open closes it (each new config judges it again).
    assert_eq!(line(&mut tcp, "two\n").await, "two\n");
    let deny = format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: no-db, namespace: production}}\nspec:\n  selector: {{matchLabels: {{app: order-service}}}}\n  action: DENY\n  rules:\n  - from:\n    - source: {{principals: [cluster.local/ns/production/sa/intruder]}}\n    to:\n    - operation: {{ports: ['{}']}}\n", db.port());
    store.apply(&load_str(Path::new("no-db.yaml"), &deny).unwrap()).await.unwrap();
    let mut closed = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut closed)).await;
    assert!(read.is_ok(), "the open connection was closed by the new DENY");
    let mut again = intruder(&c, orders.inbound, db.port(), weft_proxy::net::tcp::ALPN).await;
    assert_eq!(line(&mut again, "three\n").await, "", "and new ones are refused");
}
