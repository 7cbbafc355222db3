//! api-gateway: the shop's public entry.
//!
//! Routes `/api/users/*`, `/api/products/*`, `/api/orders/*` and
//! `/api/notifications` to the services; verifies the JWT user-service issued
//! against user-service's public key set (`tokens`; register, login and reading
//! products are public); replaces any `x-user-id`
//! or `x-user-role` the client sent with the token's subject and role (the
//! services believe them only from this gateway's mesh identity); never routes
//! internal endpoints (stock reservations); and limits each client (the user,
//! or the address of an anonymous caller) with a token bucket shared by every
//! gateway instance through Redis, answering 429 with `Retry-After` — with a
//! much smaller bucket per address for registration and login.

pub mod limit;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use weft_services_common::peers::Peers;
use weft_services_common::{env, serve, ApiError};

pub const SERVICE: &str = "api-gateway";
/// Largest request body the gateway forwards.
pub const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Requests per second each client may sustain, and the burst it may spend at once.
    pub rate: f64,
    pub burst: f64,
    /// Where the buckets are shared between instances (`None`: each instance limits alone),
    /// and the key prefix there.
    pub rate_limit_redis: Option<String>,
    pub rate_limit_prefix: String,
    /// Registrations and logins per minute from one address (the burst is the same).
    pub auth_per_minute: f64,
    pub peers: Peers,
}

impl Config {
    /// `LISTEN` (127.0.0.1:3000), `RATE_LIMIT_RPS` (50), `RATE_LIMIT_BURST` (100),
    /// `RATE_LIMIT_REDIS` (redis://127.0.0.1:6379; empty: per instance), `RATE_LIMIT_PREFIX`
    /// (shop:ratelimit:), `AUTH_RATE_LIMIT_PER_MINUTE` (10), and the peers.
    pub fn from_env() -> anyhow::Result<Self> {
        let rate: f64 = env::parse("RATE_LIMIT_RPS", 50.0)?;
        let burst: f64 = env::parse("RATE_LIMIT_BURST", 100.0)?;
        anyhow::ensure!(rate > 0.0 && burst >= 1.0, "RATE_LIMIT_RPS must be > 0 and RATE_LIMIT_BURST >= 1");
        Ok(Config {
            listen: env::parse("LISTEN", SocketAddr::from(([127, 0, 0, 1], 3000)))?,
            rate,
            burst,
            rate_limit_redis: Some(env::var("RATE_LIMIT_REDIS", "redis://127.0.0.1:6379")).filter(|u| !u.is_empty()),
            rate_limit_prefix: env::var("RATE_LIMIT_PREFIX", "shop:ratelimit:"),
            auth_per_minute: env::parse("AUTH_RATE_LIMIT_PER_MINUTE", AUTH_PER_MINUTE)?,
            peers: Peers::from_env()?,
        })
    }
}

/// Registrations and logins one address may send per minute.
pub const AUTH_PER_MINUTE: f64 = 10.0;

#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub limiter: limit::RateLimiter,
    /// The smaller bucket for registration and login, per address.
    pub auth_limiter: limit::RateLimiter,
    /// user-service's public keys, fetched when first needed.
    pub tokens: tokens::TokenKeys,
}

/// The gateway's router; with `rate_limit_redis`, the rate limits are shared
/// (while Redis cannot answer, each instance limits alone).
pub async fn app(config: Config) -> anyhow::Result<Router> {
    let (auth_rate, auth_burst) = (config.auth_per_minute / 60.0, config.auth_per_minute.max(1.0));
    anyhow::ensure!(auth_rate > 0.0, "AUTH_RATE_LIMIT_PER_MINUTE must be > 0");
    let (limiter, auth_limiter) = match &config.rate_limit_redis {
        Some(url) => (
            limit::RateLimiter::shared(config.rate, config.burst, url, &config.rate_limit_prefix).await?,
            limit::RateLimiter::shared(auth_rate, auth_burst, url, &format!("{}auth:", config.rate_limit_prefix))
                .await?,
        ),
        None => {
            (limit::RateLimiter::local(config.rate, config.burst), limit::RateLimiter::local(auth_rate, auth_burst))
        }
    };
    let tokens = tokens::TokenKeys::new(config.peers.clone(), tokens::REFETCH_AFTER);
    let state = Arc::new(AppState { config, limiter, auth_limiter, tokens });
    Ok(serve::finish(
        Router::new().route("/ready", get(|| async { serve::ready(&[]) })).fallback(route).with_state(state),
    ))
}

/// Where a public path goes, and whether it needs a token.
#[derive(Debug, PartialEq)]
pub struct Target {
    pub service: &'static str,
    pub path: String,
    pub public: bool,
}

/// The routing table: `None` is a 404.
pub fn target(method: &Method, path: &str) -> Option<Target> {
    let rest = path.strip_prefix("/api/")?;
    let (first, tail) = rest.split_once('/').map_or((rest, ""), |(a, b)| (a, b));
    let to = |service, path: String, public| Some(Target { service, path, public });
    match first {
        "users" => {
            let public = method == Method::POST && (tail == "register" || tail == "login");
            to("user-service", format!("/users/{tail}"), public)
        }
        // Reservations are internal (order-service's): not routed from outside.
        "products" if tail.split('/').nth(1).is_some() => None,
        "products" => {
            let path = if tail.is_empty() { "/products".to_string() } else { format!("/products/{tail}") };
            to("product-service", path, method == Method::GET || method == Method::HEAD)
        }
        "orders" => {
            to("order-service", if tail.is_empty() { "/orders".into() } else { format!("/orders/{tail}") }, false)
        }
        "notifications" => to(
            "notification-service",
            if tail.is_empty() { "/notifications".into() } else { format!("/notifications/{tail}") },
            false,
        ),
        _ => None,
    }
}

/// Request headers passed on to a service; everything else (cookies, `authorization`,
/// a client's own `x-user-id`) stays at the edge.
const FORWARDED: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("x-canary"),
    HeaderName::from_static("idempotency-key"),
];
/// Response headers passed back to the client.
const RETURNED: [&str; 5] = ["content-type", "retry-after", "x-version", "x-served-by", "idempotent-replayed"];

async fn route(State(s): State<Arc<AppState>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    match forward(&s, peer, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim)
}

async fn forward(s: &AppState, peer: SocketAddr, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let t = target(&parts.method, parts.uri.path())
        .ok_or_else(|| ApiError::not_found(format!("no route for {}", parts.uri.path())))?;
    let claims = match bearer(&parts.headers) {
        Some(token) => Some(s.tokens.verify(token).await?),
        None if t.public => None,
        None => {
            return Err(ApiError::unauthorized(
                "this route needs a token: Authorization: Bearer <token from /api/users/login>",
            ))
        }
    };
    let client = claims.as_ref().map_or_else(|| format!("ip:{}", peer.ip()), |c| format!("user:{}", c.sub));
    let limited = if t.service == "user-service" && t.public {
        s.auth_limiter.take(&format!("ip:{}", peer.ip())).await
    } else {
        s.limiter.take(&client).await
    };
    if let Err(wait) = limited {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; slow down");
        e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        return Err(e);
    }
    let mut headers = HeaderMap::new();
    for name in FORWARDED {
        if let Some(v) = parts.headers.get(&name) {
            headers.insert(name, v.clone());
        }
    }
    let mut path = t.path;
    if let Some(c) = &claims {
        headers.insert(
            "x-user-id",
            HeaderValue::from_str(&c.sub).map_err(|_| ApiError::unauthorized("invalid token subject"))?,
        );
        headers.insert("x-user-role", HeaderValue::from_static(c.role.as_str()));
    }
    if let Some(q) = parts.uri.query() {
        path = format!("{path}?{q}");
    }
    let body = axum::body::to_bytes(Body::new(body), MAX_BODY).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("body over {MAX_BODY} bytes"))
    })?;
    let body = (!body.is_empty()).then_some(body);
    let answer = s.config.peers.call(t.service, parts.method, &path, headers, body).await.map_err(|e| {
        tracing::warn!(service = t.service, error = %e, "upstream failed");
        match e {
            weft_services_common::peers::PeerError::Timeout(..) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("{} did not answer in time", t.service),
            ),
            _ => {
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream_unavailable", format!("{} is unavailable", t.service))
            }
        }
    })?;
    let mut response = (answer.status, answer.body).into_response();
    for name in RETURNED {
        if let Some(v) = answer.headers.get(name) {
            response.headers_mut().insert(name, v.clone());
        }
    }
    Ok(response)
}

/// How long an idle client's bucket is kept.
pub const IDLE_BUCKET: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let t = |m: Method, p: &str| target(&m, p).map(|t| (t.service, t.path, t.public));
        assert_eq!(t(Method::POST, "/api/users/login"), Some(("user-service", "/users/login".into(), true)));
        assert_eq!(t(Method::GET, "/api/users/me"), Some(("user-service", "/users/me".into(), false)));
        assert_eq!(t(Method::GET, "/api/products"), Some(("product-service", "/products".into(), true)));
        assert_eq!(t(Method::POST, "/api/products"), Some(("product-service", "/products".into(), false)));
        assert_eq!(t(Method::POST, "/api/orders/abc/pay"), Some(("order-service", "/orders/abc/pay".into(), false)));
        assert_eq!(
            t(Method::GET, "/api/notifications"),
            Some(("notification-service", "/notifications".into(), false))
        );
        assert_eq!(
            t(Method::GET, "/api/notifications/x"),
            Some(("notification-service", "/notifications/x".into(), false))
        );
        assert_eq!(t(Method::GET, "/api/products/7"), Some(("product-service", "/products/7".into(), true)));
        assert_eq!(t(Method::POST, "/api/products/7/reservations"), None, "internal");
        assert_eq!(t(Method::DELETE, "/api/products/7/reservations/o1"), None, "internal");
        assert_eq!(t(Method::GET, "/api/admin"), None);
        assert_eq!(t(Method::GET, "/orders"), None);
    }
}
