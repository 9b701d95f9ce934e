//! The one error type of the codecs crate.
//!
//! Every decoder here takes untrusted bytes, so an error must tell an operator or a terminal vendor
//! exactly what went wrong: *where* (the MTI, a bitmap, data element N, EMV tag T, the frame header),
//! *at which byte offset* of the input, and *what was expected versus what was found*. The `found`
//! text is produced by the codec and never contains the clear content of a sensitive element (PAN,
//! track data, PIN block): codecs describe such content by its shape ("non-digit at position 7"),
//! never by its value.

use std::fmt;

/// What kind of failure this is; callers match on it (e.g. a switch answers DE 39 = 30 for
/// [`ErrorKind::Format`]-class errors and closes the connection for [`ErrorKind::Framing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input ended before the element was complete.
    Truncated,
    /// A length prefix or a fixed length is wrong (too long, not a number, over the maximum).
    Length,
    /// The content does not match the element's type (a letter in an `n` element, odd hex...).
    Content,
    /// A bitmap is malformed or names an element the spec does not define.
    Bitmap,
    /// The MTI is malformed.
    Mti,
    /// Bytes remain after the last element of the bitmap.
    TrailingData,
    /// The message or frame is larger than the configured maximum.
    TooLarge,
    /// A BER-TLV object is malformed (tag, length or nesting).
    Tlv,
    /// A stream frame header is malformed.
    Framing,
    /// A spec definition (built-in or loaded from a file) is invalid.
    Spec,
    /// The JSON form of a message is malformed or names an unknown element.
    Json,
    /// An element required for encoding is missing or not allowed.
    Field,
}

/// Where in the input the error was found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Location {
    Message,
    Mti,
    /// The primary (1), secondary (2) or tertiary (3) bitmap.
    Bitmap(u8),
    /// An ISO 8583 data element.
    Field(u16),
    /// A BER-TLV tag (as its big-endian integer value, e.g. `0x9F26`).
    Tag(u32),
    /// A DOL entry, by index.
    Dol(usize),
    Frame,
    Spec(String),
    Json(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Message => f.write_str("message"),
            Location::Mti => f.write_str("MTI"),
            Location::Bitmap(1) => f.write_str("primary bitmap"),
            Location::Bitmap(2) => f.write_str("secondary bitmap"),
            Location::Bitmap(n) => write!(f, "bitmap {n}"),
            Location::Field(n) => write!(f, "DE {n}"),
            Location::Tag(t) => write!(f, "tag {t:02X}"),
            Location::Dol(i) => write!(f, "DOL entry {i}"),
            Location::Frame => f.write_str("frame"),
            Location::Spec(s) => write!(f, "spec {s}"),
            Location::Json(p) => write!(f, "JSON {p}"),
        }
    }
}

/// A codec error: kind, location, byte offset, and an explanation of expected versus found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    pub kind: ErrorKind,
    pub location: Location,
    /// Byte offset into the input where the offending data starts, when the input is bytes.
    pub offset: Option<usize>,
    /// Human-readable "expected …, found …" text; never contains sensitive clear data.
    pub detail: String,
}

impl Error {
    pub fn new(
        kind: ErrorKind,
        location: Location,
        offset: Option<usize>,
        detail: impl Into<String>,
    ) -> Self {
        Error { kind, location, offset, detail: detail.into() }
    }

    /// Convenience for the common "expected X, found Y" form.
    pub fn expected(
        kind: ErrorKind,
        location: Location,
        offset: Option<usize>,
        expected: impl fmt::Display,
        found: impl fmt::Display,
    ) -> Self {
        Error::new(kind, location, offset, format!("expected {expected}, found {found}"))
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Returns the error with its location replaced (used when an inner codec — e.g. TLV inside
    /// DE 55 — reports relative to its own input and the caller knows the outer element).
    pub fn at(mut self, location: Location) -> Self {
        self.location = location;
        self
    }

    /// Shifts the byte offset by `base` (inner input starts at `base` in the outer input).
    pub fn offset_by(mut self, base: usize) -> Self {
        self.offset = self.offset.map(|o| o + base);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(o) => write!(f, "{} at byte {}: {}", self.location, o, self.detail),
            None => write!(f, "{}: {}", self.location, self.detail),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
