//! A sidecar with a certificate issued elsewhere (`--cert-file --key-file
//! --root-file`, as cert-manager or SPIRE would hand one over): mutual TLS with
//! no control plane, STRICT on the server, and the client refusing a server that
//! proves the wrong identity.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weft_control_plane::ca::{Ca, CaParts};
use weft_testkit::{free_port, TempDir};

fn proxy_bin() -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    deps.parent().unwrap().join("weft-proxy")
}

fn certificate(ca: &Ca, dir: &Path, sa: &str) -> [PathBuf; 3] {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
    let files = [dir.join(format!("{sa}.pem")), dir.join(format!("{sa}.key")), dir.join("root.pem")];
    std::fs::write(&files[0], ca.sign(&csr, "demo", sa, Duration::from_secs(3600)).unwrap()).unwrap();
    std::fs::write(&files[1], key.serialize_pem()).unwrap();
    std::fs::write(&files[2], ca.root_pem()).unwrap();
    files
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sidecar(dir: &Path, name: &str, config: &str, files: &[PathBuf; 3], app: Option<SocketAddr>) -> (Killed, u16) {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).unwrap();
    let (outbound, inbound, admin) = (free_port(), free_port(), free_port());
    let mut cmd = Command::new(proxy_bin());
    cmd.arg("--config")
        .arg(&path)
        .arg("--cert-file")
        .arg(&files[0])
        .arg("--key-file")
        .arg(&files[1])
        .arg("--root-file")
        .arg(&files[2]);
    cmd.args(["--outbound", &format!("127.0.0.1:{outbound}"), "--inbound", &format!("127.0.0.1:{inbound}")]);
    cmd.args(["--admin", &format!("127.0.0.1:{admin}")]);
    if let Some(app) = app {
        cmd.args(["--app", &app.to_string()]);
    }
    let child = Killed(
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", outbound)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{name} did not start: {}",
            std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, if app.is_some() { inbound } else { outbound })
}

fn get(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A one-line HTTP app.
fn app() -> SocketAddr {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nhi\n").is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn static_certificates_give_mutual_tls_without_a_control_plane() {
    let dir = TempDir::new("static-identity");
    let ca = Ca::from_parts(&CaParts::generate("cluster.local").unwrap(), "cluster.local").unwrap();
    let server_files = certificate(&ca, &dir.0, "server");
    let client_files = certificate(&ca, &dir.0, "client");
    let api = weft_model::API_VERSION;
    let server_cfg = format!(
        "apiVersion: {api}\nversion: s\nworkload: {{name: server, namespace: demo}}\ninbound: {{mtls: STRICT}}\n"
    );
    let (_server, server_inbound) = sidecar(&dir.0, "server", &server_cfg, &server_files, Some(app()));
    let client_cfg = |identity: &str| {
        format!(
            "apiVersion: {api}\nversion: c\nworkload: {{name: client, namespace: demo}}\nservices:\n  app:\n    routes:\n    - name: default\n      route:\n      - cluster: app\nclusters:\n  app:\n    service: app\n    endpoints:\n    - address: 127.0.0.1:{server_inbound}\n    tls:\n      identities: [\"{identity}\"]\n"
        )
    };
    assert!(get(server_inbound).is_empty(), "plaintext to the STRICT server is closed");
    let (_good, port) =
        sidecar(&dir.0, "client", &client_cfg("spiffe://cluster.local/ns/demo/sa/server"), &client_files, None);
    let answer = get(port);
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("hi\n"), "{answer}");
    let (_wrong, port) =
        sidecar(&dir.0, "wrong", &client_cfg("spiffe://cluster.local/ns/demo/sa/somebody-else"), &client_files, None);
    let answer = get(port);
    assert!(answer.starts_with("HTTP/1.1 503"), "a server proving another identity is refused: {answer}");
}
