//! The other floor (`weft-bench-floor … --engine httparse`): an HTTP/1.1 hop on
//! `httparse` alone, as pingora's codec is built, measured beside hyper's floor
//! to decide whether an own plaintext HTTP/1.1 path can take the sidecar under
//! issue 17's 1.3× nginx (README, "Instructions per request").
//!
//! Per downstream connection: one task, three buffers made once and reused
//! (what was read from downstream, what was read from upstream, what is
//! written next), one upstream connection made at the first request. A
//! request's head is parsed in place into headers on the stack, written again
//! without the hop-by-hop headers into the out buffer with the body bytes
//! already read, and sent with one write; the response likewise. No header
//! map, no body channel, no allocation per request in steady state.
//!
//! With `typed`, each head also becomes the `http` crate's types on the way
//! through (method, URI, status, a `HeaderMap` whose values share one copy of
//! the head), as the sidecar's request path holds a request today, and is
//! written again from those: the cost of keeping the sidecar's logic on
//! `http::Request` with an own codec under it.
//!
//! A prototype for measuring, not a proxy to ship: it frames bodies by
//! `Content-Length` only (a chunked request or response is refused with 501 /
//! 502, where the sidecar would relay the chunks), answers a malformed or
//! oversized head with 400 / 431 and closes, and knows nothing of
//! `Expect: 100-continue`, upgrades or timeouts.

use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod typed;

/// The sidecar's listener limits (net/listen.rs): 60 KiB heads, 100 headers.
const MAX_HEAD: usize = 60 * 1024;
const MAX_HEADERS: usize = 100;
const READ_SIZE: usize = 8 * 1024;

pub async fn serve(listen: SocketAddr, upstream: SocketAddr, typed: bool) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = Hop::new(stream, upstream, typed).run().await;
        });
    }
}

/// What a parsed head says about the message after it.
struct Framing {
    /// Bytes of the head, to drop from the read buffer.
    head_len: usize,
    /// Bytes of body that follow the head.
    body_len: u64,
    /// The sender asked to close after this exchange.
    close: bool,
    /// A request whose response has no body whatever its head says (`HEAD`).
    bodiless_response: bool,
}

enum Head {
    Complete(Framing),
    Partial,
    /// Answered with this status, then the connection closes.
    Refused(&'static [u8]),
}

struct Hop {
    typed: bool,
    down: TcpStream,
    upstream: SocketAddr,
    up: Option<TcpStream>,
    down_buf: Vec<u8>,
    up_buf: Vec<u8>,
    out: Vec<u8>,
}

impl Hop {
    fn new(down: TcpStream, upstream: SocketAddr, typed: bool) -> Hop {
        Hop {
            typed,
            down,
            upstream,
            up: None,
            down_buf: Vec::with_capacity(READ_SIZE),
            up_buf: Vec::with_capacity(READ_SIZE),
            out: Vec::with_capacity(READ_SIZE),
        }
    }

    async fn run(mut self) -> io::Result<()> {
        loop {
            // A request's head.
            let req = loop {
                self.out.clear();
                let head = if self.typed { typed::request_head } else { request_head };
                match head(&self.down_buf, &mut self.out) {
                    Head::Complete(f) => break f,
                    Head::Refused(status) => return self.down.write_all(status).await,
                    Head::Partial if self.down_buf.len() >= MAX_HEAD => {
                        return self.down.write_all(REFUSED_431).await;
                    }
                    Head::Partial => {
                        if read_more(&mut self.down, &mut self.down_buf).await? == 0 {
                            return Ok(());
                        }
                    }
                }
            };
            self.down_buf.drain(..req.head_len);
            if self.up.is_none() {
                let up = TcpStream::connect(self.upstream).await?;
                let _ = up.set_nodelay(true);
                self.up = Some(up);
            }
            let Some(up) = self.up.as_mut() else { return Ok(()) };
            relay_body(&mut self.down, up, &mut self.down_buf, &mut self.out, req.body_len).await?;

            // Its response's head.
            let resp = loop {
                self.out.clear();
                let head = if self.typed { typed::response_head } else { response_head };
                match head(&self.up_buf, &mut self.out) {
                    Head::Complete(f) => break f,
                    Head::Refused(status) => return self.down.write_all(status).await,
                    Head::Partial if self.up_buf.len() >= MAX_HEAD => {
                        return self.down.write_all(REFUSED_502).await;
                    }
                    Head::Partial => {
                        if read_more(up, &mut self.up_buf).await? == 0 {
                            return self.down.write_all(REFUSED_502).await;
                        }
                    }
                }
            };
            self.up_buf.drain(..resp.head_len);
            let body_len = if req.bodiless_response { 0 } else { resp.body_len };
            relay_body(up, &mut self.down, &mut self.up_buf, &mut self.out, body_len).await?;
            if resp.close {
                self.up = None;
            }
            if req.close {
                return Ok(());
            }
        }
    }
}

/// Sends `out` (a head) with the first `len` bytes of body: those already in
/// `buf` go with the head in one write, the rest is read from `from` and
/// written as it comes. What follows the body stays in `buf`.
async fn relay_body(
    from: &mut TcpStream,
    to: &mut TcpStream,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    len: u64,
) -> io::Result<()> {
    let have = usize::try_from(len).unwrap_or(usize::MAX).min(buf.len());
    out.extend_from_slice(&buf[..have]);
    buf.drain(..have);
    to.write_all(out).await?;
    let mut left = len - have as u64;
    while left > 0 {
        if read_more(from, buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        to.write_all(&buf[..n]).await?;
        buf.drain(..n);
        left -= n as u64;
    }
    Ok(())
}

async fn read_more(from: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(READ_SIZE);
    from.read_buf(buf).await
}

const REFUSED_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const REFUSED_431: &[u8] =
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const REFUSED_501: &[u8] = b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const REFUSED_502: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Parses a request head in `buf`, writing it for the upstream into `out`.
fn request_head(buf: &[u8], out: &mut Vec<u8>) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => return Head::Refused(REFUSED_431),
        Err(_) => return Head::Refused(REFUSED_400),
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Head::Refused(REFUSED_400);
    };
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let bodiless_response = method == "HEAD";
    match headers_out(raw(req.headers), version, out) {
        Some((body_len, close)) => Head::Complete(Framing { head_len, body_len, close, bodiless_response }),
        None => Head::Refused(REFUSED_501),
    }
}

/// Parses a response head in `buf`, writing it for the downstream into `out`.
fn response_head(buf: &[u8], out: &mut Vec<u8>) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Refused(REFUSED_502),
    };
    let (Some(version), Some(code)) = (resp.version, resp.code) else { return Head::Refused(REFUSED_502) };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&three_digits(code));
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    match headers_out(raw(resp.headers), version, out) {
        // 1xx, 204 and 304 have no body whatever they say.
        Some((_, close)) if code < 200 || code == 204 || code == 304 => {
            Head::Complete(Framing { head_len, body_len: 0, close, bodiless_response: false })
        }
        Some((body_len, close)) => Head::Complete(Framing { head_len, body_len, close, bodiless_response: false }),
        None => Head::Refused(REFUSED_502),
    }
}

/// Writes the end-to-end headers into `out` and the blank line; returns the
/// body's length and whether the sender asked to close, or `None` for a body
/// this prototype cannot frame (chunked, or a length it cannot read).
fn headers_out<'a>(
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    version: u8,
    out: &mut Vec<u8>,
) -> Option<(u64, bool)> {
    let mut body_len = 0u64;
    // HTTP/1.0 closes unless asked to keep alive.
    let mut close = version == 0;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"content-length") {
            body_len = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return None;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close = value.eq_ignore_ascii_case(b"close") || (close && !value.eq_ignore_ascii_case(b"keep-alive"));
            continue;
        } else if name.eq_ignore_ascii_case(b"keep-alive") || name.eq_ignore_ascii_case(b"proxy-connection") {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Some((body_len, close))
}

fn raw<'a>(headers: &'a [httparse::Header<'a>]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    headers.iter().map(|h| (h.name.as_bytes(), h.value))
}

fn three_digits(code: u16) -> [u8; 3] {
    let c = code.min(999);
    [b'0' + (c / 100) as u8, b'0' + (c / 10 % 10) as u8, b'0' + (c % 10) as u8]
}
