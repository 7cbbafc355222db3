//! A real `weft-control-plane` process for the benchmarks and the soak: a mesh
//! CA of its own (files, as `weftctl ca init` writes them), a private etcd it
//! reaches as the `weft-control-plane` user, stopped when dropped.

use anyhow::Context;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use weft_control_plane::ca::{Ca, CaParts};

/// A running control plane.
pub struct ControlPlane {
    /// Where sidecars connect (`127.0.0.1:port`).
    pub addr: String,
    pub pid: u32,
    /// The mesh CA it signs with (the harness signs with it too).
    pub ca: Ca,
    child: Child,
    _dir: weft_testkit::TempDir,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin` on `etcd` with `extra` arguments, its log in `log`; returns once it listens.
pub async fn start(etcd: &weft_testkit::Etcd, bin: &Path, extra: &[&str], log: &Path) -> anyhow::Result<ControlPlane> {
    let addr = format!("127.0.0.1:{}", weft_testkit::free_port());
    let dir = weft_testkit::TempDir::new("bench-ca");
    let parts = CaParts::generate("cluster.local").map_err(|e| anyhow::anyhow!("{e}"))?;
    parts.write_dir(&dir.0.join("ca")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ca = Ca::from_parts(&parts, "cluster.local").map_err(|e| anyhow::anyhow!("{e}"))?;
    let (cert, key) = weft_etcd::user_files(etcd.certs(), weft_etcd::CONTROL_PLANE);
    let child = Command::new(bin)
        .args(["--etcd", &etcd.url(), "--listen", &addr])
        .args(extra)
        .arg("--ca-dir")
        .arg(dir.0.join("ca"))
        .arg("--etcd-ca")
        .arg(etcd.certs().join("ca.pem"))
        .arg("--etcd-cert")
        .arg(cert)
        .arg("--etcd-key")
        .arg(key)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let cp = ControlPlane { addr, pid: child.id(), ca, child, _dir: dir };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&cp.addr).await.is_ok() {
            return Ok(cp);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the control plane did not listen on {} within 10 s; see {}", cp.addr, log.display())
}
