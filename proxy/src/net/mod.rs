//! Sockets: the serving loop every listener shares, transparent interception, mesh TCP,
//! byte relays, and one-shot HTTP/1.1 requests.

pub mod client;
pub mod intercept;
pub mod iptables;
pub mod listen;
pub mod relay;
pub mod tcp;
