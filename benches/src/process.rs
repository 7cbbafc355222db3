//! What a process costs, read from `/proc` (Linux only): peak resident memory
//! and CPU time. Used on the sidecar's process, so its cost is its own and not
//! the load generator's.

use std::io;

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux architecture Weft runs on.
pub const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Resident memory of `pid` in KiB: `(current, peak)` from `VmRSS` and `VmHWM`.
pub fn rss_kib(pid: u32) -> io::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/status has no {name}")))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Restarts the peak (`VmHWM`) from the current RSS, so the next reading is the
/// peak of what follows (Linux ≥ 4.0; needs the right to ptrace `pid`).
pub fn reset_peak_rss(pid: u32) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// User plus system CPU time of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_cpu(&stat)
        .map(|ticks| ticks as f64 / CLOCK_TICKS_PER_SEC)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: unexpected format")))
}

/// `utime + stime` in clock ticks: fields 14 and 15 of `stat`, counted after
/// the `(comm)` field, whose name may itself hold spaces and parentheses.
fn parse_stat_cpu(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    // after_comm starts at field 3 (state); utime is field 14.
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_an_awkward_comm() {
        let stat = "4242 (weft (proxy) x) S 1 4242 4242 0 -1 4194560 1091 0 0 0 37 12 0 0 20 0 3 0 1234 0 0";
        assert_eq!(parse_stat_cpu(stat), Some(49));
    }

    #[test]
    fn own_process_reads() {
        let pid = std::process::id();
        let (rss, peak) = rss_kib(pid).unwrap();
        assert!(rss > 0 && peak >= rss);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
    }
}
