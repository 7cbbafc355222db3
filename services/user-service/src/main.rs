//! user-service: see the crate docs in lib.rs.
//!
//! `user-service create-staff` (with `STAFF_EMAIL`, `STAFF_NAME` and
//! `STAFF_PASSWORD` in the environment, never on the command line) makes a
//! member of staff and exits; with `STAFF_EMAIL` set, the service does the
//! same at start-up (the environment bootstrap) before it serves.

use weft_services_common::{env, serve};

async fn staff_from_env(pool: &mysql_async::Pool) -> anyhow::Result<Option<u64>> {
    let email = env::var("STAFF_EMAIL", "");
    if email.is_empty() {
        return Ok(None);
    }
    let password =
        std::env::var("STAFF_PASSWORD").map_err(|_| anyhow::anyhow!("STAFF_EMAIL is set but STAFF_PASSWORD is not"))?;
    let name = env::var("STAFF_NAME", "Staff");
    let id = user_service::create_staff(pool, &email, &name, &password).await?;
    tracing::info!(user = id, "staff member ready");
    Ok(Some(id))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env::init_logging(user_service::SERVICE);
    let config = user_service::Config::from_env()?;
    let state = user_service::AppState::connect(&config).await?;
    if std::env::args().nth(1).as_deref() == Some("create-staff") {
        let id =
            staff_from_env(state.pool()).await?.ok_or_else(|| anyhow::anyhow!("create-staff needs STAFF_EMAIL"))?;
        println!("staff member {id}");
        return Ok(());
    }
    staff_from_env(state.pool()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    serve::run(listener, user_service::app(state), serve::signal()).await?;
    Ok(())
}
