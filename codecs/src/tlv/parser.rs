//! Zero-copy BER-TLV decoding (EMV Book 3 Annex B), built on `nom` 8.
//!
//! The nom parsers here split one object's tag, length and value off the front of a slice; the
//! [`TlvIter`] walks one level of objects and turns nom failures into [`codecs::Error`]s that name
//! the tag, the byte offset and what was expected versus found; [`decode`] builds the tree of
//! constructed templates with a depth cap. Values are always slices of the caller's input.
//!
//! Two modes (see [`Mode`]): *lenient* is what a switch does with data from cards and terminals
//! (EMV Book 3 Annex B1: `00` bytes may occur before, between or after objects; ISO 7816-4 §5.2
//! adds `FF`; unknown and proprietary tags are kept), *strict* is for validating data we produce or
//! certify (no padding, shortest length form, every tag in the dictionary with a length inside its
//! range, primitive/constructed as the dictionary says).
//!
//! [`codecs::Error`]: crate::Error

use bytes::Bytes;
use nom::IResult;
use nom::Parser;
use nom::bytes::complete::take;
use nom::number::complete::be_u8;

use crate::error::{Error, ErrorKind, Location, Result};

use super::dictionary;
use super::length::MAX_LENGTH_SUBSEQUENT_BYTES;
use super::tag::{MAX_TAG_LEN, Tag};

/// How tolerant decoding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Rejects padding, non-minimal lengths, tags missing from the dictionary, lengths outside the
    /// dictionary's range and a primitive/constructed bit that contradicts the dictionary.
    Strict,
    /// Skips `00`/`FF` padding between objects, accepts any well-formed tag and any definite length.
    #[default]
    Lenient,
}

/// Decoding options: the mode and the nesting cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    pub mode: Mode,
    /// The deepest nesting of constructed templates accepted (1 = top-level objects only may be
    /// constructed, and their children must be primitive... i.e. the number of template levels).
    pub max_depth: usize,
}

/// Default nesting cap: real EMV data nests at most 3 deep (`6F` › `A5` › `BF0C` › `61`), so 8
/// leaves room while bounding recursion on hostile input.
pub const DEFAULT_MAX_DEPTH: usize = 8;

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { mode: Mode::Lenient, max_depth: DEFAULT_MAX_DEPTH }
    }
}

impl DecodeOptions {
    pub fn strict() -> Self {
        DecodeOptions { mode: Mode::Strict, ..Self::default() }
    }
    pub fn lenient() -> Self {
        Self::default()
    }
}

// ---------------------------------------------------------------------------------------------
// nom layer

/// Why a nom parser stopped; positions come from the remaining input at the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The input ended (inside a tag, a length, or before a length).
    Eof,
    /// The tag announces more than [`MAX_TAG_LEN`] bytes.
    TagTooLong,
    /// Length byte `80`.
    Indefinite,
    /// Length byte `84`…`FF`: this many subsequent bytes announced.
    LengthTooLong(u8),
    /// Long-form length with too few subsequent bytes: (announced, present).
    LengthTruncated(u8, usize),
    /// The value is shorter than the length says: (declared, present).
    ValueTruncated(usize, usize),
    /// Any other nom failure.
    Nom(nom::error::ErrorKind),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PErr<'a> {
    pub input: &'a [u8],
    pub problem: Problem,
}

impl<'a> nom::error::ParseError<&'a [u8]> for PErr<'a> {
    fn from_error_kind(input: &'a [u8], kind: nom::error::ErrorKind) -> Self {
        let problem = if kind == nom::error::ErrorKind::Eof { Problem::Eof } else { Problem::Nom(kind) };
        PErr { input, problem }
    }
    fn append(_: &'a [u8], _: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

fn fail<T>(input: &[u8], problem: Problem) -> IResult<&[u8], T, PErr<'_>> {
    Err(nom::Err::Error(PErr { input, problem }))
}

fn eof_at(input: &[u8]) -> nom::Err<PErr<'_>> {
    nom::Err::Error(PErr { input, problem: Problem::Eof })
}

/// One tag (EMV Book 3 B1 / ISO 8825-1 §8.1.2): first byte, then subsequent bytes while b8 = 1.
pub(crate) fn tag(input: &[u8]) -> IResult<&[u8], Tag, PErr<'_>> {
    let (mut rest, first) = be_u8(input).map_err(|_: nom::Err<PErr<'_>>| eof_at(input))?;
    let mut value = u32::from(first);
    if first & 0x1F != 0x1F {
        return Ok((rest, Tag::new(value)));
    }
    for _ in 1..MAX_TAG_LEN {
        let (r, b) = be_u8(rest).map_err(|_: nom::Err<PErr<'_>>| eof_at(input))?;
        rest = r;
        value = (value << 8) | u32::from(b);
        if b & 0x80 == 0 {
            return Ok((rest, Tag::new(value)));
        }
    }
    fail(input, Problem::TagTooLong)
}

/// One definite length (EMV Book 3 B2): returns the length and whether its form was the shortest.
pub(crate) fn length(input: &[u8]) -> IResult<&[u8], (usize, bool), PErr<'_>> {
    let (rest, first) = be_u8(input).map_err(|_: nom::Err<PErr<'_>>| eof_at(input))?;
    if first < 0x80 {
        return Ok((rest, (usize::from(first), true)));
    }
    let n = first & 0x7F;
    if n == 0 {
        return fail(input, Problem::Indefinite);
    }
    if usize::from(n) > MAX_LENGTH_SUBSEQUENT_BYTES {
        return fail(input, Problem::LengthTooLong(n));
    }
    let (rest, bytes) = take::<_, _, PErr<'_>>(usize::from(n))
        .parse(rest)
        .map_err(|_| nom::Err::Error(PErr { input, problem: Problem::LengthTruncated(n, rest.len()) }))?;
    let len = bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    let minimal = super::length::length_field_size(len) == 1 + usize::from(n);
    Ok((rest, (len, minimal)))
}

/// Tag, length and value of one object.
pub(crate) fn object(input: &[u8]) -> IResult<&[u8], RawObject<'_>, PErr<'_>> {
    let (after_tag, t) = tag(input)?;
    let (after_len, (len, minimal)) = length(after_tag)?;
    let (rest, value) = take::<_, _, PErr<'_>>(len).parse(after_len).map_err(|_| {
        nom::Err::Error(PErr { input: after_len, problem: Problem::ValueTruncated(len, after_len.len()) })
    })?;
    let header_len = input.len() - after_len.len();
    Ok((rest, RawObject { tag: t, value, header_len, minimal_length: minimal }))
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct RawObject<'a> {
    pub tag: Tag,
    pub value: &'a [u8],
    pub header_len: usize,
    pub minimal_length: bool,
}

// ---------------------------------------------------------------------------------------------
// Errors at positions

/// Turns a nom failure inside `level` (which starts at absolute offset `base`) for the object
/// starting at relative offset `start` into a codecs error.
fn to_error(level: &[u8], base: usize, start: usize, e: nom::Err<PErr<'_>>) -> Error {
    let (input, problem) = match e {
        nom::Err::Error(p) | nom::Err::Failure(p) => (p.input, p.problem),
        nom::Err::Incomplete(_) => (&level[level.len()..], Problem::Eof),
    };
    let at = base + (level.len() - input.len());
    let obj = &level.get(start..).unwrap_or(&[]);
    let known_tag = super::tag::split_tag(obj).map(|(t, _)| t);
    let loc = match (known_tag, problem) {
        (Some(t), p) if !matches!(p, Problem::TagTooLong) => Location::Tag(t.value()),
        _ => Location::Message,
    };
    let tag_complete = known_tag.is_some();
    let tlv = ErrorKind::Tlv;
    match problem {
        Problem::Eof if !tag_complete => Error::expected(
            tlv,
            loc,
            Some(base + start),
            "a complete tag",
            format_args!("end of input after {} tag byte(s)", obj.len()),
        ),
        Problem::Eof => Error::expected(tlv, loc, Some(at), "a length byte", "end of input"),
        Problem::TagTooLong => Error::expected(
            tlv,
            loc,
            Some(base + start),
            format_args!("a tag of at most {MAX_TAG_LEN} bytes"),
            "a longer tag (b8 set in every subsequent byte)",
        ),
        Problem::Indefinite => Error::expected(
            tlv,
            loc,
            Some(at),
            "a definite length (EMV Book 3 Annex B2)",
            "80 (indefinite length form)",
        ),
        Problem::LengthTooLong(n) => Error::expected(
            tlv,
            loc,
            Some(at),
            "a length of form 00-7F, 81, 82 or 83 (EMV Book 3 Annex B2)",
            format_args!("{:02X} ({n} subsequent length bytes)", 0x80 | n),
        ),
        Problem::LengthTruncated(n, have) => Error::expected(
            tlv,
            loc,
            Some(at),
            format_args!("{n} subsequent length byte(s)"),
            format_args!("{have} before end of input"),
        ),
        Problem::ValueTruncated(declared, have) => Error::expected(
            tlv,
            loc,
            Some(at),
            format_args!("{declared} value byte(s)"),
            format_args!("{have} before end of input"),
        ),
        Problem::Nom(k) => {
            Error::expected(tlv, loc, Some(at), "a TLV object", format_args!("parse failure {k:?}"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public zero-copy API

/// One decoded object: its tag, its value (a slice of the input), and where it sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: Tag,
    pub value: &'a [u8],
    /// Absolute byte offset of the tag's first byte in the input given to the decoder.
    pub offset: usize,
    /// Bytes of tag plus length field.
    pub header_len: usize,
}

impl<'a> Tlv<'a> {
    /// Absolute offset of the first value byte.
    pub fn value_offset(&self) -> usize {
        self.offset + self.header_len
    }

    /// The whole object (tag, length, value) as a slice of `input` — the slice the decoder was given.
    pub fn raw<'b>(&self, input: &'b [u8]) -> Option<&'b [u8]> {
        input.get(self.offset..self.value_offset() + self.value.len())
    }

    /// The value as a `Bytes` sharing `whole`'s buffer (no copy), when `whole` is the input the
    /// decoder was given. `None` if the offsets do not fall inside `whole`.
    pub fn value_bytes(&self, whole: &Bytes) -> Option<Bytes> {
        let start = self.value_offset();
        let end = start.checked_add(self.value.len())?;
        (end <= whole.len()).then(|| whole.slice(start..end))
    }
}

/// Walks the objects of one level (not descending into templates), yielding each object or the
/// first error; after an error the iterator ends.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    level: &'a [u8],
    base: usize,
    pos: usize,
    mode: Mode,
    done: bool,
}

impl<'a> TlvIter<'a> {
    pub fn new(input: &'a [u8], mode: Mode) -> Self {
        Self::at(input, 0, mode)
    }

    /// Walks `level`, reporting offsets as if it started at `base` in a larger input.
    pub fn at(level: &'a [u8], base: usize, mode: Mode) -> Self {
        TlvIter { level, base, pos: 0, mode, done: false }
    }

    fn step(&mut self) -> Option<Result<Tlv<'a>>> {
        let rest = self.level.get(self.pos..).unwrap_or(&[]);
        // EMV Book 3 Annex B1: padding 00 (and FF, ISO 7816-4) may occur around objects.
        let skip = match self.mode {
            Mode::Lenient => rest.iter().take_while(|&&b| b == 0x00 || b == 0xFF).count(),
            Mode::Strict => 0,
        };
        self.pos += skip;
        let rest = rest.get(skip..).unwrap_or(&[]);
        let &first = rest.first()?;
        if self.mode == Mode::Strict && (first == 0x00 || first == 0xFF) {
            return Some(Err(Error::expected(
                ErrorKind::Tlv,
                Location::Message,
                Some(self.base + self.pos),
                "a tag (strict mode: no padding)",
                format_args!("padding byte {first:02X}"),
            )));
        }
        let start = self.pos;
        match object(rest) {
            Ok((_, raw)) => {
                let t = Tlv {
                    tag: raw.tag,
                    value: raw.value,
                    offset: self.base + start,
                    header_len: raw.header_len,
                };
                self.pos += raw.header_len + raw.value.len();
                if self.mode == Mode::Strict
                    && let Err(e) = check_strict(&t, raw.minimal_length)
                {
                    return Some(Err(e));
                }
                Some(Ok(t))
            }
            Err(e) => Some(Err(to_error(self.level, self.base, start, e))),
        }
    }
}

fn check_strict(t: &Tlv<'_>, minimal: bool) -> Result<()> {
    let loc = Location::Tag(t.tag.value());
    if !minimal {
        return Err(Error::expected(
            ErrorKind::Tlv,
            loc,
            Some(t.offset + t.tag.len()),
            format_args!("the shortest length form for {} byte(s)", t.value.len()),
            format_args!("a {}-byte length field", t.header_len - t.tag.len()),
        ));
    }
    let Some(info) = dictionary::lookup(t.tag) else {
        return Err(Error::expected(
            ErrorKind::Tlv,
            loc,
            Some(t.offset),
            "a tag of the EMV dictionary (strict mode)",
            format_args!("unknown tag {}", t.tag),
        ));
    };
    let len = t.value.len();
    if !t.tag.is_constructed() && (len < usize::from(info.min_len) || len > usize::from(info.max_len)) {
        return Err(Error::expected(
            ErrorKind::Tlv,
            loc,
            Some(t.offset),
            format_args!("{} of {} to {} bytes", info.name, info.min_len, info.max_len),
            format_args!("{len} bytes"),
        ));
    }
    Ok(())
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

/// A decoded object with its children (empty for primitive objects; for a constructed object the
/// children are its value decoded as TLV).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node<'a> {
    pub tlv: Tlv<'a>,
    pub children: Vec<Node<'a>>,
}

impl<'a> Node<'a> {
    pub fn tag(&self) -> Tag {
        self.tlv.tag
    }
    pub fn value(&self) -> &'a [u8] {
        self.tlv.value
    }
    pub fn is_constructed(&self) -> bool {
        self.tlv.tag.is_constructed()
    }
}

/// Decodes `input` into a tree: every object whose tag is constructed (b6 = 1) has its value
/// decoded as TLV, down to `opts.max_depth` levels of templates.
pub fn decode(input: &[u8], opts: DecodeOptions) -> Result<Vec<Node<'_>>> {
    decode_level(input, 0, 0, opts)
}

/// [`decode`] with default (lenient) options.
pub fn decode_lenient(input: &[u8]) -> Result<Vec<Node<'_>>> {
    decode(input, DecodeOptions::lenient())
}

/// [`decode`] with strict options.
pub fn decode_strict(input: &[u8]) -> Result<Vec<Node<'_>>> {
    decode(input, DecodeOptions::strict())
}

fn decode_level(level: &[u8], base: usize, depth: usize, opts: DecodeOptions) -> Result<Vec<Node<'_>>> {
    let mut out = Vec::new();
    for item in TlvIter::at(level, base, opts.mode) {
        let tlv = item?;
        let children = if tlv.tag.is_constructed() {
            too_deep(&tlv, depth, opts)?;
            decode_level(tlv.value, tlv.value_offset(), depth + 1, opts)?
        } else {
            Vec::new()
        };
        out.push(Node { tlv, children });
    }
    Ok(out)
}

/// A template at `depth` may hold objects only while `depth` is under the options' bound.
fn too_deep(tlv: &Tlv<'_>, depth: usize, opts: DecodeOptions) -> Result<()> {
    if depth < opts.max_depth {
        return Ok(());
    }
    Err(Error::expected(
        ErrorKind::Tlv,
        Location::Tag(tlv.tag.value()),
        Some(tlv.offset),
        format_args!("templates nested at most {} deep", opts.max_depth),
        "a deeper template",
    ))
}

/// Each top-level object of `input`, in order, checked as [`decode`] checks it (the templates
/// inside well formed, nested within bounds; the same error for the same input), without
/// building the tree under them: for a caller that only indexes the top level.
pub fn walk_top<'a>(input: &'a [u8], opts: DecodeOptions, mut each: impl FnMut(&Tlv<'a>)) -> Result<()> {
    /// `level` at `depth`, each object after the templates inside it are checked.
    fn walk<'a, F: FnMut(usize, &Tlv<'a>)>(
        level: &'a [u8],
        base: usize,
        depth: usize,
        opts: DecodeOptions,
        each: &mut F,
    ) -> Result<()> {
        for item in TlvIter::at(level, base, opts.mode) {
            let tlv = item?;
            if tlv.tag.is_constructed() {
                too_deep(&tlv, depth, opts)?;
                walk(tlv.value, tlv.value_offset(), depth + 1, opts, each)?;
            }
            each(depth, &tlv);
        }
        Ok(())
    }
    walk(input, 0, 0, opts, &mut |depth, tlv| {
        if depth == 0 {
            each(tlv)
        }
    })
}

/// The first object with `tag`, searching depth-first through templates.
pub fn find<'n, 'a>(nodes: &'n [Node<'a>], tag: Tag) -> Option<&'n Node<'a>> {
    for n in nodes {
        if n.tag() == tag {
            return Some(n);
        }
        if let Some(found) = find(&n.children, tag) {
            return Some(found);
        }
    }
    None
}

/// Every primitive object, depth-first, in input order (templates flattened away) — the usual
/// shape for looking up DE 55 values or feeding a DOL.
pub fn primitives<'a>(nodes: &[Node<'a>]) -> Vec<Tlv<'a>> {
    let mut out = Vec::new();
    fn walk<'a>(nodes: &[Node<'a>], out: &mut Vec<Tlv<'a>>) {
        for n in nodes {
            if n.is_constructed() {
                walk(&n.children, out);
            } else {
                out.push(n.tlv);
            }
        }
    }
    walk(nodes, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hx(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn primitive_and_offsets() {
        let b = hx("9F2608C8B507136D921FD0 9F3602001E");
        let nodes = decode_lenient(&b).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].tag(), Tag::new(0x9F26));
        assert_eq!(nodes[0].value(), &hx("C8B507136D921FD0")[..]);
        assert_eq!(nodes[1].tlv.offset, 11);
        assert_eq!(nodes[1].tlv.value_offset(), 14);
    }

    #[test]
    fn indefinite_and_overlong() {
        let e = decode_lenient(&hx("5A80")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Tlv);
        assert_eq!(e.location, Location::Tag(0x5A));
        assert_eq!(e.offset, Some(1));
        assert!(e.detail.contains("indefinite"), "{e}");
        let e = decode_lenient(&hx("5A8401000000")).unwrap_err();
        assert!(e.detail.contains("84"), "{e}");
    }

    #[test]
    fn truncated_value_names_tag() {
        let e = decode_lenient(&hx("9F2608C8B5")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tag 9F26 at byte 3: expected 8 value byte(s), found 2 before end of input"
        );
    }

    #[test]
    fn truncated_tag() {
        let e = decode_lenient(&hx("9F")).unwrap_err();
        assert_eq!(e.location, Location::Message);
        assert_eq!(e.offset, Some(0));
        let e = decode_lenient(&hx("9F")).unwrap_err();
        assert!(e.detail.contains("complete tag"));
    }

    #[test]
    fn padding_lenient_vs_strict() {
        let b = hx("00 9F3602001E FF 00");
        let nodes = decode_lenient(&b).unwrap();
        assert_eq!(nodes.len(), 1);
        assert!(decode_strict(&b).is_err());
    }

    #[test]
    fn depth_cap() {
        // 70 › 70 › … nested 10 deep.
        let mut v = hx("5A0147");
        for _ in 0..10 {
            let mut o = vec![0x70, v.len() as u8];
            o.extend_from_slice(&v);
            v = o;
        }
        let e = decode_lenient(&v).unwrap_err();
        assert!(e.detail.contains("nested"), "{e}");
        let opts = DecodeOptions { max_depth: 10, ..Default::default() };
        assert!(decode(&v, opts).is_ok());
    }
}
