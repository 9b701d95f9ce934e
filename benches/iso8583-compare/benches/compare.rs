//! Our codec and iso8583-codec-rs 0.1.0 on the same 0100 (24 elements, iso87ascii layout), in
//! one run. The other crate's API goes hex text → JSON and JSON → hex text, so two comparisons
//! are made: (1) the same API shape on our side (hex → decode → JSON form, JSON form → encode →
//! hex), and (2) our wire-level decode and encode, which is what the switch runs per message.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use codecs::iso8583::{Message, Spec};
use criterion::{Criterion, criterion_group, criterion_main};
use iso8583_compare::{other_spec, sample_json};

fn benches(c: &mut Criterion) {
    let spec = Spec::builtin("iso87ascii").expect("built-in");
    let json = sample_json();
    let msg = Message::from_json(spec, &json).expect("valid");
    let wire: Bytes = msg.encode().expect("encode");
    let hex_text = hex::encode_upper(&wire);
    let other = other_spec();
    let other_json = iso8583_codec_rs::parse(&hex_text, &other).expect("other crate parses the sample");
    assert_eq!(
        iso8583_codec_rs::publish(&other_json, &other).expect("other crate publishes"),
        hex_text,
        "the other crate round-trips the sample"
    );

    let mut g = c.benchmark_group("parse_hex_to_json");
    g.bench_function("paynet", |b| {
        b.iter(|| {
            let raw = hex::decode(black_box(&hex_text)).expect("hex");
            Message::decode(spec, Bytes::from(raw)).map(|m| m.to_json())
        })
    });
    g.bench_function("iso8583-codec-rs", |b| b.iter(|| iso8583_codec_rs::parse(black_box(&hex_text), &other)));
    g.finish();

    let mut g = c.benchmark_group("publish_json_to_hex");
    g.bench_function("paynet", |b| {
        b.iter(|| {
            Message::from_json(spec, black_box(&json)).and_then(|m| m.encode()).map(hex::encode_upper)
        })
    });
    g.bench_function("iso8583-codec-rs", |b| {
        b.iter(|| iso8583_codec_rs::publish(black_box(&other_json), &other))
    });
    g.finish();

    let mut g = c.benchmark_group("wire");
    g.bench_function("paynet_decode", |b| b.iter(|| Message::decode(spec, black_box(wire.clone()))));
    let mut out = BytesMut::with_capacity(1024);
    g.bench_function("paynet_encode", |b| {
        b.iter(|| {
            out.clear();
            black_box(&msg).encode_into(&mut out).map(|_| out.len())
        })
    });
    g.finish();
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
