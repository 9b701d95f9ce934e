//! Stream framing of ISO 8583 messages over TCP, as `tokio_util::codec` [`Decoder`]/[`Encoder`]s
//! (no runtime needed: they work on a `BytesMut` and are driven by whoever owns the socket).
//!
//! A frame is a length header, optionally a 5-byte TPDU, then the message:
//!
//! * `2-byte-binary` — the length as an unsigned 16-bit big-endian integer (the common acquirer
//!   host header; jPOS `NACChannel`/`PostChannel` style);
//! * `4-ascii` — the length as four ASCII decimal digits (`0123`; jPOS `ASCIIChannel`, pyiso8583
//!   tooling);
//! * `…+tpdu` — a 5-byte Transport Protocol Data Unit (ID `60`, destination address, originator
//!   address; used by NII-routed POS networks) follows the header and is counted in the length.
//!
//! The decoder follows mini-redis's rule: check the frame is complete, then split it off — never
//! parse half a frame. The header alone decides whether the frame is acceptable (zero length, a
//! non-digit, a length over the configured maximum, a TPDU frame shorter than its TPDU), so an
//! oversize frame is refused before any of it is buffered. After an error the stream is out of
//! step and the connection must be closed.

use std::fmt;
use std::str::FromStr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, ErrorKind, Location};

/// The default largest frame (length-header value) accepted: 8 KiB, ample for ISO 8583 with DE 55.
pub const DEFAULT_MAX_FRAME_LEN: usize = 8192;

/// Length of a TPDU in bytes.
pub const TPDU_LEN: usize = 5;

/// Which header the stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FramingKind {
    /// `2-byte-binary`: big-endian u16 length.
    Binary2,
    /// `4-ascii`: four ASCII digits.
    Ascii4,
    /// `2-byte-binary+tpdu`.
    Binary2Tpdu,
    /// `4-ascii+tpdu`.
    Ascii4Tpdu,
}

impl FramingKind {
    pub const ALL: [FramingKind; 4] =
        [FramingKind::Binary2, FramingKind::Ascii4, FramingKind::Binary2Tpdu, FramingKind::Ascii4Tpdu];

    /// The name used in configuration and the ports file (INTERFACES.md §5).
    pub fn name(self) -> &'static str {
        match self {
            FramingKind::Binary2 => "2-byte-binary",
            FramingKind::Ascii4 => "4-ascii",
            FramingKind::Binary2Tpdu => "2-byte-binary+tpdu",
            FramingKind::Ascii4Tpdu => "4-ascii+tpdu",
        }
    }

    /// Bytes of the length header.
    pub fn header_len(self) -> usize {
        match self {
            FramingKind::Binary2 | FramingKind::Binary2Tpdu => 2,
            FramingKind::Ascii4 | FramingKind::Ascii4Tpdu => 4,
        }
    }

    pub fn has_tpdu(self) -> bool {
        matches!(self, FramingKind::Binary2Tpdu | FramingKind::Ascii4Tpdu)
    }

    /// The largest length the header can express.
    pub fn header_capacity(self) -> usize {
        match self {
            FramingKind::Binary2 | FramingKind::Binary2Tpdu => 0xFFFF,
            FramingKind::Ascii4 | FramingKind::Ascii4Tpdu => 9999,
        }
    }
}

impl fmt::Display for FramingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FramingKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        FramingKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            Error::expected(
                ErrorKind::Framing,
                Location::Frame,
                None,
                "one of 2-byte-binary, 4-ascii, 2-byte-binary+tpdu, 4-ascii+tpdu",
                format_args!("{s:?}"),
            )
        })
    }
}

/// A Transport Protocol Data Unit: protocol ID (`60` for ISO 8583 transactions), destination
/// address (NII of the host), originator address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tpdu {
    pub id: u8,
    pub destination: u16,
    pub originator: u16,
}

impl Tpdu {
    pub fn from_bytes(b: [u8; TPDU_LEN]) -> Self {
        let [id, d0, d1, o0, o1] = b;
        Tpdu { id, destination: u16::from_be_bytes([d0, d1]), originator: u16::from_be_bytes([o0, o1]) }
    }

    pub fn to_bytes(self) -> [u8; TPDU_LEN] {
        let [d0, d1] = self.destination.to_be_bytes();
        let [o0, o1] = self.originator.to_be_bytes();
        [self.id, d0, d1, o0, o1]
    }

    /// The TPDU of an answer: destination and originator swapped.
    pub fn swapped(self) -> Self {
        Tpdu { id: self.id, destination: self.originator, originator: self.destination }
    }
}

impl fmt::Display for Tpdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X}{:04X}{:04X}", self.id, self.destination, self.originator)
    }
}

/// One frame: the TPDU (when the framing has one) and the message bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tpdu: Option<Tpdu>,
    pub payload: Bytes,
}

impl Frame {
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Frame { tpdu: None, payload: payload.into() }
    }

    pub fn with_tpdu(tpdu: Tpdu, payload: impl Into<Bytes>) -> Self {
        Frame { tpdu: Some(tpdu), payload: payload.into() }
    }

    /// The frame answering this one: `payload` with this frame's TPDU addresses swapped.
    pub fn reply(&self, payload: impl Into<Bytes>) -> Frame {
        Frame { tpdu: self.tpdu.map(Tpdu::swapped), payload: payload.into() }
    }
}

impl From<Bytes> for Frame {
    fn from(b: Bytes) -> Self {
        Frame::new(b)
    }
}

/// The codec's error: a framing error of ours, or an I/O error from the transport (which
/// `tokio_util::codec::FramedRead` requires the error type to absorb).
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error(transparent)]
    Codec(#[from] Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl FramingError {
    /// The codec error kind, if this is not an I/O error.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            FramingError::Codec(e) => Some(e.kind),
            FramingError::Io(_) => None,
        }
    }
}

/// Decoder and encoder for one [`FramingKind`] with a maximum frame length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCodec {
    kind: FramingKind,
    max_frame_len: usize,
}

impl FrameCodec {
    /// A codec with [`DEFAULT_MAX_FRAME_LEN`] (or the header's capacity, if smaller).
    pub fn new(kind: FramingKind) -> Self {
        Self::with_max_frame_len(kind, DEFAULT_MAX_FRAME_LEN)
    }

    /// A codec refusing frames whose length (TPDU included) exceeds `max` — capped at what the
    /// header can express, and at least 1.
    pub fn with_max_frame_len(kind: FramingKind, max: usize) -> Self {
        FrameCodec { kind, max_frame_len: max.clamp(1, kind.header_capacity()) }
    }

    pub fn kind(&self) -> FramingKind {
        self.kind
    }

    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Reads the length header at the front of `src` (which holds at least the header).
    fn read_header(&self, header: &[u8]) -> Result<usize, Error> {
        let len = match self.kind.header_len() {
            2 => header.iter().take(2).fold(0usize, |a, &b| (a << 8) | usize::from(b)),
            _ => {
                let mut len = 0usize;
                for (i, &b) in header.iter().take(4).enumerate() {
                    if !b.is_ascii_digit() {
                        return Err(Error::expected(
                            ErrorKind::Framing,
                            Location::Frame,
                            Some(i),
                            "4 ASCII digits of length",
                            format_args!("byte {b:02X} at header position {i}"),
                        ));
                    }
                    len = len * 10 + usize::from(b - b'0');
                }
                len
            }
        };
        if len == 0 {
            return Err(Error::expected(
                ErrorKind::Framing,
                Location::Frame,
                Some(0),
                "a frame length of at least 1",
                "length 0",
            ));
        }
        if len > self.max_frame_len {
            return Err(Error::expected(
                ErrorKind::TooLarge,
                Location::Frame,
                Some(0),
                format_args!("a frame of at most {} bytes", self.max_frame_len),
                format_args!("length {len}"),
            ));
        }
        if self.kind.has_tpdu() && len < TPDU_LEN {
            return Err(Error::expected(
                ErrorKind::Framing,
                Location::Frame,
                Some(0),
                format_args!("a frame of at least {TPDU_LEN} bytes (the TPDU)"),
                format_args!("length {len}"),
            ));
        }
        Ok(len)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FramingError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FramingError> {
        let hlen = self.kind.header_len();
        let Some(header) = src.get(..hlen) else {
            return Ok(None);
        };
        let len = self.read_header(header)?;
        let total = hlen + len;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        // Complete: split the frame off, then take it apart.
        src.advance(hlen);
        let mut body = src.split_to(len).freeze();
        let tpdu = if self.kind.has_tpdu() {
            let t = body.split_to(TPDU_LEN);
            let mut b = [0u8; TPDU_LEN];
            b.copy_from_slice(&t);
            Some(Tpdu::from_bytes(b))
        } else {
            None
        };
        Ok(Some(Frame { tpdu, payload: body }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FramingError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FramingError> {
        let tpdu = match (self.kind.has_tpdu(), frame.tpdu) {
            (true, Some(t)) => Some(t),
            (false, None) => None,
            (true, None) => {
                return Err(Error::expected(
                    ErrorKind::Framing,
                    Location::Frame,
                    None,
                    format_args!("a TPDU for {} framing", self.kind),
                    "a frame without one",
                )
                .into());
            }
            (false, Some(_)) => {
                return Err(Error::expected(
                    ErrorKind::Framing,
                    Location::Frame,
                    None,
                    format_args!("no TPDU for {} framing", self.kind),
                    "a frame with one",
                )
                .into());
            }
        };
        let len = frame.payload.len() + if tpdu.is_some() { TPDU_LEN } else { 0 };
        if len == 0 {
            return Err(Error::expected(
                ErrorKind::Framing,
                Location::Frame,
                None,
                "a frame of at least 1 byte",
                "an empty frame",
            )
            .into());
        }
        if len > self.max_frame_len {
            return Err(Error::expected(
                ErrorKind::TooLarge,
                Location::Frame,
                None,
                format_args!("a frame of at most {} bytes", self.max_frame_len),
                format_args!("{len} bytes"),
            )
            .into());
        }
        dst.reserve(self.kind.header_len() + len);
        match self.kind.header_len() {
            // len ≤ max_frame_len ≤ header capacity, so the casts and the 4 digits are exact.
            2 => dst.put_u16(len as u16),
            _ => dst.put_slice(format!("{len:04}").as_bytes()),
        }
        if let Some(t) = tpdu {
            dst.put_slice(&t.to_bytes());
        }
        dst.put_slice(&frame.payload);
        Ok(())
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FramingError;

    /// Encodes a message without TPDU (for framings without one).
    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), FramingError> {
        Encoder::<Frame>::encode(self, Frame::new(payload), dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in FramingKind::ALL {
            assert_eq!(k.to_string().parse::<FramingKind>().unwrap(), k);
        }
        assert_eq!("2-byte-binary".parse::<FramingKind>().unwrap(), FramingKind::Binary2);
        assert_eq!("4-ascii".parse::<FramingKind>().unwrap(), FramingKind::Ascii4);
        assert!("2-byte".parse::<FramingKind>().is_err());
    }

    #[test]
    fn binary_decode_waits_for_whole_frame() {
        let mut c = FrameCodec::new(FramingKind::Binary2);
        let mut buf = BytesMut::from(&[0x00, 0x04, 0x30, 0x31][..]);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 4, "nothing consumed from a partial frame");
        buf.extend_from_slice(&[0x30, 0x30, 0x00, 0x01]);
        let f = c.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&f.payload[..], b"0100");
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], &[0x00, 0x01]);
    }

    #[test]
    fn ascii_header() {
        let mut c = FrameCodec::new(FramingKind::Ascii4);
        let mut buf = BytesMut::from(&b"00040800"[..]);
        assert_eq!(&c.decode(&mut buf).unwrap().unwrap().payload[..], b"0800");
        let mut out = BytesMut::new();
        c.encode(Frame::new(&b"0810"[..]), &mut out).unwrap();
        assert_eq!(&out[..], b"00040810");
    }

    #[test]
    fn header_errors() {
        let mut c = FrameCodec::new(FramingKind::Ascii4);
        let e = c.decode(&mut BytesMut::from(&b"00A4"[..])).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::Framing));
        assert_eq!(
            e.to_string(),
            "frame at byte 2: expected 4 ASCII digits of length, found byte 41 at header position 2"
        );
        let e = c.decode(&mut BytesMut::from(&b"0000"[..])).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::Framing));
        let mut c = FrameCodec::with_max_frame_len(FramingKind::Binary2, 100);
        let e = c.decode(&mut BytesMut::from(&[0x00, 0x65][..])).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::TooLarge));
        let mut c = FrameCodec::new(FramingKind::Binary2Tpdu);
        let e = c.decode(&mut BytesMut::from(&[0x00, 0x04, 1, 2, 3, 4][..])).unwrap_err();
        assert!(e.to_string().contains("TPDU"), "{e}");
    }

    #[test]
    fn tpdu_reply_swaps_addresses() {
        let mut c = FrameCodec::new(FramingKind::Binary2Tpdu);
        let mut buf = BytesMut::from(&[0x00, 0x07, 0x60, 0x00, 0x12, 0x00, 0x00, 0xAB, 0xCD][..]);
        let f = c.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.tpdu, Some(Tpdu { id: 0x60, destination: 0x0012, originator: 0x0000 }));
        assert_eq!(f.tpdu.unwrap().to_string(), "6000120000");
        let mut out = BytesMut::new();
        c.encode(f.reply(&[0xEF][..]), &mut out).unwrap();
        assert_eq!(&out[..], &[0x00, 0x06, 0x60, 0x00, 0x00, 0x00, 0x12, 0xEF]);
        assert!(c.encode(Frame::new(&b"x"[..]), &mut out).is_err());
    }

    #[test]
    fn encode_refuses_oversize_and_empty() {
        let mut c = FrameCodec::with_max_frame_len(FramingKind::Ascii4, 3);
        let e = c.encode(Frame::new(&b"0800"[..]), &mut BytesMut::new()).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::TooLarge));
        let e = c.encode(Frame::new(Bytes::new()), &mut BytesMut::new()).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::Framing));
        assert_eq!(FrameCodec::with_max_frame_len(FramingKind::Ascii4, 1 << 20).max_frame_len(), 9999);
    }

    #[test]
    fn io_errors_convert() {
        let e: FramingError = std::io::Error::other("reset").into();
        assert_eq!(e.kind(), None);
    }
}
