//! `weft-proxy`: the Weft sidecar.
//!
//! The tree says who owns what: `net/` (sockets, the serving loop,
//! interception), `http/` (one request: hygiene, routing, forwarding, retries,
//! local replies), `upstream/` (endpoints, balancing, pools, circuit breakers,
//! outlier ejection), `security/` (mesh TLS, the workload identity,
//! authorization), `config/` (the compiled snapshot, the file, the control-plane
//! stream), `ops/` (admin and status listeners, metrics, telemetry, access log);
//! `state` is what every request reads, `server` only wires.
//!
//! One process next to each app. The outbound listener takes the app's calls,
//! picks a service by `Host`, a route by Istio's rules, a cluster by weight and
//! an endpoint by the load-balancing policy, and forwards over pooled
//! connections with retries and timeouts. The inbound listener delivers calls to
//! the local app. The admin listener shows the live config, the clusters and the
//! metrics.
//!
//! Config is one immutable [`config::snapshot::Snapshot`] behind one `ArcSwap`; state that
//! outlives a reload (pools, active-request counts) lives in [`upstream::endpoint::Registry`].

#![warn(unreachable_pub)]

pub mod config;
pub(crate) mod fxhash;
pub mod gateway;
pub mod http;
pub mod net;
pub mod ops;
pub mod security;
pub(crate) mod server;
pub mod state;
pub(crate) mod text;
pub mod upstream;

pub use server::{Proxy, ProxyOptions, Running};
