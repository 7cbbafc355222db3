//! The access log: one JSON line per request on stdout, written by its own
//! thread so a slow terminal or pipe never stalls a request. When the writer
//! falls behind, lines are dropped and counted, never queued without bound.

use prometheus::IntCounter;
use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};

/// Lines buffered before new ones are dropped.
const QUEUE: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<String>>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Writes lines to stdout.
    pub fn stdout(dropped: IntCounter) -> Self {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("weft-access-log".into())
            .spawn(move || write_loop(rx, std::io::stdout()))
            .map(|_| AccessLog { tx: Some(tx), dropped: dropped.clone() })
            .unwrap_or_else(|e| {
                tracing::error!("access log disabled: cannot start its thread: {e}");
                AccessLog { tx: None, dropped }
            })
    }

    pub fn disabled(dropped: IntCounter) -> Self {
        AccessLog { tx: None, dropped }
    }

    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn write(&self, line: String) {
        if let Some(tx) = &self.tx {
            if tx.try_send(line).is_err() {
                self.dropped.inc();
            }
        }
    }
}

/// Batches lines and flushes whenever the queue runs dry.
fn write_loop(rx: Receiver<String>, out: std::io::Stdout) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out.lock());
    while let Ok(line) = rx.recv() {
        let _ = writeln!(out, "{line}");
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    let _ = writeln!(out, "{line}");
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = out.flush();
    }
}
