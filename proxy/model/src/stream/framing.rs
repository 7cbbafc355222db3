//! Newline-delimited JSON over a long-lived HTTP/2 body, both ways: the
//! framing of the push protocol, shared by the sidecar and the control plane.

/// Errors a body can yield (the sidecar's body error type too).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A body fed by a channel: each message is one frame.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// A body and the sender that feeds it; the body ends when the sender drops.
    pub fn new(depth: usize) -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(depth);
        (tx, ChannelBody { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// Encodes one message as a JSON line.
pub fn line<T: Serialize>(message: &T) -> Bytes {
    let mut v = serde_json::to_vec(message).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Reads JSON lines from a body. Each byte is scanned for the newline once
/// (linear in what the peer sends), and a line may grow to `max` bytes only.
#[derive(Debug)]
pub struct Lines<B> {
    body: B,
    buf: BytesMut,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
    max: usize,
}

/// Why a stream of lines ended badly.
#[derive(Debug, thiserror::Error)]
pub enum LinesError {
    #[error("stream: {0}")]
    Body(BoxError),
    #[error("bad message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("message over {0} bytes")]
    TooLong(usize),
}

/// Longest line a sidecar accepts from the control plane (a config for a
/// large mesh stays well below this).
pub const MAX_LINE: usize = 64 * 1024 * 1024;

/// Longest line the control plane accepts from a sidecar: a Hello or an ACK
/// (a NACK carries the reason) is a few kilobytes.
pub const MAX_CLIENT_LINE: usize = 64 * 1024;

impl<B> Lines<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Lines of at most [`MAX_LINE`] bytes.
    pub fn new(body: B) -> Self {
        Self::with_max(body, MAX_LINE)
    }

    /// Lines of at most `max` bytes: a longer one ends the stream with [`LinesError::TooLong`].
    pub fn with_max(body: B, max: usize) -> Self {
        Lines { body, buf: BytesMut::new(), scanned: 0, max }
    }

    /// The next message; `None` when the stream ended cleanly.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, LinesError> {
        loop {
            if let Some(i) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(self.scanned + i + 1);
                self.scanned = 0;
                if line.len() > self.max + 1 {
                    return Err(LinesError::TooLong(self.max));
                }
                if line.len() > 1 {
                    return Ok(Some(serde_json::from_slice(&line[..line.len() - 1])?));
                }
                continue;
            }
            self.scanned = self.buf.len();
            if self.buf.len() > self.max {
                return Err(LinesError::TooLong(self.max));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(LinesError::Body(e.into())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}
