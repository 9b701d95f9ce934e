//! The journal: every exchange with an acquirer (request and answer in one row, masked), and
//! the switch's other records, committed by the decision state's writer thread in the same
//! transaction as the state the answer depends on (group commit: one sync for every row and
//! change ready at once; see `state`). The shell queues an answer's row and waits until
//! it is durable before the answer leaves; a store that refuses commits keeps the rows in memory
//! and retries them, while new requests are answered 96 (see `engine`).

use std::sync::Arc;

use codecs::iso8583::Message;

/// Which way a journaled message travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From an acquirer (terminal) to the switch.
    AcquirerIn,
    /// From the switch back to the acquirer.
    AcquirerOut,
    /// From the switch to an issuer.
    IssuerOut,
    /// From an issuer to the switch.
    IssuerIn,
    /// One acquirer exchange: the request and the answer given to it, in one row.
    AcquirerExchange,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::AcquirerIn => "acq-in",
            Direction::AcquirerOut => "acq-out",
            Direction::AcquirerExchange => "acq",
            Direction::IssuerOut => "iss-out",
            Direction::IssuerIn => "iss-in",
        }
    }
}

/// One journaled message. Built by the pipeline from the decoded message; never holds clear card data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRow {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub direction: Direction,
    pub mti: String,
    pub stan: Option<String>,
    pub rrn: Option<String>,
    pub terminal_id: Option<String>,
    /// First 6 and last 4 digits only.
    pub pan_masked: Option<String>,
    /// Keyed HMAC-SHA256 fingerprint of the PAN, hex, for look-ups without the PAN.
    pub pan_fingerprint: Option<String>,
    pub amount_minor: Option<u64>,
    pub currency: Option<String>,
    pub response_code: Option<String>,
    /// The route (issuer link) or stage that handled it.
    pub route: Option<String>,
    pub latency_us: Option<u64>,
    /// The masked JSON form of the message (empty when [`JournalRow::message_packed`] holds it).
    pub message_masked: String,
    /// The masked JSON's compact stored form ([`stored`]) when the writer built the row from the
    /// messages: it renders to the JSON, which is then not written out at all. `None` in rows
    /// read back from a store (their `message_masked` is the JSON).
    pub message_packed: Option<Vec<u8>>,
}

impl JournalRow {
    /// The masked JSON form of the message, rendered from the packed form when that is what the
    /// row holds.
    pub fn masked_json(&self) -> std::borrow::Cow<'_, str> {
        match &self.message_packed {
            Some(p) if self.message_masked.is_empty() => {
                // Packed by `stored::pack_into`, which renders back by construction.
                std::borrow::Cow::Owned(stored::render(p).unwrap_or_default())
            }
            _ => std::borrow::Cow::Borrowed(&self.message_masked),
        }
    }
}

/// The journal row of `msg` but its message (masked; the fingerprint is computed by the caller's
/// keyed function): [`message_row`] packs the message beside it.
fn row_without_message(
    msg: &Message,
    direction: Direction,
    at_ms: u64,
    fingerprint: impl Fn(&str) -> String,
    route: Option<&str>,
    latency_us: Option<u64>,
) -> JournalRow {
    let t = |de| msg.text(de).map(|c| c.into_owned());
    let pan = msg.card_number();
    JournalRow {
        at_ms,
        direction,
        mti: msg.mti().to_string(),
        stan: t(11),
        rrn: t(37),
        terminal_id: t(41),
        pan_masked: pan.as_deref().map(codecs::iso8583::describe::mask_pan),
        pan_fingerprint: pan.as_deref().map(fingerprint),
        amount_minor: msg.amount().ok().flatten().map(|a| a.0),
        currency: t(49),
        response_code: t(39),
        route: route.map(str::to_string),
        latency_us,
        message_masked: String::new(),
        message_packed: None,
    }
}

/// A decoded message to journal, made a row by [`message_row`] (masked, its PAN fingerprinted,
/// its stored form packed) on the thread that answers it, before it waits for the row to be
/// durable: the commits' writer, which every request waits for twice, then only writes rows.
/// Borrowed: the row is built at once, so nothing of the messages is copied for it.
pub struct MessageEntry<'a> {
    pub msg: &'a codecs::iso8583::Message,
    /// The answer to `msg`, journaled in the same row (an acquirer exchange).
    pub response: Option<&'a codecs::iso8583::Message>,
    pub direction: Direction,
    pub at_ms: u64,
    pub route: Option<&'a str>,
    pub latency_us: Option<u64>,
}

/// The keyed PAN fingerprint the writer applies (HMAC-SHA256 under the node's key).
pub type Fingerprint = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// The row of a journaled message: masking, fingerprint, the message's stored form packed
/// straight from the messages.
pub fn message_row(e: MessageEntry<'_>, fingerprint: Option<&Fingerprint>) -> JournalRow {
    let mut row = row_without_message(
        e.msg,
        e.direction,
        e.at_ms,
        |p| fingerprint.map(|f| f(p)).unwrap_or_default(),
        e.route,
        e.latency_us,
    );
    if let Some(rsp) = e.response {
        row.response_code = rsp.text(39).map(|c| c.into_owned());
    }
    let mut packed = Vec::new();
    stored::pack_into(&mut packed, e.msg, e.response);
    debug_assert_eq!(
        stored::render(&packed),
        Some(masked_json_text(e.msg, e.response)),
        "the packed form renders to the masked JSON"
    );
    row.message_packed = Some(packed);
    row
}

/// The masked JSON of a message, or of an exchange (`{"request":…,"response":…}`): what a row's
/// message reads as.
pub fn masked_json_text(msg: &Message, response: Option<&Message>) -> String {
    let request = msg.to_masked_json_string();
    let Some(rsp) = response else { return request };
    let answer = rsp.to_masked_json_string();
    let mut both = String::with_capacity(request.len() + answer.len() + 26);
    both.push_str("{\"request\":");
    both.push_str(&request);
    both.push_str(",\"response\":");
    both.push_str(&answer);
    both.push('}');
    both
}

/// A journal row's masked message in a compact stored form, rendered back to exactly the JSON
/// the row was built with (what every reader sees). The JSON is a message's masked form
/// (`{"mti":…,"fields":{…}}`, see `Message::to_masked_json_string`) or an acquirer exchange's
/// (`{"request":…,"response":…}`); in the stored form each element is its number and its text,
/// a text of hex digits (numeric elements, binary ones) is kept as the bytes they spell, and an
/// answer's element equal to the request's is kept as a reference to it. Typically a third of
/// the JSON's size: every group commit writes fewer pages.
///
/// Form: version `1`, then `0` and a message, or `1` and the request and the answer. A message:
/// its MTI (4 bytes), its number of elements, and per element its number and a header
/// `length << 2 | kind` (both LEB128), then `length` bytes: kind 0 the text (UTF-8), kind 1 the
/// bytes of an upper-case hex text, kind 2 (no bytes) the request's element of that number.
pub mod stored {
    const VERSION: u8 = 1;
    const TEXT: u64 = 0;
    const HEX: u64 = 1;
    const SAME: u64 = 2;

    use std::borrow::Cow;

    /// A message's MTI and its elements' numbers and values (texts borrowed from the JSON unless
    /// a text had escapes).
    struct Parsed<'a> {
        mti: &'a str,
        fields: Vec<(u16, Element<'a>)>,
    }

    /// An element's masked value: its text, or — a binary element, whose text is the upper-case
    /// hex of its bytes — those bytes, packed as they are instead of through their hex text; or,
    /// in an answer, the request's element of that number, carried alike (so masked alike).
    #[derive(PartialEq)]
    enum Element<'a> {
        Text(Cow<'a, str>),
        Bytes(Cow<'a, [u8]>),
        Echo,
    }

    /// The compact form of `json`, or `None` when it is not the form of a message or an exchange
    /// (it is then stored as it is). The compact form always renders back to `json` exactly.
    pub fn compact(json: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        compact_into(json, &mut out).then_some(out)
    }

    /// [`compact`] into `out` (cleared first; a buffer reused from row to row); whether `json`
    /// had the form (`out` is then to be ignored).
    ///
    /// Only the text the masked form gives is accepted — every JSON string as
    /// `codecs::iso8583::json::escape_into` writes it (`\"`, `\\` and `\u00xx` below 0x20 the
    /// only escapes, nothing else below 0x20), element numbers as `u16` prints them — so what is
    /// accepted renders back to the same bytes by construction.
    pub fn compact_into(json: &str, out: &mut Vec<u8>) -> bool {
        out.clear();
        // The stored form is about a third of the JSON: one allocation at most.
        out.reserve(json.len() / 2);
        out.push(VERSION);
        let mut p = Cursor { s: json, at: 0 };
        let packed = if p.eat("{\"request\":") {
            (|| {
                let request = p.message()?;
                if !p.eat(",\"response\":") {
                    return None;
                }
                let response = p.message()?;
                if !p.eat("}") || !p.done() {
                    return None;
                }
                put_form(out, &request, Some(&response));
                Some(())
            })()
        } else {
            (|| {
                let msg = p.message()?;
                if !p.done() {
                    return None;
                }
                put_form(out, &msg, None);
                Some(())
            })()
        };
        debug_assert!(packed.is_none() || render(out).as_deref() == Some(json), "{json}");
        packed.is_some()
    }

    /// The compact form of `msg`'s masked JSON — or, with `response`, of the exchange's — into
    /// `out` (cleared first), built from the messages: the bytes [`compact_into`] gives for the
    /// JSON [`super::masked_json_text`] writes, without writing that JSON and parsing it back.
    pub fn pack_into(
        out: &mut Vec<u8>,
        msg: &codecs::iso8583::Message,
        response: Option<&codecs::iso8583::Message>,
    ) {
        out.clear();
        out.reserve(256 + msg.fields().iter().map(|f| f.data.len() + 3).sum::<usize>());
        out.push(VERSION);
        let (mti, rsp_mti) = (msg.mti(), response.map(|r| r.mti()));
        let request = Parsed { mti: mti.as_str(), fields: masked_fields(msg, None) };
        let answer = response
            .zip(rsp_mti.as_ref())
            .map(|(rsp, m)| Parsed { mti: m.as_str(), fields: masked_fields(rsp, Some(msg)) });
        put_form(out, &request, answer.as_ref());
    }

    /// After the version byte: a message (`0`, then it), or an exchange (`1`, the request, then
    /// the answer, its elements equal to the request's as references).
    fn put_form(out: &mut Vec<u8>, request: &Parsed<'_>, answer: Option<&Parsed<'_>>) {
        out.push(u8::from(answer.is_some()));
        put_message(out, request, None);
        if let Some(answer) = answer {
            put_message(out, answer, Some(request));
        }
    }

    /// A message's elements as its masked JSON gives them (those its spec knows, masked). An
    /// answer's element carried as its request's (same length, same bytes, same definition) is
    /// [`Element::Echo`], not masked a second time: masking depends on nothing else.
    fn masked_fields<'a>(
        msg: &'a codecs::iso8583::Message,
        request: Option<&codecs::iso8583::Message>,
    ) -> Vec<(u16, Element<'a>)> {
        use codecs::iso8583::describe::{masked_element_bytes, masked_element_text};
        let spec = msg.spec();
        let mut fields = Vec::with_capacity(msg.fields().len());
        for fl in msg.fields() {
            if let Some(fs) = spec.field(fl.de) {
                let echoed = request.is_some_and(|r| {
                    r.field(fl.de).is_some_and(|q| q.units == fl.units && q.data == fl.data)
                        && (std::sync::Arc::ptr_eq(r.spec(), spec) || r.spec().field(fl.de) == Some(fs))
                });
                if echoed {
                    fields.push((fl.de, Element::Echo));
                    continue;
                }
                let value = match masked_element_bytes(fs, fl) {
                    Some(bytes) => Element::Bytes(bytes),
                    None => Element::Text(masked_element_text(msg, fs, fl)),
                };
                fields.push((fl.de, value));
            }
        }
        fields
    }

    /// The JSON of a compact form; `None` when `b` is not one.
    pub fn render(b: &[u8]) -> Option<String> {
        let mut r = Reader { b, at: 0 };
        if r.byte()? != VERSION {
            return None;
        }
        let mut out = String::with_capacity(b.len() * 3);
        match r.byte()? {
            0 => {
                r.message(&mut out, None)?;
            }
            1 => {
                out.push_str("{\"request\":");
                let request = r.message(&mut out, None)?;
                out.push_str(",\"response\":");
                r.message(&mut out, Some(request.as_slice()))?;
                out.push('}');
            }
            _ => return None,
        }
        (r.at == b.len()).then_some(out)
    }

    fn put_message(out: &mut Vec<u8>, m: &Parsed<'_>, request: Option<&Parsed<'_>>) {
        out.extend_from_slice(m.mti.as_bytes());
        put_varint(out, m.fields.len() as u64);
        let request = request.map_or(&[][..], |r| &r.fields[..]);
        // Both in element order (as messages and their JSON give them): one walk through the
        // request's for all of the answer's. Out of order (a hand-written JSON), a search.
        let ordered = request.is_sorted_by_key(|(d, _)| *d) && m.fields.is_sorted_by_key(|(d, _)| *d);
        let mut r = 0;
        for (de, value) in &m.fields {
            put_varint(out, u64::from(*de));
            let same = if ordered {
                while r < request.len() && request[r].0 < *de {
                    r += 1;
                }
                request.get(r).filter(|(d, _)| d == de)
            } else {
                request.iter().find(|(d, _)| d == de)
            };
            // The same value, the same way (a text and bytes are never both: one spec).
            if same.is_some_and(|(_, v)| v == value) {
                put_varint(out, SAME);
                continue;
            }
            let text: &str = match value {
                Element::Echo => {
                    put_varint(out, SAME);
                    continue;
                }
                Element::Text(text) => text,
                // Bytes whose hex text would be empty are an empty text, as that text would be.
                Element::Bytes(bytes) if bytes.is_empty() => "",
                Element::Bytes(bytes) => {
                    put_varint(out, (bytes.len() as u64) << 2 | HEX);
                    out.extend_from_slice(bytes);
                    continue;
                }
            };
            if is_hex(text) {
                put_varint(out, ((text.len() / 2) as u64) << 2 | HEX);
                out.extend(text.as_bytes().chunks_exact(2).map(|c| (nibble(c[0]) << 4) | nibble(c[1])));
            } else {
                put_varint(out, (text.len() as u64) << 2 | TEXT);
                out.extend_from_slice(text.as_bytes());
            }
        }
    }

    fn is_hex(t: &str) -> bool {
        !t.is_empty()
            && t.len().is_multiple_of(2)
            && t.bytes().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
    }

    fn nibble(c: u8) -> u8 {
        if c.is_ascii_digit() { c - b'0' } else { c - b'A' + 10 }
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    struct Cursor<'a> {
        s: &'a str,
        at: usize,
    }

    impl<'a> Cursor<'a> {
        fn eat(&mut self, lit: &str) -> bool {
            let hit = self.s.as_bytes()[self.at..].starts_with(lit.as_bytes());
            if hit {
                self.at += lit.len();
            }
            hit
        }

        fn done(&self) -> bool {
            self.at == self.s.len()
        }

        /// `{"mti":"NNNN","fields":{"de":"text",…}}`
        fn message(&mut self) -> Option<Parsed<'a>> {
            if !self.eat("{\"mti\":\"") {
                return None;
            }
            let mti = self.s.get(self.at..self.at + 4)?;
            if !mti.bytes().all(|c| c.is_ascii_alphanumeric()) {
                return None;
            }
            self.at += 4;
            if !self.eat("\",\"fields\":{") {
                return None;
            }
            let mut fields = Vec::with_capacity(32);
            while !self.eat("}}") {
                if !fields.is_empty() && !self.eat(",") {
                    return None;
                }
                let de = self.number()?;
                if !self.eat("\":") {
                    return None;
                }
                fields.push((de, Element::Text(self.string()?)));
            }
            Some(Parsed { mti, fields })
        }

        /// An element's number as its key: `"` and the number as `u16` prints it (digits, no
        /// leading zero); the closing quote is left.
        fn number(&mut self) -> Option<u16> {
            if !self.eat("\"") {
                return None;
            }
            let b = self.s.as_bytes();
            let start = self.at;
            let mut v = 0u32;
            while let Some(&c @ b'0'..=b'9') = b.get(self.at) {
                v = v * 10 + u32::from(c - b'0');
                self.at += 1;
                if self.at - start > 5 {
                    return None;
                }
            }
            let digits = self.at - start;
            if digits == 0 || (digits > 1 && b[start] == b'0') {
                return None;
            }
            u16::try_from(v).ok()
        }

        /// A JSON string with the masked form's escapes only, as `escape_into` writes them.
        fn string(&mut self) -> Option<Cow<'a, str>> {
            if !self.eat("\"") {
                return None;
            }
            let b = self.s.as_bytes();
            let start = self.at;
            // No escape (nearly always): the text is the JSON's own.
            loop {
                match *b.get(self.at)? {
                    b'"' => {
                        let text = &self.s[start..self.at];
                        self.at += 1;
                        return Some(Cow::Borrowed(text));
                    }
                    b'\\' => break,
                    c if c < 0x20 => return None,
                    _ => self.at += 1,
                }
            }
            let mut out = b[start..self.at].to_vec();
            loop {
                let c = *b.get(self.at)?;
                self.at += 1;
                match c {
                    // Cut at ASCII bytes only: the bytes are UTF-8.
                    b'"' => return String::from_utf8(out).ok().map(Cow::Owned),
                    b'\\' => {
                        let e = *b.get(self.at)?;
                        self.at += 1;
                        match e {
                            b'"' | b'\\' => out.push(e),
                            // `\u00` and two lower-case hex digits, below 0x20.
                            b'u' => {
                                let hex = b.get(self.at..self.at + 4)?;
                                let low = |c: u8| match c {
                                    b'0'..=b'9' => Some(c - b'0'),
                                    b'a'..=b'f' => Some(c - b'a' + 10),
                                    _ => None,
                                };
                                if hex[0] != b'0' || hex[1] != b'0' || !matches!(hex[2], b'0' | b'1') {
                                    return None;
                                }
                                out.push(((hex[2] - b'0') << 4) | low(hex[3])?);
                                self.at += 4;
                            }
                            _ => return None,
                        }
                    }
                    c if c < 0x20 => return None,
                    c => out.push(c),
                }
            }
        }
    }

    struct Reader<'a> {
        b: &'a [u8],
        at: usize,
    }

    impl Reader<'_> {
        fn byte(&mut self) -> Option<u8> {
            let c = *self.b.get(self.at)?;
            self.at += 1;
            Some(c)
        }

        fn varint(&mut self) -> Option<u64> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let c = self.byte()?;
                v |= u64::from(c & 0x7f) << shift;
                if c & 0x80 == 0 {
                    return Some(v);
                }
            }
            None
        }

        fn take(&mut self, n: usize) -> Option<&[u8]> {
            let s = self.b.get(self.at..self.at.checked_add(n)?)?;
            self.at += n;
            Some(s)
        }

        /// Renders one message into `out`; returns its elements (an answer refers to them).
        fn message(
            &mut self,
            out: &mut String,
            request: Option<&[(u16, String)]>,
        ) -> Option<Vec<(u16, String)>> {
            let mti = std::str::from_utf8(self.take(4)?).ok()?;
            out.push_str("{\"mti\":\"");
            out.push_str(mti);
            out.push_str("\",\"fields\":{");
            let n = self.varint()?;
            let mut fields = Vec::with_capacity(n.min(256) as usize);
            for i in 0..n {
                let de = u16::try_from(self.varint()?).ok()?;
                let head = self.varint()?;
                let len = usize::try_from(head >> 2).ok()?;
                let text = match head & 3 {
                    TEXT => std::str::from_utf8(self.take(len)?).ok()?.to_string(),
                    HEX => codecs::hex_upper(self.take(len)?),
                    SAME if len == 0 => request?.iter().find(|(d, _)| *d == de)?.1.clone(),
                    _ => return None,
                };
                if i > 0 {
                    out.push(',');
                }
                out.push('"');
                out.push_str(&de.to_string());
                out.push_str("\":\"");
                codecs::iso8583::json::escape_into(out, &text);
                out.push('"');
                fields.push((de, text));
            }
            out.push_str("}}");
            Some(fields)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange() -> (Message, Message) {
        let msg = crate::pipeline::tests::purchase(42, 1234, 7);
        let answer = answer_of(&msg);
        (msg, answer)
    }

    fn answer_of(msg: &Message) -> Message {
        crate::pipeline::tests::approval(msg)
    }

    #[test]
    fn rows_packed_from_the_messages_are_the_json_packed_whatever_the_texts_hold() {
        // What DE 43 (ans) may hold, JSON's own punctuation and escapes among it.
        let names = ["PLAIN SHOP", "QUOTE\" AND \\ BACKSLASH", "{\"fields\":{}},[]:", "\\u0041 \\\""];
        for (i, name) in names.iter().enumerate() {
            let mut msg = crate::pipeline::tests::purchase(100 + i as u32, 500 + i as u64, 3);
            msg.set_text(43, &format!("{name:<40}")).expect("DE 43");
            let mut answer = answer_of(&msg);
            // An answer element that differs from the request's is kept, one that is equal
            // refers to it.
            let _ = answer.set_text(43, "DIFFERENT NAME");
            for response in [None, Some(&answer)] {
                let mut packed = Vec::new();
                stored::pack_into(&mut packed, &msg, response);
                let json = masked_json_text(&msg, response);
                assert_eq!(
                    Some(packed.clone()),
                    stored::compact(&json),
                    "{name:?}: same bytes as the JSON packed"
                );
                assert_eq!(stored::render(&packed), Some(json));
            }
        }
    }

    /// Binary elements are packed from their bytes, not through their hex text: the same bytes
    /// as the JSON packed, for chip data equal in the answer, different, or empty.
    #[test]
    fn binary_elements_pack_as_their_json_packs() {
        let (msg, answer) = exchange();
        let chip = msg.bytes(55).expect("DE 55");
        let mut other = answer.clone();
        other
            .set_bytes(55, bytes::Bytes::from_static(&[0x91, 0x0A, 1, 2, 3, 4, 5, 6, 7, 8, 0x30, 0x30]))
            .expect("DE 55");
        let mut same = answer.clone();
        same.set_bytes(55, chip.clone()).expect("DE 55");
        let mut empty = msg.clone();
        empty.set_bytes(55, bytes::Bytes::new()).expect("an empty DE 55");
        let cases = [(&msg, Some(&other)), (&msg, Some(&same)), (&empty, Some(&answer)), (&empty, None)];
        for (request, response) in cases {
            let mut packed = Vec::new();
            stored::pack_into(&mut packed, request, response);
            let json = masked_json_text(request, response);
            assert_eq!(Some(packed.clone()), stored::compact(&json), "{json}");
            assert_eq!(stored::render(&packed), Some(json));
        }
    }

    /// An answer's elements carried as the request's are packed as references to them without
    /// being masked again — also when the answer is under another spec, whose definitions of
    /// the same elements may differ: the same bytes as the JSON packed either way.
    #[test]
    fn an_answer_under_another_spec_packs_as_its_json_packs() {
        let (msg, answer) = exchange();
        for name in ["network", "iso87binary", "iso87ascii"] {
            let spec = codecs::iso8583::Spec::builtin(name).expect("builtin spec");
            let mut other = Message::new(spec.clone(), answer.mti());
            for f in answer.fields() {
                other.copy_from(&answer, f.de).expect("copied");
            }
            let mut packed = Vec::new();
            stored::pack_into(&mut packed, &msg, Some(&other));
            let json = masked_json_text(&msg, Some(&other));
            assert_eq!(Some(packed.clone()), stored::compact(&json), "{name}: {json}");
            assert!(!json.contains("4761739001010010"), "masked: {json}");
            assert_eq!(stored::render(&packed), Some(json));
        }
    }

    #[test]
    fn the_compact_form_renders_back_to_the_exact_json_of_a_message_and_of_an_exchange() {
        let (msg, answer) = exchange();
        let entry = MessageEntry {
            msg: &msg,
            response: Some(&answer),
            direction: Direction::AcquirerExchange,
            at_ms: 1,
            route: None,
            latency_us: None,
        };
        let row = message_row(entry, None);
        let json = row.masked_json().into_owned();
        assert_eq!(json, masked_json_text(&msg, Some(&answer_of(&msg))));
        let packed = stored::compact(&json).expect("an exchange packs");
        assert_eq!(row.message_packed.as_ref(), Some(&packed), "packed from the messages as from the JSON");
        assert_eq!(stored::render(&packed).as_deref(), Some(json.as_str()));
        assert!(packed.len() * 2 < json.len(), "{} bytes for {} of JSON", packed.len(), json.len());
        // The masked PAN stays masked in the stored form too.
        let pan = msg.card_number().expect("PAN");
        assert!(!packed.windows(pan.len()).any(|w| w == pan.as_bytes()));
        let single = msg.to_masked_json_string();
        let packed = stored::compact(&single).expect("a message packs");
        assert_eq!(stored::render(&packed).as_deref(), Some(single.as_str()));
    }

    proptest::proptest! {
        /// Any texts, escaped as the masked form escapes them, pack and render back exactly; and
        /// any text at all either is refused or renders back exactly (the parse accepts only
        /// what it can give back).
        #[test]
        fn any_text_round_trips_and_nothing_packs_that_does_not(
            texts in proptest::collection::vec(("[0-9]{1,3}", ".{0,40}"), 0..6),
            raw in "[{}\"\\\\:,a-z0-9 \\x00-\\x1f\u{e9}]{0,60}",
        ) {
            let mut json = String::from("{\"mti\":\"0100\",\"fields\":{");
            let mut seen = std::collections::HashSet::new();
            for (de, text) in &texts {
                let de = de.parse::<u16>().expect("digits");
                if !seen.insert(de) {
                    continue;
                }
                if seen.len() > 1 {
                    json.push(',');
                }
                json.push_str(&format!("\"{de}\":\""));
                codecs::iso8583::json::escape_into(&mut json, text);
                json.push('"');
            }
            json.push_str("}}");
            let packed = stored::compact(&json).expect("packs");
            let back = stored::render(&packed);
            proptest::prop_assert_eq!(back.as_deref(), Some(json.as_str()));
            let inside = format!("{{\"mti\":\"0100\",\"fields\":{{\"3\":\"{raw}\"}}}}");
            for other in [raw.clone(), inside] {
                if let Some(p) = stored::compact(&other) {
                    let back = stored::render(&p);
                    proptest::prop_assert_eq!(back.as_deref(), Some(other.as_str()));
                }
            }
        }
    }

    proptest::proptest! {
        /// An exchange's answer elements equal to the request's are stored as references to
        /// them; in element order or not, with elements repeated or not, it renders back exactly.
        #[test]
        fn an_exchange_round_trips_whatever_its_elements_order(
            request in proptest::collection::vec((1u16..6, "[a-c]{0,2}"), 0..8),
            answer in proptest::collection::vec((1u16..6, "[a-c]{0,2}"), 0..8),
            sort_request: bool,
            sort_answer: bool,
        ) {
            let form = |fields: &[(u16, String)], sort: bool| {
                let mut fields = fields.to_vec();
                if sort {
                    fields.sort_by_key(|(d, _)| *d);
                }
                let texts: Vec<String> = fields.iter().map(|(d, t)| format!("\"{d}\":\"{t}\"")).collect();
                format!("{{\"mti\":\"0100\",\"fields\":{{{}}}}}", texts.join(","))
            };
            let json = format!(
                "{{\"request\":{},\"response\":{}}}",
                form(&request, sort_request),
                form(&answer, sort_answer)
            );
            let packed = stored::compact(&json).expect("packs");
            let back = stored::render(&packed);
            proptest::prop_assert_eq!(back.as_deref(), Some(json.as_str()));
        }
    }

    #[test]
    fn texts_with_escapes_round_trip_and_other_json_is_left_as_it_is() {
        let json =
            r#"{"mti":"0100","fields":{"3":"000000","43":"A \"B\" \\ \u0001 é","48":"0a1B","55":"9F2608"}}"#;
        let packed = stored::compact(json).expect("packs");
        assert_eq!(stored::render(&packed).as_deref(), Some(json));
        for other in [
            "{}",
            "{\"i\":1}",
            "",
            r#"{"mti":"0100","fields":{"07":"1"}}"#,
            r#"{"mti":"0100","fields":{"3":"\n"}}"#,
        ] {
            assert_eq!(stored::compact(other), None, "{other}");
        }
    }

    #[test]
    fn a_damaged_compact_form_is_refused_not_misread() {
        let (msg, _) = exchange();
        let packed = stored::compact(&msg.to_masked_json_string()).expect("packs");
        for cut in 0..packed.len() {
            assert_eq!(stored::render(&packed[..cut]), None, "cut at {cut}");
        }
        let mut longer = packed.clone();
        longer.push(0);
        assert_eq!(stored::render(&longer), None);
        assert_eq!(stored::render(&[2, 0]), None);
        // An answer's reference to the request, in a message without one.
        assert_eq!(stored::render(&[1, 0, b'0', b'1', b'1', b'0', 1, 39, 2]), None);
    }
}
