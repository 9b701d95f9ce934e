//! The JSON form of a message (INTERFACES.md §1): `{"mti": "0100", "fields": {"2": "...", ...}}`.
//!
//! Keys are DE numbers as decimal strings in ascending order; `"1"` (and `"65"` with a tertiary
//! bitmap) never appear: bitmaps are derived. Text elements are strings exactly as carried; binary
//! elements are uppercase hex.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::field;
use super::message::Message;
use super::mti::Mti;
use super::spec::Spec;
use crate::error::{Error, ErrorKind, Location, Result};

fn jerr(path: &str, expected: &str, found: impl std::fmt::Display) -> Error {
    Error::expected(ErrorKind::Json, Location::Json(path.to_string()), None, expected, found)
}

/// Writes `text` as a JSON string's content (without its quotes), escaped as the masked form
/// escapes it: `"` and `\` by a backslash, control characters as `\u00XX`. The journal's
/// compact form renders messages back through it, to the same bytes.
pub fn escape_into(out: &mut String, text: &str) {
    // Nearly every element's text needs no escape: copied as it is.
    if !text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(text);
        return;
    }
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

impl Message {
    /// The clear JSON form (for paytool and test data; use [`Message::to_masked_json`] in logs).
    pub fn to_json(&self) -> Value {
        self.json_with(|_, _, text| text)
    }

    /// The JSON form with sensitive elements masked, for logs.
    pub fn to_masked_json(&self) -> Value {
        self.json_with(|de, msg, text| super::describe::mask_text(msg, de, text))
    }

    /// The masked JSON form as text, built directly (the journal writes one per message): the
    /// same object as [`Message::to_masked_json`], keys in element order.
    pub fn to_masked_json_string(&self) -> String {
        let spec = self.spec();
        let mut out =
            String::with_capacity(64 + self.fields().iter().map(|f| f.data.len() * 2 + 8).sum::<usize>());
        out.push_str("{\"mti\":\"");
        out.push_str(self.mti().as_str());
        out.push_str("\",\"fields\":{");
        let mut first = true;
        for fl in self.fields() {
            let Some(fs) = spec.field(fl.de) else { continue };
            let text = super::describe::masked_element_text(self, fs, fl);
            if !first {
                out.push(',');
            }
            first = false;
            out.push('"');
            let _ = std::fmt::Write::write_fmt(&mut out, format_args!("{}", fl.de));
            out.push_str("\":\"");
            escape_into(&mut out, &text);
            out.push('"');
        }
        out.push_str("}}");
        out
    }

    fn json_with(&self, f: impl Fn(u16, &Message, String) -> String) -> Value {
        let spec = self.spec();
        let mut fields = Map::new();
        for fl in self.fields() {
            if let Some(fs) = spec.field(fl.de) {
                let text = field::to_text(fs, fl).into_owned();
                fields.insert(fl.de.to_string(), Value::String(f(fl.de, self, text)));
            }
        }
        let mut root = Map::new();
        root.insert("mti".into(), Value::String(self.mti().to_string()));
        root.insert("fields".into(), Value::Object(fields));
        Value::Object(root)
    }

    /// Builds a message from its JSON form, checking every element against `spec`.
    pub fn from_json(spec: &Arc<Spec>, json: &Value) -> Result<Message> {
        let obj = json.as_object().ok_or_else(|| jerr("$", "an object", "another JSON type"))?;
        for k in obj.keys() {
            if k != "mti" && k != "fields" {
                return Err(jerr(&format!("$.{k}"), "only the keys mti and fields", format!("key {k:?}")));
            }
        }
        let mti = match obj.get("mti") {
            Some(Value::String(s)) => s.parse::<Mti>().map_err(|e| e.at(Location::Json("$.mti".into())))?,
            _ => return Err(jerr("$.mti", "a string of 4 digits", "a missing or non-string mti")),
        };
        let mut msg = Message::new(spec.clone(), mti);
        let fields = match obj.get("fields") {
            Some(Value::Object(m)) => m,
            None => return Ok(msg),
            Some(_) => return Err(jerr("$.fields", "an object", "another JSON type")),
        };
        for (k, v) in fields {
            let path = format!("$.fields.{k}");
            let de: u16 = match k.parse() {
                Ok(n) if k.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(jerr(&path, "a data element number", format!("key {k:?}"))),
            };
            if de == 1 || (de == 65 && spec.tertiary_bitmap) {
                return Err(jerr(
                    &path,
                    "no bitmap key (bitmaps are derived from the elements present)",
                    format!("key {k:?}"),
                ));
            }
            let Value::String(text) = v else {
                return Err(jerr(&path, "a string", "another JSON type"));
            };
            msg.set_text(de, text)?;
        }
        Ok(msg)
    }
}
