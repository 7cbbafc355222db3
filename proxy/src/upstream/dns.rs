//! Endpoints by name (a ServiceEntry with resolution DNS or DNS_ROUND_ROBIN):
//! resolved by the sidecar with the system resolver, all names at once, again
//! every refresh, and as soon as a new config names one it has not resolved.
//! A name that fails to resolve keeps its last answer (Envoy keeps its hosts
//! when a re-resolution fails); a changed answer recompiles the live config
//! with the new addresses, so pools and outlier state of unchanged endpoints carry over.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use weft_model::ProxyConfig;

/// Istio's MeshConfig `dnsRefreshRate` default.
pub const REFRESH: Duration = Duration::from_secs(60);
/// How long one name may take to resolve.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Lookups in flight at once.
pub const MAX_CONCURRENT: usize = 8;

/// The answers so far, by `host:port`.
pub type Answers = HashMap<String, Vec<SocketAddr>>;

/// The resolver's shared state: the answers and a bell for new names.
#[derive(Debug, Default)]
pub struct Dns {
    answers: arc_swap::ArcSwap<Answers>,
    wanted: tokio::sync::Notify,
}

impl Dns {
    pub fn answers(&self) -> Arc<Answers> {
        self.answers.load_full()
    }

    /// Asks for a resolution now when `config` names a name with no answer yet.
    pub fn want(&self, config: &ProxyConfig) {
        let answers = self.answers.load();
        if names(config).iter().any(|n| !answers.contains_key(n)) {
            self.wanted.notify_one();
        }
    }
}

/// Every name the clusters of `config` resolve.
pub fn names(config: &ProxyConfig) -> BTreeSet<String> {
    config.clusters.values().flat_map(|c| c.dns.iter().cloned()).collect()
}

/// Resolves `names` at once; a name that fails keeps what `before` had for it.
async fn resolve(names: BTreeSet<String>, before: &Answers) -> Answers {
    // At most this many lookups at once (each holds a blocking thread while getaddrinfo runs).
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    let mut running = tokio::task::JoinSet::new();
    for name in names {
        let slots = slots.clone();
        running.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let found = tokio::time::timeout(TIMEOUT, tokio::net::lookup_host(name.clone())).await;
            let addrs = match found {
                Ok(Ok(addrs)) => {
                    // Sorted: a server rotating its answers is not a change.
                    let mut addrs: Vec<SocketAddr> = addrs.collect();
                    addrs.sort();
                    addrs.dedup();
                    Ok(addrs)
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer in {TIMEOUT:?}")),
            };
            (name, addrs)
        });
    }
    let mut out = Answers::new();
    while let Some(Ok((name, result))) = running.join_next().await {
        match result {
            Ok(addrs) if !addrs.is_empty() => {
                out.insert(name, addrs);
            }
            other => {
                let why = other.err().unwrap_or_else(|| "no address".into());
                tracing::warn!(name = %name, "DNS resolution failed: {why}; keeping the last answer");
                if let Some(old) = before.get(&name) {
                    out.insert(name, old.clone());
                }
            }
        }
    }
    out
}

/// Resolves the names of the live config (`live`) every `refresh`, and at once
/// when a new config names new ones; calls `changed` when an answer changed.
pub async fn run(
    dns: &Dns,
    live: impl Fn() -> Arc<ProxyConfig>,
    changed: impl Fn(),
    refresh: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let names = names(&live());
        if !names.is_empty() {
            let before = dns.answers();
            let after = resolve(names, &before).await;
            if after != *before {
                dns.answers.store(Arc::new(after));
                changed();
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(refresh) => {}
            _ = dns.wanted.notified() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}
