//! api-gateway: see the crate docs in lib.rs.

use weft_services_common::{env, serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env::init_logging(api_gateway::SERVICE);
    let config = api_gateway::Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    serve::run(listener, api_gateway::app(config).await?, serve::signal()).await?;
    Ok(())
}
