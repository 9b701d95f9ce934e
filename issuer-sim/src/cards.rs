//! The issuer's cards and its configuration, as TOML files, and generated test cards.
//!
//! ```toml
//! # issuer-sim.toml
//! listen = "127.0.0.1:6000"
//! spec = "network"                 # the network spec (docs/network-spec.md)
//! framing = "2-byte-binary"
//! cards = "issuer-cards.toml"      # relative to this file
//! zpk = "issuer.zpk"               # PIN blocks arrive under this zone PIN key, ISO format 0
//! link_mac = { key = "issuer.mac", alg = "cmac" }   # MACs on the switch's link (optional)
//! [keys]
//! keystore = "issuer-keys.toml"    # key blocks under the LMK
//! lmk_env = "PAYNET_LMK"
//! [idv]                            # ID&V limits (attempts, locks, OTP tries and lifetime)
//! otp_ttl_ms = 300000
//! [kept]                           # what is kept for inspection: notices, sms, otps, notices_ttl_ms
//! notices = 1024
//! ```
//!
//! ```toml
//! # issuer-cards.toml
//! [[card]]
//! pan = "4761730000000011"         # a test BIN
//! expiry = "2812"                  # YYMM
//! psn = "00"
//! status = "active"                # active, blocked, lost, closed
//! currency = "978"
//! credit_limit = 500000            # minor units
//! outstanding = 0
//! cvn = "visa18"
//! imk_ac = "issuer.imk-ac"         # keystore names
//! pvk = "issuer.pvk"
//! pvki = 1
//! pvv = "4731"
//! cvk = "issuer.cvk"
//! idv = "approve"                  # approve, decline, otp (token provisioning)
//! ```

use std::path::PathBuf;

use crypto::emv::{Cvn, PanDigits, Psn};
use crypto::keyblock::{Header, KeyUsage};
use crypto::keys::{SymmetricKey, TdesKey, to_hex};
use crypto::keystore::{KeyName, Keystore, Lmk};
use crypto::pin::{self, Pin};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub listen: String,
    #[serde(default = "network")]
    pub spec: String,
    #[serde(default = "binary2")]
    pub framing: String,
    pub cards: PathBuf,
    pub zpk: String,
    pub keys: KeysConfig,
    /// The admin port (fault rules; see [`crate::admin`]); none if unset. Off loopback it needs
    /// `admin_door.tls` (or `admin_door.insecure_plaintext = true`).
    #[serde(default)]
    pub admin: Option<String>,
    /// The admin port's bearer credential (at least 16 characters); with `admin`, this or
    /// `admin_token_env` is required.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// The environment variable holding the admin port's bearer credential (keeps it out of
    /// the file).
    #[serde(default)]
    pub admin_token_env: Option<String>,
    /// Limits and TLS of the admin port (`[admin_door]`).
    #[serde(default)]
    pub admin_door: door::DoorConfig,
    /// A test network: the admin port also shows the OTPs texted to cardholders (`GET /v1/sms`).
    /// Never in production.
    #[serde(default)]
    pub test_mode: bool,
    /// A frame begun and not completed within this drops its connection (default 10,000).
    #[serde(default)]
    pub read_timeout_ms: Option<u64>,
    /// A connection silent this long is closed (default 300,000).
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default, rename = "fault")]
    pub faults: Vec<crate::faults::FaultRule>,
    /// ID&V limits (`[idv]`: max_failures, max_requestor_failures, window_ms, lock_ms, otp_tries, otp_ttl_ms, capacity).
    #[serde(default)]
    pub idv: crate::idv::IdvLimits,
    /// What is kept for inspection and for how long (`[kept]`: notices, notices_ttl_ms, sms,
    /// otps); an OTP is kept for its lifetime, `idv.otp_ttl_ms`.
    #[serde(default)]
    pub kept: crate::host::KeptLimits,
    /// Message MACs on the switch's link (`link_mac = { key = "issuer.mac", alg = "cmac" }`):
    /// unsigned or wrongly signed requests are answered 63, answers are signed, and only then
    /// does the issuer believe the token service's "cryptogram verified" (DE 123 DF8106).
    #[serde(default)]
    pub link_mac: Option<LinkMacConfig>,
}

/// The switch's link MAC: the key the issuer shares with the switch's `[issuer.mac]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkMacConfig {
    /// Keystore name of the MAC key (TR-31 usage M6 for `cmac`, M3 for `retail`, M1 for
    /// `iso9797-1-m1`/`-m2`).
    pub key: String,
    /// `retail`, `iso9797-1-m1`, `iso9797-1-m2`, `cmac` or `cmac-tdes`.
    pub alg: String,
}

impl IssuerConfig {
    /// The admin port's bearer credential: `admin_token`, else the variable `admin_token_env`
    /// names. `Ok(None)` when neither is configured; an error when the variable is not set.
    pub fn admin_token(&self) -> Result<Option<String>, String> {
        if let Some(t) = &self.admin_token {
            return Ok(Some(t.clone()));
        }
        match &self.admin_token_env {
            Some(var) => std::env::var(var)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|_| format!("admin_token_env: the variable {var} is not set")),
            None => Ok(None),
        }
    }
}

fn network() -> String {
    "network".into()
}

fn binary2() -> String {
    "2-byte-binary".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    pub keystore: PathBuf,
    /// The environment variable holding the LMK (hex), or...
    #[serde(default = "lmk_env")]
    pub lmk_env: String,
    /// ...a file holding it (mode 0600, owned by the simulator's user), or...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmk_file: Option<PathBuf>,
    /// ...2 or 3 custodians' component files with their KCVs (the LMK is their XOR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lmk_components: Vec<crypto::custody::LmkComponentConfig>,
    /// The LMK's expected KCV: required with components, checked whenever set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmk_kcv: Option<String>,
}

impl KeysConfig {
    /// Where the LMK comes from.
    pub fn lmk_source(&self) -> crypto::custody::LmkSource<'_> {
        crypto::custody::LmkSource {
            env: &self.lmk_env,
            file: self.lmk_file.as_deref(),
            components: &self.lmk_components,
            kcv: self.lmk_kcv.as_deref(),
        }
    }
}

fn lmk_env() -> String {
    crypto::keystore::LMK_ENV_VAR.into()
}

/// One card and its account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardConfig {
    pub pan: String,
    pub expiry: String,
    #[serde(default = "psn00")]
    pub psn: String,
    #[serde(default = "active")]
    pub status: String,
    pub currency: String,
    pub credit_limit: u64,
    #[serde(default)]
    pub outstanding: u64,
    pub cvn: String,
    pub imk_ac: String,
    pub pvk: Option<String>,
    #[serde(default)]
    pub pvki: u8,
    pub pvv: Option<String>,
    pub cvk: Option<String>,
    #[serde(default = "approve")]
    pub idv: String,
}

fn psn00() -> String {
    "00".into()
}

fn active() -> String {
    "active".into()
}

fn approve() -> String {
    "approve".into()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardsFile {
    #[serde(default, rename = "card")]
    pub cards: Vec<CardConfig>,
}

fn bad(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Config(format!("{what}: {detail}"))
}

impl CardsFile {
    pub fn from_toml(text: &str) -> Result<Self> {
        let f: CardsFile = toml::from_str(text).map_err(|e| bad("cards file", e.message()))?;
        let mut problems = Vec::new();
        for (i, c) in f.cards.iter().enumerate() {
            // Never the PAN in a message: the card's index and masked number.
            let at = format!("card[{i}] ({})", codecs::pan::mask(&c.pan));
            if PanDigits::new(&c.pan).is_err() {
                problems.push(format!("{at}.pan: expected 12 to 19 digits"));
            }
            if !c.pan.is_empty()
                && c.pan.bytes().all(|b| b.is_ascii_digit())
                && !codecs::pan::luhn_valid(c.pan.as_bytes())
            {
                problems.push(format!("{at}.pan: the Luhn check digit is wrong"));
            }
            if f.cards[..i].iter().any(|o| o.pan == c.pan) {
                problems.push(format!("{at}.pan: the same PAN is configured twice"));
            }
            let month = c.expiry.get(2..).and_then(|m| m.parse::<u8>().ok());
            if c.expiry.len() != 4
                || !c.expiry.bytes().all(|b| b.is_ascii_digit())
                || !matches!(month, Some(1..=12))
            {
                problems.push(format!("{at}.expiry: expected YYMM"));
            }
            if let Some(pvv) = &c.pvv
                && (pvv.len() != 4 || !pvv.bytes().all(|b| b.is_ascii_digit()))
            {
                problems.push(format!("{at}.pvv: expected 4 digits"));
            }
            if c.pvki > 9 {
                problems.push(format!("{at}.pvki: expected one digit 0-9"));
            }
            if c.psn.parse::<Psn>().is_err() {
                problems.push(format!("{at}.psn: expected 2 digits"));
            }
            if !matches!(c.status.as_str(), "active" | "blocked" | "lost" | "closed") {
                problems.push(format!("{at}.status: expected active, blocked, lost or closed"));
            }
            if c.currency.len() != 3 || !c.currency.bytes().all(|b| b.is_ascii_digit()) {
                problems.push(format!("{at}.currency: expected an ISO 4217 numeric code"));
            }
            if c.cvn.parse::<Cvn>().is_err() {
                problems.push(format!("{at}.cvn: unknown CVN {:?}", c.cvn));
            }
            if c.pvk.is_some() != c.pvv.is_some() {
                problems.push(format!("{at}: pvk and pvv go together"));
            }
            if crate::idv::IdvPolicy::parse(&c.idv).is_none() {
                problems.push(format!("{at}.idv: expected approve, decline or otp"));
            }
        }
        if problems.is_empty() { Ok(f) } else { Err(Error::Config(problems.join("; "))) }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// A generated test card with its clear test material (for the `serve` ports file only).
#[derive(Debug, Clone, Serialize)]
pub struct ClearTestCard {
    pub pan: String,
    pub expiry: String,
    pub psn: String,
    pub cvn: String,
    pub icc_mk: String,
    pub pin: String,
    pub balance: String,
    /// Added: the CVV2 printed on the card (card-not-present payments), test material.
    pub cvv2: String,
    /// The card's billing currency (ISO 4217 numeric): `balance` and DE 54 are in it.
    pub currency: String,
}

/// Test cards and the issuer keystore that goes with them.
pub struct TestIssuer {
    pub cards: CardsFile,
    pub keystore: Keystore,
    pub clear: Vec<ClearTestCard>,
    /// The zone PIN key (clear, test material) the switch must share to translate PINs to.
    pub zpk_clear: TdesKey,
    /// The IMK-AC (clear, test material), for a switch that verifies on the issuer's behalf.
    pub imk_clear: TdesKey,
}

pub const IMK_NAME: &str = "issuer.imk-ac";
pub const PVK_NAME: &str = "issuer.pvk";
pub const CVK_NAME: &str = "issuer.cvk";
pub const ZPK_NAME: &str = "issuer.zpk";

/// Generates `n` test cards (test BIN 476173, Luhn-valid), their issuer keys under `lmk`, and the
/// clear material a test tool needs. `random` fills buffers (the OS generator in production use).
/// The first two cards have an open-to-buy of 5,000,000 minor units, the last one 800,000, the
/// others 2,000,000; PINs are 1234, 2468, ... four digits each.
pub fn generate_test_issuer(
    n: usize,
    lmk: Lmk,
    expiry: &str,
    random: &mut dyn FnMut(&mut [u8]),
) -> Result<TestIssuer> {
    generate_test_issuer_billed(n, &[], lmk, expiry, random)
}

/// The test BIN range of the test cards billed in TWD (901): within Visa's test BIN 476173, so
/// that a longer route prefix gives them their own billing currency.
pub const TWD_CARD_PREFIX: &str = "4761739";

/// [`generate_test_issuer`] with the cards whose indexes are in `twd` billed in New Taiwan
/// dollars (901) and numbered in [`TWD_CARD_PREFIX`]; the others in EUR (978).
pub fn generate_test_issuer_billed(
    n: usize,
    twd: &[usize],
    lmk: Lmk,
    expiry: &str,
    random: &mut dyn FnMut(&mut [u8]),
) -> Result<TestIssuer> {
    let mut ks = Keystore::new(lmk);
    let mut make_key = |ks: &mut Keystore, name: &str, header: &str| -> Result<TdesKey> {
        let mut raw = zeroize::Zeroizing::new([0u8; 16]);
        random(raw.as_mut());
        crypto::keys::adjust_odd_parity(raw.as_mut());
        let key = TdesKey::from_slice(raw.as_ref()).map_err(|e| bad("key", e))?;
        let mut pad = zeroize::Zeroizing::new(vec![0u8; ks.random_len(16)]);
        random(&mut pad);
        let header = Header::parse_template(header).map_err(|e| bad("header", e))?;
        ks.import(
            KeyName::new(name).map_err(|e| bad("name", e))?,
            &header,
            &SymmetricKey::Tdes(key.clone()),
            &pad,
        )
        .map_err(|e| bad("keystore", e))?;
        Ok(key)
    };
    let imk = make_key(&mut ks, IMK_NAME, "D0000E0TX00N0000")?;
    let pvk = make_key(&mut ks, PVK_NAME, "D0000V2TC00N0000")?;
    let cvk = make_key(&mut ks, CVK_NAME, "D0000C0TC00N0000")?;
    let zpk = make_key(&mut ks, ZPK_NAME, "D0000P0TB00N0000")?;
    let (cards, clear) = test_cards(n, twd, &imk, &pvk, &cvk, expiry)?;
    Ok(TestIssuer { cards: CardsFile { cards }, keystore: ks, clear, zpk_clear: zpk, imk_clear: imk })
}

/// The same test issuer again from the keystore [`generate_test_issuer`] made (a kept network
/// restarting): the cards are a function of their number, the keys and the expiry, so the same
/// PANs, PINs, ICC master keys and CVV2s come back without any file holding them.
pub fn test_issuer_from_keystore(n: usize, twd: &[usize], ks: Keystore, expiry: &str) -> Result<TestIssuer> {
    let get = |name: &str, usage: KeyUsage| -> Result<TdesKey> {
        ks.get_tdes(&KeyName::new(name).map_err(|e| bad("name", e))?, usage).map_err(|e| bad("keystore", e))
    };
    let imk = get(IMK_NAME, KeyUsage::EMV_IMK_AC)?;
    let pvk = get(PVK_NAME, KeyUsage::PVK_VISA_PVV)?;
    let cvk = get(CVK_NAME, KeyUsage::CVK)?;
    let zpk = get(ZPK_NAME, KeyUsage::PIN_ENCRYPTION)?;
    let (cards, clear) = test_cards(n, twd, &imk, &pvk, &cvk, expiry)?;
    Ok(TestIssuer { cards: CardsFile { cards }, keystore: ks, clear, zpk_clear: zpk, imk_clear: imk })
}

/// `n` test cards (test BIN 476173, Luhn-valid) under these keys: the issuer's view and the clear
/// material of the ports file.
fn test_cards(
    n: usize,
    twd: &[usize],
    imk: &TdesKey,
    pvk: &TdesKey,
    cvk: &TdesKey,
    expiry: &str,
) -> Result<(Vec<CardConfig>, Vec<ClearTestCard>)> {
    let mut cards = Vec::new();
    let mut clear = Vec::new();
    for i in 0..n {
        let (prefix, currency) = if twd.contains(&i) { (TWD_CARD_PREFIX, "901") } else { ("476173", "978") };
        let mut body = format!("{prefix}{:09}", (i as u64 + 1) * 11);
        body.truncate(15);
        let pan = codecs::pan::with_check_digit(&body).ok_or_else(|| bad("pan", "not digits"))?;
        let pin_text = format!("{:04}", (1234 + 1234 * i) % 10_000);
        let pin = Pin::new(&pin_text).map_err(|e| bad("pin", e))?;
        let pvv = pin::visa_pvv(pvk, &pan, 1, &pin).map_err(|e| bad("pvv", e))?;
        let limit = if i < 2 {
            5_000_000
        } else if i + 1 == n {
            800_000
        } else {
            2_000_000
        };
        let cvn = "visa18".to_string();
        let pan_digits = PanDigits::new(&pan).map_err(|e| bad("pan", e))?;
        let psn = Psn::new(0).map_err(|e| bad("psn", e))?;
        let icc_mk = Cvn::Visa18.icc_master_key(imk, &pan_digits, psn);
        clear.push(ClearTestCard {
            pan: pan.clone(),
            expiry: expiry.to_string(),
            psn: "00".into(),
            cvn: cvn.clone(),
            icc_mk: to_hex(icc_mk.expose()),
            pin: pin_text,
            balance: format!("{limit:012}"),
            // CVV2: the CVV algorithm with service code 000.
            cvv2: crypto::cvv::cvv(cvk, &pan, expiry, "000").map_err(|e| bad("cvv2", e))?,
            currency: currency.into(),
        });
        cards.push(CardConfig {
            pan,
            expiry: expiry.to_string(),
            psn: "00".into(),
            status: "active".into(),
            currency: currency.into(),
            credit_limit: limit,
            outstanding: 0,
            cvn,
            imk_ac: IMK_NAME.into(),
            pvk: Some(PVK_NAME.into()),
            pvki: 1,
            pvv: Some(pvv),
            cvk: Some(CVK_NAME.into()),
            idv: if i == 1 { "otp".into() } else { "approve".into() },
        });
    }
    Ok((cards, clear))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = r#"
[[card]]
pan = "4761730000000011"
expiry = "2912"
currency = "978"
credit_limit = 100000
cvn = "visa18"
imk_ac = "issuer.imk-ac"
pvk = "issuer.pvk"
pvv = "4731"
"#;

    #[test]
    fn a_good_card_loads_with_defaults() {
        let f = CardsFile::from_toml(CARD).expect("valid");
        let c = &f.cards[0];
        assert_eq!(
            (c.psn.as_str(), c.status.as_str(), c.idv.as_str(), c.outstanding),
            ("00", "active", "approve", 0)
        );
        assert_eq!(CardsFile::from_toml(&f.to_toml()).expect("round trip"), f);
    }

    #[test]
    fn every_problem_is_reported_at_once_without_the_clear_pan() {
        let bad = CARD
            .replace("4761730000000011", "4761730000000012")
            .replace("2912", "2913")
            .replace("visa18", "visa99")
            .replace("4731", "47X1")
            + "status = \"stolen\"\nidv = \"maybe\"\npvki = 12\n";
        let e = CardsFile::from_toml(&bad).expect_err("invalid").to_string();
        for what in ["Luhn", "expiry", "cvn", "pvv", "status", "idv", "pvki"] {
            assert!(e.contains(what), "{what} missing from: {e}");
        }
        assert!(!e.contains("4761730000000012"), "clear PAN in: {e}");
        assert!(e.contains("476173******0012"));
        let twice = format!("{CARD}{CARD}");
        assert!(CardsFile::from_toml(&twice).expect_err("duplicate").to_string().contains("twice"));
        let lone_pvk = CARD.replace("pvv = \"4731\"\n", "");
        assert!(CardsFile::from_toml(&lone_pvk).expect_err("pvk alone").to_string().contains("together"));
    }

    #[test]
    fn generated_cards_carry_their_luhn_check_digit() {
        let lmk = Lmk::from_hex(&"0123456789ABCDEF".repeat(4)).expect("lmk");
        let issuer = generate_test_issuer(3, lmk, "2912", &mut testkit::TestRng::seeded(5).filler())
            .expect("generate");
        for c in &issuer.cards.cards {
            assert!(codecs::pan::luhn_valid(c.pan.as_bytes()), "{}", codecs::pan::mask(&c.pan));
        }
    }

    #[test]
    fn generated_test_issuer_meets_the_serve_contract() {
        let lmk = Lmk::from_hex(&"0123456789ABCDEF".repeat(4)).expect("LMK");
        let mut n = 0u8;
        let mut random = |b: &mut [u8]| {
            for x in b.iter_mut() {
                n = n.wrapping_mul(31).wrapping_add(7);
                *x = n;
            }
        };
        let t = generate_test_issuer(4, lmk, "2912", &mut random).expect("generated");
        CardsFile::from_toml(&t.cards.to_toml()).expect("the generated cards validate");
        // INTERFACES.md §5: at least 4 cards, two with 5,000,000 or more, one with 1,000,000 or less.
        let otb: Vec<u64> = t.clear.iter().map(|c| c.balance.parse().expect("12 digits")).collect();
        assert_eq!(t.clear.len(), 4);
        assert!(otb.iter().filter(|&&b| b >= 5_000_000).count() >= 2);
        assert!(otb.iter().any(|&b| b <= 1_000_000));
        for c in &t.clear {
            assert!(c.pan.starts_with("476173") && c.balance.len() == 12 && c.icc_mk.len() == 32);
            assert_eq!(c.pin.len(), 4);
        }
        // The keystore holds blocks, and its Debug shows KCVs, never keys.
        let dbg = format!("{:?}", t.keystore);
        assert!(!t.clear.iter().any(|c| dbg.contains(&c.icc_mk)));
        assert_eq!(t.keystore.len(), 4);
    }
}
