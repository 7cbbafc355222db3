//! Sockets: the serving loop every listener shares, transparent interception, mesh TCP,
//! byte relays, and one-shot HTTP/1.1 requests.

pub mod client;
pub mod intercept;
pub mod iptables;
pub(crate) mod listen;
pub(crate) mod relay;
pub mod tcp;
