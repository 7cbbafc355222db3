//! What the sidecar runs on: the compiled snapshot, the config file and its
//! watch, and the control-plane stream (its framing is weft_model::stream).

pub mod control;
pub mod file;
pub mod snapshot;
