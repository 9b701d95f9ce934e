//! The built-in specs, each one data table.
//!
//! `iso87binary` and `iso87ascii` replicate pyiso8583 4.0.1's `specs.default` and
//! `specs.default_ascii` element by element (max lengths, length types, ASCII length prefixes,
//! which elements are binary), with ISO 8583:1987 §4.3 content types enforced on top (pyiso8583
//! checks none). The two differ only in the bitmaps and the binary-by-nature elements 52, 55, 64,
//! 96 and 128: raw bytes (8, ..255) in `iso87binary`, hex text (16, ..510) in `iso87ascii`.
//! Another built-in (the switch's network spec) is one more entry in [`BUILTINS`].

use std::sync::{Arc, LazyLock};

use super::spec::{
    BitmapEncoding, ContentType, DataEncoding, FieldSpec, LengthEncoding, LengthKind, MtiEncoding,
    Sensitivity, Spec,
};

/// Names of the built-in specs.
pub const NAMES: &[&str] = &["iso87ascii", "iso87binary", "network"];

use ContentType::{An, Ans, B, N, Ns, XN, Z};
use LengthKind::{Fixed, LL, LLL};

/// ISO 8583:1987 data elements as pyiso8583 4.0.1 `default` defines them:
/// (DE, length kind, content type, max length, name). DE 65 is the tertiary-bitmap indicator.
#[rustfmt::skip]
const ISO87: &[(u16, LengthKind, ContentType, u16, &str)] = &[
    (2, LL, N, 19, "Primary Account Number (PAN)"),
    (3, Fixed, N, 6, "Processing Code"),
    (4, Fixed, N, 12, "Amount, Transaction"),
    (5, Fixed, N, 12, "Amount, Settlement"),
    (6, Fixed, N, 12, "Amount, Cardholder Billing"),
    (7, Fixed, N, 10, "Transmission Date and Time"),
    (8, Fixed, N, 8, "Amount, Cardholder Billing Fee"),
    (9, Fixed, N, 8, "Conversion Rate, Settlement"),
    (10, Fixed, N, 8, "Conversion Rate, Cardholder Billing"),
    (11, Fixed, N, 6, "System Trace Audit Number"),
    (12, Fixed, N, 6, "Time, Local Transaction"),
    (13, Fixed, N, 4, "Date, Local Transaction"),
    (14, Fixed, N, 4, "Date, Expiration"),
    (15, Fixed, N, 4, "Date, Settlement"),
    (16, Fixed, N, 4, "Date, Conversion"),
    (17, Fixed, N, 4, "Date, Capture"),
    (18, Fixed, N, 4, "Merchant Type"),
    (19, Fixed, N, 3, "Acquiring Institution Country Code"),
    (20, Fixed, N, 3, "PAN Country Code"),
    (21, Fixed, N, 3, "Forwarding Institution Country Code"),
    (22, Fixed, N, 3, "Point-of-Service Entry Mode"),
    (23, Fixed, N, 3, "PAN Sequence Number"),
    (24, Fixed, N, 3, "Network International ID (NII)"),
    (25, Fixed, N, 2, "Point-of-Service Condition Code"),
    (26, Fixed, N, 2, "Point-of-Service Capture Code"),
    (27, Fixed, N, 1, "Authorizing ID Response Length"),
    (28, Fixed, XN, 9, "Amount, Transaction Fee"),
    (29, Fixed, XN, 9, "Amount, Settlement Fee"),
    (30, Fixed, XN, 9, "Amount, Transaction Processing Fee"),
    (31, Fixed, XN, 9, "Amount, Settlement Processing Fee"),
    (32, LL, N, 11, "Acquiring Institution ID Code"),
    (33, LL, N, 11, "Forwarding Institution ID Code"),
    (34, LL, Ns, 28, "Primary Account Number, Extended"),
    (35, LL, Z, 37, "Track 2 Data"),
    (36, LLL, Z, 104, "Track 3 Data"),
    (37, Fixed, An, 12, "Retrieval Reference Number"),
    (38, Fixed, An, 6, "Authorization ID Response"),
    (39, Fixed, An, 2, "Response Code"),
    (40, Fixed, An, 3, "Service Restriction Code"),
    (41, Fixed, Ans, 8, "Card Acceptor Terminal ID"),
    (42, Fixed, Ans, 15, "Card Acceptor ID Code"),
    (43, Fixed, Ans, 40, "Card Acceptor Name/Location"),
    (44, LL, An, 25, "Additional Response Data"),
    (45, LL, Ans, 76, "Track 1 Data"),
    (46, LLL, Ans, 999, "Additional Data - ISO"),
    (47, LLL, Ans, 999, "Additional Data - National"),
    (48, LLL, Ans, 999, "Additional Data - Private"),
    (49, Fixed, An, 3, "Currency Code, Transaction"),
    (50, Fixed, An, 3, "Currency Code, Settlement"),
    (51, Fixed, An, 3, "Currency Code, Cardholder Billing"),
    (52, Fixed, B, 8, "PIN"),
    (53, Fixed, N, 16, "Security-Related Control Information"),
    (54, LLL, An, 240, "Additional Amounts"),
    (55, LLL, B, 255, "ICC data"),
    (56, LLL, Ans, 999, "Reserved ISO"),
    (57, LLL, Ans, 999, "Reserved National"),
    (58, LLL, Ans, 999, "Reserved National"),
    (59, LLL, Ans, 999, "Reserved National"),
    (60, LLL, Ans, 999, "Reserved National"),
    (61, LLL, Ans, 999, "Reserved Private"),
    (62, LLL, Ans, 999, "Reserved Private"),
    (63, LLL, Ans, 999, "Reserved Private"),
    (64, Fixed, B, 8, "MAC"),
    (66, Fixed, N, 1, "Settlement Code"),
    (67, Fixed, N, 2, "Extended Payment Code"),
    (68, Fixed, N, 3, "Receiving Institution Country Code"),
    (69, Fixed, N, 3, "Settlement Institution Country Code"),
    (70, Fixed, N, 3, "Network Management Information Code"),
    (71, Fixed, N, 4, "Message Number"),
    (72, Fixed, N, 4, "Message Number, Last"),
    (73, Fixed, N, 6, "Date, Action"),
    (74, Fixed, N, 10, "Credits, Number"),
    (75, Fixed, N, 10, "Credits, Reversal Number"),
    (76, Fixed, N, 10, "Debits, Number"),
    (77, Fixed, N, 10, "Debits, Reversal Number"),
    (78, Fixed, N, 10, "Transfer, Number"),
    (79, Fixed, N, 10, "Transfer, Reversal Number"),
    (80, Fixed, N, 10, "Inquiries, Number"),
    (81, Fixed, N, 10, "Authorizations, Number"),
    (82, Fixed, N, 12, "Credits, Processing Fee Amount"),
    (83, Fixed, N, 12, "Credits, Transaction Fee Amount"),
    (84, Fixed, N, 12, "Debits, Processing Fee Amount"),
    (85, Fixed, N, 12, "Debits, Transaction Fee Amount"),
    (86, Fixed, N, 16, "Credits, Amount"),
    (87, Fixed, N, 16, "Credits, Reversal Amount"),
    (88, Fixed, N, 16, "Debits, Amount"),
    (89, Fixed, N, 16, "Debits, Reversal Amount"),
    (90, Fixed, N, 42, "Original Data Elements"),
    (91, Fixed, An, 1, "File Update Code"),
    (92, Fixed, An, 2, "File Security Code"),
    (93, Fixed, An, 5, "Response Indicator"),
    (94, Fixed, An, 7, "Service Indicator"),
    (95, Fixed, An, 42, "Replacement Amounts"),
    (96, Fixed, B, 8, "Message Security Code"),
    (97, Fixed, XN, 17, "Amount, Net Settlement"),
    (98, Fixed, Ans, 25, "Payee"),
    (99, LL, N, 11, "Settlement Institution ID Code"),
    (100, LL, N, 11, "Receiving Institution ID Code"),
    (101, LL, Ans, 17, "File Name"),
    (102, LL, Ans, 28, "Account ID 1"),
    (103, LL, Ans, 28, "Account ID 2"),
    (104, LLL, Ans, 100, "Transaction Description"),
    (105, LLL, Ans, 999, "Reserved for ISO Use"),
    (106, LLL, Ans, 999, "Reserved for ISO Use"),
    (107, LLL, Ans, 999, "Reserved for ISO Use"),
    (108, LLL, Ans, 999, "Reserved for ISO Use"),
    (109, LLL, Ans, 999, "Reserved for ISO Use"),
    (110, LLL, Ans, 999, "Reserved for ISO Use"),
    (111, LLL, Ans, 999, "Reserved for ISO Use"),
    (112, LLL, Ans, 999, "Reserved for National Use"),
    (113, LLL, Ans, 999, "Reserved for National Use"),
    (114, LLL, Ans, 999, "Reserved for National Use"),
    (115, LLL, Ans, 999, "Reserved for National Use"),
    (116, LLL, Ans, 999, "Reserved for National Use"),
    (117, LLL, Ans, 999, "Reserved for National Use"),
    (118, LLL, Ans, 999, "Reserved for National Use"),
    (119, LLL, Ans, 999, "Reserved for National Use"),
    (120, LLL, Ans, 999, "Reserved for Private Use"),
    (121, LLL, Ans, 999, "Reserved for Private Use"),
    (122, LLL, Ans, 999, "Reserved for Private Use"),
    (123, LLL, Ans, 999, "Reserved for Private Use"),
    (124, LLL, Ans, 999, "Reserved for Private Use"),
    (125, LLL, Ans, 999, "Reserved for Private Use"),
    (126, LLL, Ans, 999, "Reserved for Private Use"),
    (127, LLL, Ans, 999, "Reserved for Private Use"),
    (128, Fixed, B, 8, "MAC"),
];

fn iso87(name: &str, ascii: bool) -> Spec {
    let bitmap = if ascii { BitmapEncoding::HexAscii } else { BitmapEncoding::Binary };
    let mut spec = Spec::new(name, MtiEncoding::Ascii, bitmap);
    for &(de, length, content, max_len, desc) in ISO87 {
        let (content, encoding, max_len) = match (content, ascii) {
            // Binary by nature: hex text of twice the length in the ASCII variant.
            (B, true) => (ContentType::Hex, DataEncoding::Ascii, max_len * 2),
            (B, false) => (B, DataEncoding::Binary, max_len),
            (c, _) => (c, DataEncoding::Ascii, max_len),
        };
        spec = spec.with_field(
            de,
            FieldSpec {
                name: desc.to_string(),
                length,
                length_encoding: LengthEncoding::Ascii,
                content,
                encoding,
                max_len,
                mask: None,
            },
        );
    }
    spec
}

/// The paynet network spec (docs/network-spec.md): the `iso87binary` layout with the elements the
/// network gives a meaning of its own — DE 48 subelements (two-digit tag and length, `92` the
/// CVV2: logged with tags and lengths, values masked), DE 53 the DUKPT key serial number (binary,
/// LL, up to 48 bytes: a 10-byte TDES or 12-byte AES KSN with room to spare), DE 55 ICC data up
/// to 999 bytes (token cryptogram data is longer than a card's), DE 123 token data (binary
/// BER-TLV, LLL 999); messages capped at the network's 8,192-byte frame.
fn network() -> Spec {
    let mut spec = iso87("network", false);
    spec.max_message_len = 8192;
    if let Some(Some(de48)) = spec.fields.get_mut(48) {
        de48.mask = Some(Sensitivity::Subelements);
    }
    let binary = |name: &str, length, max_len| FieldSpec {
        name: name.to_string(),
        length,
        length_encoding: LengthEncoding::Ascii,
        content: B,
        encoding: DataEncoding::Binary,
        max_len,
        mask: None,
    };
    spec.with_field(53, binary("Security-Related Control Information (DUKPT KSN)", LL, 48))
        .with_field(55, binary("ICC data", LLL, 999))
        // The token, its expiry and any OTP: masked whole in logs.
        .with_field(
            123,
            FieldSpec { mask: Some(Sensitivity::Full), ..binary("Token data (BER-TLV)", LLL, 999) },
        )
}

static NETWORK: LazyLock<Arc<Spec>> = LazyLock::new(|| Arc::new(network()));
static ISO87ASCII: LazyLock<Arc<Spec>> = LazyLock::new(|| Arc::new(iso87("iso87ascii", true)));
static ISO87BINARY: LazyLock<Arc<Spec>> = LazyLock::new(|| Arc::new(iso87("iso87binary", false)));

/// The built-in spec called `name`.
pub fn get(name: &str) -> Option<&'static Arc<Spec>> {
    match name {
        "iso87ascii" => Some(&ISO87ASCII),
        "iso87binary" => Some(&ISO87BINARY),
        "network" => Some(&NETWORK),
        _ => None,
    }
}

/// The built-in specs, and spec files, by name.
impl Spec {
    /// A built-in spec by name (see [`NAMES`]).
    pub fn builtin(name: &str) -> Option<&'static std::sync::Arc<Spec>> {
        get(name)
    }

    /// A built-in spec by name, else a spec file (`.toml` or `.json`) at `name`, relative paths
    /// resolved against `base`. The one I/O function of this crate: config loading, not the hot path.
    pub fn load(name: &str, base: &std::path::Path) -> crate::error::Result<std::sync::Arc<Spec>> {
        if let Some(s) = Spec::builtin(name) {
            return Ok(s.clone());
        }
        let path = base.join(name);
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if !matches!(ext.as_deref(), Some("toml" | "json")) {
            return Err(super::spec::spec_err(
                name,
                format!("neither a built-in spec ({}) nor a .toml/.json spec file", NAMES.join(", ")),
            ));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| super::spec::spec_err(name, format!("cannot read {}: {e}", path.display())))?;
        let spec =
            if ext.as_deref() == Some("toml") { Spec::from_toml(&text) } else { Spec::from_json(&text) };
        spec.map(std::sync::Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_validate() {
        for name in NAMES {
            let spec = get(name).expect("listed");
            spec.validate().expect("valid");
            assert_eq!(spec.defined().count(), 126, "DE 2-128 without 65");
        }
    }

    #[test]
    fn binary_elements_match_pyiso8583() {
        // pyiso8583 4.0.1 specs.py: default 52/64/65/96/128 b 8, 55 b LLL 255;
        // default_ascii the same as ascii 16 / LLL 510.
        let bin = get("iso87binary").expect("builtin");
        let asc = get("iso87ascii").expect("builtin");
        for de in [52u16, 64, 96, 128] {
            assert_eq!(bin.field(de).map(|f| (f.max_len, f.encoding)), Some((8, DataEncoding::Binary)));
            assert_eq!(asc.field(de).map(|f| (f.max_len, f.encoding)), Some((16, DataEncoding::Ascii)));
        }
        assert_eq!(bin.field(55).map(|f| (f.length, f.max_len)), Some((LLL, 255)));
        assert_eq!(asc.field(55).map(|f| (f.length, f.max_len)), Some((LLL, 510)));
        assert!(bin.field(65).is_none() && bin.tertiary_bitmap);
    }
}
