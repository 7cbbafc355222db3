//! user-service: see the crate docs in lib.rs.

use weft_services_common::{env, serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env::init_logging(user_service::SERVICE);
    let config = user_service::Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let state = user_service::AppState::connect(&config).await?;
    serve::run(listener, user_service::app(state), serve::signal()).await?;
    Ok(())
}
