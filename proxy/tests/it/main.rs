//! The sidecar's integration tests: real sockets on ports the OS picks,
//! real upstream servers, the proxy started in-process (and as a process
//! where signals and files matter).

mod harness;

mod actions;
mod balancing;
mod control;
mod dns;
mod faults;
mod gateway;
mod grpc;
mod hygiene;
mod input;
mod outlier;
mod pool;
mod process;
mod reload;
mod retries;
mod routing;
mod tls_origination;
mod trace;
