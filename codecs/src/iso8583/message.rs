//! An ISO 8583 message: MTI plus data elements, decoded from and encoded to the wire by a [`Spec`].
//!
//! Decoding checks the size cap first, then reads MTI, bitmaps and each element in bitmap order
//! (ISO 8583:1987 §4.1). A decoded message keeps its input once, as one `Bytes`, and each element
//! as a small `Copy` slot: its number, its length in units and where its data sits in that input
//! (offset and length: no reference count per element, nothing to drop per element). An element
//! set afterwards ([`Message::set_text`], [`Message::set_bytes`], [`Message::copy_from`]) keeps
//! its own `Bytes` in a side list that its slot points into (absent, unallocated, after a decode).
//! [`Message::field`] and [`Message::fields`] give borrowed [`FieldRef`] views either way;
//! [`Message::bytes`] gives an element's data as a `Bytes` (a slice of the input, without a copy)
//! for whoever must keep it. Encoding derives the bitmaps from the elements present and writes into
//! a `BytesMut`; decode → encode is byte-exact.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::bitmap::{self, Bitmap};
use super::field::{self, Field, FieldRef};
use super::mti::Mti;
use super::spec::{MAX_FIELD, MtiEncoding, Spec};
use crate::error::{Error, ErrorKind, Location, Result};

/// A message: its spec, MTI and elements (ascending by DE number).
#[derive(Clone)]
pub struct Message {
    spec: Arc<Spec>,
    mti: Mti,
    /// The input the message was decoded from (empty for a message built element by element; an
    /// echo's is the message it echoes, see [`Message::echo`]).
    wire: Bytes,
    slots: Vec<Slot>,
    /// The data of elements set after decoding, each named by one slot's [`Data::Owned`]; boxed,
    /// and absent until the first such element, to keep a decoded message small to move.
    #[expect(clippy::box_collection, reason = "8 bytes in the message instead of 24")]
    owned: Option<Box<Vec<Bytes>>>,
}

/// One element: its number, its length in units and where its data is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    de: u16,
    units: u16,
    data: Data,
}

/// Where an element's data is: a range of the message's input (the decoder refuses an input of
/// more than `u32::MAX` bytes), or an index into the message's own `Bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Data {
    Wire { start: u32, len: u32 },
    Owned(u32),
}

/// The storage a [`Slot`] points into.
#[derive(Clone, Copy)]
struct Store<'a> {
    wire: &'a [u8],
    owned: &'a [Bytes],
}

impl<'a> Store<'a> {
    #[inline]
    fn view(self, s: &Slot) -> FieldRef<'a> {
        let data: &'a [u8] = match s.data {
            // In range by construction: the slot was read from `wire`, or set with its own bytes.
            Data::Wire { start, len } => &self.wire[start as usize..][..len as usize],
            Data::Owned(i) => &self.owned[i as usize],
        };
        FieldRef { de: s.de, units: s.units, data }
    }
}

/// The elements of a message, ascending by DE number: a slice-like view of [`FieldRef`]s.
#[derive(Clone, Copy)]
pub struct Fields<'a> {
    slots: &'a [Slot],
    store: Store<'a>,
}

impl<'a> Fields<'a> {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn iter(&self) -> FieldIter<'a> {
        FieldIter { slots: self.slots.iter(), store: self.store }
    }

    /// The `i`-th element present (not DE `i`).
    pub fn get(&self, i: usize) -> Option<FieldRef<'a>> {
        self.slots.get(i).map(|s| self.store.view(s))
    }

    pub fn first(&self) -> Option<FieldRef<'a>> {
        self.slots.first().map(|s| self.store.view(s))
    }

    /// The element with the highest number.
    pub fn last(&self) -> Option<FieldRef<'a>> {
        self.slots.last().map(|s| self.store.view(s))
    }
}

impl<'a> IntoIterator for Fields<'a> {
    type Item = FieldRef<'a>;
    type IntoIter = FieldIter<'a>;

    fn into_iter(self) -> FieldIter<'a> {
        self.iter()
    }
}

/// An iterator over a message's elements, ascending by DE number.
#[derive(Clone)]
pub struct FieldIter<'a> {
    slots: std::slice::Iter<'a, Slot>,
    store: Store<'a>,
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = FieldRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<FieldRef<'a>> {
        self.slots.next().map(|s| self.store.view(s))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.slots.size_hint()
    }
}

impl DoubleEndedIterator for FieldIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.slots.next_back().map(|s| self.store.view(s))
    }
}

impl ExactSizeIterator for FieldIter<'_> {}

impl std::iter::FusedIterator for FieldIter<'_> {}

impl PartialEq for Message {
    /// Same spec name, MTI and element values (however each element's data is kept).
    fn eq(&self, other: &Self) -> bool {
        self.spec.name == other.spec.name
            && self.mti == other.mti
            && self.slots.len() == other.slots.len()
            && self.fields().iter().eq(other.fields())
    }
}

impl Eq for Message {}

fn undefined(spec: &Spec, de: u16, offset: Option<usize>) -> Error {
    Error::expected(
        ErrorKind::Bitmap,
        Location::Field(de),
        offset,
        format!("an element defined by spec {}", spec.name),
        format!("DE {de}, which it does not define"),
    )
}

impl Message {
    /// An empty message.
    pub fn new(spec: Arc<Spec>, mti: Mti) -> Self {
        Message { spec, mti, wire: Bytes::new(), slots: Vec::with_capacity(32), owned: None }
    }

    /// A message of `mti` in `from`'s spec carrying those of `from`'s elements `des` names that
    /// `from` has, their data shared with `from` (the same input, the same owned `Bytes`): an
    /// answer echoing its request, without an element copied or counted one by one.
    pub fn echo(from: &Message, mti: Mti, des: &[u16]) -> Message {
        let mut wanted = Bitmap::default();
        for &de in des {
            wanted.set(de);
        }
        let mut m = Message {
            spec: from.spec.clone(),
            mti,
            wire: from.wire.clone(),
            slots: Vec::with_capacity(32),
            owned: None,
        };
        // `from`'s slots are ascending, and so are those taken.
        for s in from.slots.iter().filter(|s| wanted.contains(s.de)) {
            let data = match s.data {
                Data::Wire { .. } => s.data,
                Data::Owned(k) => Data::Owned(m.push_owned(from.owned()[k as usize].clone())),
            };
            m.slots.push(Slot { data, ..*s });
        }
        m
    }

    pub fn spec(&self) -> &Arc<Spec> {
        &self.spec
    }

    pub fn mti(&self) -> Mti {
        self.mti
    }

    pub fn set_mti(&mut self, mti: Mti) {
        self.mti = mti;
    }

    /// Decodes one whole message; it keeps `input`, its elements are ranges of it.
    pub fn decode(spec: &Arc<Spec>, input: Bytes) -> Result<Message> {
        let mut slots = Vec::new();
        let mti = Self::decode_into(spec, &input, &mut slots, &mut 0)?;
        Ok(Message { spec: spec.clone(), mti, wire: input, slots, owned: None })
    }

    /// For answering a message that does not decode: the MTI and the elements read before the
    /// first error (a switch answers a format error to whoever DE 11 and DE 41 name, when they
    /// could be read). `None` when not even the MTI and primary bitmap could be read.
    pub fn salvage(spec: &Arc<Spec>, input: Bytes) -> Option<Message> {
        let mut slots = Vec::new();
        match Self::decode_into(spec, &input, &mut slots, &mut 0) {
            Ok(mti) => Some(Message { spec: spec.clone(), mti, wire: input, slots, owned: None }),
            Err(_) => {
                let mut pos = 0;
                let mti = read_mti(spec.mti, &input, &mut pos).ok()?;
                Some(Message { spec: spec.clone(), mti, wire: input, slots, owned: None })
            }
        }
    }

    /// For reports on a message that does not decode: where the part its error is about starts —
    /// the MTI, a bitmap, the failing element's length prefix (or its data, when fixed), or the
    /// bytes after the last element. `None` when the message decodes. The error's own offset
    /// points at the offending byte, not at the start of what it belongs to, and a report must
    /// know that part's bounds to show its bytes without showing its neighbours'.
    pub fn failure_start(spec: &Arc<Spec>, input: &Bytes) -> Option<usize> {
        let mut pos = 0;
        Self::decode_into(spec, input, &mut Vec::new(), &mut pos).err().map(|_| pos)
    }

    /// Decodes into `slots` (ranges of `input`), the read position in `*pos`; on an error `*pos`
    /// is left at the start of the part (MTI, bitmap, element, trailing bytes) that failed: every
    /// reader advances it only on success.
    fn decode_into(spec: &Spec, input: &[u8], slots: &mut Vec<Slot>, pos: &mut usize) -> Result<Mti> {
        Self::decode_with::<true>(spec, input, slots, pos)
    }

    /// The decoder; `FAST`: ASCII elements through [`super::spec::Fast`] first (the general path
    /// alone is kept to check that both read every input the same).
    fn decode_with<const FAST: bool>(
        spec: &Spec,
        input: &[u8],
        slots: &mut Vec<Slot>,
        pos: &mut usize,
    ) -> Result<Mti> {
        // A spec caps messages at 16 MiB; offsets are kept as u32 whatever a spec says.
        let max = spec.max_message_len.min(u32::MAX as usize);
        if input.len() > max {
            return Err(Error::expected(
                ErrorKind::TooLarge,
                Location::Message,
                Some(0),
                format!("at most {max} bytes"),
                format!("{} bytes", input.len()),
            ));
        }
        *pos = 0;
        let mti = read_mti(spec.mti, input, pos)?;
        let mut bm = Bitmap::default();
        bm.0[0] = bitmap::read(spec.bitmap, input, pos, 1)?;
        if bm.contains(1) {
            let at = *pos;
            bm.0[1] = bitmap::read(spec.bitmap, input, pos, 2)?;
            let real = if spec.tertiary_bitmap { bm.0[1] & !(1 << 63) } else { bm.0[1] };
            if real == 0 && !(spec.tertiary_bitmap && bm.contains(65)) {
                return Err(Error::expected(
                    ErrorKind::Bitmap,
                    Location::Bitmap(2),
                    Some(at),
                    "at least one of DE 65-128",
                    "none (bit 1 set for an empty secondary bitmap)",
                ));
            }
            if spec.tertiary_bitmap && bm.contains(65) {
                let at = *pos;
                bm.0[2] = bitmap::read(spec.bitmap, input, pos, 3)?;
                if bm.0[2] == 0 {
                    return Err(Error::expected(
                        ErrorKind::Bitmap,
                        Location::Bitmap(3),
                        Some(at),
                        "at least one of DE 129-192",
                        "none (bit 65 set for an empty tertiary bitmap)",
                    ));
                }
            }
        }
        // At most as many elements as bits set, bitmap bits included.
        slots.reserve_exact(bm.0.iter().map(|w| w.count_ones() as usize).sum());
        for w in 0..3 {
            for de in bm.iter_word(w) {
                if de == 1 || (de == 65 && spec.tertiary_bitmap) {
                    continue;
                }
                if FAST
                    && let Some(fast) = spec.fast.get(de as usize)
                    && let Some((start, units)) = fast.read(input, *pos)
                {
                    slots.push(Slot {
                        de,
                        units: units as u16,
                        data: Data::Wire { start: start as u32, len: units as u32 },
                    });
                    *pos = start + units;
                    continue;
                }
                let f = spec.field(de).ok_or_else(|| undefined(spec, de, Some(*pos)))?;
                let e = field::decode(de, f, input, pos)?;
                // `*pos` is now just past the element's data.
                let len = e.data.len();
                let (start, len) = ((*pos - len) as u32, len as u32);
                slots.push(Slot { de, units: e.units, data: Data::Wire { start, len } });
            }
        }
        if *pos != input.len() {
            return Err(Error::expected(
                ErrorKind::TrailingData,
                Location::Message,
                Some(*pos),
                "the end of the message after the last element",
                format!("{} more bytes", input.len() - *pos),
            ));
        }
        Ok(mti)
    }

    /// Decodes from a slice (one copy of the whole input, none per element).
    pub fn decode_slice(spec: &Arc<Spec>, input: &[u8]) -> Result<Message> {
        Message::decode(spec, Bytes::copy_from_slice(input))
    }

    /// Appends the encoded message to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) -> Result<()> {
        let spec = &*self.spec;
        let mut bm = Bitmap::default();
        for s in &self.slots {
            bm.set(s.de);
        }
        if bm.0[2] != 0 {
            bm.set(65);
        }
        if bm.0[1] != 0 {
            bm.set(1);
        }
        // Room for every element (its data is in `wire` or in `owned`), its prefix, MTI and bitmaps.
        let data = self.wire.len() + self.owned().iter().map(Bytes::len).sum::<usize>();
        out.reserve(data + 4 * self.slots.len() + 64);
        write_mti(spec.mti, self.mti, out);
        bitmap::write(spec.bitmap, bm.0[0], out);
        if bm.contains(1) {
            bitmap::write(spec.bitmap, bm.0[1], out);
        }
        if bm.0[2] != 0 {
            bitmap::write(spec.bitmap, bm.0[2], out);
        }
        for f in self.fields() {
            let fs = spec.field(f.de).ok_or_else(|| undefined(spec, f.de, None))?;
            field::encode(fs, f, out);
        }
        Ok(())
    }

    /// The encoded message.
    pub fn encode(&self) -> Result<Bytes> {
        let mut out = BytesMut::new();
        self.encode_into(&mut out)?;
        Ok(out.freeze())
    }

    fn slot(&self, de: u16) -> Option<&Slot> {
        self.slots.iter().find(|s| s.de == de)
    }

    /// The element as carried, if present.
    #[inline]
    pub fn field(&self, de: u16) -> Option<FieldRef<'_>> {
        self.slot(de).map(|s| self.store().view(s))
    }

    /// The data of DE `de` as a `Bytes`, for keeping beyond the message: a slice of the decoded
    /// input (no copy), or the element's own bytes.
    pub fn bytes(&self, de: u16) -> Option<Bytes> {
        Some(self.slot_bytes(self.slot(de)?))
    }

    fn slot_bytes(&self, s: &Slot) -> Bytes {
        match s.data {
            Data::Wire { start, len } => {
                let start = start as usize;
                self.wire.slice(start..start + len as usize)
            }
            Data::Owned(i) => self.owned()[i as usize].clone(),
        }
    }

    /// The elements present, ascending.
    pub fn fields(&self) -> Fields<'_> {
        Fields { slots: &self.slots, store: self.store() }
    }

    fn store(&self) -> Store<'_> {
        Store { wire: &self.wire, owned: self.owned() }
    }

    fn owned(&self) -> &[Bytes] {
        self.owned.as_deref().map_or(&[], Vec::as_slice)
    }

    /// The owned list (there is one once an element owns its data).
    fn owned_mut(&mut self) -> &mut Vec<Bytes> {
        self.owned.get_or_insert_default()
    }

    pub fn contains(&self, de: u16) -> bool {
        self.slot(de).is_some()
    }

    /// The text form of DE `de` (see [`field::to_text`]); `None` when absent.
    pub fn text(&self, de: u16) -> Option<std::borrow::Cow<'_, str>> {
        let f = self.field(de)?;
        let fs = self.spec.field(de)?;
        Some(field::to_text(fs, f))
    }

    fn field_spec(&self, de: u16) -> Result<&super::spec::FieldSpec> {
        if !(2..=MAX_FIELD).contains(&de) || (de == 65 && self.spec.tertiary_bitmap) {
            return Err(Error::expected(
                ErrorKind::Field,
                Location::Field(de),
                None,
                "a data element 2-192 (1 and 65 are bitmaps)",
                de,
            ));
        }
        self.spec.field(de).ok_or_else(|| undefined(&self.spec, de, None))
    }

    /// Sets DE `de` from its text form, checked against the spec.
    pub fn set_text(&mut self, de: u16, text: &str) -> Result<()> {
        let f = field::from_text(de, self.field_spec(de)?, text)?;
        self.insert(f);
        Ok(())
    }

    /// Sets a binary (content `b`) element from its bytes.
    pub fn set_bytes(&mut self, de: u16, data: impl Into<Bytes>) -> Result<()> {
        let f = field::from_bytes(de, self.field_spec(de)?, data.into())?;
        self.insert(f);
        Ok(())
    }

    /// Copies DE `de` from `other` when present (an answer echoing its request): the element as
    /// carried, without a copy of its data, when both specs define it alike; otherwise by its text
    /// form, checked against this message's spec.
    pub fn copy_from(&mut self, other: &Message, de: u16) -> Result<()> {
        let Some(s) = other.slot(de) else { return Ok(()) };
        let mine = self.field_spec(de)?;
        if Arc::ptr_eq(&self.spec, &other.spec) || Some(mine) == other.spec.field(de) {
            self.insert(Field { de, units: s.units, data: other.slot_bytes(s) });
            return Ok(());
        }
        let text = other.text(de).map(|t| t.into_owned()).unwrap_or_default();
        self.set_text(de, &text)
    }

    fn insert(&mut self, f: Field) {
        let i = self.slots.binary_search_by_key(&f.de, |x| x.de);
        // An element replaced keeps its place in `owned`, if it had one.
        let k = match i {
            Ok(i) => match self.slots[i].data {
                Data::Owned(k) => {
                    self.owned_mut()[k as usize] = f.data;
                    k
                }
                Data::Wire { .. } => self.push_owned(f.data),
            },
            Err(_) => self.push_owned(f.data),
        };
        let slot = Slot { de: f.de, units: f.units, data: Data::Owned(k) };
        match i {
            Ok(i) => self.slots[i] = slot,
            Err(i) => self.slots.insert(i, slot),
        }
    }

    fn push_owned(&mut self, data: Bytes) -> u32 {
        let owned = self.owned_mut();
        owned.push(data);
        // At most one entry per element (192).
        (owned.len() - 1) as u32
    }

    /// Removes DE `de`; whether it was present.
    pub fn remove(&mut self, de: u16) -> bool {
        let Some(i) = self.slots.iter().position(|s| s.de == de) else { return false };
        if let Data::Owned(k) = self.slots.remove(i).data {
            // Keep `owned` one entry per owning slot: the last entry moves into the hole.
            let owned = self.owned_mut();
            let last = (owned.len() - 1) as u32;
            owned.swap_remove(k as usize);
            if k != last
                && let Some(s) = self.slots.iter_mut().find(|s| matches!(s.data, Data::Owned(j) if j == last))
            {
                s.data = Data::Owned(k);
            }
        }
        true
    }
}

fn read_mti(enc: MtiEncoding, input: &[u8], pos: &mut usize) -> Result<Mti> {
    let n = if enc == MtiEncoding::Bcd { 2 } else { 4 };
    let Some(raw) = input.get(..n) else {
        return Err(Error::expected(
            ErrorKind::Truncated,
            Location::Mti,
            Some(0),
            format!("{n} bytes"),
            format!("{} bytes", input.len()),
        ));
    };
    let digits: [u8; 4] = match enc {
        MtiEncoding::Ascii => [raw[0], raw[1], raw[2], raw[3]],
        MtiEncoding::Ebcdic => {
            let d = |b: u8| if (0xF0..=0xF9).contains(&b) { b - 0xF0 + b'0' } else { b'?' };
            [d(raw[0]), d(raw[1]), d(raw[2]), d(raw[3])]
        }
        MtiEncoding::Bcd => {
            let d = |n: u8| if n <= 9 { n + b'0' } else { b'?' };
            [d(raw[0] >> 4), d(raw[0] & 0xF), d(raw[1] >> 4), d(raw[1] & 0xF)]
        }
    };
    let mti = Mti::from_digits(&digits).map_err(|e| Error { offset: Some(0), ..e })?;
    *pos = n;
    Ok(mti)
}

fn write_mti(enc: MtiEncoding, mti: Mti, out: &mut BytesMut) {
    let d = mti.digits();
    match enc {
        MtiEncoding::Ascii => out.extend_from_slice(d),
        MtiEncoding::Ebcdic => out.extend_from_slice(&d.map(|c| c - b'0' + 0xF0)),
        MtiEncoding::Bcd => {
            out.extend_from_slice(&[(d[0] - b'0') << 4 | (d[1] - b'0'), (d[2] - b'0') << 4 | (d[3] - b'0')])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The sample 0100 encoded under each built-in spec.
    fn samples() -> Vec<(Arc<Spec>, Vec<u8>)> {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../../../examples/0100-contactless.json")).expect("sample");
        ["iso87ascii", "iso87binary", "network"]
            .into_iter()
            .filter_map(|name| {
                let spec = Spec::builtin(name).expect("built-in");
                let msg = Message::from_json(spec, &json).ok()?;
                Some((spec.clone(), msg.encode().expect("encodes").to_vec()))
            })
            .collect()
    }

    fn both(spec: &Spec, input: &[u8]) -> [(Result<Mti>, Vec<Slot>, usize); 2] {
        let run = |fast: bool| {
            let (mut slots, mut pos) = (Vec::new(), 0);
            let r = if fast {
                Message::decode_with::<true>(spec, input, &mut slots, &mut pos)
            } else {
                Message::decode_with::<false>(spec, input, &mut slots, &mut pos)
            };
            (r, slots, pos)
        };
        [run(true), run(false)]
    }

    #[test]
    fn the_samples_decode_the_same_both_ways_and_the_fast_path_serves_them() {
        let samples = samples();
        assert!(samples.len() >= 2, "the sample encodes under at least two built-ins");
        for (spec, wire) in &samples {
            let [fast, general] = both(spec, wire);
            assert!(fast.0.is_ok(), "{}: {:?}", spec.name, fast.0);
            assert_eq!(fast, general, "{}", spec.name);
        }
        let ascii = Spec::builtin("iso87ascii").expect("built-in");
        for de in [3u16, 4, 11, 35, 41, 43] {
            assert!(matches!(ascii.fast[de as usize], super::super::spec::Fast::Ascii { .. }), "DE {de}");
        }
        assert_eq!(
            ascii.fast[55],
            super::super::spec::Fast::Ascii {
                prefix: 3,
                max: 510,
                content: ascii.field(55).unwrap().content
            }
        );
    }

    proptest! {
        /// Whatever the bytes — a sample with some of them changed, cut short or lengthened — the
        /// decoder with the fast path and without it gives the same elements, the same error and
        /// stops at the same place.
        #[test]
        fn the_fast_path_reads_every_input_as_the_general_one(
            which in 0usize..3,
            edits in proptest::collection::vec(
                (any::<proptest::sample::Index>(), prop_oneof![
                    Just(b'0'), Just(b'9'), Just(b'A'), Just(b'z'), Just(b' '), Just(b'='),
                    Just(b'D'), Just(b'C'), Just(0x00u8), Just(0xFFu8), Just(b'/'), Just(b':'), any::<u8>()
                ]),
                0..6,
            ),
            cut in proptest::option::of(any::<proptest::sample::Index>()),
            extra in proptest::collection::vec(any::<u8>(), 0..3),
        ) {
            let samples = samples();
            let (spec, wire) = &samples[which % samples.len()];
            let mut input = wire.clone();
            for (at, b) in edits {
                let i = at.index(input.len());
                input[i] = b;
            }
            if let Some(at) = cut {
                input.truncate(at.index(input.len() + 1));
            }
            input.extend(extra);
            let [fast, general] = both(spec, &input);
            prop_assert_eq!(fast, general);
        }
    }
}
