//! Sockets: the serving loop every listener shares, and transparent interception.

pub mod intercept;
pub mod iptables;
pub mod listen;
