//! What operators see and use: the admin and status listeners, metrics,
//! telemetry (Istio's metric names), trace context and the access log.

pub mod access_log;
pub mod admin;
pub mod metrics;
pub mod probes;
pub mod telemetry;
pub mod trace;
