//! The ingress gateway end to end: a Gateway and a VirtualService bound to it stored in
//! etcd, the control plane translating them for the gateway workload, TLS terminated with
//! a mounted Secret, mutual TLS into the mesh with the gateway's own identity (an
//! AuthorizationPolicy names it, so another caller is refused), and end-user JWTs checked
//! at the gateway (a forged token 401, a missing one 403).

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use weft_control_plane::istio::load_str;
use weft_testkit::{Etcd, TempDir};

const ISS: &str = "https://auth.shop.example";
const HOST: &str = "shop.example.test";

const POLICIES: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop-gw, namespace: production}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: PORT, name: https, protocol: HTTPS}
    hosts: ["production/shop.example.test"]
    tls: {mode: SIMPLE, credentialName: shop-cert}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: hijack, namespace: production}
spec:
  selector: {app: intruder}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: production}
spec:
  hosts: [shop.example.test]
  gateways: [shop-gw]
  http:
  - match: [{uri: {prefix: /orders}}]
    route: [{destination: {host: order-service}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-the-gateway, namespace: production}
spec:
  selector: {matchLabels: {app: order-service}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/production/sa/shop-ingress"]}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: users, namespace: production}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules:
  - issuer: https://auth.shop.example
    jwks: 'JWKS'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: users-only, namespace: production}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules:
  - from: [{source: {notRequestPrincipals: ["*"]}}]
    to: [{operation: {paths: ["/orders/*"]}}]
"#;

/// One HTTPS request to the gateway trusting `root`; (status, body).
async fn https(addr: SocketAddr, root: &rcgen::Certificate, path: &str, token: Option<&str>) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", HOST);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let response = tx.send_request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_terminates_tls_and_calls_the_mesh_as_itself() {
    // The Secret the gateway's host has mounted: a certificate for the shop's public name.
    let secrets = TempDir::new("gateway-secrets");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec![HOST.to_string()]).unwrap().signed_by(&leaf_key, &ca, &ca_key).unwrap();
    std::fs::create_dir_all(secrets.0.join("shop-cert")).unwrap();
    std::fs::write(secrets.0.join("shop-cert/tls.crt"), leaf.pem()).unwrap();
    std::fs::write(secrets.0.join("shop-cert/tls.key"), leaf_key.serialize_pem()).unwrap();

    let order_app = app_with(|req| {
        let xfcc = req.headers().get("x-forwarded-client-cert").map_or("-", |v| v.to_str().unwrap_or("?"));
        format!("order for {xfcc}")
    })
    .await;
    let etcd = Etcd::start();
    let (c, _cp) = Cp::start(&etcd, "cp-gw", test_ca()).await;
    let (_order, _g1) = sidecar(
        &c,
        workload("order-v1", &[("app", "order-service"), ("version", "v1")]),
        Some("order-service"),
        Some(order_app),
    )
    .await;
    let (other, _g2) = sidecar(&c, workload("intruder", &[("app", "intruder")]), None, None).await;
    let port = weft_testkit::free_port();
    let options = weft_proxy::gateway::GatewayOptions {
        address: [127, 0, 0, 1].into(),
        credentials_dir: secrets.0.clone(),
        num_trusted_proxies: 0,
    };
    let (gw, _g3) = gateway(&c, workload("shop-ingress", &[("istio", "ingressgateway")]), options).await;

    let user = signer(ISS, "k1");
    let jwks = serde_json::json!({"keys": [user.jwk]}).to_string();
    let yaml = POLICIES.replace("PORT", &port.to_string()).replace("JWKS", &jwks);
    c.store.apply(&load_str(Path::new("gateway.yaml"), &yaml).unwrap()).await.unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    eventually("the gateway serves its Gateway's port with a route into the mesh", || async {
        endpoints(&gw, "order-service") == 1
            && gw.shared.identity.as_ref().unwrap().current().is_some()
            && tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;

    let token = user.token("alice", 600, &[]);
    let (status, body) = https(addr, &ca, "/orders/1", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("URI=spiffe://cluster.local/ns/production/sa/shop-ingress"),
        "the mesh saw the gateway's own identity: {body}"
    );
    assert_eq!(https(addr, &ca, "/orders/1", None).await.0, 403, "no token: the gateway's DENY");
    let forged = signer(ISS, "k1").token("alice", 600, &[]);
    assert_eq!(https(addr, &ca, "/orders/1", Some(&forged)).await.0, 401, "a token signed by another key");
    assert_eq!(https(addr, &ca, "/admin", Some(&token)).await.0, 404, "no route for the path");

    // The AuthorizationPolicy names the gateway: another workload of the mesh is refused.
    eventually("the intruder knows order-service", || async { endpoints(&other, "order-service") == 1 }).await;
    assert_eq!(get(other.outbound, "order-service", &[]).await.0, 403);
    // A Gateway whose selector matches a sidecar's labels does not make it a gateway.
    assert!(other.shared.snapshot().config.gateway.is_empty(), "a sidecar takes no Gateway");

    // The gateway reports its requests as the source, naming the destination service.
    let m = metrics(&gw).await;
    assert!(
        metric(
            &m,
            "istio_requests_total",
            &["reporter=\"source\"", "destination_service_name=\"order-service\"", "response_code=\"200\""]
        ) >= 1.0,
        "{m}"
    );
}

#[test]
fn careless_gateways_are_refused_whole_with_their_field() {
    let refused = |spec: &str| {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: g, namespace: production}}\nspec:\n  selector: {{istio: ingressgateway}}\n{spec}"
        );
        let diags = load_str(Path::new("gw.yaml"), &yaml).expect_err("refused");
        diags.iter().map(|d| format!("{}:{} {}", d.line, d.field, d.message)).collect::<Vec<_>>().join("\n")
    };
    let https = |tls: &str| {
        format!("  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [a.example]\n    tls: {tls}\n")
    };
    assert!(refused(&https("{mode: SIMPLE}")).contains("credentialName"), "no certificate");
    assert!(
        refused(&https("{mode: SIMPLE, credentialName: ../../etc}")).contains("not a Secret name"),
        "a path out of the credentials directory"
    );
    assert!(refused(&https("{mode: PASSTHROUGH}")).contains("not supported yet"));
    assert!(refused(&https("{mode: MUTUAL, serverCertificate: /c, privateKey: /k}")).contains("caCertificates"));
    assert!(refused(&https("{mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_0}")).contains("TLS 1.2"));
    let no_tls = "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example]\n";
    assert!(refused(no_tls).contains("spec.servers[0].tls"));
    let tcp = "  servers:\n  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ['*']\n";
    assert!(refused(tcp).contains("not supported yet"));
    let bad_host = "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['a/b/c']\n";
    assert!(refused(bad_host).contains("hosts[0]"));
}
