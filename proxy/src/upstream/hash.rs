//! Consistent hashing, Envoy's way: the request's key (a header, a cookie, the
//! caller's IP or a query parameter) is hashed with xxHash64, and a table built once
//! per config from the endpoints' addresses maps the hash to an endpoint — a ring
//! (ketama, `minimumRingSize`) or Maglev (`tableSize`). Sidecars built from the same
//! endpoints agree, so a key sticks to one endpoint mesh-wide while they stay.

use http::header::{HeaderMap, HeaderValue, COOKIE};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use weft_model::{ConsistentHash, HashKey, HashTable};
use xxhash_rust::xxh64::xxh64;

/// A lookup table from hash to endpoint index.
#[derive(Debug)]
pub(crate) enum Table {
    /// Sorted points and, beside them, each point's endpoint; a hash goes to the first
    /// point at or after it.
    Ring { points: Vec<u64>, hosts: Vec<u32> },
    /// One endpoint per slot; a hash goes to slot `hash % len`.
    Maglev(Vec<u32>),
}

impl Table {
    /// Built from the endpoints' addresses. The table depends on the set of addresses,
    /// not their order (DNS answers rotate; every sidecar must agree): they are sorted
    /// and deduplicated first, and the table maps back to indices into `endpoints`.
    pub(crate) fn build(table: &HashTable, endpoints: &[SocketAddr]) -> Option<Table> {
        let mut order: Vec<usize> = (0..endpoints.len()).collect();
        order.sort_by_key(|&i| (endpoints[i], i));
        order.dedup_by_key(|i| endpoints[*i]);
        if order.is_empty() {
            return None;
        }
        let keys: Vec<String> = order.iter().map(|&i| endpoints[i].to_string()).collect();
        let back = |host: u32| order[host as usize] as u32;
        Some(match *table {
            HashTable::RingHash { minimum_ring_size } => {
                let (points, hosts) = ring(&keys, minimum_ring_size);
                Table::Ring { points, hosts: hosts.into_iter().map(back).collect() }
            }
            HashTable::Maglev { table_size } => {
                Table::Maglev(maglev(&keys, table_size).into_iter().map(back).collect())
            }
        })
    }

    /// Endpoint indices in the order a hash prefers them: its own first, then the
    /// next ones around the table (to step past ejected or already-tried endpoints).
    pub(crate) fn preference(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let (start, len) = match self {
            Table::Ring { points, .. } => {
                let at = points.partition_point(|p| *p < hash);
                (if at == points.len() { 0 } else { at }, points.len())
            }
            Table::Maglev(slots) => ((hash % slots.len() as u64) as usize, slots.len()),
        };
        (0..len).map(move |step| {
            let i = (start + step) % len;
            match self {
                Table::Ring { hosts, .. } => hosts[i] as usize,
                Table::Maglev(slots) => slots[i] as usize,
            }
        })
    }
}

/// Envoy's ring: every endpoint gets `ceil(minimum / n)` points hashed from
/// `"<address>_<i>"`, so the ring holds at least `minimum` points; sorted by point.
fn ring(keys: &[String], minimum: u64) -> (Vec<u64>, Vec<u32>) {
    let n = keys.len() as u64;
    let per_host = minimum.div_ceil(n).clamp(1, (weft_model::hash::MAX_RING_SIZE / n).max(1));
    let mut pairs = Vec::with_capacity((per_host * n) as usize);
    let mut key = String::new();
    for (index, address) in keys.iter().enumerate() {
        for i in 0..per_host {
            key.clear();
            use std::fmt::Write as _;
            let _ = write!(key, "{address}_{i}");
            pairs.push((xxh64(key.as_bytes(), 0), index as u32));
        }
    }
    pairs.sort_unstable();
    pairs.into_iter().unzip()
}

/// Tables by (kind, addresses), shared by the snapshots that need the same one: a
/// config push or a DNS refresh that leaves a cluster's endpoints as they were does not
/// build its table again. Entries die with the last snapshot holding them.
#[derive(Debug, Default)]
pub(crate) struct TableCache(Mutex<HashMap<TableKey, Weak<Table>>>);

/// A table's kind and the addresses it was built from, in their order.
type TableKey = (HashTable, Vec<SocketAddr>);

impl TableCache {
    pub(crate) fn get(&self, table: &HashTable, endpoints: &[SocketAddr]) -> Option<Arc<Table>> {
        let key = (*table, endpoints.to_vec());
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = cache.get(&key).and_then(Weak::upgrade) {
            return Some(found);
        }
        let built = Arc::new(Table::build(table, endpoints)?);
        cache.retain(|_, t| t.strong_count() > 0);
        cache.insert(key, Arc::downgrade(&built));
        Some(built)
    }
}

/// Maglev's table fill: each endpoint walks its own permutation of the slots
/// (offset and skip from two hashes of its address) and takes the first free one, in
/// turn, until every slot is taken.
fn maglev(keys: &[String], size: u64) -> Vec<u32> {
    const FREE: u32 = u32::MAX;
    let m = size as usize;
    let perms: Vec<(u64, u64)> =
        keys.iter().map(|k| (xxh64(k.as_bytes(), 0) % size, xxh64(k.as_bytes(), 1) % (size - 1) + 1)).collect();
    let mut next = vec![0u64; keys.len()];
    let mut table = vec![FREE; m];
    let mut filled = 0;
    'fill: loop {
        for (host, &(offset, skip)) in perms.iter().enumerate() {
            let mut slot = ((offset + next[host] * skip) % size) as usize;
            while table[slot] != FREE {
                next[host] += 1;
                slot = ((offset + next[host] * skip) % size) as usize;
            }
            table[slot] = host as u32;
            next[host] += 1;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    table
}

/// What one request hashes to, and the cookie to set when the sidecar made the key.
#[derive(Debug, Default)]
pub struct RequestHash {
    pub hash: Option<u64>,
    pub(crate) set_cookie: Option<HeaderValue>,
}

/// The request's hash under `policy`. A missing key gives no hash (the pick is then
/// random), except a cookie with a `ttl`: the sidecar makes one from the connection's
/// addresses (as Envoy does) and sets it on the response.
pub fn request_hash(
    policy: &ConsistentHash,
    headers: &HeaderMap,
    path_and_query: &str,
    remote: Option<SocketAddr>,
    local: Option<SocketAddr>,
) -> RequestHash {
    let hash = |v: &[u8]| Some(xxh64(v, 0));
    let Some(key) = policy.key() else { return RequestHash::default() };
    match &key {
        HashKey::Header(name) => {
            // Envoy's: the values sorted (their order does not matter), each hashed with
            // the previous hash as seed.
            let mut values: Vec<&[u8]> = headers.get_all(name.as_str()).iter().map(HeaderValue::as_bytes).collect();
            values.sort_unstable();
            let hash = (!values.is_empty()).then(|| values.iter().fold(0, |seed, v| xxh64(v, seed)));
            RequestHash { hash, set_cookie: None }
        }
        HashKey::SourceIp => {
            RequestHash { hash: remote.and_then(|r| hash(r.ip().to_string().as_bytes())), set_cookie: None }
        }
        HashKey::QueryParameter(name) => {
            let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
            let value = query.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name).then_some(v)
            });
            RequestHash { hash: value.and_then(|v| hash(v.as_bytes())), set_cookie: None }
        }
        HashKey::Cookie(cookie) => {
            if let Some(value) = cookie_value(headers, &cookie.name) {
                return RequestHash { hash: hash(value), set_cookie: None };
            }
            let Some(ttl) = cookie.ttl else { return RequestHash::default() };
            let seed = format!("{}{}", addr_or_dash(remote), addr_or_dash(local));
            let value = format!("{:016x}", xxh64(seed.as_bytes(), 0));
            RequestHash {
                hash: hash(value.as_bytes()),
                set_cookie: set_cookie(&cookie.name, &value, cookie.path.as_deref(), ttl),
            }
        }
    }
}

fn addr_or_dash(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "-".into(), |a| a.to_string())
}

/// The value of cookie `name` in the request's `cookie` headers, quotes removed, read as
/// bytes (another cookie's odd bytes do not hide it). An empty value is no value.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    let trim = |b: &'h [u8]| b.trim_ascii();
    headers.get_all(COOKIE).iter().flat_map(|h| h.as_bytes().split(|b| *b == b';')).find_map(|pair| {
        let eq = pair.iter().position(|b| *b == b'=')?;
        let (k, v) = (trim(&pair[..eq]), trim(&pair[eq + 1..]));
        let v = v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(v);
        (k == name.as_bytes() && !v.is_empty()).then_some(v)
    })
}

/// Envoy's `Set-Cookie`: `name="value"; Max-Age=N; Path=p; HttpOnly` (no Max-Age for ttl 0:
/// a session cookie).
fn set_cookie(name: &str, value: &str, path: Option<&str>, ttl: Duration) -> Option<HeaderValue> {
    let mut out = format!("{name}=\"{value}\"");
    if !ttl.is_zero() {
        out.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if let Some(p) = path {
        out.push_str(&format!("; Path={p}"));
    }
    out.push_str("; HttpOnly");
    HeaderValue::from_str(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_model::HashCookie;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080))).collect()
    }

    fn share(table: &Table, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for k in 0..20_000u64 {
            counts[table.preference(xxh64(&k.to_le_bytes(), 0)).next().unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn the_ring_has_at_least_the_minimum_points_and_spreads_keys() {
        let t = Table::build(&HashTable::RingHash { minimum_ring_size: 1024 }, &addrs(3)).unwrap();
        let Table::Ring { points, .. } = &t else { panic!() };
        assert_eq!(points.len(), 3 * 342);
        for c in share(&t, 3) {
            assert!((5_000..8_500).contains(&c), "{c}");
        }
    }

    #[test]
    fn maglev_fills_every_slot_evenly() {
        let t = Table::build(&HashTable::Maglev { table_size: 65537 }, &addrs(5)).unwrap();
        let Table::Maglev(slots) = &t else { panic!() };
        let mut per_host = [0usize; 5];
        for s in slots {
            per_host[*s as usize] += 1;
        }
        for c in per_host {
            assert!((13_000..13_300).contains(&c), "{c}");
        }
    }

    /// Removing one of ten endpoints moves the keys that were on it, and few others: Maglev
    /// almost none; the ring those that land on the points each endpoint gains (Envoy keeps
    /// the ring at its minimum size, so 103 points each become 114).
    #[test]
    fn removing_an_endpoint_moves_few_other_keys() {
        for (table, most) in
            [(HashTable::Maglev { table_size: 65537 }, 100), (HashTable::RingHash { minimum_ring_size: 1024 }, 1_100)]
        {
            let all = addrs(10);
            let before = Table::build(&table, &all).unwrap();
            let after = Table::build(&table, &all[..9]).unwrap();
            let mut moved = 0;
            for k in 0..10_000u64 {
                let h = xxh64(&k.to_le_bytes(), 0);
                let a = before.preference(h).next().unwrap();
                if a != 9 && a != after.preference(h).next().unwrap() {
                    moved += 1;
                }
            }
            assert!(moved < most, "{table:?}: {moved} of ~9000 keys moved that were not on the removed endpoint");
        }
    }

    /// The same endpoints in another order (a rotated DNS answer) give the same choices.
    #[test]
    fn the_table_does_not_depend_on_endpoint_order() {
        for table in [HashTable::Maglev { table_size: 65537 }, HashTable::RingHash { minimum_ring_size: 1024 }] {
            let all = addrs(7);
            let mut rotated = all.clone();
            rotated.rotate_left(3);
            let (a, b) = (Table::build(&table, &all).unwrap(), Table::build(&table, &rotated).unwrap());
            for k in 0..2_000u64 {
                let h = xxh64(&k.to_le_bytes(), 0);
                assert_eq!(all[a.preference(h).next().unwrap()], rotated[b.preference(h).next().unwrap()]);
            }
        }
    }

    #[test]
    fn keys_come_from_the_request() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("alice"));
        headers.insert(COOKIE, HeaderValue::from_static("a=1; user=\"bob\""));
        let h = |p: &ConsistentHash, path: &str| request_hash(p, &headers, path, None, None).hash;
        let header = |name: &str| ConsistentHash { header: Some(name.into()), ..Default::default() };
        assert_eq!(h(&header("x-user"), "/"), Some(xxh64(b"alice", 0)));
        assert_eq!(h(&header("x-none"), "/"), None);
        // Several values: their order does not matter, and `a,bc` is not `ab,c`.
        let values = |vs: &[&'static str]| {
            let mut m = HeaderMap::new();
            for v in vs {
                m.append("x-user", HeaderValue::from_static(v));
            }
            request_hash(&header("x-user"), &m, "/", None, None).hash
        };
        assert_eq!(values(&["a", "bc"]), values(&["bc", "a"]));
        assert_ne!(values(&["a", "bc"]), values(&["ab", "c"]));
        let query = ConsistentHash { query_parameter: Some("u".into()), ..Default::default() };
        assert_eq!(h(&query, "/p?a=1&u=carol"), Some(xxh64(b"carol", 0)));
        let cookie = ConsistentHash {
            cookie: Some(HashCookie { name: "user".into(), path: None, ttl: None }),
            ..Default::default()
        };
        assert_eq!(h(&cookie, "/"), Some(xxh64(b"bob", 0)));
        let mut odd = HeaderMap::new();
        odd.insert(COOKIE, HeaderValue::from_bytes(b"junk=\xff\xfe; user=bob").unwrap());
        assert_eq!(request_hash(&cookie, &odd, "/", None, None).hash, Some(xxh64(b"bob", 0)));
        let mut empty = HeaderMap::new();
        empty.insert(COOKIE, HeaderValue::from_static("user="));
        assert_eq!(request_hash(&cookie, &empty, "/", None, None).hash, None, "an empty cookie is no key");
        let remote = Some(SocketAddr::from(([10, 1, 2, 3], 5000)));
        let source = ConsistentHash { source_ip: true, ..Default::default() };
        let ip = request_hash(&source, &headers, "/", remote, None);
        assert_eq!(ip.hash, Some(xxh64(b"10.1.2.3", 0)));
    }

    #[test]
    fn a_missing_cookie_with_a_ttl_is_made_and_set() {
        let policy = ConsistentHash {
            cookie: Some(HashCookie {
                name: "sticky".into(),
                path: Some("/".into()),
                ttl: Some(Duration::from_secs(60)),
            }),
            ..Default::default()
        };
        let remote = Some(SocketAddr::from(([10, 1, 2, 3], 5000)));
        let made = request_hash(&policy, &HeaderMap::new(), "/", remote, None);
        let set = made.set_cookie.unwrap();
        let set = set.to_str().unwrap();
        assert!(set.starts_with("sticky=\"") && set.ends_with("\"; Max-Age=60; Path=/; HttpOnly"), "{set}");
        // Sent back, the cookie hashes to the same value.
        let value = &set["sticky=\"".len()..set.find("\";").unwrap()];
        let mut back = HeaderMap::new();
        back.insert(COOKIE, HeaderValue::from_str(&format!("sticky=\"{value}\"")).unwrap());
        let again = request_hash(&policy, &back, "/", None, None);
        assert_eq!(again.hash, made.hash);
        assert!(again.set_cookie.is_none());
        // Without a ttl nothing is made: no hash, a random pick.
        let no_ttl = ConsistentHash {
            cookie: Some(HashCookie { name: "sticky".into(), path: None, ttl: None }),
            ..Default::default()
        };
        assert!(request_hash(&no_ttl, &HeaderMap::new(), "/", remote, None).hash.is_none());
    }
}
