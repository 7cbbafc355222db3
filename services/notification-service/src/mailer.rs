//! Mail for each notification, sent to a mail API outside the mesh (`MAIL_URL`,
//! e.g. `http://mail.partner.example/send`) through the sidecar, which lets it
//! out only because a ServiceEntry names that host (the mesh's egress
//! allow-list under REGISTRY_ONLY).
//!
//! The notifications table is the outbox: a row is mailed after it is stored
//! and marked `mailed_at` only once the mail API has answered. A batch of due
//! rows is claimed in one short statement (`mail_claim`, for
//! [`CLAIM_FOR`]), then sent outside any transaction, so a slow or hanging mail
//! API never holds a lock the consumer's inserts wait on; several instances
//! never mail one row at once, and a claim whose instance died expires. A send
//! that fails (a 5xx, a 408 or 429, a timeout, the sidecar's 502 for a host it
//! may not reach) puts that row back with its own back-off (2^attempts seconds,
//! at most [`MAX_BACKOFF`]), so no notification is lost to an outage or a
//! missing ServiceEntry, and one row that always fails delays no other. Each
//! mail carries `Idempotency-Key: <event_id>` for the API to drop a repeat (a
//! reply lost after the API accepted). A 4xx other than 408/429 is the API
//! refusing that mail for good: recorded in `mail_status`, logged, not retried.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use mysql_async::prelude::*;
use weft_services_common::env;

use crate::AppState;

/// Rows claimed at once.
pub const BATCH: u32 = 20;
/// How long a claim holds its rows (longer than a batch can take: [`BATCH`] × [`SEND_TIMEOUT`]).
pub const CLAIM_FOR: Duration = Duration::from_secs(120);
/// How long one mail may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the outbox is looked at when nothing woke the mailer (another instance's rows).
pub const IDLE_POLL: Duration = Duration::from_secs(2);
/// A row's back-off after a failed send: doubling from one second to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Where mail goes.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The API's host (and port, when not 80): the `Host` the sidecar routes by.
    pub authority: String,
    pub path: String,
    /// Where the request is sent: the sidecar's outbound listener, or without one the host itself.
    pub via: SocketAddr,
}

impl Mail {
    /// `MAIL_URL` (unset: no mail is sent), through `MESH_OUTBOUND` when set.
    pub fn from_env() -> anyhow::Result<Option<Mail>> {
        let url = env::var("MAIL_URL", "");
        if url.is_empty() {
            return Ok(None);
        }
        let mesh = env::var("MESH_OUTBOUND", "");
        let via = (!mesh.is_empty())
            .then(|| mesh.parse().map_err(|e| anyhow::anyhow!("MESH_OUTBOUND={mesh:?}: {e}")))
            .transpose()?;
        Self::parse(&url, via).map(Some)
    }

    /// An `http://host[:port]/path` URL; without `via`, the host must be an address.
    pub fn parse(url: &str, via: Option<SocketAddr>) -> anyhow::Result<Mail> {
        let uri: axum::http::Uri = url.parse().map_err(|e| anyhow::anyhow!("MAIL_URL={url:?}: {e}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "MAIL_URL={url:?}: http:// only (the sidecar originates TLS when a DestinationRule says tls: SIMPLE)"
        );
        let authority = uri.authority().ok_or_else(|| anyhow::anyhow!("MAIL_URL={url:?} names no host"))?;
        anyhow::ensure!(
            !authority.as_str().contains('@'),
            "MAIL_URL: no user or password in the URL (it would be sent in the clear as the Host)"
        );
        let via = match via {
            Some(v) => v,
            None => format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80)).parse().map_err(|_| {
                anyhow::anyhow!("MAIL_URL={url:?}: without MESH_OUTBOUND the host must be an IP address")
            })?,
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Ok(Mail { authority: authority.as_str().to_string(), path, via })
    }
}

/// Mails the outbox forever.
pub async fn run(s: Arc<AppState>, mail: Mail) {
    loop {
        match send_batch(&s, &mail).await {
            Ok(0) => {
                let _ = tokio::time::timeout(IDLE_POLL, s.outbox.notified()).await;
            }
            Ok(_) => {}
            Err(why) => {
                tracing::warn!(%why, "the outbox cannot be read; retrying");
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }
}

/// Claims up to [`BATCH`] due rows and sends them: how many were claimed, or a
/// database error (a claim left behind expires after [`CLAIM_FOR`]).
async fn send_batch(s: &AppState, mail: &Mail) -> Result<usize, mysql_async::Error> {
    let claim = uuid::Uuid::new_v4().to_string();
    let mut conn = s.pool.get_conn().await?;
    conn.exec_drop(
        "UPDATE notifications SET mail_claim = ?, mail_claimed_until = NOW() + INTERVAL ? SECOND
         WHERE mailed_at IS NULL AND (mail_next_at IS NULL OR mail_next_at <= NOW())
           AND (mail_claimed_until IS NULL OR mail_claimed_until < NOW())
         ORDER BY id LIMIT ?",
        (&claim, CLAIM_FOR.as_secs(), BATCH),
    )
    .await?;
    let rows: Vec<(u64, String, String, String, String, u32)> = conn
        .exec(
            "SELECT id, event_id, user_id, kind, message, mail_attempts FROM notifications
             WHERE mail_claim = ? AND mailed_at IS NULL ORDER BY id",
            (&claim,),
        )
        .await?;
    drop(conn);
    let claimed = rows.len();
    for (id, event_id, user_id, kind, message, attempts) in rows {
        let sent = send(mail, &event_id, &user_id, &kind, &message).await;
        let mut conn = s.pool.get_conn().await?;
        match sent {
            Ok(status) => {
                if !status.is_success() {
                    tracing::error!(event = %event_id, %status, "the mail API refused this mail; not retried");
                }
                conn.exec_drop(
                    "UPDATE notifications SET mailed_at = NOW(), mail_status = ?, mail_claim = NULL WHERE id = ? AND mail_claim = ?",
                    (status.as_u16(), id, &claim),
                )
                .await?;
            }
            Err(why) => {
                let backoff = Duration::from_secs(1u64 << attempts.min(16)).min(MAX_BACKOFF);
                tracing::warn!(%why, event = %event_id, attempts = attempts + 1, retry_in = ?backoff, "mail not sent");
                conn.exec_drop(
                    "UPDATE notifications SET mail_attempts = mail_attempts + 1, mail_next_at = NOW() + INTERVAL ? SECOND,
                     mail_claim = NULL, mail_claimed_until = NULL WHERE id = ? AND mail_claim = ?",
                    (backoff.as_secs(), id, &claim),
                )
                .await?;
            }
        }
    }
    Ok(claimed)
}

/// One mail: the API's final answer, or why it should be tried again.
async fn send(mail: &Mail, event_id: &str, user_id: &str, kind: &str, message: &str) -> Result<StatusCode, String> {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    // Event ids are checked at ingest (consumer.rs); a notice's is a UUID.
    if let Ok(key) = HeaderValue::from_str(event_id) {
        headers.insert("idempotency-key", key);
    }
    let body = serde_json::json!({"to_user": user_id, "subject": kind, "text": message}).to_string();
    let call = weft_services_common::peers::send(
        mail.via,
        &mail.authority,
        Method::POST,
        &mail.path,
        headers,
        Some(body.into()),
    );
    let answer = match tokio::time::timeout(SEND_TIMEOUT, call).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(format!("no answer within {SEND_TIMEOUT:?}")),
    };
    let status = answer.status;
    let retry =
        status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS;
    if retry {
        return Err(format!("{} answered {status}", mail.authority));
    }
    tracing::info!(event = %event_id, %status, mail = %mail.authority, "mailed");
    Ok(status)
}
