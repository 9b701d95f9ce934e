//! What the ATM reads besides the ports file of `paynet serve` (INTERFACES.md §5, read by
//! `terminal_kit::ports`): a ports-file test card as the card application it is, and a phone file
//! (a card profile as a wallet keeps it, docs/atm.md).

use std::path::Path;

use emv::card::{CardKeys, CardProfile};

/// The application identifier of a PAN's scheme (Visa for 4, Mastercard for 2 and 5).
pub fn aid_for(pan: &str) -> &'static str {
    match pan.as_bytes().first() {
        Some(b'2' | b'5') => "A0000000041010",
        _ => "A0000000031010",
    }
}

/// The card application of a ports-file test card, personalised with its ICC master key and
/// the last ATC it used.
pub fn card_profile(card: &terminal_kit::pos::TestCard, atc: u16) -> CardProfile {
    CardProfile {
        pan: card.pan.clone(),
        expiry: card.expiry.clone(),
        psn: card.psn.clone(),
        cvn: card.cvn.clone(),
        aid: aid_for(&card.pan).into(),
        label: "PAYNET CREDIT".into(),
        keys: CardKeys::Master { icc_mk: card.icc_mk.clone() },
        atc,
    }
}

/// A phone file: a [`CardProfile`] as JSON, either alone or under a `"profile"` key of a larger
/// object (the wallet's own fields beside it are kept when the file is written back).
pub struct PhoneFile {
    doc: serde_json::Value,
    nested: bool,
    pub profile: CardProfile,
}

impl PhoneFile {
    pub fn read(path: &Path) -> Result<PhoneFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        let (nested, v) = match doc.get("profile") {
            Some(p) => (true, p.clone()),
            None => (false, doc.clone()),
        };
        let profile: CardProfile =
            serde_json::from_value(v).map_err(|e| format!("{}: not a card profile: {e}", path.display()))?;
        Ok(PhoneFile { doc, nested, profile })
    }

    /// Writes the (advanced) profile back, atomically.
    pub fn write(&mut self, path: &Path, profile: &CardProfile) -> std::io::Result<()> {
        let p = serde_json::to_value(profile).map_err(std::io::Error::other)?;
        if self.nested {
            if let Some(o) = self.doc.as_object_mut() {
                o.insert("profile".into(), p);
            }
        } else {
            self.doc = p;
        }
        let bytes = serde_json::to_vec_pretty(&self.doc).map_err(std::io::Error::other)?;
        terminal_kit::state::write_atomic(path, &bytes)
    }
}
