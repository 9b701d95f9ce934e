//! The journal writer: every request and response is recorded off the hot path, in batches.
//!
//! The hot path hands a [`JournalRow`] (already masked) to a bounded queue; a dedicated thread
//! drains it into the store in transactions of up to `batch_size` rows, or whatever arrived within
//! `flush_interval`. When the queue is full the sender waits (back-pressure) rather than dropping a
//! row: the journal is the record of what happened to money. Dropping the [`JournalHandle`]s and
//! calling [`JournalWriter::finish`] flushes everything before shutdown completes.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::store::{JournalRow, Store};

/// A decoded message to journal: the writer thread masks it, fingerprints its PAN and builds the
/// row, so the hot path only clones the message (a vector of `Bytes` slices).
pub struct MessageEntry {
    pub msg: codecs::iso8583::Message,
    /// The answer to `msg`, journaled in the same row (an acquirer exchange).
    pub response: Option<codecs::iso8583::Message>,
    pub direction: crate::store::Direction,
    pub at_ms: u64,
    pub route: Option<String>,
    pub latency_us: Option<u64>,
}

/// What goes to the writer.
pub enum JournalItem {
    Row(Box<JournalRow>),
    Message(Box<MessageEntry>),
}

/// The keyed PAN fingerprint the writer applies (HMAC-SHA256 under the node's key).
pub type Fingerprint = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Cheap to clone; one per connection task.
#[derive(Clone)]
pub struct JournalHandle {
    tx: mpsc::Sender<JournalItem>,
}

impl JournalHandle {
    /// Queues a row, waiting for room when the writer is behind.
    pub async fn record(&self, row: JournalRow) {
        // The writer only stops after every handle is dropped, so a send cannot find it gone
        // unless the writer thread panicked; then there is nothing better to do than carry on.
        let _ = self.tx.send(JournalItem::Row(Box::new(row))).await;
    }

    /// Queues a message; the writer builds its masked row.
    pub async fn record_message(&self, entry: MessageEntry) {
        let _ = self.tx.send(JournalItem::Message(Box::new(entry))).await;
    }

    /// Queues a row from synchronous code (blocking when full). Not for async contexts.
    pub fn record_blocking(&self, row: JournalRow) {
        let _ = self.tx.blocking_send(JournalItem::Row(Box::new(row)));
    }
}

pub struct JournalWriter {
    thread: Option<JoinHandle<()>>,
}

impl JournalWriter {
    /// Starts the writer thread.
    pub fn start(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        batch_size: usize,
        flush_interval: Duration,
        capacity: usize,
        fingerprint: Fingerprint,
    ) -> (JournalWriter, JournalHandle) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || run(rx, store, metrics, batch_size.max(1), flush_interval, fingerprint))
            .expect("spawn journal writer thread");
        (JournalWriter { thread: Some(thread) }, JournalHandle { tx })
    }

    /// Waits until every queued row is written. All handles must have been dropped first, or this
    /// waits for them.
    pub fn finish(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn to_row(item: JournalItem, fingerprint: &Fingerprint) -> JournalRow {
    match item {
        JournalItem::Row(r) => *r,
        JournalItem::Message(e) => {
            let mut row = crate::wire::journal_row(
                &e.msg,
                e.direction,
                e.at_ms,
                |p| fingerprint(p),
                e.route.as_deref(),
                e.latency_us,
            );
            if let Some(rsp) = &e.response {
                row.response_code = rsp.text(39).map(|c| c.into_owned());
                row.message_masked = format!(
                    "{{\"request\":{},\"response\":{}}}",
                    row.message_masked,
                    rsp.to_masked_json_string()
                );
            }
            row
        }
    }
}

fn run(
    mut rx: mpsc::Receiver<JournalItem>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    batch_size: usize,
    flush_interval: Duration,
    fingerprint: Fingerprint,
) {
    let mut batch = Vec::with_capacity(batch_size);
    // Block for the first row of a batch; then take what else is there, up to the batch size,
    // waiting at most one flush interval for stragglers.
    while let Some(item) = rx.blocking_recv() {
        batch.push(to_row(item, &fingerprint));
        let deadline = std::time::Instant::now() + flush_interval;
        while batch.len() < batch_size {
            match rx.try_recv() {
                Ok(item) => batch.push(to_row(item, &fingerprint)),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if std::time::Instant::now() >= deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        write(&*store, &metrics, &mut batch);
    }
    write(&*store, &metrics, &mut batch);
}

fn write(store: &dyn Store, metrics: &Metrics, batch: &mut Vec<JournalRow>) {
    if batch.is_empty() {
        return;
    }
    // A failed batch is retried a few times (SQLite busy, disk hiccup) before it is reported.
    for attempt in 0..5u32 {
        match store.journal_append(batch) {
            Ok(()) => {
                metrics.journal_rows.inc_by(batch.len() as u64);
                batch.clear();
                return;
            }
            Err(e) => {
                metrics.journal_errors.inc();
                tracing::error!(error = %e, attempt, rows = batch.len(), "journal batch failed");
                std::thread::sleep(Duration::from_millis(50 << attempt));
            }
        }
    }
    tracing::error!(rows = batch.len(), "journal batch abandoned after retries");
    batch.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Direction;
    use crate::store::sqlite::SqliteStore;

    fn row(i: u64) -> JournalRow {
        JournalRow {
            at_ms: i,
            direction: Direction::AcquirerOut,
            mti: "0110".into(),
            stan: Some(format!("{i:06}")),
            rrn: None,
            terminal_id: None,
            pan_masked: None,
            pan_fingerprint: None,
            amount_minor: None,
            currency: None,
            response_code: Some("00".into()),
            route: None,
            latency_us: None,
            message_masked: "{}".into(),
        }
    }

    #[test]
    fn every_row_is_written_in_order_before_finish_returns() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let metrics = Arc::new(Metrics::new("t"));
        let (writer, handle) = JournalWriter::start(
            store.clone(),
            metrics.clone(),
            64,
            Duration::from_millis(5),
            16,
            Arc::new(|p| p.len().to_string()),
        );
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let h = handle.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        h.record_blocking(row(t * 1000 + i));
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        drop(handle);
        writer.finish();
        assert_eq!(store.journal_count().unwrap(), 2000);
        assert_eq!(metrics.journal_rows.get(), 2000);
        // Per sender, rows keep their order.
        let rows = store.journal_read(0, 2000).unwrap();
        let mine: Vec<u64> = rows.iter().map(|r| r.at_ms).filter(|a| *a < 1000).collect();
        assert_eq!(mine, (0..500).collect::<Vec<_>>());
    }
}
