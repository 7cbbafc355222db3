//! What operators see and use: the admin and status listeners, metrics,
//! telemetry of requests and of TCP connections (Istio's metric names), trace context and span export, the access log and the tap.

pub(crate) mod access_log;
pub(crate) mod admin;
pub(crate) mod connections;
pub mod metrics;
pub mod otlp;
pub mod probes;
pub(crate) mod series;
pub(crate) mod tap;
pub(crate) mod telemetry;
pub mod trace;
