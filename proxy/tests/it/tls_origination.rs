//! TLS origination (DestinationRule `tls.mode: SIMPLE` to a ServiceEntry host):
//! the app speaks plaintext to its sidecar, the sidecar speaks TLS to a server
//! outside the mesh, checking the chain and the name; a server it cannot
//! verify is a connect failure (503 UF), never plaintext.

use crate::harness::*;
use bytes::Bytes;
use http_body_util::Full;
use std::sync::Arc;

const HOST: &str = "api.external.test";

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

fn ca() -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "test root");
    Ca { cert: params.self_signed(&key).unwrap(), key }
}

/// A TLS server for `HOST` with a certificate from `ca`, answering `secure <ALPN>`.
async fn tls_server(ca: &Ca) -> std::net::SocketAddr {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec![HOST.to_string()]).unwrap().signed_by(&key, &ca.cert, &ca.key).unwrap();
    let chain = vec![cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let alpn = String::from_utf8_lossy(tls.get_ref().1.alpn_protocol().unwrap_or(b"-")).into_owned();
                let svc = hyper::service::service_fn(move |_req| {
                    let body = format!("secure {alpn}");
                    async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
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
    let (ours, theirs) = (ca(), ca());
    let server = tls_server(&ours).await;
    let ours_file = pem_file("ours", &ours.cert.pem());
    let theirs_file = pem_file("theirs", &theirs.cert.pem());

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
