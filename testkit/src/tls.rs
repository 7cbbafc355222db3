//! A TLS server outside the mesh, for the tests of TLS origination: its own root, a
//! certificate for the names asked, optionally wanting client certificates from another
//! root, answering each request with what the connection showed.

use bytes::Bytes;
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::Arc;

/// A root of our own (rcgen), issuing certificates.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        TestCa { cert: params.self_signed(&key).expect("root"), key }
    }

    /// The root, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `names` (DNS names, or URIs when they have a scheme) and its key, PEM.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let (cert, key) = self.issue_der(names);
        (cert.pem(), key.serialize_pem())
    }

    fn issue_der(&self, names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        for name in names {
            params.subject_alt_names.push(match name.contains("://") {
                true => rcgen::SanType::URI((*name).try_into().expect("a URI")),
                false => rcgen::SanType::DnsName((*name).try_into().expect("a DNS name")),
            });
        }
        (params.signed_by(&key, &self.cert, &self.key).expect("certificate"), key)
    }
}

/// What a request's connection showed the server.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The negotiated ALPN protocol, `-` without one.
    pub alpn: String,
    /// The client presented a certificate (only ever one `clients` trusts).
    pub client_certificate: bool,
    /// The request's `Host`, `-` without one.
    pub host: String,
}

/// A TLS server on 127.0.0.1 with a certificate from `ca` for `names`; with `clients` (a
/// root, PEM) it takes only clients with a certificate from that root. Each request is
/// answered 200 with `answer(&Seen)`.
pub async fn https_server(
    ca: &TestCa,
    names: &[&str],
    clients: Option<&str>,
    answer: fn(&Seen) -> String,
) -> SocketAddr {
    let (cert, key) = ca.issue_der(names);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            roots.add(rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM")).expect("root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key");
    let mut config = builder.with_single_cert(vec![cert.der().clone()], key).expect("certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let session = tls.get_ref().1;
                let alpn = String::from_utf8_lossy(session.alpn_protocol().unwrap_or(b"-")).into_owned();
                let client_certificate = session.peer_certificates().is_some_and(|c| !c.is_empty());
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("-").to_string();
                    let body = answer(&Seen { alpn: alpn.clone(), client_certificate, host });
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
