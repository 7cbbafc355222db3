//! Weft control plane: reads Istio resources, compiles a `weft_model::ProxyConfig`
//! per workload and pushes it to the sidecars. Only this crate speaks Istio.

pub mod analyze;
pub mod ca;
pub mod dashboard;
pub mod explain;
pub mod inject;
pub mod istio;
pub mod jwks;
pub mod promql;
pub mod push;
pub mod registry;
pub mod rotation;
pub mod store;
pub mod tap;
pub mod token;
pub mod top;
pub mod translate;
pub mod watch;
