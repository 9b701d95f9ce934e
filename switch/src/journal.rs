//! The journal: every exchange with an acquirer (request and answer in one row, masked), and
//! the switch's other records, committed by the decision state's writer thread in the same
//! transaction as the state the answer depends on (group commit: one sync for every row and
//! change ready at once; see `state`). The shell queues an answer's row and waits until
//! it is durable before the answer leaves; a store that refuses commits keeps the rows in memory
//! and retries them, while new requests are answered 96 (see `engine`).

use std::sync::Arc;

use codecs::iso8583::Message;

/// Which way a journaled message travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From an acquirer (terminal) to the switch.
    AcquirerIn,
    /// From the switch back to the acquirer.
    AcquirerOut,
    /// From the switch to an issuer.
    IssuerOut,
    /// From an issuer to the switch.
    IssuerIn,
    /// One acquirer exchange: the request and the answer given to it, in one row.
    AcquirerExchange,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::AcquirerIn => "acq-in",
            Direction::AcquirerOut => "acq-out",
            Direction::AcquirerExchange => "acq",
            Direction::IssuerOut => "iss-out",
            Direction::IssuerIn => "iss-in",
        }
    }
}

/// One journaled message. Built by the pipeline from the decoded message; never holds clear card data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRow {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub direction: Direction,
    pub mti: String,
    pub stan: Option<String>,
    pub rrn: Option<String>,
    pub terminal_id: Option<String>,
    /// First 6 and last 4 digits only.
    pub pan_masked: Option<String>,
    /// Keyed HMAC-SHA256 fingerprint of the PAN, hex, for look-ups without the PAN.
    pub pan_fingerprint: Option<String>,
    pub amount_minor: Option<u64>,
    pub currency: Option<String>,
    pub response_code: Option<String>,
    /// The route (issuer link) or stage that handled it.
    pub route: Option<String>,
    pub latency_us: Option<u64>,
    /// The masked JSON form of the message.
    pub message_masked: String,
}

/// The journal row of `msg` (masked; the fingerprint is computed by the caller's keyed function).
pub fn journal_row(
    msg: &Message,
    direction: Direction,
    at_ms: u64,
    fingerprint: impl Fn(&str) -> String,
    route: Option<&str>,
    latency_us: Option<u64>,
) -> JournalRow {
    let t = |de| msg.text(de).map(|c| c.into_owned());
    let pan = msg.card_number();
    JournalRow {
        at_ms,
        direction,
        mti: msg.mti().to_string(),
        stan: t(11),
        rrn: t(37),
        terminal_id: t(41),
        pan_masked: pan.as_deref().map(codecs::iso8583::describe::mask_pan),
        pan_fingerprint: pan.as_deref().map(fingerprint),
        amount_minor: msg.amount().ok().flatten().map(|a| a.0),
        currency: t(49),
        response_code: t(39),
        route: route.map(str::to_string),
        latency_us,
        message_masked: msg.to_masked_json_string(),
    }
}

/// A decoded message to journal: the writer thread masks it, fingerprints its PAN and builds the
/// row, so the hot path only clones the message (a vector of `Bytes` slices).
pub struct MessageEntry {
    pub msg: codecs::iso8583::Message,
    /// The answer to `msg`, journaled in the same row (an acquirer exchange).
    pub response: Option<codecs::iso8583::Message>,
    pub direction: Direction,
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

pub(crate) fn to_row(item: JournalItem, fingerprint: Option<&Fingerprint>) -> JournalRow {
    match item {
        JournalItem::Row(r) => *r,
        JournalItem::Message(e) => {
            let mut row = journal_row(
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
