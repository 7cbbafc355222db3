//! TLS origination (DestinationRule `tls.mode: SIMPLE` to a ServiceEntry host):
//! the app speaks plaintext to its sidecar, the sidecar speaks TLS to a server
//! outside the mesh, checking the chain and the name; a server it cannot
//! verify is a connect failure (503 UF), never plaintext.

use crate::harness::*;
use weft_testkit::tls::{https_server, TestCa};

const HOST: &str = "api.external.test";

/// A TLS server for `HOST` with a certificate from `ca`, answering `secure <ALPN>`.
async fn tls_server(ca: &TestCa) -> std::net::SocketAddr {
    https_server(ca, &[HOST], None, |seen| format!("secure {}", seen.alpn)).await
}

fn pem_file(name: &str, pem: &str) -> String {
    let path = std::env::temp_dir().join(format!("weft-it-{}-{name}.pem", std::process::id()));
    std::fs::write(&path, pem).unwrap();
    path.to_string_lossy().into_owned()
}

fn config(server: std::net::SocketAddr, sni: &str, ca_file: &str) -> String {
    let services = format!("  {HOST}:\n    routes:\n      - route: [ {{ cluster: ext }} ]\n");
    let clusters = format!(
        "  ext:\n    service: {HOST}\n    endpoints: [ {{ address: \"{server}\" }} ]\n    tlsOrigination: {{ sni: {sni}, caCertificates: \"{ca_file}\" }}\n"
    );
    config_yaml(&services, &clusters)
}

#[tokio::test]
async fn the_sidecar_originates_tls_and_verifies_the_server() {
    let (ours, theirs) = (TestCa::new("ours"), TestCa::new("theirs"));
    let server = tls_server(&ours).await;
    let ours_file = pem_file("ours", &ours.pem());
    let theirs_file = pem_file("theirs", &theirs.pem());

    let proxy = start(&config(server, HOST, &ours_file)).await;
    let got = get(proxy.outbound, HOST, "/", &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "secure http/1.1"), "plaintext in, TLS out");

    // A server whose certificate does not chain to the roots, or is not for the SNI name: 503 UF.
    proxy.shared.apply(parse(&config(server, HOST, &theirs_file))).unwrap();
    let got = get(proxy.outbound, HOST, "/", &[]).await;
    assert_eq!(got.status, 503, "an unknown issuer: {}", got.body);
    assert!(got.header("x-weft-error").contains("TLS handshake"), "{}", got.header("x-weft-error"));
    proxy.shared.apply(parse(&config(server, "other.external.test", &ours_file))).unwrap();
    assert_eq!(get(proxy.outbound, HOST, "/", &[]).await.status, 503, "a name the certificate does not carry");

    // Roots that cannot be read (or a device a YAML author names): that cluster alone fails,
    // closed — no endpoints, 503, never plaintext — and the rest of the config applies.
    for roots in ["/nonexistent/ca.pem", "/dev/zero"] {
        proxy.shared.apply(parse(&config(server, HOST, roots))).unwrap();
        let got = get(proxy.outbound, HOST, "/", &[]).await;
        assert_eq!(got.status, 503, "{roots}: {}", got.body);
        assert!(got.header("x-weft-error").contains("no endpoints"), "{}", got.header("x-weft-error"));
    }
    let _ = std::fs::remove_file(ours_file);
    let _ = std::fs::remove_file(theirs_file);
}
