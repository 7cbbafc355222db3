//! The request path: what inbound and outbound do with a request — hygiene and
//! path normalization first, routing, forwarding with retries, and the local replies.

pub mod answer;
pub mod body;
pub mod cors;
pub(crate) mod forward;
pub mod headers;
pub(crate) mod hygiene;
pub(crate) mod inbound;
pub(crate) mod matcher;
pub(crate) mod mirror;
pub mod normalize;
pub(crate) mod outbound;
pub(crate) mod policy;
pub(crate) mod reply;
pub(crate) mod retry;
pub mod route;
