//! The hot path of every authorisation: decoding a realistic 0100 (25 elements, a 176-byte DE 55)
//! and encoding it again, with both built-in specs; plus the JSON form used by paytool and the
//! masked form used in logs.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use codecs::iso8583::{Message, Spec};
use criterion::{Criterion, criterion_group, criterion_main};

fn benches(c: &mut Criterion) {
    let json: serde_json::Value =
        serde_json::from_str(include_str!("../../examples/0100-contactless.json")).expect("sample JSON");
    for name in ["iso87ascii", "iso87binary"] {
        let spec = Spec::builtin(name).expect("built-in");
        let msg = Message::from_json(spec, &json).expect("valid");
        let wire: Bytes = msg.encode().expect("encode");
        c.bench_function(&format!("iso8583_decode_0100_{name}"), |b| {
            b.iter(|| Message::decode(spec, black_box(wire.clone())).map(|m| m.fields().len()))
        });
        let mut out = BytesMut::with_capacity(1024);
        c.bench_function(&format!("iso8583_encode_0100_{name}"), |b| {
            b.iter(|| {
                out.clear();
                black_box(&msg).encode_into(&mut out).map(|_| out.len())
            })
        });
        c.bench_function(&format!("iso8583_masked_json_0100_{name}"), |b| {
            b.iter(|| black_box(&msg).to_masked_json())
        });
        // The journal's form of the same (each request and answer is written so).
        c.bench_function(&format!("iso8583_masked_json_text_0100_{name}"), |b| {
            b.iter(|| black_box(&msg).to_masked_json_string())
        });
    }
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
