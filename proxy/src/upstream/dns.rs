//! Endpoints by name (a ServiceEntry with resolution DNS or DNS_ROUND_ROBIN):
//! resolved by the sidecar itself (`dns_wire`: `/etc/hosts`, then the
//! nameservers), all names at once, again when the shortest TTL runs out (at
//! least 5 s apart, Envoy's `dns_min_refresh_rate`; at most the refresh rate,
//! Istio's `dnsRefreshRate`), and as soon as a new config names one it has not
//! resolved. A name that fails to resolve keeps its last answer (Envoy keeps its
//! hosts when a re-resolution fails); a changed answer recompiles the live config
//! with the new addresses, so pools and outlier state of unchanged endpoints carry over.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use weft_model::ProxyConfig;

/// Istio's MeshConfig `dnsRefreshRate` default.
pub(crate) const REFRESH: Duration = Duration::from_secs(60);
/// How long one name may take to resolve.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);
/// Lookups in flight at once.
pub(crate) const MAX_CONCURRENT: usize = 8;

/// The answers so far, by `host:port`.
pub(crate) type Answers = HashMap<String, Vec<SocketAddr>>;

/// The resolver's shared state: the nameservers, the answers and a bell for new names.
#[derive(Debug, Default)]
pub struct Dns {
    servers: Vec<SocketAddr>,
    answers: arc_swap::ArcSwap<Answers>,
    wanted: tokio::sync::Notify,
}

impl Dns {
    /// Asks `servers` (none: `/etc/resolv.conf`'s).
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        let servers = if servers.is_empty() { crate::upstream::dns_wire::system_servers() } else { servers };
        Dns { servers, ..Default::default() }
    }

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
pub(crate) fn names(config: &ProxyConfig) -> BTreeSet<String> {
    config.clusters.values().flat_map(|c| c.dns.iter().cloned()).collect()
}

/// Resolves `names` at once; a name that fails keeps what `before` had for it.
/// Returns the answers and the shortest TTL among them.
async fn resolve(names: BTreeSet<String>, before: &Answers, servers: &[SocketAddr]) -> (Answers, Duration) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    let mut running = tokio::task::JoinSet::new();
    for name in names {
        let (slots, servers) = (slots.clone(), servers.to_vec());
        running.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let found = match name.rsplit_once(':').map(|(h, p)| (h.to_string(), p.parse::<u16>())) {
                Some((host, Ok(port))) => crate::upstream::dns_wire::resolve(&host, &servers, TIMEOUT)
                    .await
                    .map(|f| (f.addrs.into_iter().map(|ip| SocketAddr::new(ip, port)).collect::<Vec<_>>(), f.ttl)),
                _ => Err(format!("{name:?} is not host:port")),
            };
            (name, found)
        });
    }
    let mut out = Answers::new();
    let mut shortest = Duration::MAX;
    while let Some(Ok((name, result))) = running.join_next().await {
        match result {
            Ok((mut addrs, ttl)) if !addrs.is_empty() => {
                // Sorted: a server rotating its answers is not a change.
                addrs.sort();
                addrs.dedup();
                shortest = shortest.min(ttl);
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
    (out, shortest)
}

/// Resolves the names of the live config (`live`) every `refresh`, and at once
/// when a new config names new ones; calls `changed` when an answer changed.
pub(crate) async fn run(
    dns: &Dns,
    live: impl Fn() -> Arc<ProxyConfig>,
    changed: impl Fn(),
    refresh: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let names = names(&live());
        let mut next = refresh;
        if !names.is_empty() {
            let before = dns.answers();
            let (after, ttl) = resolve(names, &before, &dns.servers).await;
            next = next.min(ttl.max(crate::upstream::dns_wire::MIN_TTL));
            if after != *before {
                dns.answers.store(Arc::new(after));
                changed();
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = dns.wanted.notified() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}
