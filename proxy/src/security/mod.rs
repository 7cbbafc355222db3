//! Who is calling and who may: mesh TLS and SPIFFE verification, the workload
//! certificate and its renewal, end-user JWTs, and authorization.

pub mod authz;
pub mod identity;
pub mod jwt;
pub mod tls;
