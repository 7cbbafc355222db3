//! user-service: registration and login. Passwords are hashed with argon2id
//! (the crate's defaults, OWASP's minimum: 19 MiB, 2 passes) off the async
//! runtime; users live in MariaDB; a login returns a JWT that api-gateway verifies.

use std::net::SocketAddr;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use mysql_async::prelude::*;
use mysql_async::Pool;
use serde::{Deserialize, Serialize};
use weft_services_common::{db, env, jwt, serve, ApiError, Json};

pub const SERVICE: &str = "user-service";

pub const MIGRATIONS: &[&str] = &["CREATE TABLE IF NOT EXISTS users (
        id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
        email VARCHAR(254) NOT NULL,
        name VARCHAR(200) NOT NULL,
        password_hash VARCHAR(255) NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        UNIQUE KEY users_email (email)
    ) ENGINE=InnoDB"];

pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 128;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub jwt_secret: String,
    pub jwt_ttl_secs: u64,
}

impl Config {
    /// `LISTEN` (127.0.0.1:3001), `DATABASE_URL` (mysql://root@127.0.0.1:3306/weft_users),
    /// `JWT_SECRET` (a development secret), `JWT_TTL_SECS` (3600).
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Config {
            listen: env::parse("LISTEN", SocketAddr::from(([127, 0, 0, 1], 3001)))?,
            database_url: env::var("DATABASE_URL", "mysql://root@127.0.0.1:3306/weft_users"),
            jwt_secret: env::var("JWT_SECRET", jwt::DEV_SECRET),
            jwt_ttl_secs: env::parse("JWT_TTL_SECS", jwt::DEFAULT_TTL_SECS)?,
        })
    }
}

#[derive(Debug)]
pub struct AppState {
    pool: Pool,
    config: Config,
    /// Verified against when the email is unknown, so a login takes as long either way.
    dummy_hash: String,
}

impl AppState {
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let pool = db::connect_and_migrate(&config.database_url, SERVICE, MIGRATIONS).await?;
        let dummy_hash = hash_password("not a real password".to_string()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(AppState { pool, config: config.clone(), dummy_hash })
    }
}

pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .route("/users/register", post(register))
        .route("/users/login", post(login))
        .route("/users/me", get(me))
        .route("/users/{id}", get(show))
        .route("/ready", get(ready))
        .with_state(Arc::new(state));
    serve::finish(routes)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub email: String,
    pub password: String,
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub id: u64,
    pub email: String,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Session {
    pub token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub user: User,
}

type Shared = State<Arc<AppState>>;

async fn ready(State(s): Shared) -> Response {
    serve::ready(&[db::ping(&s.pool).await])
}

fn normalise_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.starts_with('.'))
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(ApiError::bad_request("email: not a valid address"))
    }
}

async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)
}

async fn verify_password(password: String, hash: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(|e| e.to_string())?;
        Ok::<_, String>(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)
}

async fn register(State(s): Shared, Json(r): Json<Registration>) -> Result<Response, ApiError> {
    let email = normalise_email(&r.email)?;
    let name = r.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::bad_request("name: 1 to 200 characters"));
    }
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&r.password.chars().count()) {
        return Err(ApiError::bad_request(format!("password: {MIN_PASSWORD} to {MAX_PASSWORD} characters")));
    }
    let hash = hash_password(r.password).await?;
    let mut conn = s.pool.get_conn().await?;
    match conn
        .exec_drop("INSERT INTO users (email, name, password_hash) VALUES (?, ?, ?)", (&email, &name, &hash))
        .await
    {
        Ok(()) => {}
        Err(e) if db::is_duplicate(&e) => return Err(ApiError::conflict(format!("{email} is already registered"))),
        Err(e) => return Err(e.into()),
    }
    let id = conn.last_insert_id().ok_or_else(|| ApiError::internal("insert returned no id"))?;
    tracing::info!(user = id, "registered");
    Ok((StatusCode::CREATED, Json(User { id, email, name })).into_response())
}

/// One answer for an unknown email and a wrong password, in the same time.
async fn login(State(s): Shared, Json(l): Json<Login>) -> Result<Json<Session>, ApiError> {
    let refused = || ApiError::unauthorized("email or password is wrong");
    let email = normalise_email(&l.email).map_err(|_| refused())?;
    let mut conn = s.pool.get_conn().await?;
    let row: Option<(u64, String, String)> =
        conn.exec_first("SELECT id, name, password_hash FROM users WHERE email = ?", (&email,)).await?;
    drop(conn);
    let (user, hash) = match row {
        Some((id, name, hash)) => (Some(User { id, email: email.clone(), name }), hash),
        None => (None, s.dummy_hash.clone()),
    };
    let matches = verify_password(l.password, hash).await?;
    let user = user.filter(|_| matches).ok_or_else(refused)?;
    let (token, _) = jwt::issue(&s.config.jwt_secret, &user.id.to_string(), &user.email, s.config.jwt_ttl_secs)
        .map_err(ApiError::internal)?;
    tracing::info!(user = user.id, "logged in");
    Ok(Json(Session { token, token_type: "Bearer".into(), expires_in: s.config.jwt_ttl_secs, user }))
}

async fn find(s: &AppState, id: u64) -> Result<Json<User>, ApiError> {
    let mut conn = s.pool.get_conn().await?;
    let row: Option<(u64, String, String)> =
        conn.exec_first("SELECT id, email, name FROM users WHERE id = ?", (id,)).await?;
    let (id, email, name) = row.ok_or_else(|| ApiError::not_found(format!("user {id} not found")))?;
    Ok(Json(User { id, email, name }))
}

async fn show(State(s): Shared, Path(id): Path<String>) -> Result<Json<User>, ApiError> {
    let id = id.parse().map_err(|_| ApiError::bad_request(format!("user id {id:?} is not a number")))?;
    find(&s, id).await
}

/// The caller, as the gateway identified it from the token (`x-user-id`).
async fn me(State(s): Shared, headers: HeaderMap) -> Result<Json<User>, ApiError> {
    let id = headers
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::unauthorized("no authenticated user"))?;
    find(&s, id).await
}
