//! ISO 8583 messages, driven by specs that are data.
//!
//! * [`spec`] — what a spec says about each data element; TOML/JSON spec files.
//! * [`builtin`] — `iso87ascii`, `iso87binary` (pyiso8583 4.0.1 `default_ascii` / `default`).
//! * [`mti`], [`bitmap`], [`field`] — the parts of a message on the wire.
//! * [`message`] — [`Message`]: zero-copy decode, encode into `BytesMut`.
//! * [`json`] — the JSON form of INTERFACES.md §1.
//! * [`mac`] — where a link's MAC sits (DE 64/128), what it covers, its placeholder.
//! * [`elements`] — typed accessors (STAN, amount, PAN through `pan_clear` only...).
//! * [`describe`] — masked `Debug`/`Display`/JSON for logs.

pub mod bitmap;
pub mod builtin;
pub mod datetime;
pub mod describe;
mod ebcdic;
pub mod elements;
pub mod field;
pub mod json;
pub mod mac;
pub mod message;
pub mod mti;
pub mod reply;
pub mod spec;

pub use elements::{
    Amount, CurrencyCode, Expiry, MerchantId, Pan, PosEntryMode, ProcessingCode, ResponseCode, Rrn, Stan,
    TerminalId, TransmissionDateTime,
};
pub use field::{Field, FieldRef};
pub use message::{FieldIter, Fields, Message};
pub use mti::Mti;
pub use spec::{
    BitmapEncoding, ContentType, DataEncoding, FieldSpec, LengthEncoding, LengthKind, MtiEncoding,
    Sensitivity, Spec,
};
