//! Instruction counts under valgrind's callgrind (`--callgrind`): every proxy
//! runs under callgrind from its start; after the warm-up its counters are
//! zeroed (`callgrind_control -z`), after the counted window they are dumped
//! (`callgrind_control -d`), and the dump's totals are divided by the requests
//! answered. Instructions do not move with machine noise, so this is the
//! figure to steer by; malloc calls come from the same dump (calls into the C
//! allocator's entry points, whatever sits above it: Rust's global allocator,
//! nginx's pools, HAProxy's pools).

use crate::cli::Args;
use crate::scenario::READY_TIMEOUT;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The C allocator's entry points.
const ALLOCATORS: [&str; 6] = ["malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign"];

/// How long a proxy may take to become ready.
pub(crate) fn ready_timeout(args: &Args) -> Duration {
    if args.callgrind {
        READY_TIMEOUT * 6
    } else {
        READY_TIMEOUT
    }
}

/// `cmd` itself, or `cmd` run under callgrind writing to `out.<pid>` when `--callgrind`
/// (an earlier run's files beside it are removed: a dump is never read from another run).
pub(crate) fn wrap(args: &Args, cmd: Command, out: &Path) -> Command {
    if !args.callgrind {
        return cmd;
    }
    let dir = out.parent().unwrap_or(Path::new("."));
    let stem = format!("{}.", out.file_name().and_then(|n| n.to_str()).unwrap_or_default());
    for old in std::fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok().map(|e| e.path())) {
        if old.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&stem)) {
            let _ = std::fs::remove_file(old);
        }
    }
    let mut v = Command::new("valgrind");
    v.arg("--tool=callgrind").arg(format!("--callgrind-out-file={}.%p", out.display())).arg(cmd.get_program());
    v.args(cmd.get_args());
    for (k, val) in cmd.get_envs() {
        match val {
            Some(val) => v.env(k, val),
            None => v.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        v.current_dir(dir);
    }
    v
}

/// Fails early, with the way out, when valgrind is missing.
pub(crate) fn check_installed() -> anyhow::Result<()> {
    for tool in ["valgrind", "callgrind_control"] {
        let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        if !found {
            bail!("{tool} not found: `make bench-instructions` installs valgrind, or `apt-get install valgrind`");
        }
    }
    Ok(())
}

fn control(pid: u32, flag: &str) -> anyhow::Result<()> {
    let out = Command::new("callgrind_control").args([flag, &pid.to_string()]).output()?;
    if !out.status.success() {
        bail!("callgrind_control {flag} {pid}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Zeroes the counters of the callgrind running as `pid`.
pub(crate) fn zero(pid: u32) -> anyhow::Result<()> {
    control(pid, "-z")
}

/// What one proxy executed over the counted window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) instructions: u64,
    pub(crate) mallocs: u64,
}

/// Dumps the counters of the callgrind running as `pid` (its output file is `out.<pid>`)
/// and reads them from the new dump (`out.<pid>.N`, the highest N).
pub(crate) fn dump(pid: u32, out: &Path) -> anyhow::Result<Counts> {
    control(pid, "-d")?;
    let dir = out.parent().unwrap_or(Path::new("."));
    let stem = format!("{}.{pid}", out.file_name().and_then(|n| n.to_str()).unwrap_or_default());
    let newest: Option<(u32, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let n = p.file_name()?.to_str()?.strip_prefix(&stem)?.strip_prefix('.')?.parse::<u32>().ok()?;
            Some((n, p))
        })
        .max();
    let Some((_, file)) = newest else { bail!("callgrind wrote no dump beside {}", out.display()) };
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    parse(&text).with_context(|| format!("no totals in {}", file.display()))
}

/// The totals (first event: instructions) and the calls into [`ALLOCATORS`] of a callgrind dump.
fn parse(text: &str) -> Option<Counts> {
    let mut names = std::collections::HashMap::new();
    let mut callee_is_allocator = false;
    let mut counts = Counts::default();
    let mut totals = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cfn=").or_else(|| line.strip_prefix("fn=")) {
            // `(id) name` on first use, `(id)` after (string compression).
            let (id, name) = match rest.split_once(' ') {
                Some((id, name)) => {
                    names.insert(id.to_string(), name.to_string());
                    (id, name.to_string())
                }
                None => (rest, names.get(rest).cloned().unwrap_or_default()),
            };
            let _ = id;
            callee_is_allocator = line.starts_with("cfn=") && ALLOCATORS.contains(&name.as_str());
        } else if let Some(rest) = line.strip_prefix("calls=") {
            if callee_is_allocator {
                counts.mallocs += rest.split_whitespace().next()?.parse::<u64>().ok()?;
            }
            callee_is_allocator = false;
        } else if let Some(rest) = line.strip_prefix("totals:").or_else(|| line.strip_prefix("summary:")) {
            totals = rest.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).or(totals);
        }
    }
    counts.instructions = totals?;
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_totals_and_allocator_calls() {
        let dump = "events: Ir\nfn=(1) main\n0 10\ncfn=(2) malloc\ncalls=3 0\n0 30\ncfn=(3) free\ncalls=3 0\n0 9\nfn=(4) other\ncfn=(2)\ncalls=2 0\n0 20\ntotals: 12345\n";
        assert_eq!(parse(dump), Some(Counts { instructions: 12345, mallocs: 5 }));
    }
}
