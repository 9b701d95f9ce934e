//! Logging forms of a message: `Debug`, `Display` (a human-readable dump) and masked JSON, all
//! with sensitive elements masked (PCI DSS 3.4: PAN shown at most first 6 / last 4).
//!
//! Which elements are sensitive is spec data ([`Sensitivity`]); DE 55 is masked tag by tag by
//! [`crate::tlv::mask_sensitive`] (PAN and track tags inside the ICC data).

use std::fmt;

use super::field;
use super::message::Message;
use super::spec::{ContentType, Sensitivity};

/// Masks a PAN: first 6 and last 4 digits kept when it has more than 10, else all masked.
pub fn mask_pan(pan: &str) -> String {
    let n = pan.chars().count();
    if n > 10 {
        pan.chars().enumerate().map(|(i, c)| if i < 6 || i >= n - 4 { c } else { '*' }).collect()
    } else {
        "*".repeat(n)
    }
}

/// Masks track data: leading start sentinel/format code kept, the PAN run masked as a PAN,
/// everything after the PAN masked.
fn mask_track(text: &str) -> String {
    let start = text.find(|c: char| c.is_ascii_digit()).unwrap_or(text.len());
    let rest = &text[start..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    out.push_str(&mask_pan(&rest[..end]));
    out.extend(rest[end..].chars().map(|_| '*'));
    out
}

/// The masked text form of DE `de` whose clear text form is `text`.
pub fn mask_text(msg: &Message, de: u16, text: String) -> String {
    let Some(fs) = msg.spec().field(de) else { return "*".repeat(text.len()) };
    match fs.sensitivity(de) {
        Sensitivity::None => text,
        Sensitivity::Full => "*".repeat(text.len()),
        Sensitivity::Pan if fs.content != ContentType::B => mask_pan(&text),
        Sensitivity::Track if fs.content != ContentType::B => mask_track(&text),
        Sensitivity::Pan | Sensitivity::Track => "*".repeat(text.len()),
        Sensitivity::Icc => match hex::decode(&text) {
            Ok(raw) => hex::encode_upper(crate::tlv::mask_sensitive(&raw)),
            Err(_) => "*".repeat(text.len()),
        },
    }
}

impl Message {
    /// A multi-line, masked, human-readable dump.
    pub fn describe(&self) -> String {
        use fmt::Write;
        let spec = self.spec();
        let mti = self.mti();
        let mut s = String::new();
        let _ = writeln!(s, "spec {}", spec.name);
        let _ = writeln!(s, "MTI    {mti}  {} {}", mti.class_name(), mti.function_name());
        for f in self.fields() {
            let Some(fs) = spec.field(f.de) else { continue };
            let text = mask_text(self, f.de, field::to_text(fs, f).into_owned());
            let kind = match fs.length.digits() {
                0 => format!("{}{}", fs.content.name(), fs.max_len),
                d => format!("{}..{} {}", fs.content.name(), fs.max_len, "L".repeat(d)),
            };
            let _ = writeln!(s, "DE {:<3} {:<14} {:<36} {}", f.de, kind, fs.name, text);
        }
        s
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Message({}, {})", self.spec().name, self.to_masked_json())
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl fmt::Debug for field::Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The spec is not at hand: never print the data.
        write!(f, "Field(DE {}, {} units, {} bytes)", self.de, self.units, self.data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pan_and_track_masks() {
        assert_eq!(mask_pan("4761739001010010"), "476173******0010");
        assert_eq!(mask_pan("123456"), "******");
        assert_eq!(
            mask_track("4761739001010010=22122011143804400000"),
            "476173******0010*********************"
        );
        assert_eq!(mask_track("%B4761739001010010^DOE/J^2212"), "%B476173******0010***********");
    }
}
