//! Where a request goes once routed: the endpoints of a cluster (state that
//! outlives reloads), endpoints by DNS name, load balancing, connection pools, circuit breakers and
//! outlier ejection and its periodic review, consistent hashing, locality.

pub mod balance;
pub(crate) mod dns;
pub mod dns_wire;
pub mod endpoint;
pub mod hash;
pub(crate) mod limits;
pub(crate) mod locality;
pub(crate) mod outlier;
pub(crate) mod pool;
pub(crate) mod review;
