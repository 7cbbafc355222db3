//! `weft-proxy`: the Weft sidecar.
//!
//! One process next to each app. The outbound listener takes the app's calls,
//! picks a service by `Host`, a route by Istio's rules, a cluster by weight and
//! an endpoint by the load-balancing policy, and forwards over pooled
//! connections with retries and timeouts. The inbound listener delivers calls to
//! the local app. The admin listener shows the live config, the clusters and the
//! metrics.
//!
//! Config is one immutable [`snapshot::Snapshot`] behind one `ArcSwap`; state that
//! outlives a reload (pools, active-request counts) lives in [`endpoint::Registry`].

pub mod access_log;
pub mod admin;
pub mod authz;
pub mod balance;
pub mod body;
pub mod config;
pub mod control;
pub mod endpoint;
pub mod forward;
pub mod headers;
pub mod hygiene;
pub mod identity;
pub mod inbound;
pub mod intercept;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod normalize;
pub mod outbound;
pub mod outlier;
pub mod pool;
pub mod probes;
pub mod reply;
pub mod retry;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod stream;
pub mod telemetry;
pub mod tls;

pub use server::{Proxy, ProxyOptions, Running};
