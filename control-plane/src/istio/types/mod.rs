//! Istio's resources as serde types: the fields Istio has, with Istio's names,
//! one module per resource kind. Every struct refuses unknown fields, so a typo
//! or a field Istio does not have is an error; Istio's enums are Rust enums and
//! its durations are parsed here, so a bad value is refused at parse time with
//! its line and field path. Fields Istio has but Weft does not implement yet
//! are kept as [`Unsupported`] and refused by validation as "not supported yet".
//!
//! This folder, `validate/` and `load.rs` are the only code that knows Istio's
//! YAML; `translate/` turns these types into the sidecar's model.

mod authorization_policy;
mod common;
mod destination_rule;
mod gateway;
mod peer_authentication;
mod request_authentication;
mod service_entry;
mod sidecar;
mod telemetry;
mod virtual_service;
mod workload_group;

pub use authorization_policy::*;
pub use common::*;
pub use destination_rule::*;
pub use gateway::*;
pub use peer_authentication::*;
pub use request_authentication::*;
pub use service_entry::*;
pub use sidecar::*;
pub use telemetry::*;
pub use virtual_service::*;
pub use workload_group::*;
