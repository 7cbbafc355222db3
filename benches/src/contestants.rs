//! The proxies Weft is compared with, as Debian packages them: HAProxy and
//! nginx, each run as a child process in the foreground on a config generated
//! here (never the system service or its config), with one worker thread so
//! per-core figures compare with a one-worker weft-proxy.
//!
//! Both configs are the plain HTTP/1.1 reverse proxy a person would write for a
//! two-hop path: keep-alive from the client, keep-alive to the upstream (a
//! pool reused across client connections), no access log, no retries.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Mutual TLS on one side of a hop, for the mTLS shape: the hop's certificate,
/// key, both in one file (HAProxy's `crt`), and the root it trusts (PEM files).
#[derive(Debug, Clone)]
pub struct HopTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub combined: PathBuf,
    pub root: PathBuf,
}

/// Which side of the hop speaks TLS: the listener (the server hop) or the upstream (the client hop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSide {
    Listen,
    Upstream,
    /// An ingress hop: the listener terminates the public's TLS (server certificate only,
    /// TLS 1.3), the upstream is mutual TLS as `Upstream`.
    EdgeAndUpstream,
}

/// A contestant's program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Software {
    Haproxy,
    Nginx,
}

impl Software {
    pub fn name(self) -> &'static str {
        match self {
            Software::Haproxy => "haproxy",
            Software::Nginx => "nginx",
        }
    }

    /// The Debian package that ships it.
    pub fn package(self) -> &'static str {
        match self {
            Software::Haproxy => "haproxy",
            Software::Nginx => "nginx-light",
        }
    }

    /// The config for one hop: listen on `listen`, forward to `upstream`, both
    /// HTTP/1.1 with keep-alive. `dir` holds its pid, error log and temp files.
    pub fn config(self, listen: std::net::SocketAddr, upstream: std::net::SocketAddr, dir: &Path) -> String {
        self.config_tls(listen, upstream, dir, None)
    }

    /// The same, with mutual TLS (TLS 1.3, client certificate required and
    /// checked against the root) on one side.
    pub fn config_tls(
        self,
        listen: std::net::SocketAddr,
        upstream: std::net::SocketAddr,
        dir: &Path,
        tls: Option<(&HopTls, TlsSide)>,
    ) -> String {
        match self {
            Software::Haproxy => haproxy_config(listen, upstream, tls),
            Software::Nginx => nginx_config(listen, upstream, dir, tls),
        }
    }

    /// The command that runs it in the foreground on `config`, logging to stderr.
    /// `run_dir` is nginx's prefix (its config's paths are absolute anyway).
    pub fn command(self, bin: &Path, config: &Path, run_dir: &Path) -> Command {
        let mut cmd = Command::new(bin);
        match self {
            // -db: foreground, no daemon, no master-worker.
            Software::Haproxy => {
                cmd.arg("-f").arg(config).arg("-db");
            }
            // -e stderr: the error log from the start, before the config is read,
            // so the packaged /var/log/nginx is never touched.
            Software::Nginx => {
                cmd.arg("-p").arg(run_dir).arg("-e").arg("stderr").arg("-c").arg(config);
            }
        }
        cmd
    }

    /// `haproxy -v` / `nginx -v`, first line (nginx prints it on stderr).
    pub fn version(self, bin: &Path) -> Option<String> {
        let out = Command::new(bin).arg("-v").output().ok()?;
        let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
        let line = String::from_utf8_lossy(&text).lines().next()?.trim().to_string();
        Some(match self {
            // "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"
            Software::Haproxy => line.split_whitespace().nth(2).unwrap_or(&line).to_string(),
            Software::Nginx => line.trim_start_matches("nginx version: ").to_string(),
        })
    }
}

/// `bin` itself when it holds a slash, else the first match on `PATH`, then in
/// /usr/sbin and /sbin (where Debian puts both, and a non-root PATH lacks them).
pub fn find_bin(bin: &Path) -> Option<PathBuf> {
    if bin.components().count() > 1 {
        return bin.is_file().then(|| bin.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// HAProxy in HTTP mode, one thread; `http-reuse always` shares idle upstream
/// connections between client connections (as weft-proxy's pool does).
fn haproxy_config(
    listen: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    tls: Option<(&HopTls, TlsSide)>,
) -> String {
    let ssl = |t: &HopTls| {
        format!(
            " ssl crt {} ca-file {} verify required ssl-min-ver TLSv1.3 alpn http/1.1",
            t.combined.display(),
            t.root.display()
        )
    };
    let edge = |t: &HopTls| format!(" ssl crt {} ssl-min-ver TLSv1.3 alpn http/1.1", t.combined.display());
    let (bind_tls, server_tls) = match tls {
        Some((t, TlsSide::Listen)) => (ssl(t), String::new()),
        Some((t, TlsSide::Upstream)) => (String::new(), ssl(t)),
        Some((t, TlsSide::EdgeAndUpstream)) => (edge(t), ssl(t)),
        None => (String::new(), String::new()),
    };
    format!(
        r#"# Generated by weft-bench-sidecar: {listen} -> {upstream}, HTTP/1.1 keep-alive both sides.
global
    nbthread 1
    maxconn 4096
    tune.bufsize 16384

defaults
    mode http
    option http-keep-alive
    http-reuse always
    retries 0
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 60s
    timeout http-keep-alive 60s

frontend bench
    bind {listen}{bind_tls}
    default_backend app

backend app
    server app {upstream}{server_tls}
"#
    )
}

/// nginx, one process (`master_process off`, so the process measured is the one
/// doing the work), one worker; upstream keepalive pool, HTTP/1.1 to the upstream.
fn nginx_config(
    listen: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    dir: &Path,
    tls: Option<(&HopTls, TlsSide)>,
) -> String {
    let d = dir.display();
    let upstream_ssl = |t: &HopTls| {
        format!(
            "\n            proxy_ssl_certificate {};\n            proxy_ssl_certificate_key {};\n            proxy_ssl_trusted_certificate {};\n            proxy_ssl_verify on;\n            proxy_ssl_name app;\n            proxy_ssl_protocols TLSv1.3;\n            proxy_ssl_session_reuse on;",
            t.cert.display(),
            t.key.display(),
            t.root.display()
        )
    };
    let (listen_ssl, server_ssl, scheme, proxy_ssl) = match tls {
        Some((t, TlsSide::EdgeAndUpstream)) => (
            " ssl",
            format!(
                "\n        ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_protocols TLSv1.3;",
                t.cert.display(),
                t.key.display()
            ),
            "https",
            upstream_ssl(t),
        ),
        Some((t, TlsSide::Listen)) => (
            " ssl",
            format!(
                "\n        ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_client_certificate {};\n        ssl_verify_client on;\n        ssl_protocols TLSv1.3;",
                t.cert.display(),
                t.key.display(),
                t.root.display()
            ),
            "http",
            String::new(),
        ),
        Some((t, TlsSide::Upstream)) => ("", String::new(), "https", upstream_ssl(t)),
        None => ("", String::new(), "http", String::new()),
    };
    format!(
        r#"# Generated by weft-bench-sidecar: {listen} -> {upstream}, HTTP/1.1 keep-alive both sides.
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx-{port}.pid;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {d}/nginx-{port}-client-body;
    proxy_temp_path {d}/nginx-{port}-proxy;
    fastcgi_temp_path {d}/nginx-{port}-fastcgi;
    uwsgi_temp_path {d}/nginx-{port}-uwsgi;
    scgi_temp_path {d}/nginx-{port}-scgi;
    keepalive_timeout 60s;
    keepalive_requests 10000000;

    upstream app {{
        server {upstream};
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }}

    server {{
        listen {listen}{listen_ssl};{server_ssl}
        location / {{
            proxy_pass {scheme}://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;{proxy_ssl}
        }}
    }}
}}
"#,
        port = listen.port()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_keep_alive_one_worker() {
        let (listen, up) = ("127.0.0.1:8001".parse().unwrap(), "127.0.0.1:8002".parse().unwrap());
        let h = Software::Haproxy.config(listen, up, Path::new("/tmp/x"));
        assert!(
            h.contains("nbthread 1") && h.contains("bind 127.0.0.1:8001") && h.contains("server app 127.0.0.1:8002")
        );
        let n = Software::Nginx.config(listen, up, Path::new("/tmp/x"));
        assert!(n.contains("worker_processes 1;") && n.contains("proxy_http_version 1.1;"));
        assert!(
            n.contains("listen 127.0.0.1:8001;") && n.contains("server 127.0.0.1:8002;") && n.contains("keepalive 64;")
        );
        assert!(n.contains("pid /tmp/x/nginx-8001.pid;"));
    }

    #[test]
    fn the_tls_shape_puts_mutual_tls_on_the_hop_between_the_proxies() {
        let (listen, up) = ("127.0.0.1:8001".parse().unwrap(), "127.0.0.1:8002".parse().unwrap());
        let t =
            HopTls { cert: "/c.pem".into(), key: "/c.key".into(), combined: "/c.all".into(), root: "/r.pem".into() };
        let h = Software::Haproxy.config_tls(listen, up, Path::new("/tmp/x"), Some((&t, TlsSide::Listen)));
        assert!(h.contains("bind 127.0.0.1:8001 ssl crt /c.all ca-file /r.pem verify required"), "{h}");
        let h = Software::Haproxy.config_tls(listen, up, Path::new("/tmp/x"), Some((&t, TlsSide::Upstream)));
        assert!(h.contains("server app 127.0.0.1:8002 ssl crt /c.all"), "{h}");
        let n = Software::Nginx.config_tls(listen, up, Path::new("/tmp/x"), Some((&t, TlsSide::Listen)));
        assert!(n.contains("listen 127.0.0.1:8001 ssl;") && n.contains("ssl_verify_client on;"), "{n}");
        let n = Software::Nginx.config_tls(listen, up, Path::new("/tmp/x"), Some((&t, TlsSide::Upstream)));
        assert!(n.contains("proxy_pass https://app;") && n.contains("proxy_ssl_verify on;"), "{n}");
    }

    #[test]
    fn the_ingress_shape_terminates_the_publics_tls_and_speaks_mutual_tls_on() {
        let (listen, up) = ("127.0.0.1:8001".parse().unwrap(), "127.0.0.1:8002".parse().unwrap());
        let t =
            HopTls { cert: "/c.pem".into(), key: "/c.key".into(), combined: "/c.all".into(), root: "/r.pem".into() };
        let edge = Some((&t, TlsSide::EdgeAndUpstream));
        let h = Software::Haproxy.config_tls(listen, up, Path::new("/tmp/x"), edge);
        assert!(h.contains("bind 127.0.0.1:8001 ssl crt /c.all ssl-min-ver TLSv1.3 alpn http/1.1\n"), "{h}");
        assert!(h.contains("server app 127.0.0.1:8002 ssl crt /c.all ca-file /r.pem verify required"), "{h}");
        let n = Software::Nginx.config_tls(listen, up, Path::new("/tmp/x"), edge);
        assert!(n.contains("listen 127.0.0.1:8001 ssl;") && !n.contains("ssl_verify_client"), "{n}");
        assert!(n.contains("proxy_pass https://app;") && n.contains("proxy_ssl_certificate /c.pem;"), "{n}");
    }
}
