//! user-service against the real MariaDB: each test in a database of its own.

use http::StatusCode;
use serde_json::json;
use user_service::{app, AppState, Config};
use weft_services_common::caller::Trust;
use weft_services_common::jwt;
use weft_services_common::peers::Peers;
use weft_testkit::{Client, TestDb};

/// The key set the service serves: what api-gateway and the ingress gateway check tokens with.
async fn served_keys(c: &Client) -> jwt::Keys {
    let set = c.get(jwt::JWKS_PATH).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    jwt::Keys::from_jwks(set.text.as_bytes()).expect("a key set")
}

async fn start(db: &TestDb) -> Client {
    start_with(db).await.0
}

/// The service, and its pool (for the admin command).
async fn start_with(db: &TestDb) -> (Client, mysql_async::Pool) {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone(),
        signer: std::sync::Arc::new(jwt::Signer::generate().unwrap()),
        jwt_ttl_secs: 600,
        trust: Trust::mesh(),
        // No notification-service here: the notice to a taken address's owner is logged as not sent.
        peers: Peers::direct([]),
    };
    let state = AppState::connect(&config).await.expect("start");
    let pool = state.pool().clone();
    (Client::new(weft_testkit::spawn(app(state)).await), pool)
}

#[tokio::test]
async fn register_login_and_the_token_names_the_user() {
    let db = TestDb::new("users");
    let c = start(&db).await;
    let reg = c
        .post("/users/register", json!({"email": "Ada@Example.com", "password": "correct horse", "name": "Ada"}))
        .await;
    assert_eq!(reg.status, StatusCode::ACCEPTED, "{}", reg.text);
    assert!(reg.json.get("password_hash").is_none(), "the hash never leaves the service");

    let login = c.post("/users/login", json!({"email": "ada@example.com", "password": "correct horse"})).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    assert_eq!(login.json["token_type"], "Bearer");
    let id = login.json["user"]["id"].as_u64().unwrap();
    assert_eq!(login.json["user"]["email"], "ada@example.com", "emails are normalised");
    let claims = served_keys(&c).await.verify(login.json["token"].as_str().unwrap()).expect("a valid token");
    assert_eq!(claims.role, weft_services_common::caller::Role::Customer, "registering makes a customer");
    assert_eq!((claims.sub, claims.iss.as_str(), claims.aud.as_str()), (id.to_string(), jwt::ISSUER, jwt::AUDIENCE));
    assert_eq!(claims.exp - claims.iat, 600);

    let me = c.as_user(&id.to_string(), "customer").get("/users/me").await;
    assert_eq!(me.json, json!({"id": id, "email": "ada@example.com", "name": "Ada", "role": "customer"}));
    assert_eq!(c.as_user("999", "customer").get(&format!("/users/{id}")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(c.as_user(&id.to_string(), "customer").get(&format!("/users/{id}")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(c.as_user("999", "staff").get(&format!("/users/{id}")).await.json["name"], "Ada");
    let spoofed = c.as_workload("order-service").with("x-user-id", &id.to_string()).get("/users/me").await;
    assert_eq!(spoofed.status, StatusCode::UNAUTHORIZED, "user headers only from api-gateway");
}

#[tokio::test]
async fn staff_come_from_the_admin_command_never_from_registering() {
    let db = TestDb::new("users_staff");
    let (c, pool) = start_with(&db).await;
    let id = user_service::create_staff(&pool, "Boss@Example.com", "Boss", "staff-password").await.unwrap();
    let login = c.post("/users/login", json!({"email": "boss@example.com", "password": "staff-password"})).await;
    let claims = served_keys(&c).await.verify(login.json["token"].as_str().unwrap()).unwrap();
    assert_eq!((claims.sub, claims.role), (id.to_string(), weft_services_common::caller::Role::Staff));
    let sneaky = c
        .post(
            "/users/register",
            json!({"email": "x@example.com", "password": "long enough", "name": "X", "role": "staff"}),
        )
        .await;
    assert_eq!(sneaky.status, StatusCode::UNPROCESSABLE_ENTITY, "no role field in registration");
    // Promoting an existing customer keeps their password.
    c.post("/users/register", json!({"email": "cust@example.com", "password": "long enough", "name": "C"})).await;
    user_service::create_staff(&pool, "cust@example.com", "C", "ignored-password").await.unwrap();
    let promoted = c.post("/users/login", json!({"email": "cust@example.com", "password": "long enough"})).await;
    assert_eq!(promoted.json["user"]["role"], "staff", "{}", promoted.text);
}

#[tokio::test]
async fn registration_does_not_tell_which_emails_exist_and_attempts_are_limited() {
    let db = TestDb::new("users_enum");
    let c = start(&db).await;
    let first =
        c.post("/users/register", json!({"email": "dee@example.com", "password": "long enough", "name": "Dee"})).await;
    let taken =
        c.post("/users/register", json!({"email": "dee@example.com", "password": "other one!", "name": "Eve"})).await;
    let fresh =
        c.post("/users/register", json!({"email": "fay@example.com", "password": "other one!", "name": "Fay"})).await;
    assert_eq!((first.status, &first.json), (taken.status, &taken.json));
    assert_eq!((taken.status, &taken.json), (fresh.status, &fresh.json), "the same answer, taken or not");
    let still = c.post("/users/login", json!({"email": "dee@example.com", "password": "long enough"})).await;
    assert_eq!(still.status, StatusCode::OK, "the taken address's account is unchanged");
    // Logins per account: 10 in 15 minutes, whatever the address they come from.
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses
            .push(c.post("/users/login", json!({"email": "fay@example.com", "password": "guess guess"})).await.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 1, "{statuses:?}");
    let right = c.post("/users/login", json!({"email": "fay@example.com", "password": "other one!"})).await;
    assert_eq!(
        right.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the account is held for the window, even the right password"
    );
    assert!(right.header("retry-after").is_some());
}

#[tokio::test]
async fn wrong_passwords_duplicates_and_bad_input_are_refused() {
    let db = TestDb::new("users_invalid");
    let c = start(&db).await;
    let ok =
        c.post("/users/register", json!({"email": "bo@example.com", "password": "long enough", "name": "Bo"})).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED);
    let dup =
        c.post("/users/register", json!({"email": "BO@example.com", "password": "another one", "name": "Bo"})).await;
    assert_eq!(dup.status, StatusCode::ACCEPTED, "a taken address is not revealed");

    let wrong = c.post("/users/login", json!({"email": "bo@example.com", "password": "not the one"})).await;
    let unknown = c.post("/users/login", json!({"email": "nobody@example.com", "password": "long enough"})).await;
    assert_eq!((wrong.status, unknown.status), (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED));
    assert_eq!(wrong.json, unknown.json, "the answer does not say which emails exist");

    let short = c.post("/users/register", json!({"email": "cy@example.com", "password": "short", "name": "Cy"})).await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert_eq!(short.json["error"]["message"], "password: 8 to 128 characters");
    let bad_email =
        c.post("/users/register", json!({"email": "not-an-email", "password": "long enough", "name": "Cy"})).await;
    assert_eq!(bad_email.status, StatusCode::BAD_REQUEST);
    let missing = c.post("/users/register", json!({"email": "cy@example.com", "password": "long enough"})).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(c.get("/users/me").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(c.as_user("1", "staff").get("/users/12345").await.status, StatusCode::NOT_FOUND);
    assert_eq!(c.as_user("1", "staff").get("/users/x").await.status, StatusCode::BAD_REQUEST);
    let login_cy = c.post("/users/login", json!({"email": "cy@example.com", "password": "long enough"})).await;
    assert_eq!(login_cy.status, StatusCode::UNAUTHORIZED, "no refused registration left a user behind");
}
