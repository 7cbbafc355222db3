//! Bytes relayed between two connections (passed-through TCP, mesh TCP): both directions
//! at once, each end of stream passed on as a half-close, counted as they go, and closed
//! after Envoy's TCP idle timeout with nothing read or written.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Envoy's `tcp_proxy` idle timeout (Istio's `connectionPool.tcp.idleTimeout` default): a
/// relay with nothing read or written for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Bytes each way so far: readable while the relay runs, and after it was cut short.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    received: AtomicU64,
    sent: AtomicU64,
}

impl Counts {
    /// Bytes from the downstream.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Relaxed)
    }

    /// Bytes back to the downstream.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }

    fn total(&self) -> u64 {
        self.received() + self.sent()
    }
}

/// Connects to `target` and [`relay`]s `downstream` to it, calling `opened` once connected:
/// Envoy's flags, `-`, or `UF` when the connection failed.
pub(crate) async fn connect_and_relay<D>(
    downstream: D,
    target: std::net::SocketAddr,
    opened: impl FnOnce(),
    counts: &Counts,
) -> &'static str
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::net::TcpStream::connect(target).await {
        Ok(upstream) => {
            let _ = upstream.set_nodelay(true);
            opened();
            if let Err(e) = relay(downstream, upstream, counts, IDLE_TIMEOUT).await {
                tracing::debug!("TCP to {target} ended: {e}");
            }
            "-"
        }
        Err(e) => {
            tracing::debug!("TCP to {target}: {e}");
            "UF"
        }
    }
}

/// Copies bytes both ways between `downstream` and `upstream` until both directions have
/// ended, the first error, or `idle` with nothing moving (then both are dropped, closed).
pub(crate) async fn relay<D, U>(downstream: D, upstream: U, counts: &Counts, idle: Duration) -> std::io::Result<()>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut from_down, mut to_down) = tokio::io::split(downstream);
    let (mut from_up, mut to_up) = tokio::io::split(upstream);
    let both = async {
        tokio::try_join!(
            pipe(&mut from_down, &mut to_up, &counts.received),
            pipe(&mut from_up, &mut to_down, &counts.sent)
        )
    };
    tokio::select! {
        done = both => done.map(|_| ()),
        () = quiet_for(idle, counts) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("idle for {idle:?}"))),
    }
}

/// Resolves once `counts` stood still for `idle` (checked every quarter of it).
async fn quiet_for(idle: Duration, counts: &Counts) {
    let step = (idle / 4).max(Duration::from_millis(10));
    let (mut seen, mut quiet) = (counts.total(), Duration::ZERO);
    loop {
        tokio::time::sleep(step).await;
        let now = counts.total();
        quiet = if now == seen { quiet + step } else { Duration::ZERO };
        seen = now;
        if quiet >= idle {
            return;
        }
    }
}

/// One direction: reads until end of stream, then half-closes the other side.
async fn pipe<R, W>(from: &mut R, to: &mut W, count: &AtomicU64) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        count.fetch_add(n as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_relay_nothing_moves_through_is_closed_after_the_idle_timeout() {
        let (app, mut app_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let counts = Counts::default();
        let relaying = relay(app, upstream, &counts, Duration::from_secs(60));
        tokio::pin!(relaying);
        app_peer.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tokio::select! {
            _ = &mut relaying => panic!("ended early"),
            read = upstream_peer.read_exact(&mut buf) => read.map(|_| ()).unwrap(),
        }
        assert_eq!(&buf, b"ping");
        assert_eq!((counts.received(), counts.sent()), (4, 0));
        // Paused time runs forward to each timer: with nothing moving, the relay ends idle.
        let ended = relaying.await.unwrap_err();
        assert_eq!(ended.kind(), std::io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn each_end_of_stream_is_passed_on_and_the_other_direction_goes_on() {
        let (app, mut app_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let counts = Counts::default();
        let server = async move {
            let mut got = Vec::new();
            upstream_peer.read_to_end(&mut got).await.unwrap(); // the app's half-close arrives
            upstream_peer.write_all(b"answer").await.unwrap(); // and the answer still goes back
            upstream_peer.shutdown().await.unwrap();
            got
        };
        let client = async move {
            app_peer.write_all(b"question").await.unwrap();
            app_peer.shutdown().await.unwrap();
            let mut back = Vec::new();
            app_peer.read_to_end(&mut back).await.unwrap();
            back
        };
        let (relayed, got, back) = tokio::join!(relay(app, upstream, &counts, IDLE_TIMEOUT), server, client);
        relayed.unwrap();
        assert_eq!((got.as_slice(), back.as_slice()), (&b"question"[..], &b"answer"[..]));
        assert_eq!((counts.received(), counts.sent()), (8, 6));
    }
}
