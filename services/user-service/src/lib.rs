//! user-service: registration and login. Passwords are hashed with argon2id
//! (the crate's defaults, OWASP's minimum: 19 MiB, 2 passes) off the async
//! runtime; users live in MariaDB; a login returns a JWT with the user's role,
//! signed with an Ed25519 key only this service holds; the public half is served
//! at `GET /.well-known/jwks.json` for api-gateway and the mesh's ingress gateway.
//!
//! Least privilege: registration answers the same whether or not the email is
//! taken (the owner of a taken address is notified instead); login and
//! registration are limited per account; a customer reads only themselves
//! (`/users/me`), staff read anyone; staff are made by `user-service
//! create-staff` or the `STAFF_EMAIL` bootstrap, never by registering.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
use weft_services_common::bucket::Limiter;
use weft_services_common::caller::{Role, Trust};
use weft_services_common::peers::Peers;
use weft_services_common::{db, env, jwt, serve, ApiError, Json};

pub const SERVICE: &str = "user-service";

pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS users (
        id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
        email VARCHAR(254) NOT NULL,
        name VARCHAR(200) NOT NULL,
        password_hash VARCHAR(255) NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        UNIQUE KEY users_email (email)
    ) ENGINE=InnoDB",
    "ALTER TABLE users ADD COLUMN role VARCHAR(16) NOT NULL DEFAULT 'customer'",
];

pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 128;
/// Logins per account and registrations per email at once; either refills over [`ATTEMPT_WINDOW`].
pub const LOGINS_PER_ACCOUNT: f64 = 10.0;
pub const REGISTRATIONS_PER_EMAIL: f64 = 3.0;
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// What registration answers, taken or not.
pub const REGISTERED: &str = "if this address can be registered, it is now: log in with it";

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    /// The key tokens are signed with; its public half is served at [`jwt::JWKS_PATH`].
    pub signer: Arc<jwt::Signer>,
    pub jwt_ttl_secs: u64,
    /// Who may name the end user (api-gateway's identity behind a sidecar).
    pub trust: Trust,
    /// notification-service, told when someone registers a taken address.
    pub peers: Peers,
}

impl Config {
    /// `LISTEN` (127.0.0.1:3001), `DATABASE_URL` (mysql://root@127.0.0.1:3306/weft_users),
    /// `JWT_SIGNING_KEY_FILE` (required; see [`jwt::Signer::from_env`]), `JWT_TTL_SECS` (3600), the trust and the peers.
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Config {
            listen: env::parse("LISTEN", SocketAddr::from(([127, 0, 0, 1], 3001)))?,
            database_url: env::var("DATABASE_URL", "mysql://root@127.0.0.1:3306/weft_users"),
            signer: Arc::new(jwt::Signer::from_env()?),
            jwt_ttl_secs: env::parse("JWT_TTL_SECS", jwt::DEFAULT_TTL_SECS)?,
            trust: Trust::from_env(),
            peers: Peers::from_env()?,
        })
    }
}

#[derive(Debug)]
pub struct AppState {
    pool: Pool,
    config: Config,
    /// Verified against when the email is unknown, so a login takes as long either way.
    dummy_hash: String,
    logins: Limiter,
    registrations: Limiter,
}

impl AppState {
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let pool = db::connect_and_migrate(&config.database_url, SERVICE, MIGRATIONS).await?;
        let dummy_hash = hash_password("not a real password".to_string()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(AppState {
            pool,
            config: config.clone(),
            dummy_hash,
            logins: per_account(LOGINS_PER_ACCOUNT),
            registrations: per_account(REGISTRATIONS_PER_EMAIL),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// `n` attempts at once per key, refilling over [`ATTEMPT_WINDOW`].
fn per_account(n: f64) -> Limiter {
    Limiter::new(n / ATTEMPT_WINDOW.as_secs_f64(), n)
}

/// Makes `email` a member of staff: created with `password` when new, promoted
/// (password unchanged) when it exists. `user-service create-staff` and the
/// `STAFF_EMAIL` bootstrap call it; nothing reachable over HTTP does.
pub async fn create_staff(pool: &Pool, email: &str, name: &str, password: &str) -> anyhow::Result<u64> {
    let email = normalise_email(email).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    anyhow::ensure!(
        (MIN_PASSWORD..=MAX_PASSWORD).contains(&password.chars().count()),
        "password: {MIN_PASSWORD} to {MAX_PASSWORD} characters"
    );
    let hash = hash_password(password.to_string()).await.map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let mut conn = pool.get_conn().await?;
    conn.exec_drop(
        "INSERT INTO users (email, name, password_hash, role) VALUES (?, ?, ?, 'staff') ON DUPLICATE KEY UPDATE role = 'staff'",
        (&email, name, &hash),
    )
    .await?;
    let id: Option<u64> = conn.exec_first("SELECT id FROM users WHERE email = ?", (&email,)).await?;
    id.ok_or_else(|| anyhow::anyhow!("{email} not found after insert"))
}

pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .route("/users/register", post(register))
        .route("/users/login", post(login))
        .route("/users/me", get(me))
        .route("/users/{id}", get(show))
        .route("/ready", get(ready))
        .route(jwt::JWKS_PATH, get(jwks))
        .with_state(Arc::new(state));
    serve::finish(routes)
}

/// The public key set tokens are checked against (public: it holds no secret).
async fn jwks(State(s): Shared) -> Response {
    ([(axum::http::header::CACHE_CONTROL, "max-age=300")], axum::Json(s.config.signer.jwks())).into_response()
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
    pub role: Role,
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

fn too_many(wait: Duration) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many attempts for this account");
    e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
    e
}

/// Registers a new customer. A taken address gets the same answer, in about
/// the same time (the password is hashed either way), and its owner a notification.
async fn register(State(s): Shared, Json(r): Json<Registration>) -> Result<Response, ApiError> {
    let email = normalise_email(&r.email)?;
    s.registrations.take(&email).map_err(too_many)?;
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
        Ok(()) => {
            let id = conn.last_insert_id().ok_or_else(|| ApiError::internal("insert returned no id"))?;
            tracing::info!(user = id, "registered");
        }
        Err(e) if db::is_duplicate(&e) => {
            let owner: Option<u64> = conn.exec_first("SELECT id FROM users WHERE email = ?", (&email,)).await?;
            if let Some(owner) = owner {
                tokio::spawn(tell_owner(s.config.peers.clone(), owner));
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"message": REGISTERED}))).into_response())
}

/// Tells the owner of a taken address that someone tried to register it (not the caller).
async fn tell_owner(peers: Peers, owner: u64) {
    let body = serde_json::json!({
        "user_id": owner.to_string(),
        "kind": "account.registration_attempt",
        "message": "Someone tried to register an account with your email address. If it was you, log in instead.",
    });
    let sent =
        peers.call_json("notification-service", http::Method::POST, "/notifications", Default::default(), &body).await;
    match sent {
        Ok(r) if r.status.is_success() => {}
        Ok(r) => tracing::warn!(status = %r.status, "notification-service refused the registration notice"),
        Err(e) => tracing::warn!(error = %e, "registration notice not sent"),
    }
}

/// One answer for an unknown email and a wrong password, in the same time.
async fn login(State(s): Shared, Json(l): Json<Login>) -> Result<Json<Session>, ApiError> {
    let refused = || ApiError::unauthorized("email or password is wrong");
    let email = normalise_email(&l.email).map_err(|_| refused())?;
    s.logins.take(&email).map_err(too_many)?;
    let mut conn = s.pool.get_conn().await?;
    let row: Option<(u64, String, String, String)> =
        conn.exec_first("SELECT id, name, password_hash, role FROM users WHERE email = ?", (&email,)).await?;
    drop(conn);
    let (user, hash) = match row {
        Some((id, name, hash, role)) => (Some(User { id, email: email.clone(), name, role: role_of(&role) }), hash),
        None => (None, s.dummy_hash.clone()),
    };
    let matches = verify_password(l.password, hash).await?;
    let user = user.filter(|_| matches).ok_or_else(refused)?;
    let (token, _) = s
        .config
        .signer
        .issue(&user.id.to_string(), &user.email, user.role, s.config.jwt_ttl_secs)
        .map_err(ApiError::internal)?;
    tracing::info!(user = user.id, "logged in");
    Ok(Json(Session { token, token_type: "Bearer".into(), expires_in: s.config.jwt_ttl_secs, user }))
}

fn role_of(stored: &str) -> Role {
    if stored == "staff" {
        Role::Staff
    } else {
        Role::Customer
    }
}

async fn find(s: &AppState, id: u64) -> Result<Json<User>, ApiError> {
    let mut conn = s.pool.get_conn().await?;
    let row: Option<(u64, String, String, String)> =
        conn.exec_first("SELECT id, email, name, role FROM users WHERE id = ?", (id,)).await?;
    let (id, email, name, role) = row.ok_or_else(|| ApiError::not_found(format!("user {id} not found")))?;
    Ok(Json(User { id, email, name, role: role_of(&role) }))
}

/// Any user, for staff only: customers read themselves at `/users/me`.
async fn show(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<User>, ApiError> {
    s.config.trust.user(&headers)?.staff()?;
    let id = id.parse().map_err(|_| ApiError::bad_request(format!("user id {id:?} is not a number")))?;
    find(&s, id).await
}

/// The caller, as the gateway identified it from the token (`x-user-id`, believed from the gateway only).
async fn me(State(s): Shared, headers: HeaderMap) -> Result<Json<User>, ApiError> {
    let user = s.config.trust.user(&headers)?;
    let id = user.id.parse().map_err(|_| ApiError::unauthorized("no authenticated user"))?;
    find(&s, id).await
}
