//! user-service against the real MariaDB: each test in a database of its own.

use http::StatusCode;
use serde_json::json;
use user_service::{app, AppState, Config};
use weft_services_common::jwt;
use weft_services_common::testkit::{self, Client, TestDb};

const SECRET: &str = "test-secret";

async fn start(db: &TestDb) -> Client {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone(),
        jwt_secret: SECRET.into(),
        jwt_ttl_secs: 600,
    };
    Client::new(testkit::spawn(app(AppState::connect(&config).await.expect("start"))).await)
}

#[tokio::test]
async fn register_login_and_the_token_names_the_user() {
    let db = TestDb::new("users");
    let c = start(&db).await;
    let reg = c
        .post("/users/register", json!({"email": "Ada@Example.com", "password": "correct horse", "name": "Ada"}))
        .await;
    assert_eq!(reg.status, StatusCode::CREATED, "{}", reg.text);
    assert_eq!(reg.json["email"], "ada@example.com", "emails are normalised");
    assert!(reg.json.get("password_hash").is_none(), "the hash never leaves the service");
    let id = reg.json["id"].as_u64().unwrap();

    let login = c.post("/users/login", json!({"email": "ada@example.com", "password": "correct horse"})).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    assert_eq!(login.json["token_type"], "Bearer");
    let claims = jwt::verify(SECRET, login.json["token"].as_str().unwrap()).expect("a valid token");
    assert_eq!((claims.sub, claims.iss.as_str(), claims.aud.as_str()), (id.to_string(), jwt::ISSUER, jwt::AUDIENCE));
    assert_eq!(claims.exp - claims.iat, 600);

    let me = c.with("x-user-id", &id.to_string()).get("/users/me").await;
    assert_eq!(me.json, json!({"id": id, "email": "ada@example.com", "name": "Ada"}));
    assert_eq!(c.get(&format!("/users/{id}")).await.json["name"], "Ada");
}

#[tokio::test]
async fn wrong_passwords_duplicates_and_bad_input_are_refused() {
    let db = TestDb::new("users_invalid");
    let c = start(&db).await;
    let ok =
        c.post("/users/register", json!({"email": "bo@example.com", "password": "long enough", "name": "Bo"})).await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let dup =
        c.post("/users/register", json!({"email": "BO@example.com", "password": "another one", "name": "Bo"})).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);

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
    assert_eq!(c.get("/users/12345").await.status, StatusCode::NOT_FOUND);
    assert_eq!(c.get("/users/x").await.status, StatusCode::BAD_REQUEST);
    let login_cy = c.post("/users/login", json!({"email": "cy@example.com", "password": "long enough"})).await;
    assert_eq!(login_cy.status, StatusCode::UNAUTHORIZED, "no refused registration left a user behind");
}
