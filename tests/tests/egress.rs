//! Egress end to end: a ServiceEntry (STATIC) for a TLS server outside the mesh
//! and a DestinationRule `tls: SIMPLE`, applied with the control plane, so the
//! app speaks plaintext to its sidecar and the sidecar speaks verified TLS out;
//! then the same server under a root the DestinationRule does not trust: 503.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use std::path::Path;
use std::sync::Arc;
use weft_control_plane::istio::load_str;
use weft_testkit::Etcd;

const HOST: &str = "api.payments.example";

/// A TLS server for `HOST` under a fresh root; returns its address and the root's PEM.
async fn payments() -> (std::net::SocketAddr, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![HOST.to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| {
                    let host = req.headers().get("host").map_or("-".into(), |h| h.to_str().unwrap_or("?").to_string());
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                            "paid via {host}"
                        )))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, ca.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_entry_with_tls_origination_reaches_a_server_outside_the_mesh() {
    let (server, root) = payments().await;
    let (_other, other_root) = payments().await;
    let dir = weft_testkit::TempDir::new("egress");
    let (trusted, untrusted) = (dir.0.join("root.pem"), dir.0.join("other.pem"));
    std::fs::write(&trusted, root).unwrap();
    std::fs::write(&untrusted, other_root).unwrap();

    let etcd = Etcd::start();
    let store = admin_store(&[etcd.url()], &etcd).await;
    let (c, _cp) = Cp::start(&etcd, "cp-a", test_ca()).await;
    let (gateway, _g) = sidecar(&c, workload("api-gateway", &[("app", "api-gateway")]), None, None).await;
    let policies = |roots: &Path| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: payments, namespace: production}}\nspec:\n  hosts: [{HOST}]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: payments, namespace: production}}\nspec:\n  host: {HOST}\n  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: {}}}\n",
            server.port(),
            roots.display()
        )
    };
    store.apply(&load_str(Path::new("egress.yaml"), &policies(&trusted)).unwrap()).await.unwrap();
    eventually("the entry reaches the gateway's sidecar", || async {
        gateway.shared.snapshot().config.services.contains_key(HOST)
    })
    .await;
    assert_eq!(
        get(gateway.outbound, HOST, &[]).await,
        (200, format!("paid via {HOST}")),
        "plaintext in, verified TLS out"
    );

    store.apply(&load_str(Path::new("egress.yaml"), &policies(&untrusted)).unwrap()).await.unwrap();
    eventually("a root that did not sign the server: refused, never plaintext", || async {
        get(gateway.outbound, HOST, &[]).await.0 == 503
    })
    .await;
}
