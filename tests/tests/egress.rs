//! Egress end to end: a ServiceEntry (STATIC) for a TLS server outside the mesh
//! and a DestinationRule `tls: SIMPLE`, applied with the control plane, so the
//! app speaks plaintext to its sidecar and the sidecar speaks verified TLS out;
//! then the same server under a root the DestinationRule does not trust: 503. And
//! `tls: MUTUAL` with a client certificate, `subjectAltNames` and `insecureSkipVerify`.

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
    payments_server(None).await
}

/// [`payments`] whose certificate also names `spiffe://partner.example/payments`, and which,
/// with `clients` (a root's PEM), takes only clients with a certificate from that root.
async fn payments_server(clients: Option<&str>) -> (std::net::SocketAddr, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![HOST.to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(PARTNER_ID.try_into().unwrap()));
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            roots.add(rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
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
                let client = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let host = req.headers().get("host").map_or("-".into(), |h| h.to_str().unwrap_or("?").to_string());
                    let who = if client { " with a client certificate" } else { "" };
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                            "paid via {host}{who}"
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

/// The partner's name for its server, besides `HOST`.
const PARTNER_ID: &str = "spiffe://partner.example/payments";

/// The entry for `HOST` on `server`, and a DestinationRule with `tls` (a flow mapping's insides).
fn entry_with_tls(server: std::net::SocketAddr, tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: payments, namespace: production}}\nspec:\n  hosts: [{HOST}]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: payments, namespace: production}}\nspec:\n  host: {HOST}\n  trafficPolicy:\n    tls: {{{tls}}}\n",
        server.port()
    )
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
    let policies = |roots: &Path| entry_with_tls(server, &format!("mode: SIMPLE, caCertificates: {}", roots.display()));
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

/// DestinationRule `tls: MUTUAL` to a partner that takes only clients with its certificate,
/// `subjectAltNames` checked instead of the name, and `insecureSkipVerify` — each through the
/// sidecar to a real TLS server; what the server refuses or the sidecar cannot verify is 503,
/// never plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_origination_presents_the_client_certificate_and_checks_the_servers_names() {
    // The partner's client CA and the certificate it gave us, as files on the sidecar.
    let client_ca_key = rcgen::KeyPair::generate().unwrap();
    let mut client_ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    client_ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let client_ca = client_ca.self_signed(&client_ca_key).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert = rcgen::CertificateParams::new(vec!["shop.example".to_string()])
        .unwrap()
        .signed_by(&client_key, &client_ca, &client_ca_key)
        .unwrap();
    let (server, root) = payments_server(Some(&client_ca.pem())).await;
    let (_other, other_root) = payments().await;
    let dir = weft_testkit::TempDir::new("egress-mutual");
    let file = |name: &str, pem: String| {
        let path = dir.0.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    let (root, other_root) = (file("root.pem", root), file("other.pem", other_root));
    let (cert, key) = (file("client.pem", client_cert.pem()), file("client.key", client_key.serialize_pem()));

    let etcd = Etcd::start();
    let store = admin_store(&[etcd.url()], &etcd).await;
    let (c, _cp) = Cp::start(&etcd, "cp-a", test_ca()).await;
    let (gateway, _g) = sidecar(&c, workload("api-gateway", &[("app", "api-gateway")]), None, None).await;
    let mutual = format!("mode: MUTUAL, clientCertificate: {cert}, privateKey: {key}, caCertificates: {root}");
    let untrusted = format!("mode: MUTUAL, clientCertificate: {cert}, privateKey: {key}, caCertificates: {other_root}");
    let paid = (200, "with a client certificate");
    let cases = [
        (mutual.clone(), paid, "MUTUAL: the partner sees our client certificate"),
        // Without the client certificate the partner refuses the handshake: 503, not plaintext.
        (
            format!("mode: SIMPLE, caCertificates: {root}"),
            (503, ""),
            "SIMPLE to a partner that wants a client certificate",
        ),
        // subjectAltNames replace the name check: one the certificate carries passes, another fails.
        (format!("{mutual}, subjectAltNames: ['{PARTNER_ID}']"), paid, "a subjectAltName the certificate carries"),
        (format!("{mutual}, subjectAltNames: ['spiffe://partner.example/other']"), (503, ""), "one it does not carry"),
        // Under a root that did not sign the server: 503; with insecureSkipVerify it is not checked.
        (untrusted.clone(), (503, ""), "an untrusted server"),
        (format!("{untrusted}, insecureSkipVerify: true"), paid, "insecureSkipVerify: not checked"),
    ];
    for (tls, (status, ends), what) in cases {
        store.apply(&load_str(Path::new("egress.yaml"), &entry_with_tls(server, &tls)).unwrap()).await.unwrap();
        eventually(what, || async {
            let (got, body) = get(gateway.outbound, HOST, &[]).await;
            got == status && body.ends_with(ends)
        })
        .await;
    }
}
