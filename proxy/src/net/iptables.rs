//! The pod's interception rules, Istio's REDIRECT mode: the nat rules that send
//! a pod's inbound TCP to the inbound listener and its outbound TCP to the
//! outbound listener (`weft-proxy init-iptables`, run by an init container with
//! NET_ADMIN). What the listeners do with a redirected connection is
//! `intercept`'s.
//!
//! The rules mirror `istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*'
//! -b '*' -d 15090,15021,15020` with chains named `WEFT_*`, for IPv4 and, the
//! same rules with IPv6's loopback and passthrough source, for IPv6
//! (`ip6tables`): a dual-stack pod has no uncaptured family. Applying is
//! idempotent (the old rules are removed first, each family's loaded in one
//! `iptables-restore`); `--cleanup` removes them; `--dry-run` prints them.

use std::process::Command;

/// The sidecar's uid and gid: its own traffic is never redirected (no loops).
pub const PROXY_UID: u32 = 1337;
/// Ports of the sidecar itself that inbound capture leaves alone (Istio's `-d`).
pub(crate) const SIDECAR_PORTS: [u16; 3] = [15090, 15021, 15020];
/// The source the inbound listener uses towards the app, let through unredirected.
pub(crate) const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6";
/// IPv6's passthrough source (Istio's `::6`).
pub(crate) const INBOUND_PASSTHROUGH_SOURCE_V6: &str = "::6";

/// An address family: which `iptables` binary, loopback and passthrough source its rules use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn iptables(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }
    fn passthrough_source(self) -> String {
        match self {
            Family::V4 => format!("{INBOUND_PASSTHROUGH_SOURCE}/32"),
            Family::V6 => format!("{INBOUND_PASSTHROUGH_SOURCE_V6}/128"),
        }
    }
}

const CHAINS: [&str; 4] = ["WEFT_INBOUND", "WEFT_REDIRECT", "WEFT_IN_REDIRECT", "WEFT_OUTPUT"];

/// What to capture. Defaults are Istio's.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub outbound_port: u16,
    pub inbound_port: u16,
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    /// Inbound destination ports not captured (the sidecar's own are always excluded).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports not captured.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations (CIDRs) not captured.
    pub exclude_outbound_cidrs: Vec<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            outbound_port: 15001,
            inbound_port: 15006,
            proxy_uid: PROXY_UID,
            proxy_gid: PROXY_UID,
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
        }
    }
}

impl Rules {
    /// Checks the CIDRs (`a.b.c.d/n`, `fd00::/8` or a bare address) before anything is touched.
    pub fn validate(&self) -> Result<(), String> {
        for cidr in &self.exclude_outbound_cidrs {
            if !is_cidr(cidr) {
                return Err(format!("--exclude-outbound-cidrs: {cidr:?} is not an IPv4 or IPv6 CIDR"));
            }
        }
        Ok(())
    }

    /// The `iptables-restore` (or `ip6tables-restore`) input for the nat table.
    pub fn restore_input(&self, family: Family) -> String {
        let mut out = String::from("*nat\n");
        for chain in CHAINS {
            out.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for rule in self.rules(family) {
            out.push_str(&rule);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
        out
    }

    /// Each rule of one family as `-A CHAIN …`, in order.
    pub fn rules(&self, family: Family) -> Vec<String> {
        let (lo, passthrough) = (family.loopback(), family.passthrough_source());
        let (uid, gid) = (self.proxy_uid, self.proxy_gid);
        let mut r = vec![
            format!("-A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports {}", self.outbound_port),
            format!("-A WEFT_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}", self.inbound_port),
            "-A PREROUTING -p tcp -j WEFT_INBOUND".to_string(),
        ];
        let mut inbound_excluded: Vec<u16> = SIDECAR_PORTS.to_vec();
        inbound_excluded.extend(&self.exclude_inbound_ports);
        for port in inbound_excluded {
            r.push(format!("-A WEFT_INBOUND -p tcp --dport {port} -j RETURN"));
        }
        r.push("-A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT".into());
        r.push("-A OUTPUT -p tcp -j WEFT_OUTPUT".into());
        r.push(format!("-A WEFT_OUTPUT -o lo -s {passthrough} -j RETURN"));
        // The app calling its own pod address through the proxy goes to the inbound side.
        r.push(format!("-A WEFT_OUTPUT -o lo ! -d {lo} -p tcp -m owner --uid-owner {uid} -j WEFT_IN_REDIRECT"));
        r.push(format!("-A WEFT_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN"));
        r.push(format!("-A WEFT_OUTPUT -m owner --uid-owner {uid} -j RETURN"));
        r.push(format!("-A WEFT_OUTPUT -o lo ! -d {lo} -p tcp -m owner --gid-owner {gid} -j WEFT_IN_REDIRECT"));
        r.push(format!("-A WEFT_OUTPUT -o lo -m owner ! --gid-owner {gid} -j RETURN"));
        r.push(format!("-A WEFT_OUTPUT -m owner --gid-owner {gid} -j RETURN"));
        r.push(format!("-A WEFT_OUTPUT -d {lo} -j RETURN"));
        for port in &self.exclude_outbound_ports {
            r.push(format!("-A WEFT_OUTPUT -p tcp --dport {port} -j RETURN"));
        }
        let v6 = family == Family::V6;
        for cidr in self.exclude_outbound_cidrs.iter().filter(|c| c.contains(':') == v6) {
            r.push(format!("-A WEFT_OUTPUT -d {cidr} -j RETURN"));
        }
        r.push("-A WEFT_OUTPUT -j WEFT_REDIRECT".into());
        r
    }
}

fn iptables(family: Family, args: &[&str]) -> Result<bool, String> {
    let bin = family.iptables();
    let out = Command::new(bin)
        .args(["-w", "5", "-t", "nat"])
        .args(args)
        .output()
        .map_err(|e| format!("running {bin}: {e} (Debian package iptables; needs root or NET_ADMIN)"))?;
    Ok(out.status.success())
}

/// Whether IPv6 is on in this network namespace: the kernel has it, and
/// `net.ipv6.conf.all.disable_ipv6` is not 1.
pub(crate) fn ipv6_on() -> bool {
    let disabled = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6").is_ok_and(|v| v.trim() == "1");
    std::path::Path::new("/proc/net/if_inet6").exists() && !disabled
}

/// The families this pod speaks: IPv6 wherever the kernel has it and the pod's
/// network namespace has not turned it off (`net.ipv6.conf.all.disable_ipv6`).
/// Even link-local IPv6 reaches an app bound to `[::]`, so rules for IPv4 only
/// would let IPv6 past the sidecar: where IPv6 is on, its rules must load.
pub fn families() -> Vec<Family> {
    if ipv6_on() {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    }
}

/// Removes every `WEFT_*` rule and chain of every family; a no-op when there are none.
pub fn cleanup() -> Result<(), String> {
    families().into_iter().try_for_each(cleanup_family)
}

fn cleanup_family(family: Family) -> Result<(), String> {
    for (chain, target) in [("PREROUTING", "WEFT_INBOUND"), ("OUTPUT", "WEFT_OUTPUT")] {
        while iptables(family, &["-D", chain, "-p", "tcp", "-j", target])? {}
    }
    // Flush all before deleting any: the chains jump to each other.
    let present: Vec<&str> = CHAINS.into_iter().filter(|c| iptables(family, &["-F", c]).unwrap_or(false)).collect();
    for chain in present {
        if !iptables(family, &["-X", chain])? {
            return Err(format!("could not delete chain {chain} ({})", family.iptables()));
        }
    }
    Ok(())
}

/// Installs the rules of every family the host speaks, replacing any earlier
/// ones, one atomic load per family. A family that cannot be loaded fails the
/// whole (the init container fails, the pod does not start uncaptured).
pub fn apply(rules: &Rules) -> Result<(), String> {
    rules.validate()?;
    cleanup()?;
    families().into_iter().try_for_each(|f| restore(rules, f))
}

fn restore(rules: &Rules, family: Family) -> Result<(), String> {
    use std::io::Write;
    let bin = format!("{}-restore", family.iptables());
    let mut child = Command::new(&bin)
        .args(["--noflush", "-w", "5"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {bin}: {e}"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| format!("{bin}: no stdin"))?
        .write_all(rules.restore_input(family).as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{bin} refused the rules: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// `10.0.0.0/8`, `fd00::/8` or a bare address: what `--exclude-outbound-cidrs` takes.
pub fn is_cidr(cidr: &str) -> bool {
    weft_model::authz::Cidr::parse(cidr).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_match_istios_redirect_mode() {
        let rules = Rules::default().rules(Family::V4);
        assert_eq!(rules.first().unwrap(), "-A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports 15001");
        assert!(rules.contains(&"-A WEFT_INBOUND -p tcp --dport 15021 -j RETURN".to_string()));
        assert!(rules.contains(&"-A WEFT_OUTPUT -m owner --uid-owner 1337 -j RETURN".to_string()));
        assert_eq!(rules.last().unwrap(), "-A WEFT_OUTPUT -j WEFT_REDIRECT", "capture everything else, last");
    }

    #[test]
    fn exclusions_come_before_the_final_redirect() {
        let r = Rules {
            exclude_outbound_ports: vec![3306],
            exclude_outbound_cidrs: vec!["10.0.0.0/8".into(), "fd00::/8".into()],
            exclude_inbound_ports: vec![9000],
            ..Rules::default()
        };
        let rules = r.rules(Family::V4);
        let at = |s: &str| rules.iter().position(|x| x == s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(at("-A WEFT_OUTPUT -p tcp --dport 3306 -j RETURN") < at("-A WEFT_OUTPUT -j WEFT_REDIRECT"));
        assert!(at("-A WEFT_OUTPUT -d 10.0.0.0/8 -j RETURN") < at("-A WEFT_OUTPUT -j WEFT_REDIRECT"));
        assert!(at("-A WEFT_INBOUND -p tcp --dport 9000 -j RETURN") < at("-A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT"));
        assert!(!rules.iter().any(|r| r.contains("fd00::")), "an IPv6 range is not an iptables rule");
        assert!(r.restore_input(Family::V4).starts_with("*nat\n:WEFT_INBOUND - [0:0]\n"));
        assert!(r.restore_input(Family::V4).ends_with("COMMIT\n"));
    }

    #[test]
    fn ipv6_gets_the_same_rules_with_its_own_loopback_and_ranges() {
        let r = Rules { exclude_outbound_cidrs: vec!["10.0.0.0/8".into(), "fd00::/8".into()], ..Rules::default() };
        let (v4, v6) = (r.rules(Family::V4), r.rules(Family::V6));
        assert_eq!(v4.len(), v6.len(), "every IPv4 rule has its IPv6 twin");
        assert!(v6.contains(&"-A WEFT_OUTPUT -o lo -s ::6/128 -j RETURN".to_string()));
        assert!(v6.contains(&"-A WEFT_OUTPUT -d ::1/128 -j RETURN".to_string()));
        assert!(v6.contains(&"-A WEFT_OUTPUT -d fd00::/8 -j RETURN".to_string()));
        assert!(!v6.iter().any(|r| r.contains("127.0.0.") || r.contains("10.0.0.0")), "{v6:?}");
        assert_eq!(v6.last().unwrap(), "-A WEFT_OUTPUT -j WEFT_REDIRECT");
    }

    #[test]
    fn a_bad_cidr_is_refused_before_anything_changes() {
        for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0.0/8; rm -rf /", "-j ACCEPT"] {
            let r = Rules { exclude_outbound_cidrs: vec![bad.into()], ..Rules::default() };
            assert!(r.validate().unwrap_err().contains(bad), "{bad}");
        }
        let good = Rules { exclude_outbound_cidrs: vec!["fd00::/8".into(), "2001:db8::1".into()], ..Rules::default() };
        assert!(good.validate().is_ok());
    }
}
