//! What the sidecar runs on: the compiled snapshot, the config file and its
//! watch, and the control-plane stream with its framing.

pub mod control;
pub mod file;
pub mod snapshot;
pub mod stream;
