//! `weft-bench`: how Weft measures itself.
//!
//! - [`load`]: an open-loop HTTP load generator (wrk2's model): requests leave on
//!   a fixed schedule and latency counts from the *intended* send time, so a
//!   stall shows up in the percentiles instead of slowing the generator down.
//! - [`upstream`]: a trivial app that answers every request with a fixed body.
//! - [`process`]: peak RSS and CPU time of a child process, from `/proc`.
//! - [`contestants`]: HAProxy and nginx configs and command lines, for the side-by-side runs.
//! - [`plot`]: the latency percentile curves as a PNG (plotters, bitmap backend).
//! - [`control_plane`]: a real `weft-control-plane` process on a private etcd.
//!
//! The binaries `weft-load` and `weft-bench-sidecar` are thin `main`s over these;
//! `benches/route_match.rs` holds the criterion micro-benchmarks.

pub mod contestants;
pub mod control_plane;
pub mod load;
pub mod plot;
pub mod process;
pub mod upstream;

/// Parses a duration the way Weft's configs write them (`10s`, `500ms`, `1m30s`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    weft_model::duration::parse(s)
}
