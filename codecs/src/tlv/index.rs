//! TLV data's top-level objects indexed once — each tag with where its value lies in one shared
//! copy of the data — for the chip data (DE 55) a switch and an issuer read tag by tag.

use bytes::Bytes;

use super::parser::{Node, decode_lenient};
use crate::error::{Error, ErrorKind, Location, Result};

/// The top-level objects of TLV data, each tag once.
#[derive(Debug, Clone, Default)]
pub struct TopLevel {
    data: Bytes,
    /// Tag, value offset and value length in `data`.
    tags: Vec<(u32, usize, usize)>,
}

impl TopLevel {
    /// Parses `data` leniently (templates inside must be well formed too). A tag named twice at
    /// the top level is refused: a check that read one of its values and a cryptogram that covers
    /// the other would disagree (a 9F02 of the amount asked for put before the card's own).
    pub fn parse(data: Bytes) -> Result<TopLevel> {
        let nodes = decode_lenient(&data)?;
        if let Some(n) = repeated(&nodes).next() {
            return Err(Error::expected(
                ErrorKind::Tlv,
                Location::Tag(n.tag().value()),
                Some(n.tlv.offset),
                "each tag once at the top level",
                "the tag again",
            ));
        }
        let tags = nodes.iter().map(|n| (n.tag().value(), n.tlv.value_offset(), n.value().len())).collect();
        Ok(TopLevel { data, tags })
    }

    /// The value of `tag`.
    pub fn get(&self, tag: u32) -> Option<&[u8]> {
        let &(_, at, len) = self.tags.iter().find(|t| t.0 == tag)?;
        self.data.get(at..at + len)
    }

    pub fn has(&self, tag: u32) -> bool {
        self.get(tag).is_some()
    }
}

/// The objects of `nodes` whose tag an earlier one of them has, in order: what [`TopLevel::parse`]
/// refuses, for a report that names every repeat.
pub fn repeated<'n, 'a>(nodes: &'n [Node<'a>]) -> impl Iterator<Item = &'n Node<'a>> {
    nodes.iter().enumerate().filter(|(i, n)| nodes[..*i].iter().any(|m| m.tag() == n.tag())).map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tag_once_its_value_by_tag_and_a_repeat_refused_where_it_is() {
        // 9F36 00 01, 5A (8 bytes), 9F02 (6 bytes).
        let data = hex::decode("9F360200015A0847617390010100109F0206000000001234").unwrap();
        let t = TopLevel::parse(Bytes::from(data.clone())).expect("parses");
        assert_eq!(t.get(0x9F36), Some(&[0x00, 0x01][..]));
        assert_eq!(t.get(0x9F02), Some(&[0, 0, 0, 0, 0x12, 0x34][..]));
        assert!(t.has(0x5A) && !t.has(0x9F37));
        let mut twice = data.clone();
        twice.extend_from_slice(&[0x9F, 0x36, 0x02, 0x00, 0x02]);
        let e = TopLevel::parse(Bytes::from(twice)).expect_err("a repeat");
        assert_eq!((e.location, e.offset), (Location::Tag(0x9F36), Some(data.len())));
        let nodes = decode_lenient(&[0x82, 0x01, 0x01, 0x82, 0x01, 0x02, 0x95, 0x00, 0x82, 0x00]).unwrap();
        let again: Vec<usize> = repeated(&nodes).map(|n| n.tlv.offset).collect();
        assert_eq!(again, [3, 8], "every repeat, in order");
        assert!(TopLevel::parse(Bytes::from_static(&[0x9F, 0x36, 0x05, 0x00])).is_err(), "not TLV");
    }
}
