//! The request path: what inbound and outbound do with a request — hygiene and
//! path normalization first, routing, forwarding with retries, and the local replies.

pub mod answer;
pub mod body;
pub mod cors;
pub mod forward;
pub mod headers;
pub mod hygiene;
pub mod inbound;
pub mod matcher;
pub mod mirror;
pub mod normalize;
pub mod outbound;
pub(crate) mod policy;
pub mod reply;
pub mod retry;
pub mod route;
