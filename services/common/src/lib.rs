//! What the five shop services share. They know nothing of the mesh: a peer is
//! called by plain HTTP as `http://<service>`, either straight to its address or
//! through the local sidecar's outbound port, which routes by `Host`.
//!
//! - [`bucket`]: per-key token buckets in memory
//! - [`caller`]: who is calling — the workload the sidecar proved, the user only from api-gateway
//! - [`env`]: configuration from the environment, with defaults that work on one host
//! - [`error`]: one error type and the one place it becomes a JSON response
//! - [`json`]: a JSON extractor whose rejections are clear 4xx answers
//! - [`request_id`]: `x-request-id` accepted or minted, logged, and carried to peers
//! - [`peers`]: the HTTP client the services call each other with
//! - [`db`]: MariaDB pool, database creation and migrations
//! - [`jwt`]: the tokens user-service issues and api-gateway verifies
//! - [`serve`]: `/health`, the serving loop and graceful shutdown

pub mod bucket;
pub mod caller;
pub mod db;
pub mod env;
pub mod error;
pub mod json;
pub mod jwt;
pub mod peers;
pub mod pool;
pub mod request_id;
pub mod serve;

pub use error::ApiError;
pub use json::Json;
