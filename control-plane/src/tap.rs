//! `weftctl tap`: the live requests of one sidecar (its `/tap` on the admin listener), one
//! JSON line per request as it finishes, filtered by method, authority and path prefix —
//! `linkerd viz tap` for Weft.

use http_body_util::BodyExt;

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    pub method: Option<String>,
    pub authority: Option<String>,
    pub path: Option<String>,
    pub max: usize,
}

impl Watch {
    fn query(&self) -> String {
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        let mut q = format!("max={}", self.max);
        for (k, v) in [("method", &self.method), ("authority", &self.authority), ("path", &self.path)] {
            if let Some(v) = v {
                q.push_str(&format!("&{k}={}", enc(v)));
            }
        }
        q
    }
}

/// Streams the matching lines of the sidecar whose admin listener is `admin` to `line`,
/// after `started` once the sidecar watches; returns when `max` lines came or it closes.
pub async fn tap(
    admin: &str,
    watch: &Watch,
    started: impl FnOnce(),
    mut line: impl FnMut(&str),
) -> Result<usize, String> {
    let req = http::Request::get(format!("/tap?{}", watch.query()))
        .header(http::header::HOST, admin)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = weft_proxy::net::client::send_to(admin, req).await.map_err(|e| format!("{admin}: {e}"))?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("{admin} answered {} (a sidecar's admin listener?)", resp.status()));
    }
    started();
    let mut body = resp.into_body();
    let (mut pending, mut count) = (Vec::new(), 0);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() else { continue };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let text: Vec<u8> = pending.drain(..=end).collect();
            line(String::from_utf8_lossy(&text[..end]).as_ref());
            count += 1;
        }
    }
    Ok(count)
}
