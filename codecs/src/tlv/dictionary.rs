//! The EMV tag dictionary: what each tag means, who produces it, how it is formatted, how long it
//! may be, which template carries it, and whether it is sensitive.
//!
//! Covers EMV 4.4 Book 3 Annex A (Table 33, "Data Elements Dictionary") and the scheme tags
//! commonly seen in DE 55 and contactless responses (Visa VCPS / Mastercard M/Chip and PayPass
//! kernels, EMV Book C-2 `DF81xx` outcome tags, tokenisation tags 9F19/9F24/9F25). Where Visa and
//! Mastercard give one tag two meanings, the name says both and the length range covers both.
//! Lengths are value bytes; for lengths that depend on key sizes (certificates, remainders) the
//! range is 1..=248 (the largest EMV modulus, 1984 bits).

use super::tag::Tag;

/// Who provides the data object (EMV Book 3 Annex A, "Source").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Icc,
    Terminal,
    Issuer,
}

/// The data element format (EMV Book 4 §4.3; Book 3 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Numeric: BCD, right-justified, left-padded with zeros.
    N,
    /// Compressed numeric: BCD, left-justified, right-padded with `F`.
    Cn,
    /// Binary (also used for templates and variable-format objects).
    B,
    /// Alphabetic.
    A,
    /// Alphanumeric.
    An,
    /// Alphanumeric special.
    Ans,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::N => "n",
            Format::Cn => "cn",
            Format::B => "b",
            Format::A => "a",
            Format::An => "an",
            Format::Ans => "ans",
        }
    }
}

/// How a value must be masked before it is logged (see `mask.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensitivity {
    /// Not sensitive: shown as is.
    None,
    /// A BCD PAN (`cn`): first 6 / last 4 digits may be shown.
    Pan,
    /// BCD track 2 data (`PAN D YYMM SSS discretionary`): PAN as [`Sensitivity::Pan`], rest hidden.
    Track2,
    /// ISO/IEC 7813 track 1 text (`B PAN ^ NAME ^ …`).
    Track1,
    /// Hidden entirely.
    Secret,
}

/// One dictionary entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagInfo {
    pub tag: Tag,
    pub name: &'static str,
    pub source: Source,
    pub format: Format,
    /// Smallest value length in bytes.
    pub min_len: u16,
    /// Largest value length in bytes.
    pub max_len: u16,
    /// The templates the object is found in (empty: not carried in a template, or anywhere).
    pub templates: &'static [Tag],
    pub sensitivity: Sensitivity,
}

impl TagInfo {
    pub fn is_sensitive(&self) -> bool {
        self.sensitivity != Sensitivity::None
    }
}

macro_rules! e {
    ($tag:expr, $name:expr, $src:ident, $fmt:ident, $min:expr, $max:expr, [$($t:expr),*]) => {
        s!($tag, $name, $src, $fmt, $min, $max, [$($t),*], None)
    };
}

macro_rules! s {
    ($tag:expr, $name:expr, $src:ident, $fmt:ident, $min:expr, $max:expr, [$($t:expr),*], $sens:ident) => {
        TagInfo {
            tag: Tag::new($tag),
            name: $name,
            source: Source::$src,
            format: Format::$fmt,
            min_len: $min,
            max_len: $max,
            templates: &[$(Tag::new($t)),*],
            sensitivity: Sensitivity::$sens,
        }
    };
}

/// Every entry, sorted by tag value (checked by a unit test) for binary search.
pub static DICTIONARY: &[TagInfo] = &[
    e!(0x42, "Issuer Identification Number (IIN)", Icc, N, 3, 3, [0xBF0C, 0x73]),
    e!(0x4F, "Application Dedicated File (ADF) Name", Icc, B, 5, 16, [0x61]),
    e!(0x50, "Application Label", Icc, Ans, 1, 16, [0x61, 0xA5]),
    e!(0x52, "Command to Perform", Terminal, B, 1, 252, []),
    s!(0x56, "Track 1 Data", Icc, Ans, 1, 76, [0x70, 0x77], Track1),
    s!(0x57, "Track 2 Equivalent Data", Icc, B, 1, 19, [0x70, 0x77], Track2),
    s!(0x5A, "Application Primary Account Number (PAN)", Icc, Cn, 1, 10, [0x70, 0x77], Pan),
    e!(0x61, "Application Template", Icc, B, 0, 252, [0x70]),
    e!(0x6F, "File Control Information (FCI) Template", Icc, B, 0, 252, []),
    e!(0x70, "READ RECORD Response Message Template", Icc, B, 0, 252, []),
    e!(0x71, "Issuer Script Template 1", Issuer, B, 0, 255, []),
    e!(0x72, "Issuer Script Template 2", Issuer, B, 0, 255, []),
    e!(0x73, "Directory Discretionary Template", Icc, B, 0, 252, [0x61]),
    e!(0x77, "Response Message Template Format 2", Icc, B, 0, 255, []),
    e!(0x80, "Response Message Template Format 1", Icc, B, 0, 255, []),
    e!(0x81, "Amount, Authorised (Binary)", Terminal, B, 4, 4, []),
    e!(0x82, "Application Interchange Profile", Icc, B, 2, 2, [0x77, 0x80]),
    e!(0x83, "Command Template", Terminal, B, 0, 255, []),
    e!(0x84, "Dedicated File (DF) Name", Icc, B, 5, 16, [0x6F]),
    e!(0x86, "Issuer Script Command", Issuer, B, 1, 261, [0x71, 0x72]),
    e!(0x87, "Application Priority Indicator", Icc, B, 1, 1, [0x61, 0xA5]),
    e!(0x88, "Short File Identifier (SFI)", Icc, B, 1, 1, [0xA5]),
    e!(0x89, "Authorisation Code", Issuer, Ans, 6, 6, []),
    e!(0x8A, "Authorisation Response Code", Issuer, An, 2, 2, []),
    e!(0x8C, "Card Risk Management Data Object List 1 (CDOL1)", Icc, B, 0, 252, [0x70, 0x77]),
    e!(0x8D, "Card Risk Management Data Object List 2 (CDOL2)", Icc, B, 0, 252, [0x70, 0x77]),
    e!(0x8E, "Cardholder Verification Method (CVM) List", Icc, B, 10, 252, [0x70, 0x77]),
    e!(0x8F, "Certification Authority Public Key Index", Icc, B, 1, 1, [0x70, 0x77]),
    e!(0x90, "Issuer Public Key Certificate", Icc, B, 1, 248, [0x70, 0x77]),
    e!(0x91, "Issuer Authentication Data", Issuer, B, 8, 16, []),
    e!(0x92, "Issuer Public Key Remainder", Icc, B, 1, 248, [0x70, 0x77]),
    e!(0x93, "Signed Static Application Data", Icc, B, 1, 248, [0x70, 0x77]),
    e!(0x94, "Application File Locator (AFL)", Icc, B, 4, 252, [0x77, 0x80]),
    e!(0x95, "Terminal Verification Results", Terminal, B, 5, 5, []),
    e!(0x97, "Transaction Certificate Data Object List (TDOL)", Icc, B, 0, 252, [0x70, 0x77]),
    e!(0x98, "Transaction Certificate (TC) Hash Value", Terminal, B, 20, 20, []),
    s!(0x99, "Transaction Personal Identification Number (PIN) Data", Terminal, B, 0, 255, [], Secret),
    e!(0x9A, "Transaction Date", Terminal, N, 3, 3, []),
    e!(0x9B, "Transaction Status Information", Terminal, B, 2, 2, []),
    e!(0x9C, "Transaction Type", Terminal, N, 1, 1, []),
    e!(0x9D, "Directory Definition File (DDF) Name", Icc, B, 5, 16, [0x61]),
    e!(0xA5, "File Control Information (FCI) Proprietary Template", Icc, B, 0, 252, [0x6F]),
    s!(0x5F20, "Cardholder Name", Icc, Ans, 2, 26, [0x70, 0x77], Secret),
    s!(0x5F24, "Application Expiration Date", Icc, N, 3, 3, [0x70, 0x77], Secret),
    e!(0x5F25, "Application Effective Date", Icc, N, 3, 3, [0x70, 0x77]),
    e!(0x5F28, "Issuer Country Code", Icc, N, 2, 2, [0x70, 0x77]),
    e!(0x5F2A, "Transaction Currency Code", Terminal, N, 2, 2, []),
    e!(0x5F2D, "Language Preference", Icc, An, 2, 8, [0xA5]),
    s!(0x5F30, "Service Code", Icc, N, 2, 2, [0x70, 0x77], Secret),
    e!(0x5F34, "Application PAN Sequence Number", Icc, N, 1, 1, [0x70, 0x77]),
    e!(0x5F36, "Transaction Currency Exponent", Terminal, N, 1, 1, []),
    e!(0x5F50, "Issuer URL", Icc, Ans, 1, 252, [0xBF0C, 0x73]),
    s!(0x5F53, "International Bank Account Number (IBAN)", Icc, An, 1, 34, [0xBF0C, 0x73], Secret),
    e!(0x5F54, "Bank Identifier Code (BIC)", Icc, An, 8, 11, [0xBF0C, 0x73]),
    e!(0x5F55, "Issuer Country Code (alpha2 format)", Icc, A, 2, 2, [0xBF0C, 0x73]),
    e!(0x5F56, "Issuer Country Code (alpha3 format)", Icc, A, 3, 3, [0xBF0C, 0x73]),
    e!(0x5F57, "Account Type", Terminal, N, 1, 1, []),
    e!(0x9F01, "Acquirer Identifier", Terminal, N, 6, 6, []),
    e!(0x9F02, "Amount, Authorised (Numeric)", Terminal, N, 6, 6, []),
    e!(0x9F03, "Amount, Other (Numeric)", Terminal, N, 6, 6, []),
    e!(0x9F04, "Amount, Other (Binary)", Terminal, B, 4, 4, []),
    e!(0x9F05, "Application Discretionary Data", Icc, B, 1, 32, [0x70, 0x77]),
    e!(0x9F06, "Application Identifier (AID) - terminal", Terminal, B, 5, 16, []),
    e!(0x9F07, "Application Usage Control", Icc, B, 2, 2, [0x70, 0x77]),
    e!(0x9F08, "Application Version Number (ICC)", Icc, B, 2, 2, [0x70, 0x77]),
    e!(0x9F09, "Application Version Number (terminal)", Terminal, B, 2, 2, []),
    e!(0x9F0A, "Application Selection Registered Proprietary Data", Icc, B, 0, 252, [0xBF0C]),
    s!(0x9F0B, "Cardholder Name Extended", Icc, Ans, 27, 45, [0x70, 0x77], Secret),
    e!(0x9F0D, "Issuer Action Code - Default", Icc, B, 5, 5, [0x70, 0x77]),
    e!(0x9F0E, "Issuer Action Code - Denial", Icc, B, 5, 5, [0x70, 0x77]),
    e!(0x9F0F, "Issuer Action Code - Online", Icc, B, 5, 5, [0x70, 0x77]),
    e!(0x9F10, "Issuer Application Data", Icc, B, 1, 32, [0x77, 0x80]),
    e!(0x9F11, "Issuer Code Table Index", Icc, N, 1, 1, [0xA5]),
    e!(0x9F12, "Application Preferred Name", Icc, Ans, 1, 16, [0x61, 0xA5]),
    e!(0x9F13, "Last Online Application Transaction Counter (ATC) Register", Icc, B, 2, 2, []),
    e!(0x9F14, "Lower Consecutive Offline Limit", Icc, B, 1, 1, [0x70, 0x77]),
    e!(0x9F15, "Merchant Category Code", Terminal, N, 2, 2, []),
    e!(0x9F16, "Merchant Identifier", Terminal, Ans, 15, 15, []),
    e!(0x9F17, "Personal Identification Number (PIN) Try Counter", Icc, B, 1, 1, []),
    e!(0x9F18, "Issuer Script Identifier", Issuer, B, 4, 4, [0x71, 0x72]),
    e!(0x9F19, "Token Requestor ID", Icc, N, 6, 6, [0x70, 0x77]),
    e!(0x9F1A, "Terminal Country Code", Terminal, N, 2, 2, []),
    e!(0x9F1B, "Terminal Floor Limit", Terminal, B, 4, 4, []),
    e!(0x9F1C, "Terminal Identification", Terminal, An, 8, 8, []),
    e!(0x9F1D, "Terminal Risk Management Data", Terminal, B, 1, 8, []),
    e!(0x9F1E, "Interface Device (IFD) Serial Number", Terminal, An, 8, 8, []),
    s!(0x9F1F, "Track 1 Discretionary Data", Icc, Ans, 0, 252, [0x70, 0x77], Secret),
    s!(0x9F20, "Track 2 Discretionary Data", Icc, Cn, 0, 252, [0x70, 0x77], Secret),
    e!(0x9F21, "Transaction Time", Terminal, N, 3, 3, []),
    e!(0x9F22, "Certification Authority Public Key Index (terminal)", Terminal, B, 1, 1, []),
    e!(0x9F23, "Upper Consecutive Offline Limit", Icc, B, 1, 1, [0x70, 0x77]),
    e!(0x9F24, "Payment Account Reference (PAR)", Icc, An, 29, 29, [0x70, 0x77]),
    e!(0x9F25, "Last 4 Digits of PAN", Icc, N, 2, 2, [0x70, 0x77]),
    e!(0x9F26, "Application Cryptogram", Icc, B, 8, 8, [0x77, 0x80]),
    e!(0x9F27, "Cryptogram Information Data", Icc, B, 1, 1, [0x77, 0x80]),
    e!(0x9F29, "Extended Selection", Icc, B, 0, 252, [0x61]),
    e!(0x9F2A, "Kernel Identifier", Icc, B, 1, 8, [0x61]),
    e!(0x9F2D, "ICC PIN Encipherment Public Key Certificate", Icc, B, 1, 248, [0x70, 0x77]),
    e!(0x9F2E, "ICC PIN Encipherment Public Key Exponent", Icc, B, 1, 3, [0x70, 0x77]),
    e!(0x9F2F, "ICC PIN Encipherment Public Key Remainder", Icc, B, 1, 248, [0x70, 0x77]),
    e!(0x9F32, "Issuer Public Key Exponent", Icc, B, 1, 3, [0x70, 0x77]),
    e!(0x9F33, "Terminal Capabilities", Terminal, B, 3, 3, []),
    e!(0x9F34, "Cardholder Verification Method (CVM) Results", Terminal, B, 3, 3, []),
    e!(0x9F35, "Terminal Type", Terminal, N, 1, 1, []),
    e!(0x9F36, "Application Transaction Counter (ATC)", Icc, B, 2, 2, [0x77, 0x80]),
    e!(0x9F37, "Unpredictable Number", Terminal, B, 4, 4, []),
    e!(0x9F38, "Processing Options Data Object List (PDOL)", Icc, B, 0, 252, [0xA5]),
    e!(0x9F39, "Point-of-Service (POS) Entry Mode", Terminal, N, 1, 1, []),
    e!(0x9F3A, "Amount, Reference Currency", Terminal, B, 4, 4, []),
    e!(0x9F3B, "Application Reference Currency", Icc, N, 2, 8, [0x70, 0x77]),
    e!(0x9F3C, "Transaction Reference Currency Code", Terminal, N, 2, 2, []),
    e!(0x9F3D, "Transaction Reference Currency Exponent", Terminal, N, 1, 1, []),
    e!(0x9F40, "Additional Terminal Capabilities", Terminal, B, 5, 5, []),
    e!(0x9F41, "Transaction Sequence Counter", Terminal, N, 2, 4, []),
    e!(0x9F42, "Application Currency Code", Icc, N, 2, 2, [0x70, 0x77]),
    e!(0x9F43, "Application Reference Currency Exponent", Icc, N, 1, 4, [0x70, 0x77]),
    e!(0x9F44, "Application Currency Exponent", Icc, N, 1, 1, [0x70, 0x77]),
    e!(0x9F45, "Data Authentication Code", Icc, B, 2, 2, []),
    e!(0x9F46, "ICC Public Key Certificate", Icc, B, 1, 248, [0x70, 0x77]),
    e!(0x9F47, "ICC Public Key Exponent", Icc, B, 1, 3, [0x70, 0x77]),
    e!(0x9F48, "ICC Public Key Remainder", Icc, B, 1, 248, [0x70, 0x77]),
    e!(0x9F49, "Dynamic Data Authentication Data Object List (DDOL)", Icc, B, 0, 252, [0x70, 0x77]),
    e!(0x9F4A, "Static Data Authentication Tag List", Icc, B, 0, 252, [0x70, 0x77]),
    e!(0x9F4B, "Signed Dynamic Application Data", Icc, B, 1, 248, [0x77, 0x80]),
    e!(0x9F4C, "ICC Dynamic Number", Icc, B, 2, 8, []),
    e!(0x9F4D, "Log Entry", Icc, B, 2, 2, [0xBF0C, 0x73]),
    e!(0x9F4E, "Merchant Name and Location", Terminal, Ans, 0, 252, []),
    e!(0x9F4F, "Log Format", Icc, B, 0, 252, []),
    e!(0x9F53, "Transaction Category Code (Mastercard)", Terminal, An, 1, 1, []),
    e!(0x9F5A, "Application Program Identifier (Visa)", Icc, B, 1, 16, [0xBF0C]),
    e!(0x9F5B, "Issuer Script Results", Terminal, B, 0, 252, []),
    e!(
        0x9F5D,
        "Available Offline Spending Amount (Visa) / Application Capabilities Information (Mastercard)",
        Icc,
        B,
        3,
        6,
        [0x70, 0x77]
    ),
    e!(0x9F63, "Card Product Information (Visa) / PUNATC(Track1) (Mastercard)", Icc, B, 1, 16, [0x70, 0x77]),
    e!(0x9F66, "Terminal Transaction Qualifiers (Visa) / PUNATC(Track2) (Mastercard)", Terminal, B, 2, 4, []),
    e!(0x9F67, "MSD Offset (Visa) / NATC(Track2) (Mastercard)", Icc, B, 1, 1, [0x70, 0x77]),
    e!(0x9F69, "Card Authentication Related Data (Visa) / UDOL (Mastercard)", Icc, B, 0, 252, [0x70, 0x77]),
    e!(0x9F6A, "Unpredictable Number (Numeric) (Mastercard)", Terminal, N, 4, 4, []),
    s!(0x9F6B, "Track 2 Data (Mastercard)", Icc, B, 1, 19, [0x70, 0x77], Track2),
    e!(
        0x9F6C,
        "Card Transaction Qualifiers (Visa) / Mag-stripe Application Version Number (Mastercard)",
        Icc,
        B,
        2,
        2,
        [0x77, 0x80]
    ),
    e!(
        0x9F6D,
        "VLP Reset Threshold (Visa) / Mag-stripe Application Version Number (Reader) (Mastercard)",
        Icc,
        B,
        2,
        6,
        []
    ),
    e!(0x9F6E, "Form Factor Indicator (Visa) / Third Party Data (Mastercard)", Icc, B, 4, 32, [0x77, 0x80]),
    e!(0x9F74, "VLP Issuer Authorisation Code", Icc, A, 6, 6, [0x77, 0x80]),
    e!(0x9F79, "VLP Available Funds", Icc, N, 6, 6, [0x77, 0x80]),
    e!(0x9F7A, "VLP Terminal Support Indicator", Terminal, B, 1, 1, []),
    e!(
        0x9F7C,
        "Customer Exclusive Data (Visa) / Merchant Custom Data (Mastercard)",
        Icc,
        B,
        1,
        32,
        [0x77, 0x80]
    ),
    e!(0x9F7E, "Mobile Support Indicator (Mastercard)", Terminal, B, 1, 1, []),
    e!(0xBF0C, "File Control Information (FCI) Issuer Discretionary Data", Icc, B, 0, 222, [0xA5]),
    e!(0xDF8115, "Error Indication (EMV Book C-2)", Terminal, B, 6, 6, []),
    e!(0xDF8116, "User Interface Request Data (EMV Book C-2)", Terminal, B, 22, 22, []),
    e!(0xDF8129, "Outcome Parameter Set (EMV Book C-2)", Terminal, B, 8, 8, []),
    e!(0xDF812C, "Mag-stripe CVM Capability - No CVM Required (EMV Book C-2)", Terminal, B, 1, 1, []),
];

/// The dictionary entry of `tag`, if we know it.
pub fn lookup(tag: Tag) -> Option<&'static TagInfo> {
    DICTIONARY.binary_search_by_key(&tag, |i| i.tag).ok().and_then(|i| DICTIONARY.get(i))
}

/// True when the dictionary marks `tag` sensitive.
pub fn is_sensitive(tag: Tag) -> bool {
    lookup(tag).is_some_and(TagInfo::is_sensitive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_unique_well_formed() {
        for w in DICTIONARY.windows(2) {
            assert!(w[0].tag < w[1].tag, "{} before {}", w[0].tag, w[1].tag);
        }
        for i in DICTIONARY {
            assert!(i.tag.is_well_formed(), "{}", i.tag);
            assert!(i.min_len <= i.max_len, "{}", i.tag);
            assert!(!i.name.is_empty());
        }
    }

    #[test]
    fn lookups() {
        let ac = lookup(Tag::new(0x9F26)).unwrap();
        assert_eq!(ac.name, "Application Cryptogram");
        assert_eq!((ac.min_len, ac.max_len), (8, 8));
        assert_eq!(lookup(Tag::PAN).unwrap().sensitivity, Sensitivity::Pan);
        assert!(is_sensitive(Tag::TRACK2_EQUIVALENT));
        assert!(is_sensitive(Tag::new(0x9F6B)));
        assert!(!is_sensitive(Tag::new(0x9F24)));
        assert!(lookup(Tag::new(0x9F99)).is_none());
        assert!(lookup(Tag::new(0x70)).unwrap().tag.is_constructed());
    }
}
