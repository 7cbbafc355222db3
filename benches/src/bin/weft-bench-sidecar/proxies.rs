//! Starting and watching the processes of a run: the app, Weft's sidecars, HAProxy and nginx.
//!
//! Size: two kinds of proxy process (weft-proxy, a contestant) started, probed and
//! watched alike, and the scenarios' wiring of them; one concern, a little over 400 lines.

use crate::callgrind;
use crate::cli::Args;
use crate::configs::*;
use crate::scenario::*;
use anyhow::{bail, Context};
use bytes::Bytes;
use http::header::HOST;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft_bench::contestants::{self, Software};

/// A child process that is killed when this guard is dropped.
pub(crate) struct Guard {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
}

impl Guard {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn ensure_running(&mut self, log: Option<&Path>) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited with {status}{}", self.name, log.map(log_tail).unwrap_or_default());
        }
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!("; last lines of {}:\n{}", path.display(), lines[lines.len().saturating_sub(20)..].join("\n"))
}

/// Ports a proxy binds, found by binding port 0. All three are held until
/// each is known, so they differ; another process could still take one in the
/// moment before the proxy binds it.
pub(crate) fn free_ports<const N: usize>() -> anyhow::Result<[SocketAddr; N]> {
    let listeners = (0..N).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    let addrs = listeners.iter().map(TcpListener::local_addr).collect::<Result<Vec<_>, _>>()?;
    Ok(addrs.try_into().expect("N listeners give N addresses"))
}

pub(crate) fn start_upstream(args: &Args) -> anyhow::Result<(Guard, SocketAddr)> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let child = Command::new(exe)
        .args(["upstream", "--listen", "127.0.0.1:0"])
        .args(["--body-bytes", &args.body_bytes.to_string(), "--workers", &args.app_workers.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the app")?;
    let mut guard = Guard { name: "app", child };
    let stdout = guard.child.stdout.take().context("app stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).context("reading the app's address")?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("app said {line:?} instead of its address"))?;
    Ok((guard, addr))
}

/// One proxy child: a weft-proxy, or a contestant's HAProxy or nginx.
pub(crate) struct Proxy {
    /// `sidecar`, `pair-h1-client`, `pair-h1-server`, ...: also the stem of its config and log files.
    pub(crate) name: String,
    pub(crate) scenario: Kind,
    /// `weft-proxy`, `haproxy` or `nginx`.
    pub(crate) software: &'static str,
    /// The program's version as it reports it, for the record.
    pub(crate) version: Option<String>,
    /// `client` (the load enters its outbound listener) or `server` (inbound, in front of the app).
    pub(crate) role: &'static str,
    /// What it speaks upstream: to its cluster (client) or to the app (server).
    pub(crate) upstream_protocol: &'static str,
    pub(crate) guard: Guard,
    /// Where a client receives the load (a contestant's one listener is both).
    pub(crate) outbound: SocketAddr,
    /// Where a server receives the client's hop.
    pub(crate) inbound: SocketAddr,
    /// weft-proxy's admin listener; contestants have none here.
    pub(crate) admin: Option<SocketAddr>,
    pub(crate) log: PathBuf,
}

impl Proxy {
    pub(crate) fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub(crate) fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.guard.ensure_running(Some(&self.log))
    }
}

pub(crate) struct ProxySpec<'a> {
    pub(crate) name: String,
    pub(crate) scenario: Kind,
    pub(crate) role: &'static str,
    pub(crate) upstream_protocol: &'static str,
    pub(crate) config: String,
    pub(crate) app: Option<SocketAddr>,
    pub(crate) ports: [SocketAddr; 3],
    pub(crate) dir: &'a Path,
    /// The mesh path's certificate: (certificate, key, root) files.
    pub(crate) identity: Option<[PathBuf; 3]>,
    /// `--access-log`.
    pub(crate) access_log: bool,
    /// `weft-proxy gateway` (its config's servers are its listeners).
    pub(crate) gateway: bool,
}

pub(crate) async fn start_proxy(args: &Args, spec: ProxySpec<'_>) -> anyhow::Result<Proxy> {
    if !args.proxy_bin.is_file() {
        bail!(
            "no proxy binary at {}: run `cargo build --release -p weft-proxy` or pass --proxy-bin",
            args.proxy_bin.display()
        );
    }
    let config_path = spec.dir.join(format!("{}.yaml", spec.name));
    std::fs::write(&config_path, &spec.config).with_context(|| format!("writing {}", config_path.display()))?;
    let log = spec.dir.join(format!("{}.log", spec.name));
    let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let [outbound, inbound, admin] = spec.ports;
    let mut cmd = Command::new(&args.proxy_bin);
    if spec.gateway {
        cmd.args(["gateway", "--gateway-address", "127.0.0.1"]);
    }
    cmd.arg("--config")
        .arg(&config_path)
        .args(["--outbound", &outbound.to_string(), "--inbound", &inbound.to_string(), "--admin", &admin.to_string()])
        .args(["--workers", &args.proxy_workers.to_string()]);
    if let Some(app) = spec.app {
        cmd.args(["--app", &app.to_string()]);
    }
    if let Some([cert, key, root]) = &spec.identity {
        cmd.arg("--cert-file").arg(cert).arg("--key-file").arg(key).arg("--root-file").arg(root);
    }
    if spec.access_log {
        cmd.arg("--access-log");
    }
    cmd.args(&args.proxy_arg);
    let mut cmd = callgrind::wrap(args, cmd, &spec.dir.join(format!("{}.callgrind", spec.name)));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", args.proxy_bin.display()))?;
    let mut proxy = Proxy {
        name: spec.name,
        scenario: spec.scenario,
        software: "weft-proxy",
        version: None,
        role: spec.role,
        upstream_protocol: spec.upstream_protocol,
        guard: Guard { name: "weft-proxy", child },
        outbound,
        inbound,
        admin: Some(admin),
        log,
    };

    let started = Instant::now();
    loop {
        proxy.ensure_running()?;
        if matches!(get(admin, "localhost", "/ready").await, Ok((200, _))) {
            return Ok(proxy);
        }
        if started.elapsed() > callgrind::ready_timeout(args) {
            bail!("{} not ready after {:?}{}", proxy.name, callgrind::ready_timeout(args), log_tail(&proxy.log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One hop of a contestant's pair: `bin` (HAProxy or nginx) in the foreground,
/// listening on a free port, forwarding to `upstream`. Its config and log go to
/// `dir`; nginx's pid and temp files to `run_dir`. Ready once a request through it
/// (and so through what is behind it) answers 200.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start_contestant(
    args: &Args,
    software: Software,
    bin: &Path,
    name: String,
    scenario: Kind,
    role: &'static str,
    upstream: SocketAddr,
    dir: &Path,
    run_dir: &Path,
    tls: Option<(&contestants::HopTls, contestants::TlsSide)>,
) -> anyhow::Result<Proxy> {
    let [listen] = free_ports()?;
    let ext = if software == Software::Haproxy { "cfg" } else { "conf" };
    let config_path = dir.join(format!("{name}.{ext}"));
    std::fs::write(&config_path, software.config_tls(listen, upstream, run_dir, tls))
        .with_context(|| format!("writing {}", config_path.display()))?;
    let log = dir.join(format!("{name}.log"));
    let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child =
        callgrind::wrap(args, software.command(bin, &config_path, run_dir), &dir.join(format!("{name}.callgrind")))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
    let proxy = Proxy {
        name,
        scenario,
        software: software.name(),
        version: software.version(bin),
        role,
        upstream_protocol: "HTTP1",
        guard: Guard { name: software.name(), child },
        outbound: listen,
        inbound: listen,
        admin: None,
        log,
    };
    // A TLS listener cannot answer the plain probe: a TCP connect says it is up.
    let tls_listener = matches!(tls, Some((_, contestants::TlsSide::Listen | contestants::TlsSide::EdgeAndUpstream)));
    serving(args, proxy, tls_listener).await
}

/// The proxy once a request through it answers 200 (a TLS listener: once it accepts).
async fn serving(args: &Args, mut proxy: Proxy, tls_listener: bool) -> anyhow::Result<Proxy> {
    let started = Instant::now();
    loop {
        proxy.ensure_running()?;
        let ready = if tls_listener {
            tokio::net::TcpStream::connect(proxy.outbound).await.is_ok()
        } else {
            matches!(get(proxy.outbound, HOST_HEADER, "/").await, Ok((200, _)))
        };
        if ready {
            return Ok(proxy);
        }
        if started.elapsed() > callgrind::ready_timeout(args) {
            bail!("{} not ready after {:?}{}", proxy.name, callgrind::ready_timeout(args), log_tail(&proxy.log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The floors under the sidecar (`hyper-floor`, `httparse-floor`, `httparse-http-floor`):
/// `weft-bench-floor`, one hop to `upstream`, on hyper or on `httparse` alone.
pub(crate) async fn start_floor(args: &Args, kind: Kind, upstream: SocketAddr, dir: &Path) -> anyhow::Result<Proxy> {
    if !args.floor_bin.is_file() {
        bail!(
            "no floor binary at {}: run `cargo build --profile sidecar -p weft-bench-floor` \
             or pass --floor-bin",
            args.floor_bin.display()
        );
    }
    let [listen] = free_ports()?;
    let name = kind.name().to_string();
    let engine = match kind {
        Kind::HttparseFloor => "httparse",
        Kind::HttparseHttpFloor => "httparse-http",
        _ => "hyper",
    };
    let log = dir.join(format!("{name}.log"));
    let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(&args.floor_bin);
    cmd.args([listen.to_string(), upstream.to_string(), args.proxy_workers.to_string(), engine.to_string()]);
    let child = callgrind::wrap(args, cmd, &dir.join(format!("{name}.callgrind")))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", args.floor_bin.display()))?;
    let proxy = Proxy {
        name,
        scenario: kind,
        software: engine,
        version: None,
        role: "client",
        upstream_protocol: "HTTP1",
        guard: Guard { name: "weft-bench-floor", child },
        outbound: listen,
        inbound: listen,
        admin: None,
        log,
    };
    serving(args, proxy, false).await
}

/// Where a contestant's program is, or why it cannot run.
pub(crate) fn contestant_bin(args: &Args, software: Software) -> anyhow::Result<PathBuf> {
    let wanted = match software {
        Software::Haproxy => &args.haproxy_bin,
        Software::Nginx => &args.nginx_bin,
    };
    contestants::find_bin(wanted).with_context(|| {
        format!(
            "{} not found (Debian package {}): `make bench` installs it, or `apt-get install {}`, \
             or pass --{}-bin, or leave {}-pair out of --scenarios",
            wanted.display(),
            software.package(),
            software.package(),
            software.name(),
            software.name()
        )
    })
}

/// A directory removed when dropped: nginx's pid and temp files.
pub(crate) struct RunDir(pub(crate) PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One GET over a fresh HTTP/1.1 connection: status and body length.
pub(crate) async fn get(addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<(u16, usize)> {
    let (status, body) = get_body(addr, host, path).await?;
    Ok((status, body.len()))
}

/// The probe of a path: one GET through its entry (over TLS for the ingress paths),
/// status and body length.
pub(crate) async fn probe(path: &ScenarioPath) -> anyhow::Result<(u16, usize)> {
    let Some((config, name)) = &path.tls else { return get(path.entry, HOST_HEADER, "/").await };
    let stream = tokio::net::TcpStream::connect(path.entry).await?;
    let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name.clone(), stream).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = Request::get("/").header(HOST, HOST_HEADER).body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes().len()))
}

/// One GET over a fresh HTTP/1.1 connection: status and body.
pub(crate) async fn get_body(addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(path).header(HOST, host).body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

/// Upstream connections the proxy has opened since it started (all its
/// clusters' endpoints, the inbound app included), from its admin `/clusters`.
/// One per endpoint shows HTTP/2 multiplexing; HTTP/1.1 opens one per concurrent request.
pub(crate) async fn connections_opened(proxy: &Proxy) -> Option<u64> {
    let (status, body) = get_body(proxy.admin?, "localhost", "/clusters").await.ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let clusters = v.get("clusters")?.as_array()?;
    let mut total = 0;
    for c in clusters {
        for e in c.get("endpoints")?.as_array()? {
            total += e.get("connections_opened")?.as_u64()?;
        }
    }
    Some(total)
}

/// Starts the proxies the selected scenarios need, each pair's server first
/// (its client's cluster points at its inbound listener).
pub(crate) async fn start_proxies(
    args: &Args,
    kinds: &[Kind],
    app: SocketAddr,
    dir: &Path,
    run_dir: &Path,
) -> anyhow::Result<(Vec<Proxy>, Vec<ScenarioPath>)> {
    let mut proxies = Vec::new();
    let mut paths = Vec::new();
    for &kind in kinds {
        let entry_and_proxies = match kind {
            Kind::Direct => (app, vec![]),
            Kind::Sidecar | Kind::SidecarAccessLog => {
                let spec = ProxySpec {
                    name: kind.name().into(),
                    scenario: kind,
                    role: "client",
                    upstream_protocol: "HTTP1",
                    config: client_config(app, "HTTP1")?,
                    app: None,
                    ports: free_ports()?,
                    dir,
                    identity: None,
                    access_log: kind == Kind::SidecarAccessLog,
                    gateway: false,
                };
                proxies.push(start_proxy(args, spec).await?);
                (proxies[proxies.len() - 1].outbound, vec![proxies.len() - 1])
            }
            Kind::HyperFloor | Kind::HttparseFloor | Kind::HttparseHttpFloor => {
                proxies.push(start_floor(args, kind, app, dir).await?);
                (proxies[proxies.len() - 1].outbound, vec![proxies.len() - 1])
            }
            Kind::PairH1 | Kind::PairH2 | Kind::Mesh => {
                let protocol = if kind == Kind::PairH1 { "HTTP1" } else { "HTTP2" };
                // The mesh path: the same pair, with mutual TLS and STRICT on the server.
                let mesh = kind == Kind::Mesh;
                proxies.push(start_proxy(args, server_spec(kind, app, dir, mesh)?).await?);
                let server_inbound = proxies[proxies.len() - 1].inbound;
                let client = ProxySpec {
                    name: format!("{}-client", kind.name()),
                    scenario: kind,
                    role: "client",
                    upstream_protocol: protocol,
                    config: if mesh {
                        mesh_client_config(server_inbound)?
                    } else {
                        client_config(server_inbound, protocol)?
                    },
                    app: None,
                    ports: free_ports()?,
                    dir,
                    identity: if mesh { Some(mesh_certificate(dir, "client")?) } else { None },
                    access_log: false,
                    gateway: false,
                };
                proxies.push(start_proxy(args, client).await?);
                let n = proxies.len();
                (proxies[n - 1].outbound, vec![n - 1, n - 2])
            }
            Kind::Ingress => {
                // The mesh path's server, and `weft-proxy gateway` in front of it terminating TLS.
                proxies.push(start_proxy(args, server_spec(kind, app, dir, true)?).await?);
                let server_inbound = proxies[proxies.len() - 1].inbound;
                let [entry] = free_ports()?;
                let edge = contestant_tls(dir, "edge")?;
                let gateway = ProxySpec {
                    name: "ingress-gateway".into(),
                    scenario: kind,
                    role: "client",
                    upstream_protocol: "HTTP2",
                    config: gateway_config(server_inbound, entry.port(), &edge)?,
                    app: None,
                    ports: free_ports()?,
                    dir,
                    identity: Some(mesh_certificate(dir, "client")?),
                    access_log: false,
                    gateway: true,
                };
                proxies.push(start_proxy(args, gateway).await?);
                // Ready once its config is applied; the server's port is bound right after.
                let started = Instant::now();
                let n = proxies.len();
                while std::net::TcpStream::connect(entry).is_err() {
                    proxies[n - 1].ensure_running()?;
                    if started.elapsed() > callgrind::ready_timeout(args) {
                        bail!("the gateway did not open {entry}{}", log_tail(&proxies[n - 1].log));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (entry, vec![n - 1, n - 2])
            }
            Kind::HaproxyPair
            | Kind::NginxPair
            | Kind::HaproxyTlsPair
            | Kind::NginxTlsPair
            | Kind::HaproxyIngress
            | Kind::NginxIngress => {
                let software = kind.contestant().expect("a contestant's scenario");
                let bin = contestant_bin(args, software)?;
                let tls = kind != Kind::HaproxyPair && kind != Kind::NginxPair;
                let client_side = if kind.is_ingress() {
                    contestants::TlsSide::EdgeAndUpstream
                } else {
                    contestants::TlsSide::Upstream
                };
                let server_tls = if tls { Some(contestant_tls(dir, "server")?) } else { None };
                let client_tls = if tls { Some(contestant_tls(dir, "client")?) } else { None };
                let server = start_contestant(
                    args,
                    software,
                    &bin,
                    format!("{}-server", kind.name()),
                    kind,
                    "server",
                    app,
                    dir,
                    run_dir,
                    server_tls.as_ref().map(|t| (t, contestants::TlsSide::Listen)),
                )
                .await?;
                let server_listen = server.inbound;
                proxies.push(server);
                let client = start_contestant(
                    args,
                    software,
                    &bin,
                    format!("{}-client", kind.name()),
                    kind,
                    "client",
                    server_listen,
                    dir,
                    run_dir,
                    client_tls.as_ref().map(|t| (t, client_side)),
                )
                .await?;
                proxies.push(client);
                let n = proxies.len();
                (proxies[n - 1].outbound, vec![n - 1, n - 2])
            }
        };
        let tls = if kind.is_ingress() { Some(load_tls(dir)?) } else { None };
        paths.push(ScenarioPath { kind, entry: entry_and_proxies.0, proxies: entry_and_proxies.1, tls });
    }
    Ok((proxies, paths))
}

/// A pair's server sidecar: inbound to the app over HTTP/1.1; with `mesh`, mutual TLS
/// (STRICT) with the bench's `server` identity, else plaintext (PERMISSIVE).
fn server_spec(kind: Kind, app: SocketAddr, dir: &Path, mesh: bool) -> anyhow::Result<ProxySpec<'_>> {
    Ok(ProxySpec {
        name: format!("{}-server", kind.name()),
        scenario: kind,
        role: "server",
        upstream_protocol: "HTTP1",
        config: server_config_with(app, if mesh { "STRICT" } else { "PERMISSIVE" })?,
        app: Some(app),
        ports: free_ports()?,
        dir,
        identity: if mesh { Some(mesh_certificate(dir, "server")?) } else { None },
        access_log: false,
        gateway: false,
    })
}

pub(crate) fn tails(proxies: &[Proxy], on_path: &[usize]) -> String {
    on_path.iter().map(|&i| log_tail(&proxies[i].log)).collect()
}
