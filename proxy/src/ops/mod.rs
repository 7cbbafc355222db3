//! What operators see and use: the admin and status listeners, metrics,
//! telemetry of requests and of TCP connections (Istio's metric names), trace context and span export, the access log and the tap.

pub mod access_log;
pub mod admin;
pub mod connections;
pub mod metrics;
pub mod otlp;
pub mod probes;
pub mod tap;
pub mod telemetry;
pub mod trace;
