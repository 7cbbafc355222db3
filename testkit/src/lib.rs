//! weft-testkit: what the tests of every crate share, in one place — a
//! private etcd locked down as in production ([`etcd`]), the shop's kit
//! ([`shop`]: unique names on the shared backends, in-process services, a JSON
//! client, private MariaDB/Redis/RabbitMQ servers), a TLS server outside the mesh
//! ([`tls`]), free ports and temporary directories. Only tests, benches and the demo
//! driver use it.

pub mod browser;
pub mod etcd;
pub mod shop;
pub mod tls;

pub use etcd::Etcd;
pub use shop::*;

use std::net::TcpListener;
use std::path::PathBuf;

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
