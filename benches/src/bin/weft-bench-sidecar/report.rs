//! What a run measured: the JSON results, the summary per scenario and the Markdown table.
//!
//! Size: the results' JSON, the per-scenario summary and the Markdown table read the same types.

use crate::cli::Args;
use crate::proxies::Proxy;
use crate::scenario::{Kind, Load, ScenarioPath};
use anyhow::Context;
use serde::Serialize;
use std::collections::BTreeMap;
use weft_bench::load::{Percentiles, Report};
use weft_bench::plot;

/// One measured run of one scenario in one round.
#[derive(Debug, Serialize)]
pub(crate) struct Run {
    pub(crate) scenario: Kind,
    pub(crate) report: Report,
    /// CPU seconds of each proxy on the path over the measured window, by proxy name.
    pub(crate) proxy_cpu_s: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Round {
    pub(crate) runs: Vec<Run>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ProxyCost {
    pub(crate) proxy: String,
    pub(crate) role: &'static str,
    /// Peak RSS over this load (or since start, see `peak_rss_scope`), KiB.
    pub(crate) peak_rss_kib: u64,
    /// `load` when the peak could be reset before it, `process` otherwise.
    pub(crate) peak_rss_scope: &'static str,
    /// utime + stime over the measured runs of its scenario.
    pub(crate) cpu_s: f64,
    /// CPU seconds per 1000 requests through the proxy.
    pub(crate) cpu_s_per_1k_requests: f64,
    /// Average cores busy during the measured runs.
    pub(crate) cpu_cores: f64,
    /// Upstream connections opened since the proxy started (cumulative, read after this load).
    pub(crate) upstream_connections_opened: Option<u64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Added {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
}

impl Added {
    /// Istio's method: percentile through the sidecar(s) minus the same percentile direct.
    pub(crate) fn of(direct: &Percentiles, sidecar: &Percentiles) -> Self {
        Added {
            p50: sidecar.p50 - direct.p50,
            p90: sidecar.p90 - direct.p90,
            p99: sidecar.p99 - direct.p99,
            p999: sidecar.p999 - direct.p999,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct ScenarioResult {
    pub(crate) scenario: Kind,
    /// All rounds merged.
    pub(crate) report: Report,
    /// Over `direct` of the same load; absent for `direct` itself or when it was not measured.
    pub(crate) added_latency_ms: Option<Added>,
    /// The proxies on the path, client first.
    pub(crate) proxies: Vec<ProxyCost>,
}

#[derive(Debug, Serialize)]
pub(crate) struct LoadResult {
    pub(crate) load: String,
    pub(crate) target_rps: Option<f64>,
    pub(crate) connections: usize,
    pub(crate) scenarios: Vec<ScenarioResult>,
    pub(crate) rounds: Vec<Round>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ProxyInfo {
    pub(crate) name: String,
    pub(crate) scenario: Kind,
    pub(crate) software: &'static str,
    pub(crate) version: Option<String>,
    pub(crate) role: &'static str,
    pub(crate) upstream_protocol: &'static str,
    pub(crate) pid: u32,
    pub(crate) outbound: String,
    pub(crate) inbound: String,
    pub(crate) idle_rss_kib: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Setup {
    pub(crate) proxy_bin: String,
    /// What the load generator speaks.
    pub(crate) protocol: &'static str,
    pub(crate) scenarios: Vec<Kind>,
    pub(crate) duration_s: f64,
    pub(crate) warmup_s: f64,
    pub(crate) rounds: usize,
    pub(crate) connections: usize,
    pub(crate) max_connections: usize,
    pub(crate) body_bytes: usize,
    pub(crate) proxy_workers: usize,
    pub(crate) app_workers: usize,
    pub(crate) load_threads: usize,
    pub(crate) cpus: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct Results {
    pub(crate) setup: Setup,
    pub(crate) proxies: Vec<ProxyInfo>,
    pub(crate) loads: Vec<LoadResult>,
    pub(crate) plot: Option<PlotInfo>,
}

/// The PNG of latency percentile curves at one load.
#[derive(Debug, Serialize)]
pub(crate) struct PlotInfo {
    pub(crate) path: String,
    pub(crate) load: String,
    /// Scenario and its line's colour, in drawing order.
    pub(crate) legend: Vec<(Kind, &'static str)>,
    /// Whether a font was found, so the PNG carries its own title, axes and legend.
    pub(crate) labelled: bool,
}

/// Plots the latencies of the load at `--plot-rate` (else the first constant
/// rate) to `--plot` (else `latency.png` beside `--out`).
pub(crate) fn draw_plot(args: &Args, loads: &[LoadResult]) -> anyhow::Result<Option<PlotInfo>> {
    let rated = || loads.iter().filter(|l| l.target_rps.is_some());
    let Some(load) = rated().find(|l| l.target_rps == Some(args.plot_rate)).or_else(|| rated().next()) else {
        return Ok(None);
    };
    let path = args.plot.clone().unwrap_or_else(|| args.out.with_file_name("latency.png"));
    if let Some(parent) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let series: Vec<plot::Series<'_>> = load
        .scenarios
        .iter()
        .map(|sc| plot::Series { name: sc.scenario.name(), histogram: &sc.report.histogram })
        .collect();
    let title = format!(
        "Latency by percentile at {}, {} round(s) merged ({} B responses, loopback, open-loop)",
        load.load,
        load.rounds.len(),
        args.body_bytes
    );
    let labelled =
        plot::latency_percentiles(&path, &title, &series).with_context(|| format!("plotting {}", path.display()))?;
    let legend = load
        .scenarios
        .iter()
        .enumerate()
        .map(|(i, sc)| (sc.scenario, plot::COLORS[i % plot::COLORS.len()].0))
        .collect();
    Ok(Some(PlotInfo { path: path.display().to_string(), load: load.load.clone(), legend, labelled }))
}

/// Merges each scenario's rounds; `peaks[i]` (peak RSS, connections opened)
/// and `scopes[i]` belong to `proxies[i]`.
pub(crate) fn summarize(
    args: &Args,
    load: Load,
    rounds: Vec<Round>,
    paths: &[ScenarioPath],
    proxies: &[Proxy],
    peaks: &[(u64, Option<u64>)],
    scopes: &[&'static str],
) -> LoadResult {
    let mut scenarios: Vec<ScenarioResult> = Vec::new();
    for (k, path) in paths.iter().enumerate() {
        let mut report = rounds[0].runs[k].report.clone();
        for r in &rounds[1..] {
            report.merge(&r.runs[k].report);
        }
        let through = report.requests + report.transport_errors.values().sum::<u64>();
        let costs = path
            .proxies
            .iter()
            .map(|&i| {
                let p = &proxies[i];
                let cpu_s: f64 = rounds.iter().filter_map(|r| r.runs[k].proxy_cpu_s.get(&p.name)).sum();
                ProxyCost {
                    proxy: p.name.clone(),
                    role: p.role,
                    peak_rss_kib: peaks[i].0,
                    peak_rss_scope: scopes[i],
                    cpu_s,
                    cpu_s_per_1k_requests: if through > 0 { cpu_s * 1000.0 / through as f64 } else { 0.0 },
                    cpu_cores: if report.elapsed_s > 0.0 { cpu_s / report.elapsed_s } else { 0.0 },
                    upstream_connections_opened: peaks[i].1,
                }
            })
            .collect();
        scenarios.push(ScenarioResult { scenario: path.kind, report, added_latency_ms: None, proxies: costs });
    }
    if let Some(d) = scenarios.iter().position(|s| s.scenario == Kind::Direct) {
        let direct = scenarios[d].report.latency_ms;
        for s in scenarios.iter_mut().filter(|s| s.scenario != Kind::Direct) {
            s.added_latency_ms = Some(Added::of(&direct, &s.report.latency_ms));
        }
    }
    LoadResult {
        load: load.label(args.max_connections),
        target_rps: match load {
            Load::Rate(r) => Some(r),
            Load::Max => None,
        },
        connections: scenarios[0].report.connections,
        scenarios,
        rounds,
    }
}

pub(crate) fn markdown(r: &Results) -> String {
    use std::fmt::Write;
    let s = &r.setup;
    let mut out = String::new();
    let names: Vec<&str> = s.scenarios.iter().map(|k| k.name()).collect();
    let _ = writeln!(
        out,
        "\n## Sidecar data plane: {} ({} from the load generator, {} x {:.0}s rounds interleaved, {} B responses, one worker per proxy (weft-proxy --workers {}), {} CPUs)\n",
        names.join(" / "),
        s.protocol,
        s.rounds,
        s.duration_s,
        s.body_bytes,
        s.proxy_workers,
        s.cpus
    );
    let _ = writeln!(out, "Scenarios: direct = load → app; sidecar = load → weft-proxy outbound → app;");
    let _ = writeln!(
        out,
        "pair-h1 / pair-h2 = load → client weft-proxy (outbound) → HTTP/1.1 / HTTP/2 → server weft-proxy (inbound) → HTTP/1.1 → app; mesh = pair-h2 over mutual TLS (SPIFFE identities, STRICT);"
    );
    let _ = writeln!(
        out,
        "haproxy-pair / nginx-pair = load → HAProxy / nginx → HAProxy / nginx → app, HTTP/1.1 keep-alive on every hop (one thread / one worker process each), plaintext; haproxy-tls-pair / nginx-tls-pair = the same with mutual TLS 1.3 between the two hops; ingress = load → TLS 1.3 → weft-proxy gateway → mutual TLS (HTTP/2) → weft-proxy → app, haproxy-ingress / nginx-ingress = load → TLS 1.3 → HAProxy / nginx → mutual TLS → HAProxy / nginx → app (the load's TLS connections are kept alive).\n"
    );
    let _ = writeln!(
        out,
        "Latency in ms from the intended send time (open-loop; max is closed-loop). Added = scenario − direct, per percentile (Istio's method).\n"
    );
    let _ = writeln!(out, "| load | scenario | p50 | p90 | p99 | p99.9 | max | achieved rps | errors |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for l in &r.loads {
        for sc in &l.scenarios {
            let rep = &sc.report;
            let p = &rep.latency_ms;
            let _ = writeln!(
                out,
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {} |",
                l.load,
                sc.scenario.name(),
                p.p50,
                p.p90,
                p.p99,
                p.p999,
                p.max,
                rep.achieved_rps,
                rep.non_2xx + rep.failed()
            );
        }
    }
    if r.loads.iter().flat_map(|l| &l.scenarios).any(|sc| sc.added_latency_ms.is_some()) {
        let _ = writeln!(out, "\nAdded latency over direct, ms:\n");
        let _ = writeln!(out, "| load | scenario | added p50 | added p90 | added p99 | added p99.9 | rps vs direct |");
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
        for l in &r.loads {
            let direct_rps = l.scenarios.iter().find(|s| s.scenario == Kind::Direct).map(|s| s.report.achieved_rps);
            for sc in &l.scenarios {
                let Some(a) = &sc.added_latency_ms else { continue };
                let rps = match direct_rps {
                    Some(d) if d > 0.0 => format!("{:.0} %", sc.report.achieved_rps * 100.0 / d),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {:+.3} | {:+.3} | {:+.3} | {:+.3} | {rps} |",
                    l.load,
                    sc.scenario.name(),
                    a.p50,
                    a.p90,
                    a.p99,
                    a.p999
                );
            }
        }
    }
    if !r.proxies.is_empty() {
        let _ = writeln!(out, "\nProxy processes (idle RSS after the probe request):\n");
        let _ = writeln!(out, "| proxy | program | role | speaks upstream | idle RSS MiB |");
        let _ = writeln!(out, "|---|---|---|---|---:|");
        for p in &r.proxies {
            let program = match &p.version {
                Some(v) => format!("{} ({v})", p.software),
                None => p.software.to_string(),
            };
            let _ = writeln!(
                out,
                "| {} | {program} | {} | {} | {:.1} |",
                p.name,
                p.role,
                p.upstream_protocol,
                p.idle_rss_kib as f64 / 1024.0
            );
        }
        let _ = writeln!(
            out,
            "\nPer proxy and load: CPU over its scenario's measured runs; upstream connections opened since start, weft-proxy only (HTTP/2: one per endpoint).\n"
        );
        let _ = writeln!(
            out,
            "| load | scenario | proxy | requests | peak RSS MiB | CPU s / 1000 req | CPU cores busy | upstream conns opened |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|");
        for l in &r.loads {
            for sc in &l.scenarios {
                for p in &sc.proxies {
                    let scope = if p.peak_rss_scope == "process" { " (since start)" } else { "" };
                    let weft = r.proxies.iter().any(|i| i.name == p.proxy && i.software == "weft-proxy");
                    let conns = match p.upstream_connections_opened {
                        Some(n) => n.to_string(),
                        None if weft => "?".into(),
                        None => "–".into(),
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} ({}) | {} | {:.1}{scope} | {:.4} | {:.2} | {conns} |",
                        l.load,
                        sc.scenario.name(),
                        p.proxy,
                        p.role,
                        sc.report.requests,
                        p.peak_rss_kib as f64 / 1024.0,
                        p.cpu_s_per_1k_requests,
                        p.cpu_cores
                    );
                }
            }
        }
    }
    if let Some(p) = &r.plot {
        let legend: Vec<String> = p.legend.iter().map(|(k, color)| format!("{} = {color}", k.name())).collect();
        let _ = writeln!(
            out,
            "\nLatency by percentile at {} ({}): x = percentile (50, 90, 99, 99.9{}), y = latency ms, log scale{}. Lines: {}.",
            p.load,
            p.path,
            if p.labelled { ", 99.99 where measured" } else { " left to right" },
            if p.labelled { "" } else { " (no font found: drawn without text)" },
            legend.join(", ")
        );
    }
    out
}

/// One proxy's cost per request under callgrind.
#[derive(Debug, Serialize)]
pub(crate) struct InstructionRow {
    pub(crate) scenario: Kind,
    pub(crate) proxy: String,
    pub(crate) software: &'static str,
    pub(crate) role: &'static str,
    pub(crate) requests: u64,
    pub(crate) instructions: u64,
    pub(crate) instructions_per_request: f64,
    pub(crate) mallocs_per_request: f64,
}

impl InstructionRow {
    pub(crate) fn new(scenario: Kind, p: &Proxy, requests: u64, c: crate::callgrind::Counts) -> Self {
        InstructionRow {
            scenario,
            proxy: p.name.clone(),
            software: p.software,
            role: p.role,
            requests,
            instructions: c.instructions,
            instructions_per_request: c.instructions as f64 / requests as f64,
            mallocs_per_request: c.mallocs as f64 / requests as f64,
        }
    }
}

/// `--callgrind`'s result: every row, and each against nginx's hop of the same kind.
#[derive(Debug, Serialize)]
pub(crate) struct InstructionTable {
    pub(crate) proxy_bin: String,
    pub(crate) proxy_args: Vec<String>,
    pub(crate) window_s: f64,
    pub(crate) connections: usize,
    pub(crate) body_bytes: usize,
    pub(crate) rows: Vec<InstructionRow>,
}

impl InstructionTable {
    pub(crate) fn new(args: &Args, rows: Vec<InstructionRow>) -> Self {
        InstructionTable {
            proxy_bin: args.proxy_bin.display().to_string(),
            proxy_args: args.proxy_arg.clone(),
            window_s: args.callgrind_window.as_secs_f64(),
            connections: args.max_connections,
            body_bytes: args.body_bytes,
            rows,
        }
    }

    /// nginx's mean instructions per hop over its scenario of the same kind (plaintext pair,
    /// mutual-TLS pair, ingress).
    fn nginx_per_hop(&self, want: Kind) -> Option<f64> {
        let hops: Vec<f64> =
            self.rows.iter().filter(|r| r.scenario == want).map(|r| r.instructions_per_request).collect();
        (!hops.is_empty()).then(|| hops.iter().sum::<f64>() / hops.len() as f64)
    }

    pub(crate) fn markdown(&self) -> String {
        let mut s = format!(
            "Instructions per request under callgrind (user space, all threads), closed loop over {} keep-alive \
             connections, {} s counted after a warm-up, {}-byte responses. `vs nginx`: against nginx's mean per \
             hop of the same kind (plaintext, mutual TLS, or ingress).\n\n\
             | scenario | proxy | role | requests | instructions / request | vs nginx | malloc calls / request |\n\
             |---|---|---|---:|---:|---:|---:|\n",
            self.connections, self.window_s, self.body_bytes
        );
        for r in &self.rows {
            let vs = self
                .nginx_per_hop(r.scenario.nginx_peer())
                .map_or("-".into(), |n| format!("{:.2}x", r.instructions_per_request / n));
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.0} | {vs} | {:.1} |\n",
                r.scenario.name(),
                r.proxy,
                r.role,
                r.requests,
                r.instructions_per_request,
                r.mallocs_per_request
            ));
        }
        s
    }
}
