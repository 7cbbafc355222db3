//! Sockets: the serving loop every listener shares, transparent interception, and mesh TCP.

pub mod intercept;
pub mod iptables;
pub mod listen;
pub mod relay;
pub mod tcp;
