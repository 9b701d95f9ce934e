//! Fuzzes the issuer simulator's decisions on untrusted requests: arbitrary bytes decoded with the
//! network spec and answered (or, when they do not decode, the 30-answer salvage), and — when the
//! input starts with 00 — a valid contactless 0100 or 0400 whose DE 55, DE 52 and DE 95 come from
//! the input. An odd last byte makes the request one from the switch's authenticated link (so that
//! the token service's DF8106 is believed). Never panics; every answer encodes.
#![no_main]

use std::sync::{Arc, LazyLock, Mutex};

use codecs::iso8583::{Message, Spec};
use crypto::keystore::Lmk;
use issuer_sim::cards::{ClearTestCard, ZPK_NAME, generate_test_issuer};
use issuer_sim::host::{Issuer, Origin};
use issuer_sim::testing::{Tx, chip_request};
use libfuzzer_sys::fuzz_target;

struct World {
    issuer: Mutex<Issuer>,
    card: ClearTestCard,
    spec: Arc<Spec>,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let lmk = Lmk::from_hex(&"0123456789ABCDEF".repeat(4)).expect("LMK");
    let mut n = 1u8;
    let mut random = |b: &mut [u8]| {
        for x in b.iter_mut() {
            n = n.wrapping_mul(73).wrapping_add(41);
            *x = n;
        }
    };
    let t = generate_test_issuer(4, lmk.clone(), "2912", &mut random).expect("test issuer");
    let ks = crypto::keystore::Keystore::from_toml(lmk, &t.keystore.to_toml()).expect("keystore");
    let hsm = Arc::new(crypto::hsm::SoftHsm::new(ks, Box::new(|b: &mut [u8]| b.fill(0x3C))));
    World {
        issuer: Mutex::new(Issuer::new(hsm, ZPK_NAME, &t.cards)),
        card: t.clear[0].clone(),
        spec: Spec::builtin("network").expect("spec").clone(),
    }
});

fuzz_target!(|data: &[u8]| {
    let w = &*WORLD;
    let mut issuer = w.issuer.lock().unwrap_or_else(|p| p.into_inner());
    let req = match data.split_first() {
        Some((0, rest)) if rest.len() >= 3 => {
            let atc = u16::from_be_bytes([rest[0], rest[1]]);
            let mut m = chip_request(&w.spec, &w.card, &Tx::purchase(u32::from(atc), 100, atc));
            let (kind, body) = (rest[2], &rest[3..]);
            match kind % 4 {
                0 => {
                    let _ = m.set_icc_data(body);
                }
                1 => {
                    let _ = m.set_bytes(52, body.to_vec());
                }
                2 => {
                    m = issuer_sim::testing::reversal(&m, "0420", 1, None);
                    if let Ok(t) = std::str::from_utf8(body) {
                        let _ = m.set_text(95, t);
                    }
                }
                _ => {
                    if let Ok(t) = std::str::from_utf8(body) {
                        let _ = m.set_text(3, t);
                    }
                }
            }
            m
        }
        _ => match Message::decode_slice(&w.spec, data) {
            Ok(m) => m,
            Err(_) => {
                if let Some(a) = issuer_sim::server::format_error_answer(&w.spec, data) {
                    assert!(a.encode().is_ok());
                }
                return;
            }
        },
    };
    let origin = if data.last().is_some_and(|b| b & 1 == 1) {
        Origin::AuthenticatedLink
    } else {
        Origin::Unauthenticated
    };
    if let Some(answer) = issuer.handle(&req, origin, 1_795_000_000_000, "2611", 7) {
        assert!(answer.encode().is_ok(), "the answer encodes");
    }
});
