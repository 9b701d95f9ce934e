//! What the switch reads from and writes into messages, beyond the codec: the issuer-link matching
//! identity, reversals and advices built from originals (docs/network-spec.md §2), and carrying a
//! message into another spec. Answers to acquirers are built in `pipeline::respond`.

use codecs::iso8583::{Message, Mti};

use crate::pending::MatchKey;

/// Elements a reversal or advice repeats from its original.
const ORIGINAL: [u16; 19] = [2, 3, 4, 7, 11, 12, 13, 14, 18, 22, 23, 25, 32, 35, 37, 41, 42, 43, 49];

/// The issuer-link matching identity: MTI class, DE 11, DE 41 (empty when absent).
pub fn match_key(msg: &Message) -> Option<MatchKey> {
    let d = msg.mti();
    let d = d.digits();
    Some(MatchKey {
        class: [d[0], d[1]],
        stan: msg.bytes(11)?,
        terminal_id: msg.bytes(41).unwrap_or_default(),
    })
}

/// The key that ties reversals and advices to their original: DE 41 | DE 11 | DE 7 | DE 37.
pub fn original_key(msg: &Message) -> String {
    let t = |de| msg.text(de).map(|c| c.into_owned()).unwrap_or_default();
    format!("{}|{}|{}|{}", t(41), t(11), t(7), t(37))
}

/// DE 90 for a reversal of `orig`: original MTI (4), STAN (6), transmission date-time (10),
/// acquiring institution (11, zero-padded), forwarding institution (11 zeros).
pub fn original_data_elements(orig: &Message) -> String {
    let t = |de, w: usize| {
        let v = orig.text(de).map(|c| c.into_owned()).unwrap_or_default();
        format!("{v:0>w$}")
    };
    format!("{}{}{}{}{}", orig.mti(), t(11, 6), t(7, 10), t(32, 11), "0".repeat(11))
}

/// A message of type `mti` repeating `orig`'s identifying elements (reversal 0420, advice 0120).
pub fn derived(orig: &Message, mti: Mti, rc: &str) -> Message {
    let mut m = Message::new(orig.spec().clone(), mti);
    for de in ORIGINAL {
        let _ = m.copy_from(orig, de);
    }
    let _ = m.set_text(39, rc);
    m
}

/// A reversal advice (0420) for `orig`, which was not answered (DE 39 `68`: response received
/// too late) or not completed.
pub fn reversal_for(orig: &Message, rc: &str) -> Message {
    let mut m = derived(orig, Mti::REVERSAL_ADVICE, rc);
    let _ = m.set_text(90, &original_data_elements(orig));
    m
}

/// `msg` in another spec (acquirer listener ↔ issuer link): every element carried over, checked
/// against the target spec. An element the target cannot carry is an error naming it.
pub fn translate(msg: &Message, to: &std::sync::Arc<codecs::iso8583::Spec>) -> codecs::Result<Message> {
    if std::sync::Arc::ptr_eq(msg.spec(), to) {
        return Ok(msg.clone());
    }
    let mut out = Message::new(to.clone(), msg.mti());
    for f in msg.fields() {
        out.copy_from(msg, f.de)?;
    }
    Ok(out)
}
