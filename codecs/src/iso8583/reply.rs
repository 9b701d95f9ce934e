//! Answers built from their requests, one way for every host of the network: the response MTI,
//! the elements a response echoes (ISO 8583:1987 §4.4's mandatory echo), and DE 39 — and the
//! format-error answer to a frame that decodes only in part.

use std::sync::Arc;

use bytes::Bytes;

use super::{Message, Spec};

/// Elements an answer carries back from its request.
pub const ECHO: [u16; 18] = [2, 3, 4, 7, 11, 12, 13, 14, 22, 23, 32, 37, 41, 42, 49, 70, 90, 95];

/// An answer to `req` with DE 39 = `rc` (two characters): the response MTI (the request's own
/// when it has none) and the echoed elements the request carries.
pub fn response(req: &Message, rc: &str) -> Message {
    let mti = req.mti().response().unwrap_or(req.mti());
    let mut rsp = Message::echo(req, mti, &ECHO);
    // DE 39 is an2 in every spec we ship; a custom spec without it gets no DE 39.
    let _ = rsp.set_text(39, rc);
    rsp
}

/// The answer to a frame that breaks `spec` (INTERFACES.md §5): DE 39 = 30 with whatever of the
/// echoed elements could be read before the first error, when its MTI is a request's and DE 11
/// and DE 41 were read; `None` otherwise (the connection is then closed).
pub fn format_error(spec: &Arc<Spec>, payload: Bytes) -> Option<Message> {
    // First as the spec with every text element read as raw bytes, so that a bad character
    // anywhere does not hide DE 11 and DE 41; failing that, what decodes before the first error.
    let partial = Message::decode_slice(&lenient(spec), &payload)
        .ok()
        .map(|m| {
            let text =
                |de: u16| m.field(de).and_then(|f| std::str::from_utf8(f.data).ok().map(str::to_string));
            let mut back = Message::new(spec.clone(), m.mti());
            for de in ECHO {
                if let Some(t) = text(de) {
                    let _ = back.set_text(de, &t);
                }
            }
            back
        })
        .or_else(|| Message::salvage(spec, payload))?;
    if partial.mti().is_response() || !partial.contains(11) || !partial.contains(41) {
        return None;
    }
    Some(response(&partial, "30"))
}

/// `spec` with its ASCII elements read as binary: lengths still checked, contents not.
fn lenient(spec: &Arc<Spec>) -> Arc<Spec> {
    use super::{ContentType, DataEncoding, FieldSpec};
    let mut out = (**spec).clone();
    for de in spec.defined().collect::<Vec<_>>() {
        if let Some(f) = spec.field(de)
            && f.encoding == DataEncoding::Ascii
        {
            out = out.with_field(
                de,
                FieldSpec { content: ContentType::B, encoding: DataEncoding::Binary, ..f.clone() },
            );
        }
    }
    Arc::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::Mti;

    fn spec() -> Arc<Spec> {
        Spec::builtin("iso87ascii").expect("spec").clone()
    }

    #[test]
    fn a_response_echoes_its_request_and_says_its_code() {
        let mut req = Message::new(spec(), Mti::AUTHORIZATION_REQUEST);
        for (de, v) in [
            (2, "4761739001010010"),
            (4, "000000001000"),
            (11, "000123"),
            (41, "TERM0001"),
            (52, "0123456789ABCDEF"),
        ] {
            req.set_text(de, v).expect("set");
        }
        let r = response(&req, "05");
        assert_eq!(r.mti(), Mti::AUTHORIZATION_RESPONSE);
        assert_eq!(r.text(39).as_deref(), Some("05"));
        assert_eq!(r.text(11).as_deref(), Some("000123"));
        assert!(!r.contains(52), "a PIN block is never echoed");
    }

    #[test]
    fn an_echo_is_the_element_by_element_copy() {
        let mut req = Message::new(spec(), Mti::AUTHORIZATION_REQUEST);
        for (de, v) in [
            (2, "4761739001010010"),
            (3, "000000"),
            (4, "000000001000"),
            (7, "1205101010"),
            (11, "000123"),
            (41, "TERM0001"),
            (49, "978"),
            (52, "0123456789ABCDEF"),
        ] {
            req.set_text(de, v).expect("set");
        }
        // Decoded (its elements in its input), then one replaced and one added (owned data).
        let mut decoded = Message::decode(&spec(), req.encode().expect("encode")).expect("decode");
        decoded.set_text(4, "000000002000").expect("set");
        decoded.set_text(42, "MERCHANT0000001").expect("set");
        let mut by_copy = Message::new(spec(), Mti::AUTHORIZATION_RESPONSE);
        for de in ECHO {
            by_copy.copy_from(&decoded, de).expect("copy");
        }
        let echo = Message::echo(&decoded, Mti::AUTHORIZATION_RESPONSE, &ECHO);
        assert_eq!(echo.encode().expect("encode"), by_copy.encode().expect("encode"));
        assert!(!echo.contains(52), "only what is named");
        assert_eq!(echo.text(4).as_deref(), Some("000000002000"));
        assert_eq!(echo.text(42).as_deref(), Some("MERCHANT0000001"));
        // Changing the echo leaves what it echoes alone, and the other way round.
        let mut changed = echo.clone();
        changed.set_text(11, "000999").expect("set");
        changed.remove(42);
        decoded.set_text(41, "TERM0002").expect("set");
        assert_eq!((decoded.text(11).as_deref(), decoded.contains(42)), (Some("000123"), true));
        assert_eq!(echo.text(41).as_deref(), Some("TERM0001"));
    }

    #[test]
    fn a_broken_frame_gets_30_when_it_says_who_it_is() {
        let mut req = Message::new(spec(), Mti::AUTHORIZATION_REQUEST);
        for (de, v) in [(11, "000123"), (41, "TERM0001"), (49, "978")] {
            req.set_text(de, v).expect("set");
        }
        let mut raw = req.encode().expect("encode").to_vec();
        // Break DE 49 (the last element): a letter in a numeric field.
        let n = raw.len();
        raw[n - 1] = b'X';
        let r = format_error(&spec(), Bytes::from(raw.clone())).expect("an answer");
        assert_eq!(r.text(11).as_deref(), Some("000123"));
        // A bad character before DE 11 and DE 41 does not hide them.
        let mut early = Message::new(spec(), Mti::AUTHORIZATION_REQUEST);
        for (de, v) in [(4, "000000001000"), (11, "000123"), (41, "TERM0001")] {
            early.set_text(de, v).expect("set");
        }
        let mut bytes = early.encode().expect("encode").to_vec();
        let at = bytes.windows(12).position(|w| w == b"000000001000").expect("DE 4");
        bytes[at] = b'Z';
        let e = format_error(&spec(), Bytes::from(bytes)).expect("an answer");
        assert_eq!((e.text(11).as_deref(), e.text(41).as_deref()), (Some("000123"), Some("TERM0001")));
        let r = format_error(&spec(), Bytes::from(raw)).expect("an answer");
        assert_eq!((r.mti(), r.text(39).as_deref()), (Mti::AUTHORIZATION_RESPONSE, Some("30")));
        assert_eq!(r.text(41).as_deref(), Some("TERM0001"));
        // Without DE 41 there is nobody to answer.
        let mut anon = Message::new(spec(), Mti::AUTHORIZATION_REQUEST);
        anon.set_text(11, "000001").expect("set");
        assert!(format_error(&spec(), anon.encode().expect("encode")).is_none());
    }
}
