//! BER-TLV encoding into a `BytesMut` (EMV Book 3 Annex B).
//!
//! [`TlvBuilder`] appends primitive objects and constructed templates (whose content is built by a
//! closure, then prefixed with the shortest length field). [`encode_nodes`] writes a decoded tree
//! back; for canonical input (no padding, shortest lengths) the output equals the input byte for
//! byte.

use bytes::{BufMut, BytesMut};

use crate::error::{Error, ErrorKind, Location, Result};

use super::length::{length_field_size, put_length};
use super::parser::Node;
use super::tag::Tag;

/// Builds a sequence of TLV objects.
#[derive(Debug, Default, Clone)]
pub struct TlvBuilder {
    buf: BytesMut,
}

impl TlvBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        TlvBuilder { buf: BytesMut::with_capacity(n) }
    }

    /// Appends a primitive object. Refuses a constructed tag (use [`TlvBuilder::constructed`]) and a
    /// tag whose bytes are not exactly one well-formed tag.
    pub fn primitive(&mut self, tag: Tag, value: &[u8]) -> Result<&mut Self> {
        check_tag(tag)?;
        if tag.is_constructed() {
            return Err(Error::expected(
                ErrorKind::Tlv,
                Location::Tag(tag.value()),
                None,
                "a primitive tag (b6 = 0)",
                "a constructed tag",
            ));
        }
        put_object(&mut self.buf, tag, value)?;
        Ok(self)
    }

    /// Appends a constructed template whose content `build` writes into a fresh builder.
    pub fn constructed(
        &mut self,
        tag: Tag,
        build: impl FnOnce(&mut TlvBuilder) -> Result<()>,
    ) -> Result<&mut Self> {
        check_tag(tag)?;
        if !tag.is_constructed() {
            return Err(Error::expected(
                ErrorKind::Tlv,
                Location::Tag(tag.value()),
                None,
                "a constructed tag (b6 = 1)",
                "a primitive tag",
            ));
        }
        let mut inner = TlvBuilder::new();
        build(&mut inner)?;
        put_object(&mut self.buf, tag, &inner.buf)?;
        Ok(self)
    }

    /// Appends already-encoded TLV bytes as they are (e.g. a template received from the card).
    pub fn raw(&mut self, encoded: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(encoded);
        self
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn finish(self) -> BytesMut {
        self.buf
    }
}

fn check_tag(tag: Tag) -> Result<()> {
    if tag.is_well_formed() {
        Ok(())
    } else {
        Err(Error::expected(
            ErrorKind::Tlv,
            Location::Tag(tag.value()),
            None,
            "a well-formed tag (ISO/IEC 8825-1 §8.1.2)",
            format_args!("bytes {tag} that do not form exactly one tag"),
        ))
    }
}

/// Writes tag, shortest length, value.
pub fn put_object(buf: &mut BytesMut, tag: Tag, value: &[u8]) -> Result<()> {
    buf.reserve(tag.len() + length_field_size(value.len()) + value.len());
    buf.put_slice(tag.to_bytes().as_ref());
    put_length(buf, tag, value.len())?;
    buf.put_slice(value);
    Ok(())
}

/// Encodes a decoded tree: primitives from their values, templates from their children.
pub fn encode_nodes(nodes: &[Node<'_>], buf: &mut BytesMut) -> Result<()> {
    for n in nodes {
        if n.is_constructed() {
            let mut inner = BytesMut::new();
            encode_nodes(&n.children, &mut inner)?;
            put_object(buf, n.tag(), &inner)?;
        } else {
            put_object(buf, n.tag(), n.value())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlv::decode_lenient;

    #[test]
    fn builder_nested() {
        let mut b = TlvBuilder::new();
        b.constructed(Tag::new(0x77), |t| {
            t.primitive(Tag::new(0x9F27), &[0x80])?;
            t.primitive(Tag::new(0x9F36), &[0x00, 0x1E])?;
            Ok(())
        })
        .unwrap();
        assert_eq!(hex::encode_upper(b.finish()), "77099F2701809F3602001E");
    }

    #[test]
    fn long_lengths() {
        let mut b = TlvBuilder::new();
        b.primitive(Tag::new(0x90), &[0xAB; 200]).unwrap();
        let out = b.finish();
        assert_eq!(&out[..3], &[0x90, 0x81, 0xC8]);
        let mut b = TlvBuilder::new();
        b.primitive(Tag::new(0x90), &[0xAB; 300]).unwrap();
        assert_eq!(&b.finish()[..4], &[0x90, 0x82, 0x01, 0x2C]);
    }

    #[test]
    fn refuses_wrong_kind() {
        assert!(TlvBuilder::new().primitive(Tag::new(0x70), &[]).is_err());
        assert!(TlvBuilder::new().constructed(Tag::new(0x5A), |_| Ok(())).is_err());
        assert!(TlvBuilder::new().primitive(Tag::new(0x9F), &[]).is_err());
    }

    #[test]
    fn roundtrip_canonical() {
        let input = hex::decode("6F1A840E315041592E5359532E4444463031A5088801025F2D02656E").unwrap();
        let nodes = decode_lenient(&input).unwrap();
        let mut out = BytesMut::new();
        encode_nodes(&nodes, &mut out).unwrap();
        assert_eq!(&out[..], &input[..]);
    }
}
