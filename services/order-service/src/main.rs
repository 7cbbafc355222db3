//! order-service: see the crate docs in lib.rs.

use weft_services_common::{env, serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env::init_logging(order_service::SERVICE);
    let config = order_service::Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let state = order_service::AppState::start(config.clone()).await?;
    serve::run(listener, order_service::app(state), serve::signal()).await?;
    Ok(())
}
