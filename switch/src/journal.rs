//! The journal: every exchange with an acquirer (request and answer in one row, masked), and
//! the switch's other records, committed by the decision state's writer thread in the same
//! transaction as the state the answer depends on (group commit: one sync for every row and
//! change ready at once; see [`crate::state`]). The shell queues an answer's row and waits until
//! it is durable before the answer leaves; a store that refuses commits keeps the rows in memory
//! and retries them, while new requests are answered 96 (see `engine`).

use std::sync::Arc;

use crate::state::StateBook;
use crate::store::JournalRow;

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
    book: Arc<StateBook>,
}

impl JournalHandle {
    pub(crate) fn new(book: Arc<StateBook>) -> Self {
        JournalHandle { book }
    }

    /// Queues a row for the next commit; false when the store has refused so many rows that
    /// no more are taken (see [`crate::state::MAX_PENDING_JOURNAL`]).
    pub fn record(&self, row: JournalRow) -> bool {
        self.book.record_journal(JournalItem::Row(Box::new(row)))
    }

    /// Queues a message; the writer builds its masked row.
    pub fn record_message(&self, entry: MessageEntry) -> bool {
        self.book.record_journal(JournalItem::Message(Box::new(entry)))
    }

    /// Resolves once every row queued before the call is durable.
    pub async fn durable(&self) -> crate::Result<()> {
        self.book.sync().await
    }
}

pub(crate) fn to_row(item: JournalItem, fingerprint: Option<&Fingerprint>) -> JournalRow {
    match item {
        JournalItem::Row(r) => *r,
        JournalItem::Message(e) => {
            let mut row = crate::wire::journal_row(
                &e.msg,
                e.direction,
                e.at_ms,
                |p| fingerprint.map(|f| f(p)).unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::Direction;
    use crate::store::Store;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_row_is_durable_in_order_when_durable_returns() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let (book, writer) = StateBook::open(store.clone(), 16).unwrap();
        let metrics = Arc::new(Metrics::new("t"));
        let handle = book.journal(Arc::new(|p: &str| p.len().to_string()), metrics.clone());
        let senders: Vec<_> = (0..4u64)
            .map(|t| {
                let h = handle.clone();
                tokio::spawn(async move {
                    for i in 0..500 {
                        assert!(h.record(row(t * 1000 + i)));
                        if i % 50 == 0 {
                            h.durable().await.unwrap();
                        }
                    }
                    h.durable().await.unwrap();
                })
            })
            .collect();
        for s in senders {
            s.await.unwrap();
        }
        // Durable means in the store now, not after the writer stops.
        assert_eq!(store.journal_count().unwrap(), 2000);
        assert_eq!(metrics.journal_rows.get(), 2000);
        let rows = store.journal_read(0, 2000).unwrap();
        let mine: Vec<u64> = rows.iter().map(|r| r.at_ms).filter(|a| *a < 1000).collect();
        assert_eq!(mine, (0..500).collect::<Vec<_>>(), "per sender, rows keep their order");
        drop(handle);
        drop(book);
        writer.finish();
    }
}
