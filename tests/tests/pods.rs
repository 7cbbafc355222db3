//! Pods for real, on one machine: each "pod" is a network namespace with a veth
//! into a shared bridge, its own IPv4 and IPv6 address (dual stack),
//! `weft-proxy init-iptables` run in it, an app and a sidecar running as uid
//! 1337. Names resolve through a per-namespace hosts file (`ip netns exec`
//! mounts /etc/netns/<ns>/hosts), `order-service` to an IPv4 and an IPv6
//! virtual IP that exist nowhere, as a dual-stack ClusterIP would. The client
//! app calls `http://order-service:3000/` with plain HTTP and no proxy settings.
//! Everything is removed on drop, even when the test fails. Needs root.
//!
//! Size: the pod harness (namespaces, bridge, iptables, clean-up on drop) and the
//! scenarios that need it; the harness means nothing without them.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use weft_control_plane::ca::{Ca, CaParts};
use weft_control_plane::istio::load_str;
use weft_control_plane::store::Store;
use weft_testkit::{Etcd, TempDir};

/// A binary next to the test's own build (weft-proxy, examples/hello).
fn built(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let path = deps.parent().unwrap().join(name);
    assert!(path.exists(), "{} not built (cargo build -p weft-proxy --examples)", path.display());
    path
}

fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The bridge, the pods and every process started in them; all removed on drop.
struct Net {
    bridge: String,
    prefix: String,
    prefix6: String,
    pods: Vec<String>,
    children: Vec<(String, Child)>,
    dir: TempDir,
}

impl Net {
    fn new() -> Net {
        let id = std::process::id() % 100_000;
        let prefix = format!("10.251.{}", 20 + id % 200);
        let prefix6 = format!("fd51:{:x}:", id % 65_536);
        let bridge = format!("wb{id}");
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        run(&["ip", "link", "add", &bridge, "type", "bridge"]);
        run(&["ip", "addr", "add", &format!("{prefix}.1/24"), "dev", &bridge]);
        run(&["ip", "-6", "addr", "add", &format!("{prefix6}:1/64"), "dev", &bridge, "nodad"]);
        run(&["ip", "link", "set", &bridge, "up"]);
        let dir = TempDir::new("pods");
        run(&["chmod", "755", dir.0.to_str().unwrap()]);
        Net { bridge, prefix, prefix6, pods: Vec::new(), children: Vec::new(), dir }
    }

    fn ip(&self, host: u8) -> String {
        format!("{}.{host}", self.prefix)
    }

    /// The IPv6 address of `.host`, bare (`fd51:…::3`).
    fn ip6(&self, host: u8) -> String {
        format!("{}:{host}", self.prefix6)
    }

    /// A network namespace on the bridge with address `.host`, `order-service` in its hosts file.
    fn pod(&mut self, name: &str, host: u8) -> String {
        let ns = format!("{}-{name}", self.bridge);
        let veth = format!("{}{name}", self.bridge).chars().take(15).collect::<String>();
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        run(&["ip", "netns", "add", &ns]);
        self.pods.push(ns.clone());
        run(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        run(&["ip", "link", "set", &veth, "master", &self.bridge, "up"]);
        let addr = format!("{}/24", self.ip(host));
        let addr6 = format!("{}/64", self.ip6(host));
        let (gateway, gateway6) = (self.ip(1), self.ip6(1));
        for cmd in [
            vec!["ip", "addr", "add", addr.as_str(), "dev", "eth0"],
            vec!["ip", "-6", "addr", "add", addr6.as_str(), "dev", "eth0", "nodad"],
            vec!["ip", "link", "set", "eth0", "up"],
            vec!["ip", "link", "set", "lo", "up"],
            vec!["ip", "route", "add", "default", "via", gateway.as_str()],
            vec!["ip", "-6", "route", "add", "default", "via", gateway6.as_str()],
        ] {
            self.exec(&ns, &cmd);
        }
        let etc = PathBuf::from("/etc/netns").join(&ns);
        std::fs::create_dir_all(&etc).unwrap();
        let hosts = format!("127.0.0.1 localhost\n{} order-service\n{} order-service\n", self.ip(200), self.ip6(200));
        std::fs::write(etc.join("hosts"), hosts).unwrap();
        ns
    }

    /// Runs a command in `ns` and returns its stdout (fails the test on error).
    fn exec(&self, ns: &str, cmd: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(cmd);
        run(&full)
    }

    /// `curl` in `ns` (optionally as uid 1337) over IPv4, or IPv6 for a `[…]` URL:
    /// (status, body); status 0 when no answer.
    fn curl(&self, ns: &str, as_proxy_user: bool, url: &str) -> (u16, String) {
        self.curl_over(if url.contains("://[") { "-6" } else { "-4" }, ns, as_proxy_user, url)
    }

    /// `curl` over IPv6 (names resolve to their IPv6 address).
    fn curl6(&self, ns: &str, url: &str) -> (u16, String) {
        self.curl_over("-6", ns, false, url)
    }

    fn curl_over(&self, family: &str, ns: &str, as_proxy_user: bool, url: &str) -> (u16, String) {
        let mut cmd = vec!["ip", "netns", "exec", ns];
        if as_proxy_user {
            cmd.extend(["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups"]);
        }
        cmd.extend(["curl", family, "-g", "-s", "-m", "3", "--noproxy", "*", "-w", "\n%{http_code}", url]);
        let out = Command::new(cmd[0]).args(&cmd[1..]).env_remove("http_proxy").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Starts a long-running process in `ns`, as uid 1337 when `as_proxy_user`.
    fn spawn(&mut self, name: &str, ns: &str, as_proxy_user: bool, cmd: &[String]) {
        let mut full: Vec<String> = vec!["netns".into(), "exec".into(), ns.into()];
        if as_proxy_user {
            full.extend(["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups"].map(String::from));
        }
        full.extend_from_slice(cmd);
        let log = std::fs::File::create(self.dir.0.join(format!("{name}.log"))).unwrap();
        let child = Command::new("ip").args(&full).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.children.push((name.to_string(), child));
    }

    fn stop(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut c) = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.0.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn file(&self, name: &str, content: &str) -> String {
        let path = self.dir.0.join(name);
        std::fs::write(&path, content).unwrap();
        path.to_string_lossy().to_string()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.pods {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(ns));
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A TCP server outside the mesh speaking no HTTP: with `banner`, it speaks first
/// (SMTP, MySQL …) and closes; otherwise it answers one line with `echo: <line>`.
fn outside_tcp_server(addr: &str, banner: Option<&'static str>) -> SocketAddr {
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            if let Some(banner) = banner {
                let _ = stream.write_all(banner.as_bytes());
                continue;
            }
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while !line.ends_with(b"\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                line.push(byte[0]);
            }
            let _ = stream.write_all(&[b"echo: ".as_slice(), &line].concat());
        }
    });
    addr
}

/// A plain TCP client in `ns` (bash's /dev/tcp): sends `send` (printf syntax), returns all it reads.
fn tcp(net: &Net, ns: &str, addr: SocketAddr, send: &str) -> String {
    let (ip, port) = (addr.ip(), addr.port());
    let script = format!("trap '' PIPE; exec 3<>/dev/tcp/{ip}/{port}; printf '{send}' >&3; timeout 5 cat <&3; true");
    net.exec(ns, &["bash", "-c", &script])
}

/// A TCP server for one pod: each connection's first line is answered with `<name>: <line>`.
const DB_ECHO: &str = "import socket, sys, threading
name = sys.argv[1].encode()
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(('::', 5432))
s.listen(16)
def serve(c):
    c.sendall(name + b': ' + c.makefile('rb').readline())
    c.close()
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
";

/// Plain TCP from the host (outside every pod and the mesh): sends `send`, returns all it reads.
fn host_tcp(addr: SocketAddr, send: &[u8]) -> String {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)) else { return String::new() };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(send);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A mesh peer of our own making (a certificate from the mesh CA for production/intruder)
/// opening mesh TCP to a sidecar's inbound `addr`, naming `port` in its SNI as a client
/// sidecar would; all it reads back after sending `send` (nothing: closed).
async fn mesh_tcp_probe(ca: &Ca, addr: SocketAddr, port: u16, send: &[u8], server_id: &str) -> String {
    mesh_probe(ca, addr, port, weft_proxy::net::tcp::ALPN, send, server_id).await
}

/// [`mesh_tcp_probe`] offering `alpn` (`http/1.1`: a mesh HTTP request naming `port`).
async fn mesh_probe(ca: &Ca, addr: SocketAddr, port: u16, alpn: &[u8], send: &[u8], server_id: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
    let cert = ca.sign(&csr, "production", "intruder", Duration::from_secs(600)).unwrap();
    let leaf = std::sync::Arc::new(
        weft_proxy::security::identity::Leaf::new(key.serialize_der(), &cert, &ca.root_pem()).unwrap(),
    );
    let config = weft_proxy::security::identity::client_config(&leaf, &[server_id.to_string()], false).unwrap();
    let mut config = (*config).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    let sni = weft_proxy::net::tcp::sni(port, "order-service.production.svc.cluster.local");
    let name = rustls::pki_types::ServerName::try_from(sni).unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let Ok(mut tls) = connector.connect(name, stream).await else { return String::new() };
    let _ = tls.write_all(send).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of the one sample of `metric` whose labels contain every one of `having`.
fn sample(stats: &str, metric: &str, having: &[&str]) -> Option<u64> {
    stats
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && having.iter().all(|h| l.contains(h)))
        .find_map(|l| l.rsplit_once(' ')?.1.parse().ok())
}

/// An HTTP server outside the mesh (the host, on the bridge), answering `outside`.
fn outside_server(addr: &str) -> SocketAddr {
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\noutside\n");
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_in_a_pod_is_meshed_without_knowing_it() {
    assert_eq!(run(&["id", "-u"]).trim(), "0", "network namespaces and iptables need root");
    let (proxy, hello) = (built("weft-proxy"), built("examples/hello"));
    let proxy = proxy.to_str().unwrap().to_string();
    let mut net = Net::new();

    // The control plane, on the bridge so the pods reach it.
    let etcd = Etcd::start();
    let store = Store::connect(&[etcd.url()], "/weft/", Some(&etcd.admin())).await.unwrap();
    let cp_store = Store::connect(&[etcd.url()], "/weft/", Some(&etcd.tls(weft_etcd::CONTROL_PLANE))).await.unwrap();
    // Dual stack, as a Kubernetes Service of both families: v2 reaches it over IPv6.
    let listener = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
    let cp_port = listener.local_addr().unwrap().port();
    let cp_url = format!("http://{}:{cp_port}", net.ip(1));
    let cp_url6 = format!("http://[{}]:{cp_port}", net.ip6(1));
    let ca =
        std::sync::Arc::new(Ca::from_parts(&CaParts::generate("cluster.local").unwrap(), "cluster.local").unwrap());
    let cp = weft_control_plane::push::start(cp_store, "cp-pods".into(), listener, ca.clone()).await.unwrap();
    let hour = Duration::from_secs(3600);
    let token = |sa: &'static str| {
        let store = store.clone();
        async move {
            weft_control_plane::token::mint(&store, "production", sa, "weft-ca", hour, SystemTime::now())
                .await
                .unwrap()
                .0
        }
    };
    let (order_token, client_token) = (token("order-service").await, token("client").await);
    let root_file = net.file("root.pem", &ca.root_pem());

    let client = net.pod("client", 2);
    let pods = [("v1", net.pod("v1", 3), 3u8), ("v2", net.pod("v2", 4), 4u8)];
    for ns in [&client, &pods[0].1, &pods[1].1] {
        net.exec(ns, &[&proxy, "init-iptables"]);
        assert!(net.exec(ns, &["iptables", "-t", "nat", "-S"]).contains("-A WEFT_OUTPUT -j WEFT_REDIRECT"));
        assert!(net.exec(ns, &["ip6tables", "-t", "nat", "-S"]).contains("-A WEFT_OUTPUT -j WEFT_REDIRECT"));
    }
    // A pod whose network namespace has IPv6 turned off gets IPv4 rules only (nothing to capture,
    // and no ip6tables to need); everywhere else both families must load or the init fails.
    let v4_only = net.pod("v4only", 9);
    net.exec(&v4_only, &["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]);
    net.exec(&v4_only, &[&proxy, "init-iptables"]);
    assert!(net.exec(&v4_only, &["iptables", "-t", "nat", "-S"]).contains("-A WEFT_OUTPUT -j WEFT_REDIRECT"));
    assert!(
        !net.exec(&v4_only, &["ip6tables", "-t", "nat", "-S"]).contains("WEFT_"),
        "no IPv6 rules where IPv6 is off"
    );
    let sidecar = |name: &str, sa: &str, labels: &str, token_file: &str, extra: &[String]| -> Vec<String> {
        let cp = if name == "order-v2" { &cp_url6 } else { &cp_url };
        let mut v: Vec<String> = [
            proxy.as_str(),
            "--control-plane",
            cp,
            "--workload",
            name,
            "--namespace",
            "production",
            "--service-account",
            sa,
            "--labels",
            labels,
            "--token-file",
            token_file,
            "--ca-file",
            &root_file,
            "--inbound",
            "0.0.0.0:15006",
            "--outbound",
            "127.0.0.1:15001",
            "--admin",
            "127.0.0.1:15000",
        ]
        .map(String::from)
        .to_vec();
        v.extend_from_slice(extra);
        v
    };
    let order_token = net.file("order.token", &order_token);
    for (version, ns, host) in &pods {
        // Bound to both families: only the capture stands between IPv6 peers and the app.
        let app = vec![hello.to_string_lossy().to_string(), "[::]:3000".into(), format!("order-service-{version}")];
        net.spawn(&format!("app-{version}"), ns, false, &app);
        // Its admin pages on another HTTP port of the service (`http-admin:3002`).
        let admin = vec![hello.to_string_lossy().to_string(), "[::]:3002".into(), format!("order-admin-{version}")];
        net.spawn(&format!("admin-{version}"), ns, false, &admin);
        // And a TCP server on 5432 (a database's place), answering one line with `db-<version>: <line>`.
        net.spawn(
            &format!("db-{version}"),
            ns,
            false,
            &["python3".into(), "-c".into(), DB_ECHO.into(), format!("db-{version}")],
        );
        let extra = [
            "--other-ports",
            "tcp-db:5432,http-admin:3002",
            "--service",
            "order-service",
            "--service-port",
            "3000",
            "--app",
            "127.0.0.1:3000",
            "--advertise",
            &format!("{}:15006", net.ip(*host)),
            "--status",
            "0.0.0.0:15020",
            "--app-probes",
            r#"{"/app-health/app/livez":{"httpGet":{"path":"/health","port":3000},"timeoutSeconds":2}}"#,
        ]
        .map(String::from);
        let cmd = sidecar(
            &format!("order-{version}"),
            "order-service",
            &format!("app=order-service,version={version}"),
            &order_token,
            &extra,
        );
        net.spawn(&format!("sidecar-{version}"), ns, true, &cmd);
    }
    let client_token = net.file("client.token", &client_token);
    let client_sidecar = sidecar("client", "client", "app=client", &client_token, &[]);
    net.spawn("sidecar-client", &client, true, &client_sidecar);
    // v1 registered from its IPv4 address, v2 from its IPv6 one (the address its stream came from).
    wait_until("the client's sidecar sees both order-service pods", Duration::from_secs(30), || {
        let clusters = net.curl(&client, false, "http://127.0.0.1:15000/clusters").1;
        clusters.contains(&format!("{}:15006", net.ip(3))) && clusters.contains(&format!("[{}]:15006", net.ip6(4)))
    });

    // Authorization's `ports` is the port the caller was going to (the original destination),
    // and that is where the request goes: a DENY on 9090 holds.
    // `curl` from the host, outside every pod and the mesh (the kubelet's place): the status code.
    let host_curl = |url: String| {
        let out = Command::new("curl")
            .args(["-g", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", &url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let deny_port = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-admin-port, namespace: production}\nspec:\n  selector: {matchLabels: {app: order-service}}\n  action: DENY\n  rules:\n  - to:\n    - operation: {ports: ['9090']}\n";
    store.apply(&load_str(std::path::Path::new("deny.yaml"), deny_port).unwrap()).await.unwrap();
    wait_until("the DENY on port 9090 reaches v1", Duration::from_secs(10), || {
        host_curl(format!("http://{}:9090/health", net.ip(3))) == "403"
    });
    assert_eq!(host_curl(format!("http://[{}]:9090/health", net.ip6(3))), "403", "over IPv6 too");
    assert_eq!(host_curl(format!("http://{}:3000/health", net.ip(3))), "200", "other ports are not denied");
    // A port the app does not serve goes where it was going, not to the app's port: a DENY on
    // the app's port cannot be walked around by dialling another one.
    assert_ne!(host_curl(format!("http://{}:3001/health", net.ip(3))), "200", "3001 is not the app's 3000");

    // The seed's canary and STRICT mTLS.
    let policies = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/order-service.yaml")).unwrap()
        + "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: production}\nspec:\n  mtls: {mode: STRICT}\n";
    store.apply(&load_str(std::path::Path::new("p.yaml"), &policies).unwrap()).await.unwrap();
    wait_until("the canary reaches the client's sidecar", Duration::from_secs(10), || {
        net.curl(&client, false, "http://127.0.0.1:15000/clusters").1.contains("|v2|")
    });
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..100 {
        let (status, body) = net.curl(&client, false, "http://order-service:3000/orders");
        assert_eq!(status, 200, "{body}\n{}", net.log("sidecar-client"));
        if body.contains("order-service-v1") {
            v1 += 1
        } else if body.contains("order-service-v2") {
            v2 += 1
        }
    }
    assert_eq!(v1 + v2, 100);
    assert!((75..=98).contains(&v1), "about 90/10 through interception: v1 {v1} v2 {v2}");
    // The same call to the service's IPv6 virtual IP: captured by ip6tables, routed alike.
    for _ in 0..20 {
        let (status, body) = net.curl6(&client, "http://order-service:3000/orders");
        assert_eq!(status, 200, "{body}\n{}", net.log("sidecar-client"));
        assert!(body.contains("order-service-v"), "{body}");
    }

    // A TCP port of the service (`--other-ports tcp-db:5432`), dialled at an endpoint's address
    // as a headless service's client does: the client's sidecar relays it over mTLS (STRICT is
    // on: plaintext would be refused) to that pod's sidecar, which relays it to the app's 5432.
    wait_until("the TCP port reaches the client's sidecar", Duration::from_secs(10), || {
        net.curl(&client, false, "http://127.0.0.1:15000/clusters").1.contains("outbound|5432||order-service")
    });
    let at = |ip: String, port: u16| -> SocketAddr { format!("{ip}:{port}").parse().unwrap() };
    let db_v1 = at(net.ip(3), 5432);
    assert_eq!(tcp(&net, &client, db_v1, "hello\\n"), "db-v1: hello\n", "{}", net.log("sidecar-client"));
    assert_eq!(tcp(&net, &client, at(format!("[{}]", net.ip6(4)), 5432), "hello\\n"), "db-v2: hello\n", "over IPv6");
    assert_eq!(
        tcp(&net, &client, at(net.ip(4), 5432), "hello\\n"),
        "",
        "v2 registered its IPv6 address: its IPv4 one is no endpoint, passed through in plaintext, refused by STRICT"
    );
    let inbound_tcp = [
        "reporter=\"destination\"",
        "source_principal=\"spiffe://cluster.local/ns/production/sa/client\"",
        "connection_security_policy=\"mutual_tls\"",
        "destination_service_name=\"order-service\"",
    ];
    let v1_stats = |net: &Net| net.curl(&pods[0].1, false, "http://127.0.0.1:15000/stats/prometheus").1;
    wait_until("v1's sidecar reports the TCP connection", Duration::from_secs(10), || {
        sample(&v1_stats(&net), "istio_tcp_connections_closed_total", &inbound_tcp) == Some(1)
    });
    assert_eq!(sample(&v1_stats(&net), "istio_tcp_received_bytes_total", &inbound_tcp), Some(6), "hello\\n");
    assert_eq!(sample(&v1_stats(&net), "istio_tcp_sent_bytes_total", &inbound_tcp), Some(13), "db-v1: hello\\n");
    let outbound_tcp =
        ["reporter=\"source\"", "destination_service_name=\"order-service\"", "request_protocol=\"tcp\""];
    wait_until("the client's sidecar reports both mesh TCP connections", Duration::from_secs(10), || {
        let stats = net.curl(&client, false, "http://127.0.0.1:15000/stats/prometheus").1;
        sample(&stats, "istio_tcp_connections_closed_total", &outbound_tcp) == Some(2)
    });
    // As the attacker: a peer holding a valid mesh certificate that names, in its SNI, a port
    // the app does not serve as TCP (the sidecar's admin port, the app's HTTP port) is closed
    // without a byte; plaintext to the TCP port under STRICT is refused.
    let v1_inbound = at(net.ip(3), 15006);
    let v1_id = "spiffe://cluster.local/ns/production/sa/order-service";
    assert_eq!(mesh_tcp_probe(&ca, v1_inbound, 5432, b"x\n", v1_id).await, "db-v1: x\n", "the TCP port is served");
    let admin = b"GET /config_dump HTTP/1.1\r\nhost: x\r\n\r\n";
    assert_eq!(mesh_tcp_probe(&ca, v1_inbound, 15000, admin, v1_id).await, "", "not the sidecar's admin port");
    let health = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";
    assert_eq!(mesh_tcp_probe(&ca, v1_inbound, 3000, health, v1_id).await, "", "not the app's HTTP port");
    assert_eq!(host_tcp(db_v1, b"hello\n"), "", "plaintext from outside the mesh under STRICT");
    // An HTTP request naming the admin port in its SNI reaches it on the inbound listener, but a
    // connection captured on its way to the app's port 3000 goes there, whatever its SNI names:
    // what authorization judged (3000) is where it goes.
    let get = b"GET /orders HTTP/1.1\r\nhost: order-service\r\nconnection: close\r\n\r\n";
    let named = mesh_probe(&ca, v1_inbound, 3002, b"http/1.1", get, v1_id).await;
    assert!(named.contains("order-admin-v1"), "{named}");
    let captured = mesh_probe(&ca, at(net.ip(3), 3000), 3002, b"http/1.1", get, v1_id).await;
    assert!(captured.contains("order-service-v1") && !captured.contains("admin"), "{captured}");
    // L4 authorization, with Istio's rule for HTTP-only fields on TCP: a DENY of `methods: [POST]`
    // on port 5432 ignores the method and closes every TCP connection to 5432; HTTP is untouched.
    let no_db_writes = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-db-writes, namespace: production}\nspec:\n  selector: {matchLabels: {app: order-service}}\n  action: DENY\n  rules:\n  - to:\n    - operation: {methods: [POST], ports: ['5432']}\n";
    store.apply(&load_str(std::path::Path::new("db.yaml"), no_db_writes).unwrap()).await.unwrap();
    wait_until("the DENY closes TCP to 5432", Duration::from_secs(10), || {
        tcp(&net, &client, db_v1, "hello\\n").is_empty()
    });
    assert!(
        v1_stats(&net).lines().any(|l| l.starts_with("weft_authz_denied_total{") && l.contains("no-db-writes")),
        "counted under the policy's name"
    );
    assert_eq!(net.curl(&client, false, "http://order-service:3000/orders").0, 200, "HTTP on 3000 is not denied");

    // Through both sidecars, over mTLS: the server sidecar saw the client's proven identity.
    let stats = net.curl(&pods[0].1, false, "http://127.0.0.1:15000/stats/prometheus").1;
    let line = stats
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("reporter=\"destination\""))
        .unwrap_or_else(|| panic!("no inbound series:\n{stats}"));
    assert!(line.contains("source_principal=\"spiffe://cluster.local/ns/production/sa/client\""), "{line}");
    assert!(line.contains("connection_security_policy=\"mutual_tls\""), "{line}");
    // v2's calls came over IPv6 (its registered address), mutual TLS all the same.
    let stats = net.curl(&pods[1].1, false, "http://127.0.0.1:15000/stats/prometheus").1;
    let having = ["reporter=\"destination\"", "source_principal=\"spiffe://cluster.local/ns/production/sa/client\""];
    assert!(sample(&stats, "istio_requests_total", &having).is_some_and(|n| n > 0), "{stats}");
    // A pod address is not a service: like Istio, the call is passed through in plaintext,
    // and the pod's own sidecar (inbound capture, STRICT) refuses it.
    let (status, _) = net.curl(&client, false, &format!("http://{}:3000/", net.ip(3)));
    assert_eq!(status, 503, "plaintext to a STRICT pod is refused at its sidecar");
    let (status, _) = net.curl(&client, false, &format!("http://[{}]:3000/", net.ip6(3)));
    assert_eq!(status, 503, "and over IPv6");

    // The kubelet (on the host, outside the mesh): the app port is refused under STRICT,
    // the sidecar's status port answers readiness and runs the app's own probe from inside.
    assert_eq!(host_curl(format!("http://{}:3000/health", net.ip(3))), "000", "plaintext to the app is refused");
    // Over IPv6 too: the app listens on [::]:3000, and ip6tables hands the connection to the
    // sidecar, which refuses it (counted) instead of the app answering.
    let refused = |net: &Net| {
        let stats = net.curl(&pods[0].1, false, "http://127.0.0.1:15000/stats/prometheus").1;
        sample(&stats, "weft_inbound_connections_refused_total", &["plaintext under STRICT"]).unwrap_or(0)
    };
    let before = refused(&net);
    assert_eq!(host_curl(format!("http://[{}]:3000/health", net.ip6(3))), "000", "plaintext over IPv6 is refused");
    assert_eq!(refused(&net), before + 1, "by the sidecar");
    assert_eq!(host_curl(format!("http://[{}]:15020/healthz/ready", net.ip6(3))), "200", "status over IPv6");
    assert_eq!(host_curl(format!("http://{}:15020/healthz/ready", net.ip(3))), "200");
    assert_eq!(
        host_curl(format!("http://{}:15020/app-health/app/livez", net.ip(3))),
        "200",
        "{}",
        net.log("sidecar-v1")
    );
    assert_eq!(host_curl(format!("http://{}:15020/app-health/other/livez", net.ip(3))), "404");

    // The sidecar's own traffic (uid 1337) is not captured: the virtual IP leads nowhere for it.
    let (status, _) = net.curl(&client, true, "http://order-service:3000/orders");
    assert_eq!(status, 0, "uid 1337 is not redirected, so nothing answers at the virtual IP");

    // Outside the mesh: passed through under ALLOW_ANY (Istio's default).
    let outside = outside_server(&format!("{}:0", net.ip(1)));
    let (status, body) = net.curl(&client, false, &format!("http://{outside}/"));
    assert_eq!((status, body.trim()), (200, "outside"), "{}", net.log("sidecar-client"));
    let outside6 = outside_server(&format!("[{}]:0", net.ip6(1)));
    let (status, body) = net.curl(&client, false, &format!("http://{outside6}/"));
    assert_eq!((status, body.trim()), (200, "outside"), "over IPv6: {}", net.log("sidecar-client"));
    // Not HTTP: passed through as TCP, a client-first protocol at once, a server-first one
    // after 100 ms of silence (Istio would wait for ever), and counted by Istio's TCP metrics.
    let passthrough =
        ["reporter=\"source\"", "destination_service_name=\"PassthroughCluster\"", "request_protocol=\"tcp\""];
    let client_stats = |net: &Net| net.curl(&client, false, "http://127.0.0.1:15000/stats/prometheus").1;
    let before = client_stats(&net);
    let grew = |stats: &str, metric: &str| {
        sample(stats, metric, &passthrough).unwrap_or(0) - sample(&before, metric, &passthrough).unwrap_or(0)
    };
    let echo = outside_tcp_server(&format!("{}:0", net.ip(1)), None);
    assert_eq!(tcp(&net, &client, echo, "PING\\r\\n"), "echo: PING\r\n");
    let banner = outside_tcp_server(&format!("{}:0", net.ip(1)), Some("220 outside ready\r\n"));
    assert_eq!(tcp(&net, &client, banner, ""), "220 outside ready\r\n");
    let stats = client_stats(&net);
    assert_eq!(grew(&stats, "istio_tcp_connections_opened_total"), 2, "{stats}");
    assert_eq!(grew(&stats, "istio_tcp_connections_closed_total"), 2, "{stats}");
    assert_eq!(grew(&stats, "istio_tcp_received_bytes_total"), 6, "PING\\r\\n from the app");
    assert_eq!(grew(&stats, "istio_tcp_sent_bytes_total"), 12 + 19, "both answers, to the app");

    // The authorization policy applies to intercepted traffic.
    let deny = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: only-gateway, namespace: production}\nspec:\n  selector: {matchLabels: {app: order-service}}\n  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/production/sa/api-gateway]}\n";
    store.apply(&load_str(std::path::Path::new("ap.yaml"), deny).unwrap()).await.unwrap();
    wait_until("the client is refused by the policy", Duration::from_secs(10), || {
        net.curl(&client, false, "http://order-service:3000/orders") == (403, "RBAC: access denied".into())
    });

    // REGISTRY_ONLY by Istio's Sidecar resource, applied while traffic flows: the same calls
    // outside the mesh are refused, without a restart.
    let sidecar_resource = |mode: &str| {
        let yaml = format!("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: client, namespace: production}}\nspec:\n  workloadSelector:\n    labels: {{app: client}}\n  outboundTrafficPolicy: {{mode: {mode}}}\n");
        load_str(std::path::Path::new("sidecar.yaml"), &yaml).unwrap()
    };
    store.apply(&sidecar_resource("REGISTRY_ONLY")).await.unwrap();
    wait_until("REGISTRY_ONLY reaches the client's sidecar", Duration::from_secs(10), || {
        net.curl(&client, false, &format!("http://{outside}/")).0 == 502
    });
    assert_eq!(net.curl(&client, false, &format!("http://{outside6}/")).0, 502, "IPv6 does not escape it");
    assert_eq!(tcp(&net, &client, echo, "PING\\r\\n"), "", "and TCP to them is closed");
    let echo6 = outside_tcp_server(&format!("[{}]:0", net.ip6(1)), None);
    assert_eq!(tcp(&net, &client, echo6, "PING\\r\\n"), "", "over IPv6 too");
    let stats = net.curl(&client, false, "http://127.0.0.1:15000/stats/prometheus").1;
    let blackhole = ["destination_service_name=\"BlackHoleCluster\"", "response_flags=\"UH\""];
    assert_eq!(sample(&stats, "istio_tcp_connections_closed_total", &blackhole), Some(2), "{stats}");

    // A ServiceEntry is the allow-list: its HTTP host (resolution NONE: where the app was
    // going) and its TCP port on its addresses get out; everything else stays refused.
    let entry = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: outside, namespace: production}}\nspec:\n  hosts: [outside.example]\n  addresses: ['{}/32']\n  ports:\n  - {{number: {}, name: http, protocol: HTTP}}\n  - {{number: {}, name: tcp-echo, protocol: TCP}}\n  location: MESH_EXTERNAL\n  resolution: NONE\n",
        net.ip(1),
        outside.port(),
        echo.port()
    );
    store.apply(&load_str(std::path::Path::new("se.yaml"), &entry).unwrap()).await.unwrap();
    let with_host = |host: &str| {
        let out = net.exec(
            &client,
            &[
                "curl",
                "-s",
                "-m",
                "5",
                "-H",
                &format!("host: {host}"),
                "-w",
                " %{http_code}",
                &format!("http://{outside}/"),
            ],
        );
        out.trim().to_string()
    };
    wait_until("the ServiceEntry's host gets out", Duration::from_secs(10), || {
        with_host("outside.example").ends_with(" 200")
    });
    assert!(with_host("outside.example").starts_with("outside"), "{}", net.log("sidecar-client"));
    let spoofed = net.exec(
        &client,
        &[
            "curl",
            "-s",
            "-m",
            "5",
            "-H",
            "host: outside.example",
            "-w",
            " %{http_code}",
            &format!("http://{}:{}/", net.ip(1), echo.port()),
        ],
    );
    assert!(spoofed.trim().ends_with("502"), "the entry's Host on another port is not let out: {spoofed}");
    let elsewhere = with_host("elsewhere.example");
    assert!(elsewhere.ends_with("502"), "a host no entry names is still refused: {elsewhere}");
    assert_eq!(tcp(&net, &client, echo, "PING\\r\\n"), "echo: PING\r\n", "the entry's TCP port on its address");
    assert_eq!(tcp(&net, &client, echo6, "PING\\r\\n"), "", "not another address or port");
    let stats = net.curl(&client, false, "http://127.0.0.1:15000/stats/prometheus").1;
    let entry_tcp = ["destination_service_name=\"outside.example\"", "request_protocol=\"tcp\""];
    assert_eq!(sample(&stats, "istio_tcp_connections_closed_total", &entry_tcp), Some(1), "{stats}");
    assert!(
        stats.lines().any(|l| l.starts_with("istio_requests_total{")
            && l.contains("outside.example")
            && l.contains("response_code=\"200\"")),
        "metrics name the external service: {stats}"
    );

    // The flag is the mesh-wide default (MeshConfig's place); the workload's Sidecar resource wins over it.
    net.stop("sidecar-client");
    let mut strict = client_sidecar.clone();
    strict.extend(["--outbound-traffic-policy".to_string(), "REGISTRY_ONLY".to_string()]);
    net.spawn("sidecar-client-2", &client, true, &strict);
    store.apply(&sidecar_resource("ALLOW_ANY")).await.unwrap();
    wait_until("the restarted sidecar is ready", Duration::from_secs(20), || {
        net.curl(&client, false, "http://127.0.0.1:15000/ready").0 == 200
    });
    wait_until("ALLOW_ANY from the Sidecar resource over the flag's REGISTRY_ONLY", Duration::from_secs(10), || {
        net.curl(&client, false, &format!("http://{outside}/")).0 == 200
    });
    assert_eq!(tcp(&net, &client, echo, "PING\\r\\n"), "echo: PING\r\n");

    // POST /quitquitquit: refused from outside the pod, obeyed from inside (a Job's last step).
    let quit = |ns: Option<&str>| {
        let mut cmd: Vec<String> = Vec::new();
        if let Some(ns) = ns {
            cmd.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        let url =
            format!("http://{}:15020/quitquitquit", if ns.is_some() { "127.0.0.1".to_string() } else { net.ip(4) });
        cmd.extend(["curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"].map(String::from));
        cmd.push(url);
        String::from_utf8_lossy(&Command::new(&cmd[0]).args(&cmd[1..]).output().unwrap().stdout).to_string()
    };
    assert_eq!(quit(None), "403");
    assert_eq!(quit(Some(&pods[1].1)), "200");
    let v2 = net.children.iter_mut().find(|(n, _)| n == "sidecar-v2").map(|(_, c)| c).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while v2.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the sidecar did not exit after /quitquitquit");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(cp);
}
