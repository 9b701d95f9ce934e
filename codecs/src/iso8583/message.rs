//! An ISO 8583 message: MTI plus data elements, decoded from and encoded to the wire by a [`Spec`].
//!
//! Decoding checks the size cap first, then reads MTI, bitmaps and each element in bitmap order
//! (ISO 8583:1987 §4.1), keeping every element as a `Bytes` slice of the input. Encoding derives
//! the bitmaps from the elements present and writes into a `BytesMut`; decode → encode is
//! byte-exact.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::bitmap::{self, Bitmap};
use super::field::{self, Field};
use super::mti::Mti;
use super::spec::{MAX_FIELD, MtiEncoding, Spec};
use crate::error::{Error, ErrorKind, Location, Result};

/// A message: its spec, MTI and elements (ascending by DE number).
#[derive(Clone)]
pub struct Message {
    spec: Arc<Spec>,
    mti: Mti,
    fields: Vec<Field>,
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.spec.name == other.spec.name && self.mti == other.mti && self.fields == other.fields
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
        Message { spec, mti, fields: Vec::with_capacity(32) }
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

    /// Decodes one whole message; its elements are slices of `input`.
    pub fn decode(spec: &Arc<Spec>, input: Bytes) -> Result<Message> {
        let mut fields = Vec::with_capacity(32);
        let mti = Self::decode_into(spec, &input, &mut fields, &mut 0)?;
        Ok(Message { spec: spec.clone(), mti, fields })
    }

    /// For answering a message that does not decode: the MTI and the elements read before the
    /// first error (a switch answers a format error to whoever DE 11 and DE 41 name, when they
    /// could be read). `None` when not even the MTI and primary bitmap could be read.
    pub fn salvage(spec: &Arc<Spec>, input: Bytes) -> Option<Message> {
        let mut fields = Vec::with_capacity(32);
        match Self::decode_into(spec, &input, &mut fields, &mut 0) {
            Ok(mti) => Some(Message { spec: spec.clone(), mti, fields }),
            Err(_) => {
                let mut pos = 0;
                let mti = read_mti(spec.mti, &input, &mut pos).ok()?;
                Some(Message { spec: spec.clone(), mti, fields })
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
        Self::decode_into(spec, input, &mut Vec::with_capacity(32), &mut pos).err().map(|_| pos)
    }

    /// Decodes into `fields`, the read position in `*pos`; on an error `*pos` is left at the start
    /// of the part (MTI, bitmap, element, trailing bytes) that failed: every reader advances it
    /// only on success.
    fn decode_into(spec: &Arc<Spec>, input: &Bytes, fields: &mut Vec<Field>, pos: &mut usize) -> Result<Mti> {
        if input.len() > spec.max_message_len {
            return Err(Error::expected(
                ErrorKind::TooLarge,
                Location::Message,
                Some(0),
                format!("at most {} bytes", spec.max_message_len),
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
        for w in 0..3 {
            for de in bm.iter_word(w) {
                if de == 1 || (de == 65 && spec.tertiary_bitmap) {
                    continue;
                }
                let f = spec.field(de).ok_or_else(|| undefined(spec, de, Some(*pos)))?;
                fields.push(field::decode(de, f, input, pos)?);
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
        for f in &self.fields {
            bm.set(f.de);
        }
        if bm.0[2] != 0 {
            bm.set(65);
        }
        if bm.0[1] != 0 {
            bm.set(1);
        }
        out.reserve(self.fields.iter().map(|f| f.data.len() + 4).sum::<usize>() + 64);
        write_mti(spec.mti, self.mti, out);
        bitmap::write(spec.bitmap, bm.0[0], out);
        if bm.contains(1) {
            bitmap::write(spec.bitmap, bm.0[1], out);
        }
        if bm.0[2] != 0 {
            bitmap::write(spec.bitmap, bm.0[2], out);
        }
        for f in &self.fields {
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

    /// The element as carried, if present.
    #[inline]
    pub fn field(&self, de: u16) -> Option<&Field> {
        self.fields.iter().find(|f| f.de == de)
    }

    /// The elements present, ascending.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    pub fn contains(&self, de: u16) -> bool {
        self.field(de).is_some()
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
        let Some(f) = other.field(de) else { return Ok(()) };
        let mine = self.field_spec(de)?;
        if Arc::ptr_eq(&self.spec, &other.spec) || Some(mine) == other.spec.field(de) {
            self.insert(f.clone());
            return Ok(());
        }
        let text = other.text(de).map(|t| t.into_owned()).unwrap_or_default();
        self.set_text(de, &text)
    }

    fn insert(&mut self, f: Field) {
        match self.fields.binary_search_by_key(&f.de, |x| x.de) {
            Ok(i) => self.fields[i] = f,
            Err(i) => self.fields.insert(i, f),
        }
    }

    /// Removes DE `de`, returning it.
    pub fn remove(&mut self, de: u16) -> Option<Field> {
        let i = self.fields.iter().position(|f| f.de == de)?;
        Some(self.fields.remove(i))
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
