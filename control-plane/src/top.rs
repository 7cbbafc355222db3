//! `weftctl top`: the golden signals of the mesh's edges (who calls whom: requests per
//! second, success rate, p50 and p99 latency), from Prometheus scraping the sidecars'
//! Istio metrics — as `linkerd viz top` and Kiali show them. Success is Istio's: any
//! answer but a 5xx. Each edge is reported by the calling sidecar (`reporter="source"`).

use crate::promql::query;
use std::collections::BTreeMap;

/// One edge's signals over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub source: String,
    pub destination: String,
    pub rps: f64,
    /// Share of answers that were not 5xx, 0–1; `None` without requests.
    pub success: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

const BY: &str = "source_workload, destination_service_name";

/// The edges seen over the last `window` (a Prometheus duration, `1m`), busiest first. An
/// edge whose requests all came before its series' second scrape shows 0 requests per
/// second (Prometheus counts no increase for a series' first sample).
pub async fn edges(prometheus: &str, window: &str) -> Result<Vec<Edge>, String> {
    let total = format!("sum by ({BY}) (rate(istio_requests_total{{reporter=\"source\"}}[{window}]))");
    let ok =
        format!("sum by ({BY}) (rate(istio_requests_total{{reporter=\"source\",response_code!~\"5..\"}}[{window}]))");
    let quantile = |q: f64| {
        format!(
            "histogram_quantile({q}, sum by ({BY}, le) (rate(istio_request_duration_milliseconds_bucket{{reporter=\"source\"}}[{window}])))"
        )
    };
    let rps = query(prometheus, &total).await?;
    let ok = query(prometheus, &ok).await?;
    let p50 = query(prometheus, &quantile(0.5)).await?;
    let p99 = query(prometheus, &quantile(0.99)).await?;
    let key = |m: &BTreeMap<String, String>| {
        let get = |k: &str| m.get(k).cloned().unwrap_or_else(|| "unknown".into());
        (get("source_workload"), get("destination_service_name"))
    };
    let index = |samples: Vec<(BTreeMap<String, String>, f64)>| -> BTreeMap<(String, String), f64> {
        samples.into_iter().map(|(m, v)| (key(&m), v)).filter(|(_, v)| v.is_finite()).collect()
    };
    let (ok, p50, p99) = (index(ok), index(p50), index(p99));
    let mut out: Vec<Edge> = rps
        .into_iter()
        .map(|(m, rps)| {
            let k = key(&m);
            Edge {
                // Two series extrapolate separately: a ratio a hair over 1 is 1.
                success: (rps > 0.0).then(|| (ok.get(&k).copied().unwrap_or(0.0) / rps).min(1.0)),
                p50_ms: p50.get(&k).copied(),
                p99_ms: p99.get(&k).copied(),
                source: k.0,
                destination: k.1,
                rps,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.rps.total_cmp(&a.rps).then_with(|| (&a.source, &a.destination).cmp(&(&b.source, &b.destination)))
    });
    Ok(out)
}

/// The table `weftctl top` prints.
pub fn table(edges: &[Edge]) -> String {
    let mut out = format!("{:<48} {:>9} {:>9} {:>9} {:>9}\n", "EDGE", "RPS", "SUCCESS", "P50 ms", "P99 ms");
    let num =
        |v: Option<f64>, scale: f64, suffix: &str| v.map_or("-".to_string(), |v| format!("{:.1}{suffix}", v * scale));
    for e in edges {
        out.push_str(&format!(
            "{:<48} {:>9.2} {:>9} {:>9} {:>9}\n",
            format!("{} → {}", e.source, e.destination),
            e.rps,
            num(e.success, 100.0, " %"),
            num(e.p50_ms, 1.0, ""),
            num(e.p99_ms, 1.0, ""),
        ));
    }
    out
}
