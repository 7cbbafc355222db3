//! Prometheus's HTTP API, the little of it Weft reads: instant queries
//! (`weftctl top`, the dashboard).

use std::collections::BTreeMap;

/// One sample: its labels and value.
pub type Sample = (BTreeMap<String, String>, f64);

/// How long one query may take, answer read; then it fails (a stuck Prometheus never stalls a page).
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The largest answer read.
const MAX_ANSWER: usize = 8 << 20;

/// An instant query against Prometheus's HTTP API: each sample's labels and value.
pub async fn query(prometheus: &str, promql: &str) -> Result<Vec<Sample>, String> {
    tokio::time::timeout(TIMEOUT, query_now(prometheus, promql))
        .await
        .map_err(|_| format!("{prometheus}: no answer within {} s", TIMEOUT.as_secs()))?
}

async fn query_now(prometheus: &str, promql: &str) -> Result<Vec<Sample>, String> {
    let base: http::Uri = prometheus.parse().map_err(|e| format!("{prometheus}: {e}"))?;
    if base.scheme_str() != Some("http") {
        return Err(format!("{prometheus}: only http:// URLs are read"));
    }
    let host = base.host().ok_or_else(|| format!("{prometheus}: no host"))?;
    let authority = format!("{host}:{}", base.port_u16().unwrap_or(80));
    // A Prometheus behind a path prefix (`--web.route-prefix`) keeps it.
    let prefix = base.path().trim_end_matches('/');
    let encoded: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
    let req = http::Request::get(format!("{prefix}/api/v1/query?query={encoded}"))
        .header(http::header::HOST, authority.as_str())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp =
        weft_proxy::net::client::send_to(authority.as_str(), req).await.map_err(|e| format!("{prometheus}: {e}"))?;
    let status = resp.status();
    let body = weft_proxy::net::client::read_body(resp, MAX_ANSWER).await.map_err(|e| format!("{prometheus}: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("{prometheus} answered {status}, not JSON: {e}"))?;
    if json["status"] != "success" {
        return Err(format!("{prometheus}: {}", json["error"].as_str().unwrap_or("query failed")));
    }
    Ok(json["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let labels = r["metric"]
                .as_object()?
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect();
            let value = r["value"].get(1)?.as_str()?.parse::<f64>().ok()?;
            Some((labels, value))
        })
        .collect())
}
