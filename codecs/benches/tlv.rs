//! Hot paths of EMV data handling per authorisation: decoding DE 55, masking it for the log,
//! building it back, and splitting a frame off a stream buffer.

use std::hint::black_box;

use bytes::BytesMut;
use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::tlv::{Tag, TlvBuilder, decode_lenient, encode_nodes, mask_sensitive};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio_util::codec::{Decoder, Encoder};

/// A contactless ARQC DE 55 (test PAN 4761739001010010).
const DE55: &str = concat!(
    "9F2608C8B507136D921FD0",
    "9F2701809F100706010A03A000009F3704A1B2C3D4",
    "9F3602001E950500000000009A032511259C01005F2A0209789F02060000000100009F0306000000000000",
    "820219808407A00000000310109F1A0209785F34010157134761739001010010D25122011234567890123F"
);

fn benches(c: &mut Criterion) {
    let de55 = hex::decode(DE55).expect("hex");
    c.bench_function("tlv_decode_de55", |b| b.iter(|| decode_lenient(black_box(&de55)).map(|n| n.len())));
    c.bench_function("tlv_mask_de55", |b| b.iter(|| mask_sensitive(black_box(&de55))));
    let nodes = decode_lenient(&de55).expect("decode");
    c.bench_function("tlv_encode_de55", |b| {
        b.iter(|| {
            let mut out = BytesMut::with_capacity(128);
            encode_nodes(black_box(&nodes), &mut out).map(|_| out.len())
        })
    });
    c.bench_function("tlv_builder_4_objects", |b| {
        b.iter(|| -> codecs::Result<usize> {
            let mut t = TlvBuilder::with_capacity(64);
            t.primitive(Tag::new(0x9F26), black_box(&[0xC8; 8]))?;
            t.primitive(Tag::new(0x9F27), &[0x80])?;
            t.primitive(Tag::new(0x9F36), &[0x00, 0x1E])?;
            t.primitive(Tag::new(0x91), &[0x11; 10])?;
            Ok(t.finish().len())
        })
    });
    let mut codec = FrameCodec::new(FramingKind::Binary2);
    let mut wire = BytesMut::new();
    codec.encode(Frame::new(vec![0x30u8; 300]), &mut wire).expect("encode");
    let wire = wire.freeze();
    c.bench_function("framing_decode_300b", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            codec.decode(black_box(&mut buf)).map(|f| f.map(|f| f.payload.len()))
        })
    });
}

criterion_group!(tlv, benches);
criterion_main!(tlv);
