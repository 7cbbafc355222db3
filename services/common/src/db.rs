//! MariaDB: the pool, the service's own database (created when missing, so a
//! fresh machine works), and migrations applied once at start-up. Each
//! migration is one statement with a version; applied versions are recorded in
//! `schema_migrations`, and a named lock keeps two instances starting at once
//! from applying the same step twice.

use mysql_async::prelude::*;
use mysql_async::{Opts, OptsBuilder, Pool};

/// How long a service waits at start-up for its database to answer.
pub const STARTUP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connects (waiting up to [`STARTUP_WAIT`]), creating the URL's database when it does not exist, and applies `migrations`.
pub async fn connect_and_migrate(url: &str, service: &str, migrations: &[&str]) -> anyhow::Result<Pool> {
    let opts = Opts::from_url(url).map_err(|e| anyhow::anyhow!("database url {url:?}: {e}"))?;
    let db =
        opts.db_name().map(str::to_string).ok_or_else(|| anyhow::anyhow!("database url {url:?} names no database"))?;
    anyhow::ensure!(
        db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database name {db:?}: letters, digits and _ only"
    );
    let server_opts = OptsBuilder::from_opts(opts.clone()).db_name(None::<String>);
    let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
    let mut server = loop {
        match mysql_async::Conn::new(server_opts.clone()).await {
            Ok(conn) => break conn,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "database not reachable yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => return Err(anyhow::anyhow!("database not reachable within {STARTUP_WAIT:?}: {e}")),
        }
    };
    server.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4")).await?;
    server.disconnect().await?;
    let pool = Pool::new(opts);
    migrate(&pool, service, migrations).await?;
    Ok(pool)
}

/// Applies `service`'s migrations not yet recorded, in order, under a named lock.
/// Versions are per service, so services may share a database.
pub async fn migrate(pool: &Pool, service: &str, migrations: &[&str]) -> anyhow::Result<()> {
    let mut conn = pool.get_conn().await?;
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS schema_migrations (service VARCHAR(64) NOT NULL, version INT NOT NULL, \
         applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (service, version))",
    )
    .await?;
    let locked: Option<i64> = conn.query_first("SELECT GET_LOCK('weft_migrations', 30)").await?;
    anyhow::ensure!(locked == Some(1), "could not take the migration lock within 30 s");
    let result = async {
        let applied: Vec<i32> =
            conn.exec("SELECT version FROM schema_migrations WHERE service = ?", (service,)).await?;
        for (i, sql) in migrations.iter().enumerate() {
            let version = i as i32 + 1;
            if applied.contains(&version) {
                continue;
            }
            conn.query_drop(*sql).await.map_err(|e| anyhow::anyhow!("migration {version}: {e}"))?;
            conn.exec_drop("INSERT INTO schema_migrations (service, version) VALUES (?, ?)", (service, version))
                .await?;
            tracing::info!(service, version, "migration applied");
        }
        anyhow::Ok(())
    }
    .await;
    conn.query_drop("DO RELEASE_LOCK('weft_migrations')").await?;
    result
}

/// `Ok` when the database answers a trivial query within a second.
pub async fn ping(pool: &Pool) -> Result<(), String> {
    let check = async {
        let mut conn = pool.get_conn().await?;
        conn.query_drop("SELECT 1").await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(1), check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("database: {e}")),
        Err(_) => Err("database: no answer within 1s".to_string()),
    }
}

/// True when the error says the row collides with a unique key.
pub fn is_duplicate(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1062)
}

/// True for a deadlock or lock-wait timeout: the transaction was rolled back and may be run again.
pub fn is_retryable(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1213 || s.code == 1205)
}
