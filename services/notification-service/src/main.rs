//! notification-service: see the crate docs in lib.rs.

use weft_services_common::{env, serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env::init_logging(notification_service::SERVICE);
    let config = notification_service::Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let state = notification_service::AppState::start(config).await?;
    serve::run(listener, notification_service::app(state), serve::signal()).await?;
    Ok(())
}
