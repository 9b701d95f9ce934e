//! Fuzzes the stream framing decoders: the first byte picks the framing and the maximum frame
//! length, the rest is the stream, fed in two chunks. Never panics; every decoded frame re-encodes
//! to exactly the bytes it came from.
#![no_main]

use bytes::BytesMut;
use codecs::framing::{FrameCodec, FramingKind};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let kind = FramingKind::ALL[usize::from(sel & 3)];
    let max = [16usize, 300, 8192, 70_000][usize::from((sel >> 2) & 3)];
    let cut = usize::from(sel >> 4) * rest.len() / 16;
    let mut codec = FrameCodec::with_max_frame_len(kind, max);
    let mut buf = BytesMut::new();
    let mut consumed = 0usize;
    for chunk in [&rest[..cut], &rest[cut..]] {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let used = before - buf.len();
                    let mut out = BytesMut::new();
                    codec.encode(frame, &mut out).expect("re-encode decoded frame");
                    assert_eq!(&out[..], &rest[consumed..consumed + used]);
                    consumed += used;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
