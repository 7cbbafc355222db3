//! Which series of the request metrics a request goes into, found by what
//! decides its labels — the reporter, the service and endpoint (by identity),
//! the caller's proven identity, the protocol and the outcome — rather than by
//! hashing and comparing its 19 label values each time ([`Metrics::request_series`],
//! 1.7k instructions a request). One memo per config snapshot: the workload's
//! own labels and service come from that snapshot, so they are the same for
//! every request it serves, and a new config starts with an empty memo.
//!
//! A request whose destination service is not one of the snapshot's (the
//! outbound label then comes from the caller's `Host`) is never memoized: its
//! labels are looked up in full, bounded by [`crate::ops::metrics::MAX_REQUEST_SERIES`].
//!
//! [`Metrics::request_series`]: crate::ops::metrics::Metrics::request_series

use crate::fxhash::FxBuild;
use crate::http::reply::Flags;
use crate::ops::metrics::RequestSeries;
use crate::upstream::endpoint::Endpoint;
use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

/// Entries one snapshot's memo holds; past it, requests take the full lookup.
const MAX_ENTRIES: usize = 1024;

/// What decides a request's labels, besides its snapshot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decided<'a> {
    /// Reported by the server's sidecar (inbound), not the client's.
    pub destination: bool,
    /// The destination service, as the snapshot's cluster names it (outbound).
    pub service: Option<&'a Arc<str>>,
    /// The endpoint that answered (its labels: the destination workload, app, version).
    pub endpoint: Option<&'a Arc<Endpoint>>,
    /// The caller's proven SPIFFE ID (inbound).
    pub peer: Option<&'a Arc<str>>,
    pub grpc: bool,
    pub status: u16,
    pub grpc_status: Option<u16>,
    pub flags: Flags,
}

/// A memo's key. The service and endpoint are by address: the entry holds them
/// (the endpoint weakly), so no other service or endpoint can take that address
/// while the entry exists, and equal addresses mean the same one.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Key {
    destination: bool,
    service: usize,
    endpoint: usize,
    /// By value: each connection has its own copy of the caller's identity.
    peer: Option<Arc<str>>,
    grpc: bool,
    status: u16,
    grpc_status: Option<u16>,
    flags: Flags,
}

#[derive(Debug)]
struct Entry {
    series: Arc<RequestSeries>,
    /// Keep the key's addresses taken (a weak reference keeps the allocation, not the
    /// endpoint: a removed endpoint still closes its connections).
    _service: Option<Arc<str>>,
    _endpoint: Option<Weak<Endpoint>>,
}

/// One snapshot's memo of request series.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    map: RwLock<HashMap<Key, Entry, FxBuild>>,
}

impl Memo {
    /// The series for a request decided by `d`; `resolve` looks it up in full (from the
    /// labels) when the memo does not hold it, and says whether it folded the labels into
    /// the overflow set: such a series is not kept, so every request of it is folded (and
    /// counted) again.
    pub(crate) fn series(
        &self,
        d: Decided<'_>,
        resolve: impl FnOnce() -> (Arc<RequestSeries>, bool),
    ) -> Arc<RequestSeries> {
        if !d.destination && d.service.is_none() {
            return resolve().0;
        }
        let key = Key {
            destination: d.destination,
            service: d.service.map_or(0, |s| Arc::as_ptr(s).cast::<u8>() as usize),
            endpoint: d.endpoint.map_or(0, |e| Arc::as_ptr(e) as usize),
            peer: d.peer.cloned(),
            grpc: d.grpc,
            status: d.status,
            grpc_status: d.grpc_status,
            flags: d.flags,
        };
        let (found, full) = match self.map.read() {
            Ok(m) => (m.get(&key).map(|e| e.series.clone()), m.len() >= MAX_ENTRIES),
            Err(_) => (None, true),
        };
        if let Some(found) = found {
            return found;
        }
        let (series, folded) = resolve();
        if folded || full {
            return series;
        }
        if let Ok(mut map) = self.map.write() {
            if map.len() < MAX_ENTRIES {
                let entry = Entry {
                    series: series.clone(),
                    _service: d.service.cloned(),
                    _endpoint: d.endpoint.map(Arc::downgrade),
                };
                map.insert(key, entry);
            }
        }
        series
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.read().map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::metrics::{IstioLabels, Metrics};
    use std::cell::Cell;

    fn endpoints(addresses: &str) -> Vec<Arc<Endpoint>> {
        let yaml = format!(
            "apiVersion: weft.dev/v1alpha1\nversion: '1'\nworkload: {{name: w, namespace: ns}}\nclusters:\n  c:\n    endpoints: [{addresses}]\n"
        );
        let config: weft_model::ProxyConfig = serde_yaml::from_str(&yaml).unwrap();
        let registry = crate::upstream::endpoint::Registry::default();
        let snapshot = crate::config::snapshot::Snapshot::compile(config, &registry, None).unwrap();
        snapshot.cluster("c").unwrap().balancer.endpoints().to_vec()
    }

    /// Counts the full lookups; each answers a series of its own label set.
    struct Resolver {
        metrics: Metrics,
        full: Cell<u32>,
    }

    impl Resolver {
        fn new() -> Self {
            Resolver { metrics: Metrics::new(prometheus::Registry::new()).unwrap(), full: Cell::new(0) }
        }
        fn lookup(&self, memo: &Memo, d: Decided<'_>) -> Arc<RequestSeries> {
            memo.series(d, || {
                self.full.set(self.full.get() + 1);
                let code = d.status.to_string();
                self.metrics.request_series(&IstioLabels { response_code: &code, ..IstioLabels::unknown("source") })
            })
        }

        fn overflows(&self) -> u64 {
            self.metrics.series_overflow.get()
        }
    }

    /// A memo, its resolver, a service and one endpoint of it.
    fn setup() -> (Memo, Resolver, Arc<str>, Arc<Endpoint>) {
        (Memo::default(), Resolver::new(), "s".into(), endpoints("{address: 127.0.0.1:1}").remove(0))
    }

    fn outbound<'a>(service: &'a Arc<str>, endpoint: &'a Arc<Endpoint>, status: u16) -> Decided<'a> {
        Decided {
            destination: false,
            service: Some(service),
            endpoint: Some(endpoint),
            peer: None,
            grpc: false,
            status,
            grpc_status: None,
            flags: Flags::NONE,
        }
    }

    #[test]
    fn a_request_decided_alike_takes_the_memo_and_any_difference_takes_the_full_lookup() {
        let (memo, r) = (Memo::default(), Resolver::new());
        let eps = endpoints("{address: 127.0.0.1:1}, {address: 127.0.0.1:2}");
        let service: Arc<str> = "reviews.default.svc.cluster.local".into();
        let first = r.lookup(&memo, outbound(&service, &eps[0], 200));
        let again = r.lookup(&memo, outbound(&service, &eps[0], 200));
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(r.full.get(), 1, "the second request is served from the memo");
        r.lookup(&memo, outbound(&service, &eps[0], 503));
        r.lookup(&memo, outbound(&service, &eps[1], 200));
        r.lookup(&memo, Decided { flags: Flags::UF, ..outbound(&service, &eps[0], 200) });
        r.lookup(&memo, Decided { grpc: true, ..outbound(&service, &eps[0], 200) });
        let same_name: Arc<str> = "reviews.default.svc.cluster.local".into();
        r.lookup(&memo, outbound(&same_name, &eps[0], 200));
        assert_eq!(r.full.get(), 6, "status, endpoint, flags, protocol and service each decide");
        assert_eq!(memo.len(), 6);
    }

    /// The caller's identity counts by value (each connection holds its own copy); a Host that
    /// names no service of the snapshot (the caller's own text) is never memoized.
    #[test]
    fn peers_count_by_value_and_unknown_hosts_are_never_memoized() {
        let (memo, r) = (Memo::default(), Resolver::new());
        let inbound = |peer| Decided {
            destination: true,
            service: None,
            endpoint: None,
            peer,
            grpc: false,
            status: 200,
            grpc_status: None,
            flags: Flags::NONE,
        };
        let (a, b): (Arc<str>, Arc<str>) =
            ("spiffe://cluster.local/ns/a/sa/a".into(), "spiffe://cluster.local/ns/a/sa/a".into());
        r.lookup(&memo, inbound(Some(&a)));
        r.lookup(&memo, inbound(Some(&b)));
        assert_eq!(r.full.get(), 1, "the same identity on another connection");
        r.lookup(&memo, inbound(None));
        assert_eq!(r.full.get(), 2);
        let unknown = Decided { destination: false, ..inbound(None) };
        r.lookup(&memo, unknown);
        r.lookup(&memo, unknown);
        assert_eq!(r.full.get(), 4);
        assert_eq!(memo.len(), 2);
    }

    /// A removed endpoint is dropped (its pool closes) while the memo keeps its address taken,
    /// so a new endpoint never meets the old one's entry.
    #[test]
    fn a_dropped_endpoint_is_freed_and_its_address_is_not_reused() {
        let (memo, r, service, old) = setup();
        let old_addr = Arc::as_ptr(&old) as usize;
        r.lookup(&memo, outbound(&service, &old, 200));
        let weak = Arc::downgrade(&old);
        drop(old);
        assert!(weak.upgrade().is_none(), "the memo does not keep the endpoint");
        let fresh = endpoints("{address: 127.0.0.1:1}").remove(0);
        assert_ne!(Arc::as_ptr(&fresh) as usize, old_addr);
        r.lookup(&memo, outbound(&service, &fresh, 200));
        assert_eq!(r.full.get(), 2);
    }

    /// Past the sidecar's bound on label sets, a request's labels fold into the overflow set:
    /// that answer is never memoized, so each such request is counted as folded.
    #[test]
    fn a_folded_series_is_not_memoized_and_every_folded_request_is_counted() {
        let (memo, r, service, ep) = setup();
        for code in 0..crate::ops::metrics::MAX_REQUEST_SERIES {
            let code = code.to_string();
            r.metrics.request_series(&IstioLabels { response_code: &code, ..IstioLabels::unknown("x") });
        }
        assert_eq!(r.overflows(), 0);
        for _ in 0..3 {
            r.lookup(&memo, outbound(&service, &ep, 200));
        }
        assert_eq!(r.overflows(), 3, "each request past the bound is counted");
        assert_eq!(memo.len(), 0);
    }

    #[test]
    fn the_memo_is_bounded() {
        let (memo, r, service, ep) = setup();
        for status in 0..(MAX_ENTRIES as u16 + 10) {
            r.lookup(&memo, outbound(&service, &ep, status));
        }
        assert_eq!(memo.len(), MAX_ENTRIES);
        let full = r.full.get();
        r.lookup(&memo, outbound(&service, &ep, MAX_ENTRIES as u16 + 5));
        assert_eq!(r.full.get(), full + 1, "past the bound, the full lookup");
    }
}
