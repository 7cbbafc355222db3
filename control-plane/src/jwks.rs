//! The JSON Web Key Sets that RequestAuthentications name by `jwksUri`:
//! fetched by the control plane (as istiod does), checked, cached, refreshed
//! every [`REFRESH`], and put inline into the state translation reads, so a
//! sidecar never fetches anything and translation stays pure.
//!
//! A set that cannot be fetched or is not a key set leaves the rule without
//! keys: the sidecar then refuses every token of that issuer (401) and lets
//! requests without a token through to authorization — Istio's behaviour, fail
//! closed for tokens. The body of a response that is not a key set is never
//! stored, logged or pushed: a `jwksUri` pointing at an internal endpoint
//! reveals nothing but "not a key set".

use crate::istio::Spec;
use crate::watch::State;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// istiod's `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`.
pub const REFRESH: Duration = Duration::from_secs(20 * 60);
/// Istio's default `jwtRules[].timeout`.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest any fetch may take, whatever a rule's `timeout` says.
pub const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a starting control plane waits for the first key sets before serving.
pub const FIRST_WAIT: Duration = Duration::from_secs(2);
/// Fetches in flight at once; more wait for the next tick.
pub const MAX_CONCURRENT_FETCHES: usize = 16;
/// The largest key set read.
pub const MAX_BYTES: usize = 256 * 1024;

/// Checks an inline key set as the sidecar will read it.
pub fn check(jwks: &str) -> Result<(), String> {
    match weft_proxy::security::jwt::usable_keys(jwks)? {
        0 => Err("the key set has no signing key".into()),
        _ => Ok(()),
    }
}

/// Checks a `jwksUri`: an absolute `http` or `https` URL.
pub fn check_uri(uri: &str) -> Result<(), String> {
    let parsed: http::Uri = uri.parse().map_err(|_| format!("{uri:?} is not a URL"))?;
    match (parsed.scheme_str(), parsed.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(()),
        _ => Err(format!("{uri:?} is not an http:// or https:// URL")),
    }
}

/// Every `jwksUri` named by a rule without an inline `jwks`, with the longest
/// fetch timeout any rule gives it (capped at [`MAX_FETCH_TIMEOUT`]): one policy
/// cannot starve another's fetch of the same URI with a tiny timeout.
fn wanted(resources: &[crate::istio::Resource]) -> BTreeMap<String, Duration> {
    let mut out: BTreeMap<String, Duration> = BTreeMap::new();
    for r in resources {
        let Spec::RequestAuthentication(ra) = &r.spec else { continue };
        for rule in &ra.jwt_rules {
            if let (None, Some(uri)) = (&rule.jwks, &rule.jwks_uri) {
                let timeout = rule.timeout.map_or(FETCH_TIMEOUT, |t| t.get()).min(MAX_FETCH_TIMEOUT);
                let entry = out.entry(uri.clone()).or_insert(timeout);
                *entry = (*entry).max(timeout);
            }
        }
    }
    out
}

/// `state` with every fetched key set written inline.
fn resolved(state: &State, keys: &BTreeMap<String, Fetched>, generation: u64) -> State {
    let mut resources = state.resources.clone();
    for r in &mut resources {
        let Spec::RequestAuthentication(ra) = &mut r.spec else { continue };
        for rule in &mut ra.jwt_rules {
            if rule.jwks.is_none() {
                if let Some(Fetched { jwks: Some(jwks), .. }) = rule.jwks_uri.as_ref().and_then(|u| keys.get(u)) {
                    rule.jwks = Some(jwks.clone());
                }
            }
        }
    }
    State {
        resources,
        registry: state.registry.clone(),
        revision: state.revision,
        keys: generation,
        changed_at: state.changed_at,
    }
}

#[derive(Debug, Clone)]
struct Fetched {
    /// `None`: the last fetch failed and none before it succeeded.
    jwks: Option<String>,
    at: Instant,
}

/// The key sets being fetched: every fetch runs in a task of its own, so a slow
/// or dead `jwksUri` never holds back the publishing of any state.
struct Fetcher {
    keys: BTreeMap<String, Fetched>,
    running: tokio::task::JoinSet<(String, Result<String, String>)>,
    pending: std::collections::BTreeSet<String>,
    refresh: Duration,
}

impl Fetcher {
    /// Starts the fetches that are due for `resources`: new URIs, and known ones once
    /// `refresh` has passed (a failed one sooner); forgets URIs no rule names.
    fn start_due(&mut self, resources: &[crate::istio::Resource]) {
        let wanted = wanted(resources);
        self.keys.retain(|uri, _| wanted.contains_key(uri));
        for (uri, timeout) in wanted {
            let due = self.keys.get(&uri).is_none_or(|f| {
                f.at.elapsed() >= self.refresh || (f.jwks.is_none() && f.at.elapsed() >= self.refresh / 8)
            });
            if !due || self.pending.len() >= MAX_CONCURRENT_FETCHES || !self.pending.insert(uri.clone()) {
                continue;
            }
            self.running.spawn(async move {
                let result = fetch(&uri, timeout).await;
                (uri, result)
            });
        }
    }

    /// Records one finished fetch; whether the keys changed.
    fn finished(&mut self, uri: String, result: Result<String, String>) -> bool {
        self.pending.remove(&uri);
        let jwks = match result {
            Ok(jwks) => Some(jwks),
            Err(why) => {
                tracing::warn!(jwks_uri = %uri, "JWKS fetch failed: {why}; keeping the last good key set, if any");
                // A refresh that fails keeps the keys it had (as istiod does).
                self.keys.get(&uri).and_then(|f| f.jwks.clone())
            }
        };
        let before = self.keys.insert(uri, Fetched { jwks: jwks.clone(), at: Instant::now() });
        before.is_none_or(|b| b.jwks != jwks)
    }
}

/// Follows `states` and publishes each with its key sets inline. At start it waits
/// up to [`FIRST_WAIT`] for the first fetches; after that a state is published at
/// once with the keys known, and again when a fetch brings a new or changed set.
/// Known sets are fetched again every `refresh`.
pub async fn resolve(mut states: watch::Receiver<Arc<State>>, refresh: Duration) -> watch::Receiver<Arc<State>> {
    let mut current = states.borrow_and_update().clone();
    let mut f = Fetcher { keys: BTreeMap::new(), running: Default::default(), pending: Default::default(), refresh };
    f.start_due(&current.resources);
    let first_deadline = tokio::time::Instant::now() + FIRST_WAIT;
    while let Ok(Some(done)) = tokio::time::timeout_at(first_deadline, f.running.join_next()).await {
        if let Ok((uri, result)) = done {
            f.finished(uri, result);
        }
    }
    let mut generation = 0u64;
    let (tx, rx) = watch::channel(Arc::new(resolved(&current, &f.keys, generation)));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(refresh.clamp(Duration::from_millis(50), Duration::from_secs(60)));
        loop {
            let publish = tokio::select! {
                moved = states.changed() => {
                    if moved.is_err() {
                        return;
                    }
                    current = states.borrow_and_update().clone();
                    f.start_due(&current.resources);
                    true
                }
                Some(done) = f.running.join_next(), if !f.running.is_empty() => {
                    let changed = done.is_ok_and(|(uri, result)| f.finished(uri, result));
                    generation += u64::from(changed);
                    changed
                }
                _ = tick.tick() => {
                    f.start_due(&current.resources);
                    false
                }
            };
            if publish && tx.send(Arc::new(resolved(&current, &f.keys, generation))).is_err() {
                return;
            }
        }
    });
    rx
}

/// Fetches and checks one key set.
async fn fetch(uri: &str, timeout: Duration) -> Result<String, String> {
    let body = tokio::time::timeout(timeout, get(uri)).await.map_err(|_| format!("no answer in {timeout:?}"))??;
    let text = String::from_utf8(body).map_err(|_| "not a key set (not UTF-8)".to_string())?;
    // Only a valid set is kept; the reason never quotes the body.
    check(&text).map_err(|_| "not a JSON Web Key Set with a signing key".to_string())?;
    Ok(text)
}

/// One HTTP/1.1 GET (TLS for `https`, checked against the system's roots).
async fn get(uri: &str) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt;
    let parsed: http::Uri = uri.parse().map_err(|_| "not a URL".to_string())?;
    let host = parsed.host().ok_or("no host")?.trim_matches(['[', ']']).to_string();
    let tls = parsed.scheme_str() == Some("https");
    let port = parsed.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
    let path = parsed.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let req = http::Request::get(path)
        .header(http::header::HOST, parsed.authority().map_or(host.as_str(), |a| a.as_str()))
        .header(http::header::ACCEPT, "application/json")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = if tls {
        let stream = tls_connect(&host, tcp).await?;
        weft_proxy::net::client::send_over(hyper_util::rt::TokioIo::new(stream), req).await?
    } else {
        weft_proxy::net::client::send_over(hyper_util::rt::TokioIo::new(tcp), req).await?
    };
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_BYTES);
    let body = limited.collect().await.map_err(|e| format!("reading the body: {e}"))?;
    Ok(body.to_bytes().to_vec())
}

/// TLS to `host` as the sidecar originates it to servers outside the mesh: the
/// system's public roots, the certificate valid for the name.
async fn tls_connect(
    host: &str,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let spec = weft_model::TlsOrigination { sni: host.to_string(), ..Default::default() };
    let tls = weft_proxy::security::tls::Origination::new(&spec)?;
    tokio_rustls::TlsConnector::from(tls.config(false)).connect(tls.name.clone(), tcp).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_http_or_https() {
        assert!(check_uri("https://auth.example/.well-known/jwks.json").is_ok());
        assert!(check_uri("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_uri("file:///etc/passwd").is_err());
        assert!(check_uri("/jwks").is_err());
    }

    #[test]
    fn symmetric_or_empty_sets_are_refused() {
        assert!(check(r#"{"keys":[]}"#).is_err());
        assert!(check(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
        assert!(check("not json").is_err());
    }
}
