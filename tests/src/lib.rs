//! End-to-end test harness across real processes: a private etcd started from
//! `/usr/bin/etcd` on free ports with a temporary data dir (stopped and removed
//! on drop), and helpers shared by the tests in `tests/tests/` and by the
//! control plane's own tests.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("weft-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One private etcd member.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub name: String,
    _dir: TempDir,
}

impl Etcd {
    /// Starts a single-member etcd and waits until it serves.
    pub fn start() -> Self {
        let client: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let peer: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let cluster = format!("e0=http://{peer}");
        Self::start_member("e0", client, peer, &cluster, "new")
    }

    /// Starts a three-member cluster.
    pub fn cluster3() -> Vec<Etcd> {
        let ports: Vec<(SocketAddr, SocketAddr)> =
            (0..3).map(|_| (([127, 0, 0, 1], free_port()).into(), ([127, 0, 0, 1], free_port()).into())).collect();
        let cluster: Vec<String> = ports.iter().enumerate().map(|(i, (_, p))| format!("e{i}=http://{p}")).collect();
        let cluster = cluster.join(",");
        let mut children: Vec<Etcd> = ports
            .iter()
            .enumerate()
            .map(|(i, (c, p))| Self::spawn(&format!("e{i}"), *c, *p, &cluster, "new"))
            .collect();
        for e in &mut children {
            e.wait_ready();
        }
        children
    }

    fn start_member(name: &str, client: SocketAddr, peer: SocketAddr, cluster: &str, state: &str) -> Self {
        let mut e = Self::spawn(name, client, peer, cluster, state);
        e.wait_ready();
        e
    }

    fn spawn(name: &str, client: SocketAddr, peer: SocketAddr, cluster: &str, state: &str) -> Self {
        let dir = TempDir::new("etcd");
        let log = std::fs::File::create(dir.0.join("etcd.log")).expect("etcd log");
        let child = Command::new("/usr/bin/etcd")
            .args(["--name", name])
            .arg("--data-dir")
            .arg(dir.0.join("data"))
            .args(["--listen-client-urls", &format!("http://{client}")])
            .args(["--advertise-client-urls", &format!("http://{client}")])
            .args(["--listen-peer-urls", &format!("http://{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
            .args(["--initial-cluster", cluster])
            .args(["--initial-cluster-state", state])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start /usr/bin/etcd (Debian package etcd-server; `make deps` installs it)");
        Etcd { child: Some(child), client, peer, name: name.to_string(), _dir: dir }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&self.client, Duration::from_millis(100)).is_ok() {
                // A member answers on its client port only once it can serve.
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd {} did not start on {}", self.name, self.client);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Kills the member (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
