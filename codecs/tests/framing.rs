//! Stream framing: random frames written back to back and cut at random points reassemble exactly
//! (whatever the `decode` call boundaries), and garbage or oversize headers are refused.

use bytes::{Bytes, BytesMut};
use codecs::ErrorKind;
use codecs::framing::{Frame, FrameCodec, FramingKind, Tpdu};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn kind_strategy() -> impl Strategy<Value = FramingKind> {
    prop::sample::select(FramingKind::ALL.to_vec())
}

fn frames_strategy(kind: FramingKind) -> impl Strategy<Value = Vec<Frame>> {
    let tpdu = (any::<u8>(), any::<u16>(), any::<u16>()).prop_map(|(id, destination, originator)| Tpdu {
        id,
        destination,
        originator,
    });
    let frame = (tpdu, prop::collection::vec(any::<u8>(), 1..600))
        .prop_map(move |(t, p)| Frame { tpdu: kind.has_tpdu().then_some(t), payload: Bytes::from(p) });
    prop::collection::vec(frame, 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn frames_split_anywhere_reassemble(
        (kind, frames) in kind_strategy().prop_flat_map(|k| (Just(k), frames_strategy(k))),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let mut codec = FrameCodec::new(kind);
        let mut wire = BytesMut::new();
        for f in &frames {
            codec.encode(f.clone(), &mut wire).unwrap();
        }
        let wire = wire.freeze();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for w in points.windows(2) {
            buf.extend_from_slice(&wire[w[0]..w[1]]);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn random_bytes_never_panic(kind in kind_strategy(), bytes in prop::collection::vec(any::<u8>(), 0..300), max in 1usize..70000) {
        let mut codec = FrameCodec::with_max_frame_len(kind, max);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            let tpdu = if kind.has_tpdu() { 5 } else { 0 };
            prop_assert!(f.payload.len() + tpdu <= codec.max_frame_len());
        }
    }

    #[test]
    fn ascii_header_with_a_non_digit_is_refused(pos in 0usize..4, bad in any::<u8>().prop_filter("non-digit", |b| !b.is_ascii_digit())) {
        let mut header = *b"0012";
        header[pos] = bad;
        let mut codec = FrameCodec::new(FramingKind::Ascii4);
        let e = codec.decode(&mut BytesMut::from(&header[..])).unwrap_err();
        prop_assert_eq!(e.kind(), Some(ErrorKind::Framing));
        prop_assert!(e.to_string().contains(&format!("position {pos}")), "{}", e);
    }

    #[test]
    fn oversize_is_refused_from_the_header_alone(max in 1usize..9000, over in 1usize..1000) {
        let len = (max + over).min(0xFFFF);
        prop_assume!(len > max);
        let mut codec = FrameCodec::with_max_frame_len(FramingKind::Binary2, max);
        // Only the header has arrived: the frame is refused before any body is buffered.
        let e = codec.decode(&mut BytesMut::from(&(len as u16).to_be_bytes()[..])).unwrap_err();
        prop_assert_eq!(e.kind(), Some(ErrorKind::TooLarge));
        let mut codec = FrameCodec::with_max_frame_len(FramingKind::Ascii4, max);
        let len = len.min(9999);
        prop_assume!(len > codec.max_frame_len());
        let e = codec.decode(&mut BytesMut::from(format!("{len:04}").as_bytes())).unwrap_err();
        prop_assert_eq!(e.kind(), Some(ErrorKind::TooLarge));
    }
}

#[test]
fn zero_length_is_refused() {
    for kind in FramingKind::ALL {
        let mut codec = FrameCodec::new(kind);
        let header: &[u8] = if kind.header_len() == 2 { &[0, 0] } else { b"0000" };
        let e = codec.decode(&mut BytesMut::from(header)).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::Framing), "{kind}");
        assert!(e.to_string().contains("length 0"), "{e}");
    }
}

#[test]
fn pyiso8583_style_ascii_frame() {
    // A 4-ASCII-length frame as pyiso8583-based tools send it: "0032" then a 32-byte 0800.
    let msg = b"08002220000000000000000001123456";
    let mut wire = BytesMut::new();
    FrameCodec::new(FramingKind::Ascii4).encode(Frame::new(Bytes::from_static(msg)), &mut wire).unwrap();
    assert_eq!(&wire[..4], b"0032");
    let f = FrameCodec::new(FramingKind::Ascii4).decode(&mut wire).unwrap().unwrap();
    assert_eq!(&f.payload[..], msg);
}
