//! The shop's side: unique names so tests never collide on the shared
//! MariaDB, Redis and RabbitMQ; a service started in-process on a free port; a
//! small JSON client (which can call as a workload behind a sidecar would);
//! and private MariaDB, Redis and RabbitMQ servers on free ports for the tests
//! that stop a backend (the shared ones are never stopped).

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::Value;

use crate::free_port;

/// `weft_test_<tag>_<pid>_<n>`: letters, digits and `_`, valid as a database,
/// key prefix, exchange or queue name.
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("weft_test_{tag}_{}_{}_{}", std::process::id(), nanos, N.fetch_add(1, Ordering::Relaxed))
}

/// Serves `app` on a free loopback port for the rest of the test.
pub async fn spawn(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(weft_services_common::serve::run(listener, app, std::future::pending()));
    addr
}

/// One answer: status, headers and the body parsed as JSON (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A JSON client for one address.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub headers: HeaderMap,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Client { addr, headers: HeaderMap::new() }
    }

    /// The same client, sending `name: value` on every request.
    pub fn with(&self, name: &'static str, value: &str) -> Self {
        let mut c = self.clone();
        c.headers.insert(name, HeaderValue::from_str(value).expect("header value"));
        c
    }

    /// The same client, calling as a workload of `service_account` would through its
    /// sidecar: with the XFCC the receiving sidecar sets from the proven certificate.
    pub fn as_workload(&self, service_account: &str) -> Self {
        let id = weft_services_common::caller::Trust::mesh().identity(service_account).expect("a mesh identity");
        self.with(
            weft_services_common::caller::XFCC,
            &format!("By=spiffe://cluster.local/ns/production/sa/test;URI={id}"),
        )
    }

    /// The same client, as api-gateway forwarding end user `id` with `role`.
    pub fn as_user(&self, id: &str, role: &str) -> Self {
        self.as_workload(weft_services_common::caller::GATEWAY)
            .with(weft_services_common::caller::USER_ID, id)
            .with(weft_services_common::caller::USER_ROLE, role)
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }
    pub async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(body.to_string())).await
    }

    /// Any request; `body` is sent as `application/json` unless a content type is set.
    pub async fn send(&self, method: Method, path: &str, body: Option<String>) -> Answer {
        let mut headers = self.headers.clone();
        if body.is_some() && !headers.contains_key(http::header::CONTENT_TYPE) {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let r = weft_services_common::peers::send(self.addr, "localhost", method, path, headers, body.map(Bytes::from))
            .await
            .unwrap_or_else(|e| panic!("request to {}{path}: {e}", self.addr));
        let text = String::from_utf8_lossy(&r.body).to_string();
        Answer { status: r.status, headers: r.headers, json: serde_json::from_str(&text).unwrap_or(Value::Null), text }
    }
}

/// Polls `check` every 100 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A database of its own on the shared MariaDB, dropped when the test ends.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// The URL names a database that does not exist yet; the service creates it.
    pub fn new(tag: &str) -> Self {
        let name = unique(tag);
        TestDb { url: format!("mysql://root@127.0.0.1:3306/{name}"), name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-u", "root", "-e", &format!("DROP DATABASE IF EXISTS `{}`", self.name)])
            .status();
    }
}

/// A key prefix of its own on the shared Redis, its keys deleted when the test ends.
#[derive(Debug)]
pub struct TestRedisPrefix(pub String);

impl TestRedisPrefix {
    pub fn new(tag: &str) -> Self {
        TestRedisPrefix(format!("{}:", unique(tag)))
    }
}

impl Drop for TestRedisPrefix {
    fn drop(&mut self) {
        let script = format!("redis-cli --scan --pattern '{}*' | xargs -r redis-cli del >/dev/null", self.0);
        let _ = Command::new("sh").args(["-c", &script]).status();
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(100)).is_ok()
}

fn wait_for_port(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if port_open(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(tag));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A private server process on a free port, which a test may stop and start
/// again (same port, same data). Killed and its data removed on drop.
#[derive(Debug)]
pub struct PrivateServer {
    pub port: u16,
    dir: PathBuf,
    command: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl PrivateServer {
    /// A MariaDB server (`mariadbd`) on its own data directory, root without a password.
    pub fn mariadb() -> Self {
        let dir = temp_dir("mariadb");
        let data = dir.join("data");
        // A temporary directory of its own: servers bootstrapping at once in the shared /tmp
        // collide on their temporary tables ("Unknown table 'mysql.tmp_user_sys'").
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp dir");
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--auth-root-authentication-method=normal", "--skip-test-db", "--user=root"])
            .arg(format!("--datadir={}", data.display()))
            .env("TMPDIR", &tmp)
            .output()
            .expect("mariadb-install-db");
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("mariadb-install-db failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = free_port();
        let command = vec![
            "mariadbd".to_string(),
            "--no-defaults".into(),
            "--user=root".into(),
            format!("--datadir={}", data.display()),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={}", dir.join("mysqld.sock").display()),
            format!("--pid-file={}", dir.join("mysqld.pid").display()),
            "--skip-log-bin".into(),
            "--innodb-buffer-pool-size=16M".into(),
            format!("--tmpdir={}", tmp.display()),
        ];
        let mut s = PrivateServer { port, dir, command, env: Vec::new(), child: None };
        s.start();
        s
    }

    /// A Redis server that keeps nothing on disk.
    pub fn redis() -> Self {
        let dir = temp_dir("redis");
        let port = free_port();
        let command = vec![
            "redis-server".to_string(),
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.display().to_string(),
        ];
        let mut s = PrivateServer { port, dir, command, env: Vec::new(), child: None };
        s.start();
        s
    }

    /// A RabbitMQ node of its own (name, AMQP and distribution ports, Mnesia
    /// directory, Erlang cookie; no plugins), guest/guest from loopback. Durable
    /// queues and persistent messages survive a kill and restart, as on a real broker.
    pub fn rabbitmq() -> Self {
        let dir = temp_dir("rabbitmq");
        let port = free_port();
        let dist_port = free_port();
        let file = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("rabbitmq config");
            path.display().to_string()
        };
        let plugins = file("enabled_plugins", "[].\n".into());
        let config = file("rabbitmq.conf", format!("listeners.tcp.local = 127.0.0.1:{port}\n"));
        let at = |name: &str| dir.join(name).display().to_string();
        let env = [
            ("HOME", at("")),
            ("RABBITMQ_NODENAME", format!("weft-test-{port}@localhost")),
            ("RABBITMQ_NODE_PORT", port.to_string()),
            ("RABBITMQ_DIST_PORT", dist_port.to_string()),
            ("RABBITMQ_MNESIA_BASE", at("mnesia")),
            ("RABBITMQ_LOG_BASE", at("log")),
            ("RABBITMQ_PID_FILE", at("rabbitmq.pid")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", plugins),
            ("RABBITMQ_CONFIG_FILE", config),
        ];
        // The script itself, not /usr/sbin's wrapper, which would switch to the rabbitmq user.
        let command = vec!["/usr/lib/rabbitmq/bin/rabbitmq-server".to_string()];
        let env = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let mut s = PrivateServer { port, dir, command, env, child: None };
        s.start();
        s
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`, for a RabbitMQ server.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("server.log")).expect("log");
        // Its own process group, so that a kill reaches every process it started (RabbitMQ's
        // script runs the Erlang VM as a child, which runs helpers of its own).
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.command[0]));
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(60)),
            "{} did not listen on {}",
            self.command[0],
            self.port
        );
    }

    /// Kills the server and everything it started (SIGKILL, as a crash would) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let group = format!("-{}", c.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
            let _ = c.kill();
            let _ = c.wait();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && port_open(self.port) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Exchanges and queues a test declared on the shared RabbitMQ, deleted when the test ends.
#[derive(Debug, Default)]
pub struct TestAmqp {
    pub url: String,
    pub exchanges: Vec<String>,
    pub queues: Vec<String>,
}

impl TestAmqp {
    pub fn new(url: &str) -> Self {
        TestAmqp { url: url.to_string(), exchanges: Vec::new(), queues: Vec::new() }
    }

    /// A fresh name, remembered for deletion.
    pub fn exchange(&mut self, tag: &str) -> String {
        let name = unique(tag);
        self.exchanges.push(name.clone());
        name
    }

    /// A fresh queue name; its `.dead` queue and `.dlx` exchange are deleted too.
    pub fn queue(&mut self, tag: &str) -> String {
        let name = unique(tag);
        self.queues.extend([name.clone(), format!("{name}.dead")]);
        self.exchanges.push(format!("{name}.dlx"));
        name
    }
}

impl Drop for TestAmqp {
    fn drop(&mut self) {
        let (url, exchanges, queues) =
            (self.url.clone(), std::mem::take(&mut self.exchanges), std::mem::take(&mut self.queues));
        // Its own thread and runtime: a drop may run inside or outside the test's runtime.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await.ok()?;
                let ch = conn.create_channel().await.ok()?;
                for q in queues {
                    let _ = ch.queue_delete(q.as_str().into(), lapin::options::QueueDeleteOptions::default()).await;
                }
                for e in exchanges {
                    let _ =
                        ch.exchange_delete(e.as_str().into(), lapin::options::ExchangeDeleteOptions::default()).await;
                }
                let _ = conn.close(200, "done".into()).await;
                Some(())
            })
        });
        let _ = cleanup.join();
    }
}
