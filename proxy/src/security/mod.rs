//! Who is calling and who may: mesh TLS and SPIFFE verification, the workload
//! certificate and its renewal, and authorization.

pub mod authz;
pub mod identity;
pub mod tls;
