//! A small stub resolver: `/etc/hosts` first, then A and AAAA queries over UDP
//! to the configured servers (`--dns-server`, else `/etc/resolv.conf`'s
//! nameservers), returning the addresses with their TTL — what Envoy's
//! resolver gives it and `getaddrinfo` hides. Names are absolute (a
//! ServiceEntry's hosts are fully qualified): no search domains, so
//! `api.partner` is never tried as `api.partner.<ns>.svc.cluster.local`.

use rand::Rng;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Envoy's `dns_min_refresh_rate`: a shorter TTL is read as this.
pub(crate) const MIN_TTL: Duration = Duration::from_secs(5);
/// The TTL given to `/etc/hosts` answers.
pub(crate) const HOSTS_TTL: Duration = Duration::from_secs(60);

/// Addresses of a name, and how long they may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub addrs: Vec<IpAddr>,
    pub ttl: Duration,
}

/// The nameservers of `/etc/resolv.conf` (port 53).
pub(crate) fn system_servers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// `name` in `/etc/hosts`.
fn hosts_file(name: &str) -> Option<Found> {
    let text = std::fs::read_to_string("/etc/hosts").ok()?;
    let addrs: Vec<IpAddr> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let ip = words.next()?.parse::<IpAddr>().ok()?;
            words.any(|w| w.eq_ignore_ascii_case(name)).then_some(ip)
        })
        .collect();
    (!addrs.is_empty()).then_some(Found { addrs, ttl: HOSTS_TTL })
}

/// Resolves `name` (without a port): `/etc/hosts`, else A and AAAA from the first
/// server that answers.
pub(crate) async fn resolve(name: &str, servers: &[SocketAddr], timeout: Duration) -> Result<Found, String> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(Found { addrs: vec![ip], ttl: Duration::MAX });
    }
    if let Some(found) = hosts_file(name) {
        return Ok(found);
    }
    let mut last = "no nameserver".to_string();
    for server in servers {
        let (a, aaaa) = tokio::join!(query(*server, name, 1, timeout), query(*server, name, 28, timeout));
        match (a, aaaa) {
            (Err(e), Err(_)) => last = e,
            (a, aaaa) => {
                let mut addrs = Vec::new();
                let mut ttl = Duration::MAX;
                for (found_addrs, found_ttl) in [a, aaaa].into_iter().flatten() {
                    addrs.extend(found_addrs);
                    ttl = ttl.min(found_ttl);
                }
                if addrs.is_empty() {
                    return Err(format!("{name}: no address"));
                }
                return Ok(Found { addrs, ttl: ttl.max(MIN_TTL) });
            }
        }
    }
    Err(last)
}

/// One query of `qtype` (1: A, 28: AAAA) for `name` to `server`.
async fn query(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    timeout: Duration,
) -> Result<(Vec<IpAddr>, Duration), String> {
    let id: u16 = rand::thread_rng().gen();
    let packet = question(id, name, qtype)?;
    let local: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = tokio::net::UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    socket.connect(server).await.map_err(|e| e.to_string())?;
    socket.send(&packet).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| format!("{server}: no answer in {timeout:?}"))?
            .map_err(|e| e.to_string())?;
        // Another id (a late answer to an earlier query, or a spoof): wait for ours.
        if let Some(answer) = parse(&buf[..n], id, qtype) {
            return answer;
        }
    }
}

/// A recursive query for `name`.
pub fn question(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut p = Vec::with_capacity(name.len() + 18);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a DNS name"));
        }
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1]); // IN
    Ok(p)
}

/// Skips a (maybe compressed) name at `at`; the offset after it.
fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *b.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

/// The addresses of `qtype` in an answer to query `id`, with their smallest TTL.
/// `None`: not the answer to that query. An error: the server said no.
pub fn parse(b: &[u8], id: u16, qtype: u16) -> Option<Result<(Vec<IpAddr>, Duration), String>> {
    let u16_at = |at: usize| b.get(at..at + 2).map(|x| u16::from_be_bytes([x[0], x[1]]));
    if u16_at(0)? != id || b.get(2)? & 0x80 == 0 {
        return None;
    }
    match b.get(3)? & 0x0F {
        0 => {}
        3 => return Some(Err("no such host (NXDOMAIN)".into())),
        rcode => return Some(Err(format!("the server answered rcode {rcode}"))),
    }
    let (questions, answers) = (u16_at(4)?, u16_at(6)?);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(b, at)? + 4;
    }
    let mut addrs = Vec::new();
    let mut ttl = u32::MAX;
    for _ in 0..answers {
        at = skip_name(b, at)?;
        let (kind, len) = (u16_at(at)?, usize::from(u16_at(at + 8)?));
        let record_ttl = b.get(at + 4..at + 8).map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]))?;
        let data = b.get(at + 10..at + 10 + len)?;
        match (kind, data.len()) {
            (1, 4) if qtype == 1 => addrs.push(IpAddr::from([data[0], data[1], data[2], data[3]])),
            (28, 16) if qtype == 28 => {
                let mut v6 = [0u8; 16];
                v6.copy_from_slice(data);
                addrs.push(IpAddr::from(v6));
            }
            // CNAMEs and other records: the addresses follow in the same answer.
            _ => {}
        }
        if kind == qtype {
            ttl = ttl.min(record_ttl);
        }
        at += 10 + len;
    }
    Some(Ok((addrs, Duration::from_secs(u64::from(ttl.min(86_400))))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to `q` with one A record per address (TTL `ttl`), behind a CNAME.
    pub(crate) fn answer(q: &[u8], addrs: &[[u8; 4]], ttl: u32) -> Vec<u8> {
        let qend = skip_name(q, 12).unwrap() + 4;
        let mut r = q[..qend].to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        r[6..8].copy_from_slice(&((addrs.len() + 1) as u16).to_be_bytes());
        // CNAME: the question's name → a short name.
        r.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1]);
        r.extend_from_slice(&300u32.to_be_bytes());
        r.extend_from_slice(&[0, 4, 1, b'x', 0xC0, 12]);
        for a in addrs {
            r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
            r.extend_from_slice(&ttl.to_be_bytes());
            r.extend_from_slice(&[0, 4]);
            r.extend_from_slice(a);
        }
        r
    }

    #[test]
    fn answers_are_read_with_their_ttl_and_foreign_ones_ignored() {
        let q = question(7, "api.example.", 1).unwrap();
        let r = answer(&q, &[[10, 0, 0, 1], [10, 0, 0, 2]], 30);
        let (addrs, ttl) = parse(&r, 7, 1).unwrap().unwrap();
        assert_eq!(addrs, ["10.0.0.1".parse::<IpAddr>().unwrap(), "10.0.0.2".parse().unwrap()]);
        assert_eq!(ttl, Duration::from_secs(30));
        assert!(parse(&r, 8, 1).is_none(), "another query's id");
        for cut in 0..r.len() {
            let _ = parse(&r[..cut], 7, 1); // never panics
        }
        let mut nx = r.clone();
        nx[3] = 0x83;
        assert!(parse(&nx, 7, 1).unwrap().is_err());
        assert!(question(1, "bad..name", 1).is_err());
    }
}
