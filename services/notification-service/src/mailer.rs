//! Mail for each notification, sent to a mail API outside the mesh (`MAIL_URL`,
//! e.g. `http://mail.partner.example/send`) through the sidecar, which lets it
//! out only because a ServiceEntry names that host (the mesh's egress
//! allow-list under REGISTRY_ONLY).
//!
//! The notifications table is the outbox: a row is mailed after it is stored,
//! marked `mailed_at` only once the mail API has answered, and retried with
//! back-off while it cannot be reached (a 5xx, a 408 or 429, a timeout, the
//! sidecar's 502 for a host it may not reach), so no notification is lost to an
//! outage or a missing ServiceEntry. Rows are claimed with `FOR UPDATE SKIP
//! LOCKED`, so several instances never mail the same row at once, and each mail
//! carries `Idempotency-Key: <event_id>` for the API to drop a repeat (a reply
//! lost after the API accepted). A 4xx other than 408/429 is the API refusing
//! that mail for good: recorded in `mail_status`, logged, not retried.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use mysql_async::prelude::*;
use mysql_async::TxOpts;
use weft_services_common::env;

use crate::AppState;

/// Rows mailed per transaction.
pub const BATCH: u32 = 20;
/// How long one mail may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the outbox is looked at when nothing woke the mailer (another instance's rows).
pub const IDLE_POLL: Duration = Duration::from_secs(2);
/// The back-off after a failed send: doubling from one second to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

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
    let mut backoff = Duration::from_secs(1);
    loop {
        match send_batch(&s, &mail).await {
            Ok(0) => {
                backoff = Duration::from_secs(1);
                let _ = tokio::time::timeout(IDLE_POLL, s.outbox.notified()).await;
            }
            Ok(_) => backoff = Duration::from_secs(1),
            Err(why) => {
                tracing::warn!(%why, retry_in = ?backoff, mail = %mail.authority, "mail not sent; will retry");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Mails up to [`BATCH`] unmailed rows: how many were settled, or why the
/// batch stopped (what was settled before is kept).
async fn send_batch(s: &AppState, mail: &Mail) -> Result<usize, String> {
    let mut conn = s.pool.get_conn().await.map_err(|e| e.to_string())?;
    let mut tx = conn.start_transaction(TxOpts::default()).await.map_err(|e| e.to_string())?;
    let rows: Vec<(u64, String, String, String, String)> = tx
        .exec(
            "SELECT id, event_id, user_id, kind, message FROM notifications WHERE mailed_at IS NULL ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED",
            (BATCH,),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut settled = 0;
    let mut stopped = None;
    for (id, event_id, user_id, kind, message) in rows {
        let status = match send(mail, &event_id, &user_id, &kind, &message).await {
            Ok(status) => status,
            Err(why) => {
                stopped = Some(why);
                break;
            }
        };
        if !status.is_success() {
            tracing::error!(event = %event_id, %status, "the mail API refused this mail; not retried");
        }
        tx.exec_drop("UPDATE notifications SET mailed_at = NOW(), mail_status = ? WHERE id = ?", (status.as_u16(), id))
            .await
            .map_err(|e| e.to_string())?;
        settled += 1;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    match stopped {
        Some(why) => Err(why),
        None => Ok(settled),
    }
}

/// One mail: the API's final answer, or why it should be tried again.
async fn send(mail: &Mail, event_id: &str, user_id: &str, kind: &str, message: &str) -> Result<StatusCode, String> {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("idempotency-key", HeaderValue::from_str(event_id).map_err(|e| e.to_string())?);
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
