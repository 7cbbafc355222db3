//! `weft-bench-sidecar`: what the sidecar adds, measured the way Istio's
//! performance benchmark does: the same open-loop load over several paths to
//! an app, rounds interleaved (A B C D A B C D ...) so drift hits all alike,
//! and the added latency taken as a path's percentile minus the direct one.
//!
//! Scenarios (`--scenarios`, default all):
//! - `direct`: load → app.
//! - `sidecar`: load → weft-proxy outbound → app.
//! - `pair-h1`: load → client weft-proxy (outbound, cluster `protocol: HTTP1`)
//!   → server weft-proxy (inbound, `--app`) → app. Plaintext.
//! - `pair-h2`: the same with the client's cluster `protocol: HTTP2` (Istio's
//!   h2UpgradePolicy UPGRADE): HTTP/2 between the sidecars, HTTP/1.1 to the app.
//! - `mesh`: the Weft mesh path: `pair-h2` with mutual TLS between the sidecars
//!   (SPIFFE certificates from a mesh CA made for the run, STRICT on the server
//!   sidecar, the client checking the server's identity).
//! - `haproxy-pair`: load → HAProxy → HAProxy → app, the same two-hop shape
//!   through Debian's HAProxy (HTTP mode, one thread, keep-alive both sides).
//! - `nginx-pair`: the same through Debian's nginx (one worker process,
//!   `proxy_http_version 1.1`, upstream keepalive).
//! - `haproxy-tls-pair` / `nginx-tls-pair`: the mesh path's shape for them:
//!   mutual TLS 1.3 between the two hops (certificates from the same bench CA,
//!   client certificate required and verified), HTTP/1.1 inside.
//! - `ingress`: the public's path into the mesh: load → TLS 1.3 (server certificate
//!   only, keep-alive) → `weft-proxy gateway` → the mesh path's mTLS (HTTP/2) →
//!   server weft-proxy → app. `haproxy-ingress` / `nginx-ingress`: the same shape
//!   through them (TLS from the load, mutual TLS between the hops).
//!
//! Each scenario has its own proxies, started once. The app and the proxies run
//! as child processes, so each proxy's peak RSS and CPU time are its own; the
//! load generator runs in this process. Children are killed when this process
//! ends, also on Ctrl-C and SIGTERM; the app also exits when its stdin (a pipe
//! from this process) closes.
//!
//! ```text
//! cargo build --release -p weft-proxy -p weft-bench
//! target/release/weft-bench-sidecar --rates 200,1000,2000 --max --duration 10s --rounds 3
//! target/release/weft-bench-sidecar --scenarios direct,pair-h2 --rates 1000
//! ```
//!
//! HAProxy and nginx are run in the foreground on configs generated beside
//! `--out` (never the system services); `make bench` installs them when missing.
//! A PNG of the latency percentile curves at one rate goes to `--plot`.

mod callgrind;
mod cli;
mod configs;
mod proxies;
mod report;
mod scenario;

use anyhow::{bail, Context};
use clap::Parser;
use cli::{Args, Cmd};
use http::header::{HeaderValue, HOST};
use proxies::*;
use report::*;
use scenario::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use weft_bench::load::{self, Report};
use weft_bench::{process, upstream};

pub(crate) fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::Upstream { listen, body_bytes, workers }) = args.cmd {
        return run_upstream(listen, body_bytes, workers);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
        // Dropping `bench` on a signal drops its child guards, which kill the children.
        tokio::select! {
            result = bench(&args) => result,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    })
}

pub(crate) fn run_upstream(listen: SocketAddr, body_bytes: usize, workers: usize) -> anyhow::Result<()> {
    // The parent holds our stdin; when it goes away, however it died, so do we.
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        while std::io::stdin().read(&mut buf).is_ok_and(|n| n > 0) {}
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(workers.max(1)).enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
        println!("listening on {}", listener.local_addr()?);
        upstream::serve(listener, body_bytes).await;
        Ok(())
    })
}

pub(crate) async fn bench(args: &Args) -> anyhow::Result<()> {
    if args.proxy_bin.components().any(|c| c.as_os_str() == "debug") {
        eprintln!("warning: {} looks like a debug build; numbers will not mean much", args.proxy_bin.display());
    }
    let mut kinds: Vec<Kind> = Vec::new();
    for k in &args.scenarios {
        if !kinds.contains(k) {
            kinds.push(*k);
        }
    }
    if kinds.is_empty() {
        bail!("--scenarios is empty");
    }
    let dir = args.out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Absolute: nginx resolves a config's relative paths against its prefix.
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    for k in &kinds {
        if let Some(software) = k.contestant() {
            contestant_bin(args, software)?;
        }
    }
    if args.callgrind {
        callgrind::check_installed()?;
    }
    let run_dir = RunDir(std::env::temp_dir().join(format!("weft-bench-sidecar-{}", std::process::id())));
    std::fs::create_dir_all(&run_dir.0).with_context(|| format!("creating {}", run_dir.0.display()))?;

    let (mut app_guard, app) = start_upstream(args)?;
    let (mut proxies, paths) = start_proxies(args, &kinds, app, &dir, &run_dir.0).await?;

    // Every path must answer the same before their numbers can be compared.
    for path in &paths {
        match probe(path).await {
            Ok((200, n)) if n == args.body_bytes => {}
            other => bail!(
                "{} probe: expected 200 with {} bytes, got {other:?}{}",
                path.kind.name(),
                args.body_bytes,
                tails(&proxies, &path.proxies)
            ),
        }
    }
    if args.callgrind {
        return count_instructions(args, &proxies, &paths, &dir).await;
    }
    let mut infos = Vec::new();
    eprintln!("app on {app}");
    for p in &proxies {
        let (idle_rss_kib, _) = process::rss_kib(p.pid()).with_context(|| format!("reading {}'s RSS", p.name))?;
        let listens = if p.admin.is_some() {
            format!("outbound {}, inbound {}", p.outbound, p.inbound)
        } else {
            format!("listening on {}", p.outbound)
        };
        eprintln!(
            "{} ({} pid {}, {} -> {}): {listens}, idle RSS {idle_rss_kib} KiB",
            p.name,
            p.software,
            p.pid(),
            p.role,
            p.upstream_protocol,
        );
        infos.push(ProxyInfo {
            name: p.name.clone(),
            scenario: p.scenario,
            software: p.software,
            version: p.version.clone(),
            role: p.role,
            upstream_protocol: p.upstream_protocol,
            pid: p.pid(),
            outbound: p.outbound.to_string(),
            inbound: p.inbound.to_string(),
            idle_rss_kib,
        });
    }

    let mut loads: Vec<Load> = args.rates.iter().filter(|r| **r > 0.0).map(|r| Load::Rate(*r)).collect();
    if args.max {
        loads.push(Load::Max);
    }
    let mut results = Vec::new();
    for load in loads {
        let scopes: Vec<&'static str> =
            proxies.iter().map(|p| if process::reset_peak_rss(p.pid()).is_ok() { "load" } else { "process" }).collect();
        let mut rounds = Vec::new();
        for round in 1..=args.rounds.max(1) {
            let mut runs = Vec::new();
            for path in &paths {
                eprintln!(
                    "{}: round {round}/{} {}",
                    load.label(args.max_connections),
                    args.rounds.max(1),
                    path.kind.name()
                );
                warm(args, load, path).await?;
                let before = path
                    .proxies
                    .iter()
                    .map(|&i| process::cpu_seconds(proxies[i].pid()))
                    .collect::<Result<Vec<_>, _>>()?;
                let report = run_load(args, load, path, args.duration).await?;
                let mut proxy_cpu_s = BTreeMap::new();
                for (&i, b) in path.proxies.iter().zip(before) {
                    proxy_cpu_s.insert(proxies[i].name.clone(), process::cpu_seconds(proxies[i].pid())? - b);
                }
                app_guard.ensure_running(None)?;
                for &i in &path.proxies {
                    proxies[i].ensure_running()?;
                }
                runs.push(Run { scenario: path.kind, report, proxy_cpu_s });
            }
            rounds.push(Round { runs });
        }
        let mut peaks = Vec::new();
        for p in &proxies {
            peaks.push((process::rss_kib(p.pid())?.1, connections_opened(p).await));
        }
        results.push(summarize(args, load, rounds, &paths, &proxies, &peaks, &scopes));
    }

    let plot = draw_plot(args, &results)?;
    if let Some(p) = &plot {
        eprintln!("wrote {}", p.path);
    }
    let results = Results {
        setup: Setup {
            proxy_bin: args.proxy_bin.display().to_string(),
            protocol: if args.http2 { "http2" } else { "http1" },
            scenarios: kinds,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            rounds: args.rounds.max(1),
            connections: args.connections,
            max_connections: args.max_connections,
            body_bytes: args.body_bytes,
            proxy_workers: args.proxy_workers,
            app_workers: args.app_workers,
            load_threads: args.threads,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        proxies: infos,
        loads: results,
        plot,
    };
    print!("{}", markdown(&results));
    std::fs::write(&args.out, serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

pub(crate) async fn warm(args: &Args, load: Load, path: &ScenarioPath) -> anyhow::Result<()> {
    if !args.warmup.is_zero() {
        run_load(args, load, path, args.warmup).await?;
    }
    Ok(())
}

pub(crate) async fn run_load(
    args: &Args,
    load: Load,
    path: &ScenarioPath,
    duration: Duration,
) -> anyhow::Result<Report> {
    let addr = path.entry;
    let scheme = if path.tls.is_some() { "https" } else { "http" };
    let mut opts = load::Options::new(format!("{scheme}://{addr}/").parse()?);
    opts.tls = path.tls.clone();
    // The ingress paths' TLS offers ALPN http/1.1 only: the public's side stays HTTP/1.1.
    let http2 = args.http2 && path.tls.is_none();
    opts.duration = duration;
    opts.http2 = http2;
    opts.headers.insert(HOST, HeaderValue::from_static(HOST_HEADER));
    match load {
        Load::Rate(r) => {
            opts.rate = r;
            opts.connections = args.connections;
        }
        Load::Max => opts.connections = args.max_connections,
    }
    Ok(load::run(&opts).await?)
}

/// `--callgrind`: instructions and malloc calls per request of every proxy on
/// every path, each path warmed up, then counted over --callgrind-window.
async fn count_instructions(args: &Args, proxies: &[Proxy], paths: &[ScenarioPath], dir: &Path) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for path in paths.iter().filter(|p| !p.proxies.is_empty()) {
        eprintln!("{}: warming up, then counting for {:?}", path.kind.name(), args.callgrind_window);
        run_load(args, Load::Max, path, args.warmup.max(Duration::from_secs(1))).await?;
        for &i in &path.proxies {
            callgrind::zero(proxies[i].pid())?;
        }
        let report = run_load(args, Load::Max, path, args.callgrind_window).await?;
        if report.requests == 0 || report.ok != report.requests || !report.transport_errors.is_empty() {
            bail!(
                "{}: {} requests, {} ok, errors {:?}",
                path.kind.name(),
                report.requests,
                report.ok,
                report.transport_errors
            );
        }
        for &i in &path.proxies {
            let p = &proxies[i];
            let counts = callgrind::dump(p.pid(), &dir.join(format!("{}.callgrind", p.name)))?;
            rows.push(InstructionRow::new(path.kind, p, report.requests, counts));
        }
    }
    let table = InstructionTable::new(args, rows);
    print!("{}", table.markdown());
    std::fs::write(&args.out, serde_json::to_vec_pretty(&table)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
