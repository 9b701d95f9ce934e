//! TLV data's top-level objects indexed once — each tag with where its value lies in one shared
//! copy of the data — for the chip data (DE 55) a switch and an issuer read tag by tag.

use bytes::Bytes;

use super::parser::{DecodeOptions, Node, walk_top};
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
        // Walked, not decoded into a tree: only the top level is kept. A decoding error anywhere
        // comes before a repeat, as when the whole was decoded first.
        let mut tags: Vec<(u32, usize, usize)> = Vec::with_capacity(16);
        let mut repeat = None;
        walk_top(&data, DecodeOptions::lenient(), |tlv| {
            let tag = tlv.tag.value();
            if repeat.is_none() && tags.iter().any(|t| t.0 == tag) {
                repeat = Some((tag, tlv.offset));
            }
            tags.push((tag, tlv.value_offset(), tlv.value.len()));
        })?;
        match repeat {
            Some((tag, offset)) => Err(repeat_error(tag, offset)),
            None => Ok(TopLevel { data, tags }),
        }
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

/// A top-level tag named again at `offset`.
fn repeat_error(tag: u32, offset: usize) -> Error {
    Error::expected(
        ErrorKind::Tlv,
        Location::Tag(tag),
        Some(offset),
        "each tag once at the top level",
        "the tag again",
    )
}

/// The objects of `nodes` whose tag an earlier one of them has, in order: what [`TopLevel::parse`]
/// refuses, for a report that names every repeat.
pub fn repeated<'n, 'a>(nodes: &'n [Node<'a>]) -> impl Iterator<Item = &'n Node<'a>> {
    nodes.iter().enumerate().filter(|(i, n)| nodes[..*i].iter().any(|m| m.tag() == n.tag())).map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlv::parser::decode_lenient;

    /// What decoding the whole tree and then looking for a repeat gives (the way `parse` worked
    /// before it walked the top level only): the same error, or the same tags and values.
    fn by_the_tree(data: &[u8]) -> std::result::Result<Vec<(u32, Vec<u8>)>, Error> {
        let nodes = decode_lenient(data)?;
        if let Some(n) = repeated(&nodes).next() {
            return Err(repeat_error(n.tag().value(), n.tlv.offset));
        }
        Ok(nodes.iter().map(|n| (n.tag().value(), n.value().to_vec())).collect())
    }

    fn walked(data: &[u8]) -> std::result::Result<Vec<(u32, Vec<u8>)>, Error> {
        let t = TopLevel::parse(Bytes::copy_from_slice(data))?;
        Ok(t.tags.iter().map(|&(tag, at, len)| (tag, data[at..at + len].to_vec())).collect())
    }

    proptest::proptest! {
        /// Any bytes: walking the top level accepts exactly what the tree accepts, with the same
        /// tags and values, and refuses the rest with the same error (kind, place, offset, text).
        #[test]
        fn walking_the_top_level_agrees_with_the_tree(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            proptest::prop_assert_eq!(walked(&data), by_the_tree(&data));
        }

        /// TLV-shaped input (templates, repeats, padding), where the random bytes above rarely land.
        #[test]
        fn walking_agrees_on_tlv_shaped_input(parts in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::prelude::Just(vec![0x9F, 0x36, 0x02, 0x00, 0x01]),
                proptest::prelude::Just(vec![0x82, 0x02, 0x19, 0x80]),
                proptest::prelude::Just(vec![0x70, 0x04, 0x5A, 0x02, 0x47, 0x61]),
                proptest::prelude::Just(vec![0x70, 0x06, 0x70, 0x04, 0x70, 0x02, 0x70, 0x00]),
                proptest::prelude::Just(vec![0x00]),
                proptest::prelude::Just(vec![0xFF]),
                proptest::prelude::Just(vec![0x9F, 0x02, 0x06, 0, 0, 0, 0, 0x12, 0x34]),
                proptest::prelude::Just(vec![0x9F, 0x10, 0x81, 0x01, 0xAA]),
                proptest::prelude::Just(vec![0x5A, 0x05, 0x01]),
            ],
            0..8,
        )) {
            let data: Vec<u8> = parts.concat();
            proptest::prop_assert_eq!(walked(&data), by_the_tree(&data));
        }
    }

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
