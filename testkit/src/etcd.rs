//! A private etcd, started from `/usr/bin/etcd` on free ports with a temporary
//! data dir (stopped and removed on drop), locked down as Weft runs it.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, TempDir};

/// How many times a private etcd is started on fresh ports before a test gives up.
const ATTEMPTS: usize = 3;

/// One private etcd member, locked down as Weft runs etcd everywhere: TLS
/// only with client certificates (clients and peers), etcd's RBAC on
/// (`weft_etcd::lockdown`). Its certificates live in [`Etcd::certs`].
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub name: String,
    certs: std::sync::Arc<TempDir>,
    _dir: TempDir,
}

impl Etcd {
    /// Starts a single-member etcd and waits until it serves.
    pub fn start() -> Self {
        let certs = Self::certificates();
        for _ in 0..ATTEMPTS {
            let client: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let peer: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let cluster = format!("e0=https://{peer}");
            let mut e = Self::spawn("e0", client, peer, &cluster, "new", certs.clone());
            if e.ready() {
                lock_down(&[e.url()], &e.tls(weft_etcd::ROOT));
                return e;
            }
        }
        panic!("etcd did not start in {ATTEMPTS} attempts");
    }

    fn certificates() -> std::sync::Arc<TempDir> {
        let certs = TempDir::new("etcd-certs");
        weft_etcd::generate(&certs.0, &["127.0.0.1".to_string(), "localhost".to_string()]).expect("etcd certificates");
        std::sync::Arc::new(certs)
    }

    /// The directory of etcd's CA and certificates (`weftctl etcd certs` layout).
    pub fn certs(&self) -> &std::path::Path {
        &self.certs.0
    }

    /// TLS as `user` (`weft_etcd::ADMIN`, `weft_etcd::CONTROL_PLANE`, `weft_etcd::ROOT`).
    pub fn tls(&self, user: &str) -> weft_etcd::EtcdTls {
        weft_etcd::EtcdTls::for_user(self.certs(), user).expect("etcd client certificate")
    }

    /// TLS as `weftctl` (the policy writer).
    pub fn admin(&self) -> weft_etcd::EtcdTls {
        self.tls(weft_etcd::ADMIN)
    }

    /// Starts a three-member cluster.
    pub fn cluster3() -> Vec<Etcd> {
        let certs = Self::certificates();
        for _ in 0..ATTEMPTS {
            let ports: Vec<(SocketAddr, SocketAddr)> =
                (0..3).map(|_| (([127, 0, 0, 1], free_port()).into(), ([127, 0, 0, 1], free_port()).into())).collect();
            let cluster: Vec<String> =
                ports.iter().enumerate().map(|(i, (_, p))| format!("e{i}=https://{p}")).collect();
            let cluster = cluster.join(",");
            let mut children: Vec<Etcd> = ports
                .iter()
                .enumerate()
                .map(|(i, (c, p))| Self::spawn(&format!("e{i}"), *c, *p, &cluster, "new", certs.clone()))
                .collect();
            // One member that does not come up: the whole cluster starts again on other ports.
            if children.iter_mut().all(Etcd::ready) {
                let urls: Vec<String> = children.iter().map(Etcd::url).collect();
                lock_down(&urls, &children[0].tls(weft_etcd::ROOT));
                return children;
            }
        }
        panic!("a three-member etcd cluster did not start in {ATTEMPTS} attempts");
    }

    fn spawn(
        name: &str,
        client: SocketAddr,
        peer: SocketAddr,
        cluster: &str,
        state: &str,
        certs: std::sync::Arc<TempDir>,
    ) -> Self {
        let dir = TempDir::new("etcd");
        let log = std::fs::File::create(dir.0.join("etcd.log")).expect("etcd log");
        let c = |f: &str| certs.0.join(f).to_string_lossy().into_owned();
        let child = Command::new("/usr/bin/etcd")
            .args(["--name", name])
            .arg("--data-dir")
            .arg(dir.0.join("data"))
            .args(["--listen-client-urls", &format!("https://{client}")])
            .args(["--advertise-client-urls", &format!("https://{client}")])
            .args(["--listen-peer-urls", &format!("https://{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("https://{peer}")])
            .args(["--client-cert-auth", "--trusted-ca-file", &c("ca.pem")])
            .args(["--cert-file", &c("server.pem"), "--key-file", &c("server-key.pem")])
            .args(["--peer-client-cert-auth", "--peer-trusted-ca-file", &c("ca.pem")])
            .args(["--peer-cert-file", &c("server.pem"), "--peer-key-file", &c("server-key.pem")])
            .args(["--initial-cluster", cluster])
            .args(["--initial-cluster-state", state])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start /usr/bin/etcd (Debian package etcd-server; `make deps` installs it)");
        Etcd { child: Some(child), client, peer, name: name.to_string(), certs, _dir: dir }
    }

    /// Waits until the member serves: `false` when its process exited first (a port
    /// `free_port` gave was taken by a test running beside before etcd bound it) or
    /// after 20 s; the caller starts again on other ports.
    fn ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        let exited = |e: &mut Self| e.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&self.client, Duration::from_millis(100)).is_ok() {
                // A member answers on its client port only once it can serve; but another
                // process's listener on that port answers too, while etcd, unable to bind,
                // exits at once: the member serves only if it still runs a moment later.
                std::thread::sleep(Duration::from_millis(200));
                if !exited(self) {
                    return true;
                }
            }
            if exited(self) {
                eprintln!("etcd {} exited before serving on {}; starting again on other ports", self.name, self.client);
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("etcd {} did not serve on {} within 20 s; starting again on other ports", self.name, self.client);
        false
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.client)
    }

    /// Kills the member (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `weftctl etcd lockdown`, from a thread of its own (callers may be inside a runtime).
fn lock_down(urls: &[String], root: &weft_etcd::EtcdTls) {
    let (urls, root) = (urls.to_vec(), root.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let attempt = async {
                    let mut client = weft_etcd::connect(&urls, Some(&root)).await?;
                    weft_etcd::lockdown(&mut client, "/weft/").await
                };
                match attempt.await {
                    Ok(()) => return,
                    Err(e) if Instant::now() > deadline => panic!("etcd lockdown: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
    })
    .join()
    .expect("etcd lockdown");
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_whose_port_was_taken_is_seen_to_exit_not_waited_for() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = taken.local_addr().unwrap();
        let peer: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let certs = Etcd::certificates();
        let mut e = Etcd::spawn("e0", client, peer, &format!("e0=https://{peer}"), "new", certs);
        let t0 = Instant::now();
        assert!(!e.ready(), "etcd cannot serve on a port another process holds");
        assert!(t0.elapsed() < Duration::from_secs(15), "its exit is noticed, not the 20 s deadline");
        drop(taken);
    }
}
