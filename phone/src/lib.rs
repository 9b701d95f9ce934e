//! The cardholder's phone: secure elements ([`se`]) and the operating system's secure area for
//! host card emulation ([`hce`]), persisted to one JSON state file, and tapped by terminals as a
//! [`Contactless`] device that routes every APDU to the cardholder's default card.
//!
//! The state file is the device's storage: the secure elements' entries are the elements' own
//! memory (their keys included), the HCE area holds the device's P-256 key and the token profiles.
//! It is written atomically (temporary file, then rename) after every change and after every
//! GENERATE AC — before the cryptogram leaves the phone, so that a restarted phone never reuses an
//! ATC or a limited-use key.
//!
//! * [`se`] — a secure element with security domains, running the EMV card application
//!   ([`emv::card`]) per installed card.
//! * [`hce`] — the OS secure area for host card emulation: token profiles on limited-use keys.
//! * [`ota`] — the SCP03-like secure channel that scripts reach a security domain through.
//!
//! A library, not a simulator: `wallet-sim` provisions the phone, the merchant terminals and the
//! ATM tap it ([`Device`]), all over the same state file.
#![forbid(unsafe_code)]

pub mod hce;
pub mod ota;
pub mod se;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ota::{KeySet, OtaReceipt, OtaScript};
use emv::Sw;
use emv::card::{CardProfile, Contactless, EmvApplet, mask};
use hce::{HceArea, HceCard};
use se::{AppletState, SecureElement};

/// What went wrong on the phone.
#[derive(Debug, thiserror::Error)]
pub enum PhoneError {
    #[error("phone state file {path}: {detail}")]
    Storage { path: String, detail: String },
    #[error("no card {0} on this phone")]
    NoCard(String),
    #[error("no secure element {0} in this phone")]
    NoSecureElement(String),
    #[error("{0}")]
    Refused(String),
}

/// The whole device state, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PhoneState {
    /// Format version of this file.
    pub version: u32,
    pub device_id: String,
    pub secure_elements: Vec<SecureElement>,
    pub hce: HceArea,
    /// The card a tap uses (its id, see [`CardSummary::id`]).
    pub default_card: Option<String>,
    /// How each card got here: card id → operating model (issuer-se, tsm-se-pan, ...).
    #[serde(default)]
    pub models: Vec<(String, String)>,
    /// The credentials providers issued this phone's owner at registration: provider → token.
    #[serde(default)]
    pub credentials: Vec<(String, String)>,
    /// Secure elements on order: owner → the P-256 secret (hex) their ISD keys are sealed for.
    #[serde(default)]
    pub se_orders: Vec<(String, String)>,
}

/// One card on the phone, for display.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CardSummary {
    /// `se:<se id>:<instance AID>` or `hce:<token ref>` (`hce:<card ref>` on the real PAN).
    pub id: String,
    pub model: String,
    pub location: String,
    /// Masked PAN or token.
    pub pan: String,
    pub state: String,
    pub atc: u16,
    pub luks_left: Option<usize>,
    pub default: bool,
}

/// The phone.
pub struct Phone {
    state: PhoneState,
    path: Option<PathBuf>,
    /// The applet a terminal is talking to, and which card it is.
    session: Option<(String, EmvApplet)>,
}

fn random_bytes<const N: usize>() -> Result<[u8; N], PhoneError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| PhoneError::Refused(format!("random source: {e}")))?;
    Ok(b)
}

impl Phone {
    /// A new phone (fresh device key, no secure element yet), not yet stored.
    pub fn new() -> Result<Phone, PhoneError> {
        let id: [u8; 8] = random_bytes()?;
        Ok(Phone {
            state: PhoneState {
                version: 1,
                device_id: format!("DEV{}", hex::encode_upper(id)),
                secure_elements: Vec::new(),
                hce: HceArea::new(hce::new_device_secret()?),
                default_card: None,
                models: Vec::new(),
                credentials: Vec::new(),
                se_orders: Vec::new(),
            },
            path: None,
            session: None,
        })
    }

    /// Loads the phone from `path`, or makes a new one there when the file does not exist.
    pub fn open_or_create(path: &Path) -> Result<Phone, PhoneError> {
        if path.exists() {
            return Phone::open(path);
        }
        let mut p = Phone::new()?;
        p.path = Some(path.to_path_buf());
        p.save()?;
        Ok(p)
    }

    /// Loads a stored phone.
    pub fn open(path: &Path) -> Result<Phone, PhoneError> {
        let storage = |detail: String| PhoneError::Storage { path: path.display().to_string(), detail };
        let text = std::fs::read_to_string(path).map_err(|e| storage(e.to_string()))?;
        let state: PhoneState =
            serde_json::from_str(&text).map_err(|e| storage(format!("not a phone: {e}")))?;
        if state.version != 1 {
            return Err(storage(format!("format version {} (this build reads 1)", state.version)));
        }
        Ok(Phone { state, path: Some(path.to_path_buf()), session: None })
    }

    /// Writes the state file atomically (no-op for a phone that has no file).
    pub fn save(&self) -> Result<(), PhoneError> {
        let Some(path) = &self.path else { return Ok(()) };
        let storage = |detail: String| PhoneError::Storage { path: path.display().to_string(), detail };
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(&self.state).map_err(|e| storage(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|e| storage(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| storage(e.to_string()))
    }

    pub fn device_id(&self) -> &str {
        &self.state.device_id
    }

    pub fn state(&self) -> &PhoneState {
        &self.state
    }

    /// The HCE area's device public key (P-256, SEC1 uncompressed, hex): what token requestors
    /// seal token data for.
    pub fn device_public_key(&self) -> Result<String, PhoneError> {
        self.state.hce.public_key_hex()
    }

    /// Fits a secure element as it came from its issuer (the SE operator's embedded SE, or an
    /// issuer-owned SE): its issuer security domain holds `isd_keys` from then on.
    pub fn fit_secure_element(
        &mut self,
        se_id: &str,
        owner: &str,
        isd_aid: &str,
        isd_keys: KeySet,
    ) -> Result<(), PhoneError> {
        if self.state.secure_elements.iter().any(|s| s.se_id == se_id) {
            return Err(PhoneError::Refused(format!("secure element {se_id} is already fitted")));
        }
        self.state.secure_elements.push(SecureElement::manufactured(se_id, owner, isd_aid, isd_keys));
        self.save()
    }

    /// The key pair a secure element from `owner` is made with: its public key (hex), for the
    /// issuer of the SE to seal the ISD keys for. Ordering again replaces an order not fitted.
    pub fn order_secure_element(&mut self, owner: &str) -> Result<String, PhoneError> {
        let secret = hce::new_device_secret()?;
        let raw =
            zeroize::Zeroizing::new(hex::decode(&secret).map_err(|e| PhoneError::Refused(e.to_string()))?);
        let pk = crypto::device::public_key(&raw).map_err(|e| PhoneError::Refused(e.to_string()))?;
        self.state.se_orders.retain(|(o, _)| o != owner);
        self.state.se_orders.push((owner.to_string(), secret));
        self.save()?;
        Ok(hex::encode_upper(pk))
    }

    /// Fits the secure element ordered from `owner`: its ISD keys, sealed for the SE's key
    /// ([`se::ISD_KEYS_INFO`]), open inside the element only.
    pub fn fit_sealed_secure_element(
        &mut self,
        se_id: &str,
        owner: &str,
        isd_aid: &str,
        sealed_isd_keys_hex: &str,
    ) -> Result<(), PhoneError> {
        let secret = self
            .state
            .se_orders
            .iter()
            .find(|(o, _)| o == owner)
            .map(|(_, s)| zeroize::Zeroizing::new(s.clone()))
            .ok_or_else(|| PhoneError::Refused(format!("no secure element ordered from {owner}")))?;
        let raw = zeroize::Zeroizing::new(
            hex::decode(secret.as_str()).map_err(|e| PhoneError::Refused(e.to_string()))?,
        );
        let sealed = hex::decode(sealed_isd_keys_hex)
            .map_err(|_| PhoneError::Refused("sealed ISD keys: expected hex".into()))?;
        let plain = crypto::device::open(&raw, se::ISD_KEYS_INFO, &sealed)
            .map_err(|e| PhoneError::Refused(format!("the ISD keys do not open in this SE: {e}")))?;
        let keys: KeySet = serde_json::from_slice(&plain)
            .map_err(|_| PhoneError::Refused("the ISD keys are not a key set".into()))?;
        self.state.se_orders.retain(|(o, _)| o != owner);
        self.fit_secure_element(se_id, owner, isd_aid, keys)
    }

    /// The credential `provider` issued this phone's owner, if any.
    pub fn credential(&self, provider: &str) -> Option<&str> {
        self.state.credentials.iter().find(|(p, _)| p == provider).map(|(_, t)| t.as_str())
    }

    /// Keeps the credential `provider` issued.
    pub fn set_credential(&mut self, provider: &str, token: &str) -> Result<(), PhoneError> {
        self.state.credentials.retain(|(p, _)| p != provider);
        self.state.credentials.push((provider.to_string(), token.to_string()));
        self.save()
    }

    /// The id of the phone's secure element owned by `owner`, if fitted.
    pub fn secure_element(&self, owner: &str) -> Option<&str> {
        self.state.secure_elements.iter().find(|s| s.owner == owner).map(|s| s.se_id.as_str())
    }

    /// Hands a script to the secure element it names; the element's proof of receipt.
    pub fn deliver_script(&mut self, script: &OtaScript) -> Result<OtaReceipt, PhoneError> {
        let se = self
            .state
            .secure_elements
            .iter_mut()
            .find(|s| s.se_id == script.se_id)
            .ok_or_else(|| PhoneError::NoSecureElement(script.se_id.clone()))?;
        let receipt = se.run_script(script);
        self.session = None;
        self.save()?;
        Ok(receipt)
    }

    /// Stores token data sealed for this device (a cloud platform's or a wallet's) in the HCE area.
    pub fn install_token(
        &mut self,
        token_ref: &str,
        provider: &str,
        sealed_hex: &str,
    ) -> Result<String, PhoneError> {
        let card = self.state.hce.install(token_ref, provider, sealed_hex)?;
        self.save()?;
        Ok(card)
    }

    /// Stores the issuer's perso data for a real-PAN HCE card (limited-use keys sealed for this
    /// device, relayed by the cloud platform `provider`) in the HCE area; the card id.
    pub fn install_pan_card(
        &mut self,
        card_ref: &str,
        provider: &str,
        sealed_hex: &str,
    ) -> Result<String, PhoneError> {
        let card = self.state.hce.install_pan(card_ref, provider, sealed_hex)?;
        self.save()?;
        Ok(card)
    }

    /// Adds a replenished batch of limited-use keys to an HCE card.
    pub fn replenish(&mut self, token_ref: &str, sealed_hex: &str) -> Result<usize, PhoneError> {
        self.sync_session();
        let n = self.state.hce.replenish(token_ref, sealed_hex)?;
        self.session = None;
        self.save()?;
        Ok(n)
    }

    /// Records the operating model a card came by (status display).
    pub fn set_model(&mut self, card_id: &str, model: &str) -> Result<(), PhoneError> {
        self.state.models.retain(|(c, _)| c != card_id);
        self.state.models.push((card_id.to_string(), model.to_string()));
        self.save()
    }

    /// The cardholder enables a card (SE applet personalised, or HCE card loaded); the first card
    /// enabled becomes the default.
    pub fn enable(&mut self, card_id: &str) -> Result<(), PhoneError> {
        if let Some((se_id, aid)) = card_id.strip_prefix("se:").and_then(|r| r.split_once(':')) {
            let applet = self
                .state
                .secure_elements
                .iter_mut()
                .find(|s| s.se_id == se_id)
                .and_then(|s| s.applets.iter_mut().find(|a| a.instance_aid == aid))
                .ok_or_else(|| PhoneError::NoCard(card_id.to_string()))?;
            if applet.profile.is_none() {
                return Err(PhoneError::Refused(format!("card {card_id} is not personalised yet")));
            }
            applet.state = AppletState::Enabled;
        } else if let Some(token_ref) = card_id.strip_prefix("hce:") {
            let c =
                self.state.hce.card_mut(token_ref).ok_or_else(|| PhoneError::NoCard(card_id.to_string()))?;
            c.enabled = true;
        } else {
            return Err(PhoneError::NoCard(card_id.to_string()));
        }
        if self.state.default_card.is_none() {
            self.state.default_card = Some(card_id.to_string());
        }
        self.save()
    }

    /// Makes an enabled card the one a tap uses.
    pub fn set_default(&mut self, card_id: &str) -> Result<(), PhoneError> {
        let c = self
            .cards()
            .into_iter()
            .find(|c| c.id == card_id)
            .ok_or_else(|| PhoneError::NoCard(card_id.to_string()))?;
        if c.state != "enabled" {
            return Err(PhoneError::Refused(format!("card {card_id} is {}: enable it first", c.state)));
        }
        self.sync_session();
        self.session = None;
        self.state.default_card = Some(card_id.to_string());
        self.save()
    }

    /// Every card on the phone.
    pub fn cards(&self) -> Vec<CardSummary> {
        let model = |id: &str| {
            self.state.models.iter().find(|(c, _)| c == id).map(|(_, m)| m.clone()).unwrap_or_default()
        };
        let mut out = Vec::new();
        for s in &self.state.secure_elements {
            for a in &s.applets {
                let id = format!("se:{}:{}", s.se_id, a.instance_aid);
                let state = match a.state {
                    AppletState::Installed => "installed",
                    AppletState::Personalized => "personalized",
                    AppletState::Enabled => "enabled",
                };
                out.push(CardSummary {
                    model: model(&id),
                    location: format!("secure element {} ({}), domain {}", s.se_id, s.owner, a.sd_aid),
                    pan: a.profile.as_ref().map(|p| mask(&p.pan)).unwrap_or_default(),
                    state: state.into(),
                    atc: a.profile.as_ref().map(|p| p.atc).unwrap_or(0),
                    luks_left: None,
                    default: self.state.default_card.as_deref() == Some(id.as_str()),
                    id,
                });
            }
        }
        for c in &self.state.hce.cards {
            let id = format!("hce:{}", c.token_ref);
            out.push(CardSummary {
                model: model(&id),
                location: match c.kind {
                    hce::HceKind::Token => format!("OS secure area ({})", c.provider),
                    hce::HceKind::RealPan => format!("OS secure area ({}, real PAN)", c.provider),
                },
                pan: mask(&c.profile.pan),
                state: if c.enabled { "enabled" } else { "loaded" }.into(),
                atc: c.profile.atc,
                luks_left: c.profile.luks_left(),
                default: self.state.default_card.as_deref() == Some(id.as_str()),
                id,
            });
        }
        out
    }

    /// The profile of a card (for export as a plain card, e.g. to an ATM).
    pub fn profile(&self, card_id: &str) -> Option<&CardProfile> {
        if let Some((se_id, aid)) = card_id.strip_prefix("se:").and_then(|r| r.split_once(':')) {
            return self
                .state
                .secure_elements
                .iter()
                .find(|s| s.se_id == se_id)
                .and_then(|s| s.applets.iter().find(|a| a.instance_aid == aid))
                .and_then(|a| a.profile.as_ref());
        }
        card_id.strip_prefix("hce:").and_then(|t| self.state.hce.card(t)).map(|c: &HceCard| &c.profile)
    }

    fn profile_mut(&mut self, card_id: &str) -> Option<&mut CardProfile> {
        if let Some((se_id, aid)) = card_id.strip_prefix("se:").and_then(|r| r.split_once(':')) {
            return self
                .state
                .secure_elements
                .iter_mut()
                .find(|s| s.se_id == se_id)
                .and_then(|s| s.applets.iter_mut().find(|a| a.instance_aid == aid))
                .and_then(|a| a.profile.as_mut());
        }
        let t = card_id.strip_prefix("hce:")?;
        self.state.hce.card_mut(t).map(|c| &mut c.profile)
    }

    /// The default card's id, when it is enabled.
    pub fn default_card(&self) -> Option<String> {
        let id = self.state.default_card.clone()?;
        self.cards().iter().any(|c| c.id == id && c.state == "enabled").then_some(id)
    }

    /// Copies the session applet's profile (ATC, keys used) back into the stored state.
    fn sync_session(&mut self) {
        if let Some((id, applet)) = self.session.take() {
            let p = applet.profile().clone();
            if let Some(slot) = self.profile_mut(&id) {
                *slot = p;
            }
            self.session = Some((id, applet));
        }
    }

    /// Whether the last ARPC the default card saw verified (None before any).
    pub fn issuer_authenticated(&self) -> Option<bool> {
        self.session.as_ref().and_then(|(_, a)| a.issuer_authenticated)
    }

    /// An online (in-app, e-commerce) cryptogram from the default card: the card application runs
    /// the same dialogue a terminal would (GPO with the PDOL data, GENERATE AC with CDOL1), with the
    /// transaction data the merchant's checkout gives. The answer is the card's tags, ready for
    /// DE 55 of an e-commerce authorization.
    pub fn online_cryptogram(&mut self, tx: &OnlineTx) -> Result<OnlineCryptogram, PhoneError> {
        use emv::Command;
        use emv::apdu::split_response;
        let card_id = self.default_card().ok_or_else(|| PhoneError::NoCard("(default)".into()))?;
        let profile = self.profile(&card_id).ok_or_else(|| PhoneError::NoCard(card_id.clone()))?.clone();
        let aid = hex::decode(&profile.aid).map_err(|_| PhoneError::Refused("card AID".into()))?;
        let mut cdol = Vec::new();
        cdol.extend_from_slice(&bcd12(tx.amount));
        cdol.extend_from_slice(&[0; 6]);
        cdol.extend_from_slice(&tx.country);
        cdol.extend_from_slice(&[0; 5]);
        cdol.extend_from_slice(&tx.currency);
        cdol.extend_from_slice(&tx.date);
        cdol.push(tx.tx_type);
        cdol.extend_from_slice(&tx.un);
        let mut pdol = vec![0x83, 33, 0x28, 0x00, 0x00, 0x00];
        pdol.extend_from_slice(&cdol);
        let steps = [
            Command::build(0x00, 0xA4, 0x04, 0x00, &aid),
            Command::build(0x80, 0xA8, 0x00, 0x00, &pdol),
            Command::build(0x80, 0xAE, 0x80, 0x00, &cdol),
        ];
        self.session = None;
        let mut last = Vec::new();
        for c in steps {
            let r = self.transceive(&c);
            let (data, sw) = split_response(&r).ok_or_else(|| PhoneError::Refused("no answer".into()))?;
            if sw != Sw::OK {
                return Err(PhoneError::Refused(format!("the card answered {sw}")));
            }
            last = data.to_vec();
        }
        let nodes = codecs::tlv::decode_lenient(&last).map_err(|e| PhoneError::Refused(e.to_string()))?;
        let tag = |t: u32| codecs::tlv::find(&nodes, codecs::tlv::Tag::new(t)).map(|n| n.value().to_vec());
        let (arqc, atc, iad) = (
            tag(0x9F26).unwrap_or_default(),
            tag(0x9F36).unwrap_or_default(),
            tag(0x9F10).unwrap_or_default(),
        );
        let cid = tag(0x9F27).and_then(|v| v.first().copied()).unwrap_or(0);
        // DE 55 of the e-commerce authorization: the checkout's data and the card's answers.
        let mut b = codecs::tlv::TlvBuilder::new();
        let t = codecs::tlv::Tag::new;
        for (tg, v) in [
            (0x9F02, bcd12(tx.amount).to_vec()),
            (0x9F03, vec![0; 6]),
            (0x9F1A, tx.country.to_vec()),
            (0x95, vec![0; 5]),
            (0x5F2A, tx.currency.to_vec()),
            (0x9A, tx.date.to_vec()),
            (0x9C, vec![tx.tx_type]),
            (0x9F37, tx.un.to_vec()),
            (0x82, vec![0x20, 0x00]),
            (0x9F36, atc.clone()),
            (0x9F26, arqc.clone()),
            (0x9F27, vec![cid]),
            // The card's PAN (the token) and sequence number, as a tap carries them, so the
            // network can hold DE 2 and DE 23 against the card's own data.
            (0x5A, codecs::pan::to_cn(&profile.pan).ok_or_else(|| PhoneError::Refused("card PAN".into()))?),
            (
                0x5F34,
                vec![
                    codecs::pan::psn_n2(&profile.psn)
                        .ok_or_else(|| PhoneError::Refused("card PSN".into()))?,
                ],
            ),
            (0x9F10, iad.clone()),
        ] {
            b.primitive(t(tg), &v).map_err(|e| PhoneError::Refused(e.to_string()))?;
        }
        let icc = b.finish().to_vec();
        let profile = self.profile(&card_id).ok_or_else(|| PhoneError::NoCard(card_id.clone()))?;
        Ok(OnlineCryptogram {
            icc,
            pan: profile.pan.clone(),
            expiry: profile.expiry.clone(),
            psn: profile.psn.clone(),
            cvn: profile.cvn.clone(),
            arqc,
            atc,
            iad,
            cid,
        })
    }
}

/// What a merchant's checkout gives the phone for an in-app payment.
#[derive(Debug, Clone)]
pub struct OnlineTx {
    pub amount: u64,
    pub country: [u8; 2],
    pub currency: [u8; 2],
    pub date: [u8; 3],
    pub tx_type: u8,
    pub un: [u8; 4],
}

/// The card's answer for an in-app payment.
#[derive(Clone)]
pub struct OnlineCryptogram {
    /// DE 55: the transaction data and the card's tags (9F26 9F27 9F10 9F36 82 ...), TLV.
    pub icc: Vec<u8>,
    pub pan: String,
    pub expiry: String,
    pub psn: String,
    pub cvn: String,
    pub arqc: Vec<u8>,
    pub atc: Vec<u8>,
    pub iad: Vec<u8>,
    pub cid: u8,
}

impl From<OnlineCryptogram> for emv::kernel::Tapped {
    /// The phone's in-app answer as a tap: the same card data, no track 2 (nothing was read off a
    /// magnetic-stripe equivalent in an e-commerce payment).
    fn from(c: OnlineCryptogram) -> emv::kernel::Tapped {
        emv::kernel::Tapped {
            pan: c.pan,
            expiry: c.expiry,
            psn: c.psn,
            track2: String::new(),
            icc: c.icc,
            cid: c.cid,
        }
    }
}

impl std::fmt::Debug for OnlineCryptogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnlineCryptogram").field("pan", &mask(&self.pan)).field("atc", &self.atc).finish()
    }
}

fn bcd12(amount: u64) -> [u8; 6] {
    let s = format!("{:012}", amount % 1_000_000_000_000);
    let mut out = [0u8; 6];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        out[i] = ((pair[0] - b'0') << 4) | (pair[1] - b'0');
    }
    out
}

impl Contactless for Phone {
    fn transceive(&mut self, command: &[u8]) -> Vec<u8> {
        if self.session.is_none() {
            let Some(id) = self.default_card() else { return Sw::FILE_NOT_FOUND.bytes().to_vec() };
            let Some(p) = self.profile(&id).cloned() else { return Sw::FILE_NOT_FOUND.bytes().to_vec() };
            self.session = Some((id, EmvApplet::new(p)));
        }
        let Some((_, applet)) = self.session.as_mut() else { return Sw::FILE_NOT_FOUND.bytes().to_vec() };
        let r = applet.transceive(command);
        // GENERATE AC moved the ATC or used a key: stored before the cryptogram leaves.
        if command.get(1) == Some(&0xAE) {
            self.sync_session();
            if self.save().is_err() {
                self.session = None;
                return crate::ota::sw::MEMORY.bytes().to_vec();
            }
        }
        r
    }
}

/// Writes the default card (or `card_id`) as a plain [`CardProfile`] JSON, the format
/// `atm-sim --device` and other tools read.
pub fn export_card(phone: &Phone, card_id: Option<&str>) -> Result<String, PhoneError> {
    let id = match card_id {
        Some(c) => c.to_string(),
        None => phone.default_card().ok_or_else(|| PhoneError::NoCard("(default)".into()))?,
    };
    let p = phone.profile(&id).ok_or(PhoneError::NoCard(id))?;
    serde_json::to_string_pretty(p).map_err(|e| PhoneError::Refused(e.to_string()))
}

/// Something a terminal taps, read from a file: a phone state file (the phone keeps its own ATCs
/// and keys up to date in it) or a plain [`CardProfile`] JSON (`export-card`'s output; the caller
/// keeps track of its ATC).
pub enum Device {
    Phone(Box<Phone>),
    Card(Box<EmvApplet>),
}

impl Device {
    /// Reads either kind of file.
    pub fn open(path: &Path) -> Result<Device, PhoneError> {
        let storage = |detail: String| PhoneError::Storage { path: path.display().to_string(), detail };
        let text = std::fs::read_to_string(path).map_err(|e| storage(e.to_string()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| storage(format!("not JSON: {e}")))?;
        if v.get("device_id").is_some() {
            return Ok(Device::Phone(Box::new(Phone::open(path)?)));
        }
        let p: CardProfile = serde_json::from_value(v)
            .map_err(|e| storage(format!("neither a phone nor a card profile: {e}")))?;
        Ok(Device::Card(Box::new(EmvApplet::new(p))))
    }

    /// The card a tap will use.
    pub fn profile(&self) -> Option<&CardProfile> {
        match self {
            Device::Phone(p) => p.default_card().and_then(|id| p.profile(&id)),
            Device::Card(c) => Some(c.profile()),
        }
    }
}

impl Contactless for Device {
    fn transceive(&mut self, command: &[u8]) -> Vec<u8> {
        match self {
            Device::Phone(p) => p.transceive(command),
            Device::Card(c) => c.transceive(command),
        }
    }
}
