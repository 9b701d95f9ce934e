//! Sans-IO codecs of the payment network.
//!
//! * [`iso8583`] — spec-driven ISO 8583 messages: specs as data (built-in `iso87ascii`,
//!   `iso87binary`, and custom specs loaded from TOML/JSON), zero-copy decoding into
//!   [`bytes::Bytes`] slices, encoding into a `BytesMut`, the JSON form of INTERFACES.md §1, and a
//!   masked description for logs.
//! * [`tlv`] — EMV BER-TLV (EMV Book 3 Annex B): multi-byte tags, constructed templates, long-form
//!   lengths, strict and lenient parsing, DOLs, and the tag dictionary.
//! * [`framing`] — stream framing as `tokio_util::codec` decoders/encoders (no runtime needed):
//!   2-byte binary or 4-digit ASCII length headers, optional 5-byte TPDU.
//!
//! Nothing here does I/O (apart from [`iso8583::Spec::load`] reading a spec file while a program
//! configures itself), reads a clock or spawns a task.
#![forbid(unsafe_code)]

pub mod currency;
pub mod error;
pub mod framing;
pub mod iso8583;
pub mod pan;
pub mod tlv;

pub use error::{Error, ErrorKind, Location, Result};
