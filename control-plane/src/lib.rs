//! Weft control plane: reads Istio resources, compiles a `weft_model::ProxyConfig`
//! per workload and pushes it to the sidecars. Only this crate speaks Istio.
//!
//! Not built yet (issue 4); the crate exists so the workspace has its final shape.
