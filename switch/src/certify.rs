//! Certification mode of an acquirer listener (`certification = true` in its config): every
//! message a device under test sends is checked against the network's rules — that it decodes
//! (the codec's error names the element and byte offset), the elements its class and POS entry
//! mode require (docs/network-spec.md §2–3, the very rules of [`crate::validate`]), DE 22 being a
//! mode the network knows, the DE 55 tags a chip request must carry and their lengths (EMV 4.4
//! Book 3 Annex A), and the message MAC when the listener has one — and a report is kept per
//! terminal (DE 41): each check with what was expected, what was found, and the offending bytes in
//! hex. The report is served on the admin endpoint (`GET /certification/{tid}`), so it holds no
//! more cardholder data than a log line may: a finding about an element that can carry a PAN,
//! CVV2, track, PIN or key data (the message spec's masking, [`codecs::iso8583::describe`])
//! names the element and the problem, never its bytes; sensitive EMV tags are masked as
//! `tlv::mask_sensitive` masks them; and of a message that does not decode, only the part the
//! error is about is shown, when it is not sensitive ([`describe::error_excerpt`]) — never the
//! bytes around it, which may be the next element's PAN.
//!
//! The findings are additive: the message is still processed as on any listener (and answered
//! 30 when it does not decode).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use codecs::iso8583::describe;
use codecs::iso8583::spec::Sensitivity;
use codecs::iso8583::{Message, Spec};
use codecs::tlv::{self, DecodeOptions, Node, Tag};
use serde::Serialize;

use crate::clock::Clock;
use crate::validate::{
    AUTHORIZATION_REQUIRED, ICC_TAG_LENGTHS, POS_ENTRY_MODES, RECOMMENDED_ICC_TAGS, REQUIRED_ICC_TAGS,
    REVERSAL_REQUIRED, is_chip, required_for_entry,
};

/// A check's outcome. `warn`: a recommendation not followed (not a failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

/// One check of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `format`, `required-element`, `pos-entry-mode`, `icc-format`, `icc-tag`, `icc-tag-length`,
    /// `mac`.
    pub check: &'static str,
    /// `message`, `DE 22`, `tag 9F37`...
    pub element: String,
    pub verdict: Verdict,
    pub expected: String,
    pub found: String,
    /// Byte offset in the message as received (after the frame header), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    /// The offending bytes in uppercase hex; never a sensitive element's (see the module doc).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

/// The checks of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageReport {
    pub at_ms: u64,
    pub mti: String,
    pub stan: Option<String>,
    /// `fail` when any check failed, else `warn` when any warned, else `pass`.
    pub verdict: Verdict,
    pub checks: Vec<Check>,
}

/// What a terminal has sent on certification listeners so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TerminalReport {
    pub terminal_id: String,
    pub messages: u64,
    pub passed: u64,
    pub warned: u64,
    pub failed: u64,
    /// The most recent messages, oldest first.
    pub recent: VecDeque<MessageReport>,
}

/// A terminal's counts, for the list of terminals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TerminalSummary {
    pub terminal_id: String,
    pub messages: u64,
    pub passed: u64,
    pub warned: u64,
    pub failed: u64,
}

/// DE 41 of messages whose DE 41 could not be read.
pub const UNREADABLE_TID: &str = "(unreadable)";

/// The most terminals a log keeps by default.
pub const MAX_TERMINALS: usize = 10_000;

/// How long a terminal's report is kept after its last message, by default: a day.
pub const TERMINAL_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// The per-terminal reports of a node's certification listeners: bounded in terminals (the one
/// heard from longest ago makes room) and in age (a terminal silent for longer than the
/// time-to-live is forgotten — when a message is recorded, and when the log is read).
pub struct CertificationLog {
    terminals: Mutex<Terminals>,
    keep: usize,
    max_terminals: usize,
    ttl_ms: u64,
    clock: Arc<dyn Clock>,
}

/// When a terminal was last heard from.
fn last_heard(r: &TerminalReport) -> u64 {
    r.recent.back().map(|m| m.at_ms).unwrap_or(0)
}

/// The reports by terminal, and the terminals by when they were last heard from (the stalest
/// first): ageing and making room cost a lookup, not a scan.
#[derive(Default)]
struct Terminals {
    by_tid: BTreeMap<String, TerminalReport>,
    by_age: BTreeSet<(u64, String)>,
}

impl Terminals {
    fn remove_stalest(&mut self) {
        if let Some((_, tid)) = self.by_age.pop_first() {
            self.by_tid.remove(&tid);
        }
    }

    /// Forgets the terminals silent for longer than `ttl_ms` at `now_ms`.
    fn expire(&mut self, now_ms: u64, ttl_ms: u64) {
        while self.by_age.first().is_some_and(|(at, _)| now_ms.saturating_sub(*at) > ttl_ms) {
            self.remove_stalest();
        }
    }
}

impl CertificationLog {
    /// Keeps the last `keep` messages of each terminal, for at most [`MAX_TERMINALS`] terminals,
    /// each for [`TERMINAL_TTL_MS`] after its last message (the system clock ages them when the
    /// log is read).
    pub fn new(keep: usize) -> Self {
        CertificationLog {
            terminals: Mutex::new(Terminals::default()),
            keep: keep.max(1),
            max_terminals: MAX_TERMINALS,
            ttl_ms: TERMINAL_TTL_MS,
            clock: Arc::new(crate::clock::SystemClock),
        }
    }

    /// The same log for at most `max_terminals` terminals.
    pub fn with_max_terminals(mut self, max_terminals: usize) -> Self {
        self.max_terminals = max_terminals.max(1);
        self
    }

    /// The same log keeping a terminal for `ttl_ms` after its last message.
    pub fn with_ttl(mut self, ttl_ms: u64) -> Self {
        self.ttl_ms = ttl_ms;
        self
    }

    /// The same log aged by `clock` when it is read (the node's clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Terminals kept now.
    pub fn len(&self) -> usize {
        self.terminals.lock().unwrap_or_else(|p| p.into_inner()).by_tid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn record(&self, tid: String, report: MessageReport) {
        let mut guard = self.terminals.lock().unwrap_or_else(|p| p.into_inner());
        let t = &mut *guard;
        t.expire(report.at_ms, self.ttl_ms);
        // Full: the terminal heard from longest ago makes room (a flood of made-up TIDs must
        // neither grow the log nor lock real terminals out of it).
        if !t.by_tid.contains_key(&tid) && t.by_tid.len() >= self.max_terminals {
            t.remove_stalest();
        }
        let r = t
            .by_tid
            .entry(tid.clone())
            .or_insert_with(|| TerminalReport { terminal_id: tid.clone(), ..Default::default() });
        t.by_age.remove(&(last_heard(r), tid.clone()));
        r.messages += 1;
        match report.verdict {
            Verdict::Pass => r.passed += 1,
            Verdict::Warn => r.warned += 1,
            Verdict::Fail => r.failed += 1,
        }
        if r.recent.len() >= self.keep {
            r.recent.pop_front();
        }
        r.recent.push_back(report);
        t.by_age.insert((last_heard(r), tid));
    }

    /// Checks a decoded message (`raw` as received; `mac`: the listener's MAC verdict when it
    /// has a MAC key) and records the report under its DE 41.
    pub fn record_message(&self, msg: &Message, raw: &[u8], mac: Option<bool>, at_ms: u64) -> MessageReport {
        let report = report(msg.mti().to_string(), text(msg, 11), check_message(msg, raw, mac), at_ms);
        self.record(text(msg, 41).unwrap_or_else(|| UNREADABLE_TID.into()), report.clone());
        report
    }

    /// Records a message that does not decode under `spec`, with the codec's error.
    /// No byte of the frame is kept beyond what [`describe::error_excerpt`] allows, and the
    /// codec's explanation never holds a sensitive element's content.
    pub fn record_undecodable(
        &self,
        spec: &std::sync::Arc<Spec>,
        raw: &bytes::Bytes,
        err: &codecs::Error,
        at_ms: u64,
    ) {
        let partial = Message::salvage(spec, raw.clone());
        let tid = partial.as_ref().and_then(|m| text(m, 41)).unwrap_or_else(|| UNREADABLE_TID.into());
        let mti = partial.as_ref().map(|m| m.mti().to_string()).unwrap_or_else(|| "????".into());
        let stan = partial.as_ref().and_then(|m| text(m, 11));
        let report = report(mti, stan, vec![format_failure(spec, raw, err)], at_ms);
        self.record(tid, report);
    }

    /// The locked reports, the stale ones gone.
    fn current(&self) -> std::sync::MutexGuard<'_, Terminals> {
        let mut t = self.terminals.lock().unwrap_or_else(|p| p.into_inner());
        t.expire(self.clock.now_ms(), self.ttl_ms);
        t
    }

    pub fn terminal(&self, tid: &str) -> Option<TerminalReport> {
        self.current().by_tid.get(tid).cloned()
    }

    pub fn terminals(&self) -> Vec<TerminalSummary> {
        self.current()
            .by_tid
            .values()
            .map(|r| TerminalSummary {
                terminal_id: r.terminal_id.clone(),
                messages: r.messages,
                passed: r.passed,
                warned: r.warned,
                failed: r.failed,
            })
            .collect()
    }
}

fn report(mti: String, stan: Option<String>, checks: Vec<Check>, at_ms: u64) -> MessageReport {
    let verdict = if checks.iter().any(|c| c.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if checks.iter().any(|c| c.verdict == Verdict::Warn) {
        Verdict::Warn
    } else {
        Verdict::Pass
    };
    MessageReport { at_ms, mti, stan, verdict, checks }
}

fn text(m: &Message, de: u16) -> Option<String> {
    m.text(de).map(|c| c.into_owned())
}

fn hex_upper(b: &[u8]) -> String {
    hex::encode_upper(b)
}

/// Whether a finding may quote DE `de`'s value: only an element the spec does not mask at all.
/// A masked form would do for a log, but a finding about an element's value is about exactly the
/// characters a masked form hides.
fn quotable(spec: &Spec, de: u16) -> bool {
    spec.sensitivity(de) == Sensitivity::None
}

/// Where `part` (a slice of the received message, as decoded elements are) starts in `raw`.
fn offset_in(raw: &[u8], part: &[u8]) -> Option<usize> {
    let start = raw.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    (p >= start && p + part.len() <= start + raw.len()).then(|| p - start)
}

fn pass(check: &'static str, element: impl Into<String>, expected: impl Into<String>) -> Check {
    Check {
        check,
        element: element.into(),
        verdict: Verdict::Pass,
        expected: expected.into(),
        found: "as expected".into(),
        offset: None,
        bytes: None,
    }
}

fn fail(
    check: &'static str,
    element: impl Into<String>,
    expected: impl Into<String>,
    found: impl Into<String>,
) -> Check {
    Check {
        check,
        element: element.into(),
        verdict: Verdict::Fail,
        expected: expected.into(),
        found: found.into(),
        offset: None,
        bytes: None,
    }
}

/// The check of a message that does not decode: the codec's element, offset and explanation,
/// and up to 16 bytes from the offset when they are not sensitive and belong to the part the error
/// is about.
fn format_failure(spec: &std::sync::Arc<Spec>, raw: &bytes::Bytes, err: &codecs::Error) -> Check {
    let bytes = describe::error_excerpt(spec, raw, err, 16).map(hex_upper);
    Check {
        check: "format",
        element: err.location.to_string(),
        verdict: Verdict::Fail,
        expected: format!("a message that decodes under spec {}", spec.name),
        found: err.detail.clone(),
        offset: err.offset,
        bytes,
    }
}

/// Every check of a decoded message.
pub fn check_message(msg: &Message, raw: &[u8], mac: Option<bool>) -> Vec<Check> {
    let spec = msg.spec();
    let mti = msg.mti();
    let mut out = vec![pass("format", "message", format!("a message that decodes under spec {}", spec.name))];
    let required = |out: &mut Vec<Check>, des: &[u16], why: &str| {
        for de in des {
            out.push(if msg.contains(*de) {
                pass("required-element", format!("DE {de}"), format!("present ({why})"))
            } else {
                fail("required-element", format!("DE {de}"), format!("present ({why})"), "absent")
            });
        }
    };
    let pan = |out: &mut Vec<Check>, why: &str| {
        out.push(if msg.contains(2) || msg.contains(35) {
            pass("required-element", "DE 2 / DE 35", format!("a PAN in DE 2 or DE 35 ({why})"))
        } else {
            fail(
                "required-element",
                "DE 2 / DE 35",
                format!("a PAN in DE 2 or DE 35 ({why})"),
                "neither present",
            )
        });
    };
    match (mti.class(), mti.function()) {
        (1 | 2, 0) => {
            let why = format!("required in every {mti}");
            required(&mut out, &AUTHORIZATION_REQUIRED, &why);
            pan(&mut out, &why);
            check_entry_mode(msg, raw, &mut out);
        }
        (4, 0) | (4, 2) | (1, 2) => {
            let why = format!("required in every {mti}");
            required(&mut out, &REVERSAL_REQUIRED, &why);
            pan(&mut out, &why);
        }
        _ => {}
    }
    if let Some(ok) = mac {
        let last = msg.fields().last().map(|f| f.de);
        out.push(if ok {
            pass("mac", "DE 64 / DE 128", "the listener's MAC over the message")
        } else {
            let found = match last {
                Some(64 | 128) => "a MAC that does not verify".to_string(),
                _ => "no MAC as the last element".to_string(),
            };
            fail("mac", "DE 64 / DE 128", "the listener's MAC over the message", found)
        });
    }
    out
}

/// DE 22 and what it requires: the elements of its entry mode, and for chip the DE 55 tags and
/// their lengths.
fn check_entry_mode(msg: &Message, raw: &[u8], out: &mut Vec<Check>) {
    let spec = msg.spec();
    let Some(f22) = msg.field(22) else { return };
    let entry = match msg.pos_entry_mode() {
        Ok(Some(e)) => e,
        Ok(None) => return,
        Err(e) => {
            out.push(Check {
                offset: offset_in(raw, f22.data),
                bytes: quotable(spec, 22).then(|| hex_upper(f22.data)),
                ..fail("pos-entry-mode", "DE 22", "3 digits", e.detail.clone())
            });
            return;
        }
    };
    let value = String::from_utf8_lossy(f22.data).into_owned();
    let known = format!("one of {}", POS_ENTRY_MODES.join(" "));
    out.push(if POS_ENTRY_MODES.contains(&value.as_str()) {
        pass("pos-entry-mode", "DE 22", known)
    } else {
        let (found, bytes) = if quotable(spec, 22) {
            (format!("{value:?}"), Some(hex_upper(f22.data)))
        } else {
            ("a mode it does not know (value withheld: sensitive element)".to_string(), None)
        };
        Check { offset: offset_in(raw, f22.data), bytes, ..fail("pos-entry-mode", "DE 22", known, found) }
    });
    let pan_entry = entry.pan_entry();
    let why = format!("required by DE 22 = {value}{}", if is_chip(pan_entry) { " (chip)" } else { "" });
    for de in required_for_entry(pan_entry) {
        out.push(if msg.contains(*de) {
            pass("required-element", format!("DE {de}"), format!("present ({why})"))
        } else {
            fail("required-element", format!("DE {de}"), format!("present ({why})"), "absent")
        });
    }
    if !is_chip(pan_entry) {
        return;
    }
    // docs/network-spec.md §3: with chip, DE 35 (track 2 equivalent) or DE 2 + DE 14.
    let card = msg.contains(35) || (msg.contains(2) && msg.contains(14));
    out.push(if card {
        pass(
            "required-element",
            "DE 35 / DE 2 + DE 14",
            format!("track 2 equivalent or PAN and expiry ({why})"),
        )
    } else {
        fail(
            "required-element",
            "DE 35 / DE 2 + DE 14",
            format!("track 2 equivalent or PAN and expiry ({why})"),
            "neither DE 35 nor DE 2 with DE 14",
        )
    });
    let Some(f55) = msg.field(55) else { return };
    let base = offset_in(raw, f55.data);
    let icc = match msg.icc_data() {
        Ok(Some(b)) => b,
        Ok(None) => return,
        Err(e) => {
            out.push(Check {
                offset: base,
                ..fail("icc-format", "DE 55", "BER-TLV chip data", e.to_string())
            });
            return;
        }
    };
    // Where the TLV bytes sit in the message: DE 55 itself when binary; when carried as hex
    // text (iso87ascii), offsets inside it count hex characters (two per byte).
    let text_form = icc.len() != f55.data.len();
    let at = |o: usize| base.map(|b| if text_form { b + 2 * o } else { b + o });
    let nodes = match tlv::decode(&icc, DecodeOptions::lenient()) {
        Ok(n) => n,
        Err(e) => {
            // DE 55 may hold a PAN (5A) or track 2 (57) just past the malformed object: the bytes
            // are taken from the masked TLV, in which everything from the first object that does
            // not parse on is FF.
            let masked = tlv::mask_sensitive(&icc);
            let bytes = e.offset.and_then(|o| masked.get(o..masked.len().min(o + 16))).map(hex_upper);
            out.push(Check {
                offset: e.offset.and_then(at),
                bytes,
                ..fail(
                    "icc-format",
                    format!("DE 55 {}", e.location),
                    "BER-TLV chip data (EMV Book 3 Annex B)",
                    e.detail,
                )
            });
            return;
        }
    };
    // A tag named twice at the top level: the switch refuses the request (30; network spec §3).
    // Where each repeat starts, never its bytes (it may be the PAN's 5A).
    for n in tlv::repeated(&nodes) {
        let t = n.tag().value();
        out.push(Check {
            offset: at(n.tlv.offset),
            ..fail(
                "icc-tag-repeated",
                format!("tag {t:02X}"),
                "each tag once in DE 55 (network spec §3)",
                "named again",
            )
        });
    }
    let find = |t: u16| nodes.iter().find(|n: &&Node<'_>| n.tag().value() == u32::from(t));
    for t in REQUIRED_ICC_TAGS {
        out.push(if find(t).is_some() {
            pass("icc-tag", format!("tag {t:02X}"), format!("present in DE 55 ({why})"))
        } else {
            fail("icc-tag", format!("tag {t:02X}"), format!("present in DE 55 ({why})"), "absent")
        });
    }
    for t in RECOMMENDED_ICC_TAGS {
        if find(t).is_none() {
            out.push(Check {
                verdict: Verdict::Warn,
                ..fail(
                    "icc-tag",
                    format!("tag {t:02X}"),
                    "present in DE 55 (recommended, network spec §3)",
                    "absent",
                )
            });
        }
    }
    for (t, min, max) in ICC_TAG_LENGTHS {
        let Some(n) = find(t) else { continue };
        let len = n.value().len();
        let expected = if min == max { format!("{min} bytes") } else { format!("{min} to {max} bytes") };
        if (min..=max).contains(&len) {
            out.push(pass("icc-tag-length", format!("tag {t:02X}"), expected));
        } else {
            let mut object = n.tlv.raw(&icc).map(<[u8]>::to_vec).unwrap_or_default();
            let header = n.tlv.header_len;
            if let Some(v) = object.get_mut(header..) {
                tlv::mask::mask_value(Tag::new(u32::from(t)), v);
            }
            out.push(Check {
                offset: at(n.tlv.offset),
                bytes: Some(hex_upper(&object)),
                ..fail("icc-tag-length", format!("tag {t:02X}"), expected, format!("{len} bytes"))
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codecs::tlv::TlvBuilder;

    fn chip(spec: &str, drop_tag: Option<u32>, short_atc: bool) -> Message {
        let spec = Spec::builtin(spec).unwrap().clone();
        let mut m = Message::new(spec, codecs::iso8583::Mti::AUTHORIZATION_REQUEST);
        for (de, v) in [
            (2u16, "4761739001010010"),
            (3, "000000"),
            (4, "000000001000"),
            (7, "1125101010"),
            (11, "000123"),
            (14, "2912"),
            (22, "071"),
            (23, "000"),
            (41, "TERM0001"),
            (49, "978"),
        ] {
            m.set_text(de, v).unwrap();
        }
        let mut b = TlvBuilder::new();
        for (t, v) in [
            (0x9F26u32, vec![1u8; 8]),
            (0x9F27, vec![0x80]),
            (0x9F10, vec![6, 1, 0x12, 3, 0xA0, 0, 0]),
            (0x9F37, vec![1, 2, 3, 4]),
            (0x9F36, if short_atc { vec![0, 1, 2] } else { vec![0, 1] }),
            (0x95, vec![0; 5]),
            (0x9A, vec![0x26, 0x11, 0x25]),
            (0x9C, vec![0]),
            (0x9F02, vec![0, 0, 0, 0, 0x10, 0]),
            (0x5F2A, vec![9, 0x78]),
            (0x82, vec![0x20, 0]),
            (0x9F1A, vec![2, 0x50]),
        ] {
            if Some(t) != drop_tag {
                b.primitive(Tag::new(t), &v).unwrap();
            }
        }
        m.set_icc_data(&b.finish()).unwrap();
        m
    }

    fn failures(m: &Message) -> Vec<Check> {
        let raw = m.encode().unwrap();
        let decoded = Message::decode(m.spec(), raw.clone()).unwrap();
        check_message(&decoded, &raw, None).into_iter().filter(|c| c.verdict == Verdict::Fail).collect()
    }

    #[test]
    fn a_complete_chip_request_passes() {
        assert_eq!(failures(&chip("network", None, false)), vec![]);
        assert_eq!(failures(&chip("iso87ascii", None, false)), vec![]);
    }

    #[test]
    fn missing_tag_wrong_length_and_missing_de55_are_named() {
        let f = failures(&chip("network", Some(0x9F37), false));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(
            (f[0].check, f[0].element.as_str(), f[0].found.as_str()),
            ("icc-tag", "tag 9F37", "absent")
        );

        let m = chip("network", None, true);
        let raw = m.encode().unwrap();
        let f = failures(&m);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(
            (f[0].element.as_str(), f[0].expected.as_str(), f[0].found.as_str()),
            ("tag 9F36", "2 bytes", "3 bytes")
        );
        assert_eq!(f[0].bytes.as_deref(), Some("9F3603000102"));
        let at = f[0].offset.unwrap();
        assert_eq!(&raw[at..at + 3], &[0x9F, 0x36, 0x03]);

        let mut m = chip("network", None, false);
        m.remove(55);
        let f = failures(&m);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].element, "DE 55");
        assert!(f[0].expected.contains("DE 22 = 071"), "{f:?}");
    }

    fn clock_at(ms: u64) -> Arc<crate::clock::ManualClock> {
        Arc::new(crate::clock::ManualClock(std::sync::atomic::AtomicU64::new(ms)))
    }

    #[test]
    fn a_silent_terminal_is_forgotten_after_the_time_to_live() {
        let clock = clock_at(1_000);
        let log = CertificationLog::new(5).with_ttl(10_000).with_clock(clock.clone());
        let m = chip("network", None, false);
        let raw = m.encode().unwrap();
        let with_tid = |tid: &str| {
            let mut x = m.clone();
            x.set_text(41, tid).unwrap();
            x
        };
        log.record_message(&with_tid("OLD00001"), &raw, None, 1_000);
        log.record_message(&with_tid("NEW00001"), &raw, None, 6_000);
        clock.0.store(11_000, std::sync::atomic::Ordering::Release);
        assert_eq!(log.terminals().len(), 2, "both within their time-to-live");
        // Read later: the terminal silent for longer is gone; a message renews the other.
        clock.0.store(11_001, std::sync::atomic::Ordering::Release);
        assert!(log.terminal("OLD00001").is_none());
        log.record_message(&with_tid("NEW00001"), &raw, None, 15_000);
        clock.0.store(24_000, std::sync::atomic::Ordering::Release);
        assert_eq!(log.terminal("NEW00001").map(|r| r.messages), Some(2));
        // Recording ages the log too, with no read in between.
        log.record_message(&with_tid("LATE0001"), &raw, None, 40_000);
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn a_flood_of_made_up_terminals_stays_at_the_bound_and_the_newest_is_kept() {
        let log = CertificationLog::new(2).with_max_terminals(50).with_clock(clock_at(2_000));
        let m = chip("network", None, false);
        let raw = m.encode().unwrap();
        for i in 0..2_000u64 {
            let mut x = m.clone();
            x.set_text(41, &format!("T{i:07}")).unwrap();
            log.record_message(&x, &raw, None, i);
        }
        assert_eq!(log.terminals().len(), 50);
        assert_eq!(log.terminals.lock().unwrap().by_age.len(), 50, "the age index is bounded too");
        assert!(log.terminal("T0001999").is_some(), "the newest terminal is recorded");
        assert!(log.terminal("T0000000").is_none(), "the stalest made room");
    }

    #[test]
    fn undecodable_messages_are_recorded_per_terminal_with_masked_bytes() {
        let log = CertificationLog::new(10).with_clock(clock_at(1));
        let m = chip("network", None, false);
        let mut raw = m.encode().unwrap().to_vec();
        let mut head = m.clone();
        head.remove(55);
        let at = head.encode().unwrap().len() + 1;
        raw[at] = b'X';
        let raw = bytes::Bytes::from(raw);
        let err = Message::decode(m.spec(), raw.clone()).unwrap_err();
        log.record_undecodable(m.spec(), &raw, &err, 1);
        let r = log.terminal("TERM0001").expect("recorded under DE 41");
        assert_eq!((r.messages, r.failed), (1, 1));
        let c = &r.recent[0].checks[0];
        assert_eq!((c.check, c.element.as_str()), ("format", "DE 55"));
        assert_eq!(c.offset, Some(at), "the codec points at the bad length digit");
        // The rest of DE 55's length prefix, not the chip data after it.
        assert_eq!(c.bytes.as_deref(), Some(hex_upper(&raw[at..at + 2]).as_str()));
        assert_eq!(log.terminals().len(), 1);
    }

    const PAN: &str = "4761739001010010";
    const TRACK2: &str = "4761739001010010=28122011438044";
    const CVV2: &str = "987";

    /// A key-entered network 0100 carrying every kind of sensitive element: PAN, track 2, the
    /// CVV2 in DE 48, a PIN block, and DE 55 with the PAN (5A) and track 2 equivalent (57).
    fn sensitive() -> Message {
        let spec = Spec::builtin("network").unwrap().clone();
        let mut m = Message::new(spec, codecs::iso8583::Mti::AUTHORIZATION_REQUEST);
        let fields = [
            (2u16, PAN),
            (3, "000000"),
            (4, "000000001000"),
            (7, "1125101010"),
            (11, "000456"),
            (14, "2812"),
            (22, "012"),
            (32, "47617300"),
            (35, TRACK2),
            (41, "TERM0001"),
            (48, "9203987"),
            (49, "978"),
            (52, "C0FFEE15DEADBEEF"),
        ];
        for (de, v) in fields {
            m.set_text(de, v).unwrap();
        }
        let mut b = TlvBuilder::new();
        b.primitive(Tag::new(0x5A), &hex::decode(PAN).unwrap()).unwrap();
        b.primitive(Tag::new(0x57), &hex::decode("4761739001010010D28122011438044F").unwrap()).unwrap();
        b.primitive(Tag::new(0x9F36), &[0, 1]).unwrap();
        m.set_icc_data(&b.finish()).unwrap();
        m
    }

    /// Every clear sensitive value, as text and in the uppercase hex a finding's bytes use.
    fn secrets() -> Vec<String> {
        let mut out = Vec::new();
        for clear in [PAN, "28122011438044", "D28122011438044", "C0FFEE15DEADBEEF", "2812"] {
            out.push(clear.to_string());
            out.push(hex::encode_upper(clear));
        }
        out.push(hex::encode_upper(format!("92{CVV2}").as_bytes()));
        out.push(hex::encode_upper(CVV2.as_bytes()));
        out
    }

    fn assert_no_secret(log: &CertificationLog, what: &str) {
        let json = serde_json::to_string(&log.terminals.lock().unwrap().by_tid.values().collect::<Vec<_>>())
            .unwrap();
        for s in secrets() {
            assert!(!json.contains(&s), "{what}: the report shows {s:?}: {json}");
        }
    }

    /// The report of the one terminal `log` knows (DE 41 is unreadable when the error comes first).
    fn only(log: &CertificationLog) -> TerminalReport {
        let t = &log.terminals.lock().unwrap().by_tid;
        assert_eq!(t.len(), 1, "{:?}", t.keys());
        t.values().next().unwrap().clone()
    }

    /// `m` encoded with the byte at `at` replaced by `byte`.
    fn corrupt(m: &Message, at: usize, byte: u8) -> bytes::Bytes {
        let mut raw = m.encode().unwrap().to_vec();
        raw[at] = byte;
        bytes::Bytes::from(raw)
    }

    /// Where DE `de` starts (its length prefix) in the encoding of `m` (primary bitmap only).
    fn start_of(m: &Message, de: u16) -> usize {
        let mut head = m.clone();
        for d in m.fields().iter().map(|f| f.de).filter(|d| *d >= de).collect::<Vec<_>>() {
            head.remove(d);
        }
        head.encode().unwrap().len()
    }

    #[test]
    fn a_malformed_sensitive_element_is_named_with_its_problem_never_its_bytes() {
        let m = sensitive();
        // A letter in the PAN and in track 2; a control byte in the CVV2 and in a subelement
        // length of DE 48.
        let cases = [(2, 2 + 7, b'X'), (35, 2 + 20, b'X'), (48, 3 + 5, 0x7F), (48, 3 + 3, 0x01)];
        for (de, at, byte) in cases {
            let log = CertificationLog::new(10).with_clock(clock_at(1));
            let raw = corrupt(&m, start_of(&m, de) + at, byte);
            let err = Message::decode(m.spec(), raw.clone()).unwrap_err();
            log.record_undecodable(m.spec(), &raw, &err, 1);
            let c = &only(&log).recent[0].checks[0];
            assert_eq!(
                (c.check, c.element.clone(), c.verdict),
                ("format", format!("DE {de}"), Verdict::Fail)
            );
            assert_eq!(c.bytes, None, "DE {de}: no byte of a sensitive element");
            assert!(c.found.contains("withheld"), "DE {de}: {}", c.found);
            assert_no_secret(&log, &format!("DE {de}"));
        }
        // DE 35 cut short.
        let log = CertificationLog::new(10).with_clock(clock_at(1));
        let raw = m.encode().unwrap().slice(..start_of(&m, 35) + 12);
        let err = Message::decode(m.spec(), raw.clone()).unwrap_err();
        log.record_undecodable(m.spec(), &raw, &err, 1);
        let c = &only(&log).recent[0].checks[0];
        assert_eq!((c.element.as_str(), c.bytes.as_deref()), ("DE 35", None));
    }

    #[test]
    fn a_malformed_harmless_element_shows_its_bytes_and_not_the_next_elements() {
        let m = sensitive();
        let log = CertificationLog::new(10).with_clock(clock_at(1));
        let at = start_of(&m, 32) + 2 + 5;
        let raw = corrupt(&m, at, b'X');
        log.record_undecodable(m.spec(), &raw, &Message::decode(m.spec(), raw.clone()).unwrap_err(), 1);
        let c = &only(&log).recent[0].checks[0];
        assert_eq!((c.element.as_str(), c.offset), ("DE 32", Some(at)));
        // DE 32 ends after "X00"; DE 35 (track 2) follows and shows nothing.
        assert_eq!(c.bytes.as_deref(), Some(hex::encode_upper("X00").as_str()));
        // Bytes after the last element: of unknown content.
        let mut tail = m.encode().unwrap().to_vec();
        tail.extend_from_slice(PAN.as_bytes());
        let tail = bytes::Bytes::from(tail);
        log.record_undecodable(m.spec(), &tail, &Message::decode(m.spec(), tail.clone()).unwrap_err(), 2);
        let c = &log.terminal("TERM0001").expect("DE 41 read").recent[0].checks[0];
        assert_eq!((c.element.as_str(), c.bytes.as_deref()), ("message", None));
        assert_no_secret(&log, "harmless element");
    }

    #[test]
    fn malformed_chip_data_shows_no_pan_or_track_bytes() {
        let mut m = sensitive();
        m.set_text(22, "071").unwrap();
        // 9F36 fine, then a record template whose length runs past the end, holding the PAN: the
        // TLV error points at the template, the PAN right after it.
        let icc = hex::decode(format!("9F36020001701A5A08{PAN}")).unwrap();
        m.set_icc_data(&icc).unwrap();
        let raw = m.encode().unwrap();
        let checks = check_message(&Message::decode(m.spec(), raw.clone()).unwrap(), &raw, None);
        let c = checks.iter().find(|c| c.check == "icc-format").expect("a TLV finding");
        assert!(c.bytes.is_some(), "{c:?}");
        let log = CertificationLog::new(10).with_clock(clock_at(1));
        log.record_message(&Message::decode(m.spec(), raw.clone()).unwrap(), &raw, None, 1);
        assert_no_secret(&log, "DE 55");
    }

    #[test]
    fn chip_data_naming_a_tag_twice_is_a_finding_at_the_repeat() {
        let mut m = sensitive();
        m.set_text(22, "071").unwrap();
        // 9F36 (the ATC) once, then the PAN, then 9F36 again.
        let icc = hex::decode(format!("9F360200015A08{PAN}9F36020002")).unwrap();
        m.set_icc_data(&icc).unwrap();
        let raw = m.encode().unwrap();
        let checks = check_message(&Message::decode(m.spec(), raw.clone()).unwrap(), &raw, None);
        let repeated: Vec<_> = checks.iter().filter(|c| c.check == "icc-tag-repeated").collect();
        assert_eq!(repeated.len(), 1, "{checks:?}");
        let c = repeated[0];
        assert_eq!((c.element.as_str(), c.verdict, c.bytes.as_deref()), ("tag 9F36", Verdict::Fail, None));
        // The offset is the second 9F36's, in the message as received.
        let at = c.offset.expect("an offset");
        assert_eq!(raw.get(at..at + 5), Some(&[0x9F, 0x36, 0x02, 0x00, 0x02][..]), "{c:?}");
        let first =
            checks.iter().find(|c| c.check == "icc-tag" && c.element == "tag 9F36").expect("9F36 found");
        assert_eq!(first.verdict, Verdict::Pass);
        let log = CertificationLog::new(10).with_clock(clock_at(1));
        log.record_message(&Message::decode(m.spec(), raw.clone()).unwrap(), &raw, None, 1);
        assert_no_secret(&log, "DE 55 with a repeated tag");
    }

    #[test]
    fn no_single_corrupt_byte_makes_a_report_show_sensitive_data() {
        // Every byte after the bitmap replaced by a letter or a control byte; the message decodes
        // or not, and is recorded either way. (A corrupted bitmap reassigns every byte after it to
        // other elements: the bytes are then shown as the bitmap announces them, which no decoder
        // can second-guess. Non-digits in length prefixes make the codec refuse, not realign.)
        let m = sensitive();
        let len = m.encode().unwrap().len();
        let log = CertificationLog::new(1000).with_clock(clock_at(1));
        for at in 12..len {
            for byte in [b'X', 0x01] {
                let raw = corrupt(&m, at, byte);
                match Message::decode(m.spec(), raw.clone()) {
                    Ok(d) => {
                        log.record_message(&d, &raw, None, 1);
                    }
                    Err(e) => log.record_undecodable(m.spec(), &raw, &e, 1),
                }
            }
        }
        // Most corruptions are findings (binary DE 52 and DE 55 take any byte).
        let failed: u64 = log.terminals().iter().map(|t| t.failed).sum();
        assert!(failed >= (len - 12) as u64, "{failed} findings of {}", 2 * (len - 12));
        assert_no_secret(&log, "corrupt frames");
    }
}
