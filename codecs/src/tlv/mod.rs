//! EMV BER-TLV (EMV Book 3 Annex B; ISO/IEC 8825-1): the format of ICC data — DE 55, card
//! responses to GET PROCESSING OPTIONS / READ RECORD / GENERATE AC, issuer scripts.
//!
//! * [`tag`] — the [`Tag`] newtype (multi-byte tags, class, constructed flag).
//! * [`length`] — definite length fields (`00`–`7F`, `81`, `82`, `83`).
//! * [`parser`] — zero-copy decoding on `nom` 8: [`TlvIter`] over one level, [`decode`] into a
//!   tree of [`Node`]s; strict and lenient [`Mode`]s; a depth cap.
//! * [`encoder`] — [`TlvBuilder`] into a `BytesMut`, [`encode_nodes`] for byte-exact round trips.
//! * [`dol`] — Data Object Lists (PDOL, CDOL1/2, DDOL, TDOL) and the data they ask for.
//! * [`dictionary`] — names, sources, formats, lengths, templates and sensitivity of EMV tags.
//! * [`mask`] — [`mask_sensitive`]: the same TLV with PAN, track data, name, expiry… overwritten.
//! * [`index`] — [`TopLevel`]: the top-level objects indexed by tag, each tag once.

pub mod dictionary;
pub mod dol;
pub mod encoder;
pub mod index;
pub mod length;
pub mod mask;
pub mod parser;
pub mod tag;

pub use dictionary::{Format, Sensitivity, Source, TagInfo, lookup};
pub use dol::{DolEntry, build_dol_data, parse_dol};
pub use encoder::{TlvBuilder, encode_nodes, put_object};
pub use index::{TopLevel, repeated};
pub use mask::mask_sensitive;
pub use parser::{
    DecodeOptions, Mode, Node, Tlv, TlvIter, decode, decode_lenient, decode_strict, find, primitives,
};
pub use tag::{Tag, TagClass};
