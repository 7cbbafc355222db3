//! Egress end to end: a ServiceEntry (STATIC) for a TLS server outside the mesh
//! and a DestinationRule `tls: SIMPLE`, applied with the control plane, so the
//! app speaks plaintext to its sidecar and the sidecar speaks verified TLS out;
//! then the same server under a root the DestinationRule does not trust: 503. And
//! `tls: MUTUAL` with a client certificate, `subjectAltNames` and `insecureSkipVerify`.

mod common;

use common::*;
use std::path::Path;
use weft_control_plane::istio::load_str;
use weft_testkit::tls::{https_server, Seen, TestCa};
use weft_testkit::Etcd;

const HOST: &str = "api.payments.example";

/// A TLS server for `HOST` (and [`PARTNER_ID`]) under a fresh root, answering how it was
/// reached; with `clients` (a root's PEM) it takes only clients with a certificate from that
/// root. Its address and its root's PEM.
async fn payments_server(clients: Option<&str>) -> (std::net::SocketAddr, String) {
    let ca = TestCa::new("payments");
    let answer = |seen: &Seen| {
        let who = if seen.client_certificate { " with a client certificate" } else { "" };
        format!("paid via {}{who}", seen.host)
    };
    (https_server(&ca, &[HOST, PARTNER_ID], clients, answer).await, ca.pem())
}

async fn payments() -> (std::net::SocketAddr, String) {
    payments_server(None).await
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
    let client_ca = TestCa::new("partner clients");
    let (client_cert, client_key) = client_ca.issue(&["shop.example"]);
    let (server, root) = payments_server(Some(&client_ca.pem())).await;
    let (_other, other_root) = payments().await;
    let dir = weft_testkit::TempDir::new("egress-mutual");
    let file = |name: &str, pem: String| {
        let path = dir.0.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    let (root, other_root) = (file("root.pem", root), file("other.pem", other_root));
    let (cert, key) = (file("client.pem", client_cert), file("client.key", client_key));

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
