//! Cryptogram versions (CVNs): per scheme version, which ICC master key option, which session key,
//! which padding, which ARPC method and key — the table of INTERFACES.md §2, matching pyemv 1.5.0's
//! `pyemv.cvn` classes byte for byte for the TDES versions.
//!
//! | CVN | session key for the AC | padding | ARPC |
//! |---|---|---|---|
//! | `visa10` | none (ICC MK) | ISO 9797-1 method 1 | method 1, ICC MK |
//! | `visa18`, `visa22` | common (ATC) | method 2 | method 2, session key |
//! | `mc16`, `mc17` | Mastercard SKD (ATC, UN) | method 2 | method 1, ICC MK |
//! | `mc20`, `mc21` | common (ATC) | method 2 | method 1, session key |
//! | `emv-csk` | common (ATC), TDES or AES | method 2 / CMAC | method 1 or 2, session key |
//!
//! The ICC master key is option A, or option B for PANs over 16 digits (EMV Book 2 §A1.4.2).
//! TDES cryptograms are ISO 9797-1 MAC algorithm 3 (EMV Book 2 §A1.2.1); AES ones are AES-CMAC
//! truncated to 8 bytes (§A1.2.2). ARPC method 1 (§8.2.1): the ARQC XOR the 2-byte ARC (zero
//! padded), enciphered; method 2 (§8.2.2): a 4-byte MAC over ARQC ‖ CSU ‖ proprietary data.
//! Verification compares in constant time.

use std::fmt;
use std::str::FromStr;

use subtle::ConstantTimeEq;

use super::icc_mk::{MasterKeyOption, derive_icc_mk, derive_icc_mk_aes};
use super::session::{common_session_key_aes, common_session_key_with, mastercard_session_key_with};
use super::{Atc, PanDigits, Psn, UnpredictableNumber};
use crate::error::{Error, ErrorKind, Result};
use crate::keys::{AesKey, SymmetricKey, TdesCipher, TdesKey};
use crate::mac::{Padding, RetailMacKey, retail_mac};

/// A cryptogram version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cvn {
    Visa10,
    Visa18,
    Visa22,
    Mc16,
    Mc17,
    Mc20,
    Mc21,
    EmvCsk,
}

impl Cvn {
    /// The CVN of a cryptogram from its issuer application data (tag 9F10): Visa's layout (length,
    /// DKI, CVN) for PANs starting with 4, Mastercard's (DKI, CVN) for 2 and 5.
    pub fn from_iad(pan: &str, iad: &[u8]) -> Option<Cvn> {
        match pan.as_bytes().first()? {
            b'4' => match iad.get(2)? {
                0x0A => Some(Cvn::Visa10),
                0x12 => Some(Cvn::Visa18),
                0x16 => Some(Cvn::Visa22),
                _ => None,
            },
            b'2' | b'5' => match iad.get(1)? {
                0x10 => Some(Cvn::Mc16),
                0x11 => Some(Cvn::Mc17),
                0x14 => Some(Cvn::Mc20),
                0x15 => Some(Cvn::Mc21),
                _ => None,
            },
            _ => None,
        }
    }

    pub const ALL: [Cvn; 8] =
        [Cvn::Visa10, Cvn::Visa18, Cvn::Visa22, Cvn::Mc16, Cvn::Mc17, Cvn::Mc20, Cvn::Mc21, Cvn::EmvCsk];

    pub fn name(self) -> &'static str {
        match self {
            Cvn::Visa10 => "visa10",
            Cvn::Visa18 => "visa18",
            Cvn::Visa22 => "visa22",
            Cvn::Mc16 => "mc16",
            Cvn::Mc17 => "mc17",
            Cvn::Mc20 => "mc20",
            Cvn::Mc21 => "mc21",
            Cvn::EmvCsk => "emv-csk",
        }
    }

    /// The ISO 9797-1 padding of the TDES cryptogram.
    pub fn padding(self) -> Padding {
        if self == Cvn::Visa10 { Padding::Method1 } else { Padding::Method2 }
    }

    /// Whether the terminal's unpredictable number enters the session key.
    pub fn needs_un(self) -> bool {
        matches!(self, Cvn::Mc16 | Cvn::Mc17)
    }

    /// The ARPC method the issuer answers with (`emv-csk` takes either).
    pub fn arpc_method(self) -> Option<u8> {
        match self {
            Cvn::Visa10 | Cvn::Mc16 | Cvn::Mc17 | Cvn::Mc20 | Cvn::Mc21 => Some(1),
            Cvn::Visa18 | Cvn::Visa22 => Some(2),
            Cvn::EmvCsk => None,
        }
    }
}

impl fmt::Display for Cvn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Cvn {
    type Err = Error;
    fn from_str(s: &str) -> Result<Cvn> {
        Cvn::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "cvn",
                format!("unknown CVN {s:?}; expected one of {}", Cvn::ALL.map(Cvn::name).join(", ")),
            )
        })
    }
}

/// What identifies the card and the transaction to the key derivations.
#[derive(Debug, Clone)]
pub struct CardInputs<'a> {
    pub pan: &'a PanDigits,
    pub psn: Psn,
    pub atc: Atc,
    /// Tag 9F37; required by `mc16` / `mc17`.
    pub un: Option<UnpredictableNumber>,
}

/// The issuer's answer the ARPC covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArpcInput {
    /// Method 1: the 2-byte authorisation response code (ARC).
    Arc([u8; 2]),
    /// Method 2: the 4-byte card status update and up to 8 bytes of proprietary data.
    Csu { csu: [u8; 4], proprietary: Vec<u8> },
}

/// The card's keys for one transaction, derived from the issuer master key.
enum Keys {
    Tdes { icc_mk: TdesKey, session: Option<TdesKey> },
    Aes { session: AesKey },
}

/// An ARQC that verified, with the card's keys for this transaction (zeroized when dropped): what
/// [`Cvn::verify_arqc_keeping_keys`] hands back for the ARPC.
pub struct VerifiedArqc {
    cvn: Cvn,
    keys: Keys,
    arqc: [u8; 8],
    /// The retail-MAC schedules the ARQC was computed with (TDES): an ARPC MACed under the same
    /// key (method 2 of Visa 18/22 and emv-csk) uses them again instead of preparing its own.
    ac_mac: Option<RetailMacKey>,
}

impl VerifiedArqc {
    /// The ARPC for the verified ARQC: 8 bytes (method 1) or 4 (method 2), no key derived again.
    pub fn arpc(&self, input: &ArpcInput) -> Result<Vec<u8>> {
        self.cvn.check_arpc_input(input)?;
        self.cvn.arpc_with(&self.keys, &self.arqc, input, self.ac_mac.as_ref())
    }

    /// The cryptogram version the ARQC was verified under.
    pub fn cvn(&self) -> Cvn {
        self.cvn
    }
}

impl std::fmt::Debug for VerifiedArqc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedArqc").field("cvn", &self.cvn).finish_non_exhaustive()
    }
}

/// ARPC method 2 (Visa CVN 18/22, emv-csk): the first 4 bytes of the retail MAC of ARQC ‖ CSU ‖
/// proprietary authentication data, under the cryptogram's key.
fn csu_arpc(mac: &RetailMacKey, arqc: &[u8; 8], csu: &[u8], proprietary: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(8 + csu.len() + proprietary.len());
    data.extend_from_slice(arqc);
    data.extend_from_slice(csu);
    data.extend_from_slice(proprietary);
    mac.mac(&data, Padding::Method2)[..4].to_vec()
}

/// The TDES key the cryptogram is computed under: the session key, or (visa10, which has none) the
/// ICC master key.
fn ac_key<'k>(icc_mk: &'k TdesKey, session: &'k Option<TdesKey>) -> &'k TdesKey {
    session.as_ref().unwrap_or(icc_mk)
}

/// Whether the cryptogram received is the one computed, compared in constant time.
fn same_cryptogram(computed: &[u8; 8], received: &[u8]) -> Result<()> {
    if received.len() == 8 && bool::from(computed.ct_eq(received)) {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Verification, "arqc", "the cryptogram does not verify"))
    }
}

/// A card's own master key (the ICC master key), derived from the issuer's master key, the PAN
/// and the PAN sequence number: the same for every transaction of the card, so an issuer (or a
/// card) may keep it rather than derive it again for each — a TDES one with its key schedule
/// prepared, each transaction's session key enciphered under it at once (zeroized when dropped).
#[derive(Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "the TDES schedule is what is kept; one per card, held behind an Arc or in a per-card table"
)]
pub enum CardMasterKey {
    Tdes(TdesKey, TdesCipher),
    Aes(AesKey),
}

impl CardMasterKey {
    /// A TDES ICC master key, its schedule prepared once.
    pub fn tdes(key: TdesKey) -> Self {
        let cipher = key.cipher();
        CardMasterKey::Tdes(key, cipher)
    }
}

impl fmt::Debug for CardMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CardMasterKey::Tdes(..) => "CardMasterKey::Tdes(..)",
            CardMasterKey::Aes(_) => "CardMasterKey::Aes(..)",
        })
    }
}

impl Cvn {
    /// The card's master key under this cryptogram version: EMV option A or B (by the PAN's
    /// length) from a TDES master key; an AES master key serves emv-csk only.
    pub fn card_master_key(self, imk: &SymmetricKey, pan: &PanDigits, psn: Psn) -> Result<CardMasterKey> {
        match imk {
            SymmetricKey::Tdes(imk) => {
                Ok(CardMasterKey::tdes(derive_icc_mk(imk, pan, psn, MasterKeyOption::for_pan(pan))))
            }
            SymmetricKey::Aes(imk) => {
                self.aes_allowed()?;
                Ok(CardMasterKey::Aes(derive_icc_mk_aes(imk, pan, psn)))
            }
        }
    }

    /// AES master keys are for emv-csk only.
    fn aes_allowed(self) -> Result<()> {
        if self != Cvn::EmvCsk {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "imk",
                format!("{self} is a TDES cryptogram version; AES master keys are for emv-csk only"),
            ));
        }
        Ok(())
    }

    fn keys(self, imk: &SymmetricKey, card: &CardInputs<'_>) -> Result<Keys> {
        self.keys_from(&self.card_master_key(imk, card.pan, card.psn)?, card)
    }

    /// The transaction's keys from the card's master key.
    fn keys_from(self, mk: &CardMasterKey, card: &CardInputs<'_>) -> Result<Keys> {
        match mk {
            CardMasterKey::Tdes(icc_mk, cipher) => self.card_keys(icc_mk, cipher, card),
            CardMasterKey::Aes(icc_mk) => {
                self.aes_allowed()?;
                Ok(Keys::Aes { session: common_session_key_aes(icc_mk, card.atc) })
            }
        }
    }

    /// The transaction keys from a TDES ICC master key (what the card holds).
    fn card_keys(self, icc_mk: &TdesKey, cipher: &TdesCipher, card: &CardInputs<'_>) -> Result<Keys> {
        let session = match self {
            Cvn::Visa10 => None,
            Cvn::Mc16 | Cvn::Mc17 => {
                let un = card.un.ok_or_else(|| {
                    Error::new(
                        ErrorKind::Input,
                        "un",
                        format!("{self} needs the unpredictable number (9F37)"),
                    )
                })?;
                Some(mastercard_session_key_with(cipher, card.atc, un))
            }
            _ => Some(common_session_key_with(cipher, card.atc)),
        };
        Ok(Keys::Tdes { icc_mk: icc_mk.clone(), session })
    }

    /// The cryptogram as the card computes it, from its ICC master key (TDES) — what card and
    /// phone simulators call; the issuer side derives the same key from the IMK.
    pub fn card_ac(self, icc_mk: &TdesKey, card: &CardInputs<'_>, data: &[u8]) -> Result<[u8; 8]> {
        self.card_ac_from(&CardMasterKey::tdes(icc_mk.clone()), card, data)
    }

    /// [`Cvn::card_ac`] from a master key kept prepared ([`CardMasterKey::tdes`]): a card, or a
    /// load generator making many cryptograms per card, prepares its key's schedule once.
    pub fn card_ac_from(self, mk: &CardMasterKey, card: &CardInputs<'_>, data: &[u8]) -> Result<[u8; 8]> {
        self.ac_with(&self.keys_from(mk, card)?, data)
    }

    /// The cryptogram from a session key the card was handed rather than derived (cloud-based
    /// payments: a limited-use key for one ATC). Only for the CVNs whose session key is the EMV
    /// common session key.
    pub fn session_ac(self, session: &TdesKey, data: &[u8]) -> Result<[u8; 8]> {
        self.check_common_session_key()?;
        retail_mac(session, data, self.padding())
    }

    /// The ARPC as a card holding only the session key expects it (see [`Cvn::session_ac`]).
    pub fn session_arpc(self, session: &TdesKey, arqc: &[u8], input: &ArpcInput) -> Result<Vec<u8>> {
        self.check_common_session_key()?;
        self.checked_arpc(arqc, input, || {
            Ok(Keys::Tdes { icc_mk: session.clone(), session: Some(session.clone()) })
        })
    }

    /// Whether the CVN's transaction key is the EMV common session key (so it can be handed to a
    /// device as a limited-use key).
    pub fn uses_common_session_key(self) -> bool {
        matches!(self, Cvn::Visa18 | Cvn::Visa22 | Cvn::Mc20 | Cvn::Mc21 | Cvn::EmvCsk)
    }

    fn check_common_session_key(self) -> Result<()> {
        if self.uses_common_session_key() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Unsupported,
                "cvn",
                format!("{self} does not use the EMV common session key; it cannot run on limited-use keys"),
            ))
        }
    }

    /// The ARPC as the card expects it, from its ICC master key (a card checking the issuer).
    pub fn card_arpc(
        self,
        icc_mk: &TdesKey,
        card: &CardInputs<'_>,
        arqc: &[u8],
        input: &ArpcInput,
    ) -> Result<Vec<u8>> {
        self.card_arpc_from(&CardMasterKey::tdes(icc_mk.clone()), card, arqc, input)
    }

    /// [`Cvn::card_arpc`] from a master key kept prepared ([`CardMasterKey::tdes`]).
    pub fn card_arpc_from(
        self,
        mk: &CardMasterKey,
        card: &CardInputs<'_>,
        arqc: &[u8],
        input: &ArpcInput,
    ) -> Result<Vec<u8>> {
        self.checked_arpc(arqc, input, || self.keys_from(mk, card))
    }

    /// The application cryptogram (ARQC, TC or AAC) over `data` — the transaction data already
    /// concatenated, without padding — from the issuer master key.
    pub fn generate_ac(self, imk: &SymmetricKey, card: &CardInputs<'_>, data: &[u8]) -> Result<[u8; 8]> {
        self.ac_with(&self.keys(imk, card)?, data)
    }

    /// Verifies the ARQC and makes the ARPC with one key derivation (what an issuer does).
    pub fn verify_ac_and_arpc(
        self,
        imk: &SymmetricKey,
        card: &CardInputs<'_>,
        data: &[u8],
        arqc: &[u8],
        input: &ArpcInput,
    ) -> Result<Vec<u8>> {
        self.check_arpc_input(input)?;
        self.verified(self.keys(imk, card)?, data, arqc)?.arpc(input)
    }

    /// Verifies the ARQC and keeps the keys that verified it, for the ARPC the issuer makes once
    /// it has decided (its response code goes into the ARPC): one key derivation per chip
    /// authorization, however long the decision between the two.
    pub fn verify_arqc_keeping_keys(
        self,
        imk: &SymmetricKey,
        card: &CardInputs<'_>,
        data: &[u8],
        arqc: &[u8],
    ) -> Result<VerifiedArqc> {
        self.verify_arqc_keeping_keys_from(&self.card_master_key(imk, card.pan, card.psn)?, card, data, arqc)
    }

    /// [`Cvn::verify_arqc_keeping_keys`] from the card's master key the issuer kept
    /// ([`Cvn::card_master_key`]): the same answer, without deriving it again.
    pub fn verify_arqc_keeping_keys_from(
        self,
        mk: &CardMasterKey,
        card: &CardInputs<'_>,
        data: &[u8],
        arqc: &[u8],
    ) -> Result<VerifiedArqc> {
        self.verified(self.keys_from(mk, card)?, data, arqc)
    }

    /// The ARQC checked under `keys`, kept with them (and, TDES, with the MAC schedules that
    /// computed it) for the ARPC.
    fn verified(self, keys: Keys, data: &[u8], arqc: &[u8]) -> Result<VerifiedArqc> {
        let (ac, ac_mac) = self.ac_and_mac(&keys, data)?;
        same_cryptogram(&ac, arqc)?;
        Ok(VerifiedArqc { cvn: self, keys, arqc: ac, ac_mac })
    }

    /// The TDES key an ARPC is made under: visa10 and mc16/17 answer under the ICC master key,
    /// the others under the session key.
    fn arpc_key<'k>(self, icc_mk: &'k TdesKey, session: Option<&'k TdesKey>) -> &'k TdesKey {
        match self {
            Cvn::Visa10 | Cvn::Mc16 | Cvn::Mc17 => icc_mk,
            _ => session.unwrap_or(icc_mk),
        }
    }

    fn ac_with(self, keys: &Keys, data: &[u8]) -> Result<[u8; 8]> {
        self.ac_and_mac(keys, data).map(|(ac, _)| ac)
    }

    /// The cryptogram under `keys`, with (TDES) the retail-MAC schedules that computed it.
    fn ac_and_mac(self, keys: &Keys, data: &[u8]) -> Result<([u8; 8], Option<RetailMacKey>)> {
        match keys {
            Keys::Tdes { icc_mk, session } => {
                let mac = RetailMacKey::new(ac_key(icc_mk, session))?;
                Ok((mac.mac(data, self.padding()), Some(mac)))
            }
            Keys::Aes { session } => {
                let mac = session.cmac(data);
                let mut ac = [0u8; 8];
                ac.copy_from_slice(&mac[..8]);
                Ok((ac, None))
            }
        }
    }

    /// Verifies a received cryptogram in constant time.
    pub fn verify_ac(
        self,
        imk: &SymmetricKey,
        card: &CardInputs<'_>,
        data: &[u8],
        received: &[u8],
    ) -> Result<()> {
        same_cryptogram(&self.generate_ac(imk, card, data)?, received)
    }

    /// The ARPC for `arqc`: 8 bytes (method 1) or 4 (method 2).
    pub fn generate_arpc(
        self,
        imk: &SymmetricKey,
        card: &CardInputs<'_>,
        arqc: &[u8],
        input: &ArpcInput,
    ) -> Result<Vec<u8>> {
        self.checked_arpc(arqc, input, || self.keys(imk, card))
    }

    /// The ARPC under the keys `keys` gives, once the ARQC's length and the ARPC input are
    /// checked (before any key is derived).
    fn checked_arpc(
        self,
        arqc: &[u8],
        input: &ArpcInput,
        keys: impl FnOnce() -> Result<Keys>,
    ) -> Result<Vec<u8>> {
        let arqc: [u8; 8] = super::fixed("arqc", arqc)?;
        self.check_arpc_input(input)?;
        self.arpc_with(&keys()?, &arqc, input, None)
    }

    fn check_arpc_input(self, input: &ArpcInput) -> Result<()> {
        match (self.arpc_method(), input) {
            (Some(1), ArpcInput::Csu { .. }) => {
                return Err(Error::new(
                    ErrorKind::Input,
                    "arpc",
                    format!("{self} answers with ARPC method 1 (an ARC)"),
                ));
            }
            (Some(2), ArpcInput::Arc(_)) => {
                return Err(Error::new(
                    ErrorKind::Input,
                    "arpc",
                    format!("{self} answers with ARPC method 2 (a CSU)"),
                ));
            }
            _ => {}
        }
        if let ArpcInput::Csu { proprietary, .. } = input
            && proprietary.len() > 8
        {
            return Err(Error::new(
                ErrorKind::Input,
                "proprietary authentication data",
                format!("0 to 8 bytes, found {}", proprietary.len()),
            ));
        }
        Ok(())
    }

    /// The ARPC under `keys`; `ac_mac`, the retail-MAC schedules the ARQC was computed with when
    /// they were kept, serve a method-2 ARPC made under the same key (Visa 18/22, emv-csk).
    fn arpc_with(
        self,
        keys: &Keys,
        arqc: &[u8; 8],
        input: &ArpcInput,
        ac_mac: Option<&RetailMacKey>,
    ) -> Result<Vec<u8>> {
        let arqc = *arqc;
        match keys {
            Keys::Tdes { icc_mk, session } => {
                let key = self.arpc_key(icc_mk, session.as_ref());
                match input {
                    ArpcInput::Arc(arc) => {
                        let mut y = arqc;
                        y[0] ^= arc[0];
                        y[1] ^= arc[1];
                        Ok(key.encrypt(y).to_vec())
                    }
                    ArpcInput::Csu { csu, proprietary } => {
                        match ac_mac.filter(|_| std::ptr::eq(key, ac_key(icc_mk, session))) {
                            Some(mac) => Ok(csu_arpc(mac, &arqc, csu, proprietary)),
                            None => Ok(csu_arpc(&RetailMacKey::new(key)?, &arqc, csu, proprietary)),
                        }
                    }
                }
            }
            Keys::Aes { session } => match input {
                ArpcInput::Arc(arc) => {
                    let mut y = [0u8; 16];
                    y[..8].copy_from_slice(&arqc);
                    y[0] ^= arc[0];
                    y[1] ^= arc[1];
                    Ok(session.encrypt(y)[..8].to_vec())
                }
                ArpcInput::Csu { csu, proprietary } => {
                    let mut data = Vec::with_capacity(20);
                    data.extend_from_slice(&arqc);
                    data.extend_from_slice(csu);
                    data.extend_from_slice(proprietary);
                    Ok(session.cmac(&data)[..4].to_vec())
                }
            },
        }
    }

    /// The ICC master key for the AC (what a card personalised by this issuer holds), TDES only.
    pub fn icc_master_key(self, imk: &TdesKey, pan: &PanDigits, psn: Psn) -> TdesKey {
        derive_icc_mk(imk, pan, psn, MasterKeyOption::for_pan(pan))
    }
}

/// The cryptogram data of EMV Book 2 §8.1.1 as the CVN's class in pyemv 1.5.0 defines it, from the
/// DE 55 tags: 9F02 9F03 9F1A 95 5F2A 9A 9C 9F37 82 9F36, then the CVN's part of 9F10 — Visa
/// CVN 10: the CVR (IAD bytes 4–7); Visa 18/22 and `emv-csk`: the whole IAD; Mastercard 16/20: the
/// CVR (IAD bytes 3–8); Mastercard 17/21: the CVR and the counters (IAD bytes 3–16). A missing
/// tag or a short IAD is an error naming it.
pub fn ac_data_from_tags<'a>(cvn: Cvn, tag: impl Fn(u32) -> Option<&'a [u8]>) -> Result<Vec<u8>> {
    let need = |t: u32, name: &'static str, len: usize| -> Result<&'a [u8]> {
        let v = tag(t).ok_or_else(|| Error::new(ErrorKind::Input, name, "missing from the chip data"))?;
        if v.len() != len {
            return Err(Error::new(
                ErrorKind::Input,
                name,
                format!("expected {len} bytes, found {}", v.len()),
            ));
        }
        Ok(v)
    };
    let mut data = Vec::with_capacity(64);
    for (t, name, len) in [
        (0x9F02, "tag 9F02", 6),
        (0x9F03, "tag 9F03", 6),
        (0x9F1A, "tag 9F1A", 2),
        (0x95, "tag 95", 5),
        (0x5F2A, "tag 5F2A", 2),
        (0x9A, "tag 9A", 3),
        (0x9C, "tag 9C", 1),
        (0x9F37, "tag 9F37", 4),
        (0x82, "tag 82", 2),
        (0x9F36, "tag 9F36", 2),
    ] {
        data.extend_from_slice(need(t, name, len)?);
    }
    let iad =
        tag(0x9F10).ok_or_else(|| Error::new(ErrorKind::Input, "tag 9F10", "missing from the chip data"))?;
    let part = |from: usize, to: usize| -> Result<&'a [u8]> {
        iad.get(from..to).ok_or_else(|| {
            Error::new(
                ErrorKind::Input,
                "tag 9F10",
                format!("{cvn} needs at least {to} bytes, found {}", iad.len()),
            )
        })
    };
    data.extend_from_slice(match cvn {
        Cvn::Visa10 => part(3, 7)?,
        Cvn::Visa18 | Cvn::Visa22 | Cvn::EmvCsk => iad,
        Cvn::Mc16 | Cvn::Mc20 => part(2, 8)?,
        Cvn::Mc17 | Cvn::Mc21 => part(2, 16)?,
    });
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::to_hex;

    #[test]
    fn a_limited_use_key_computes_what_the_master_key_does() {
        let imk = TdesKey::from_hex("imk", "0123456789ABCDEFFEDCBA9876543210").expect("key");
        let pan = PanDigits::new("4761739001010010").expect("pan");
        let psn = Psn::new(1).expect("psn");
        let data = [0x5Au8; 37];
        for cvn in Cvn::ALL {
            let icc = cvn.icc_master_key(&imk, &pan, psn);
            let card =
                CardInputs { pan: &pan, psn, atc: Atc(0x0042), un: Some(UnpredictableNumber([1, 2, 3, 4])) };
            let luk = super::super::common_session_key(&icc, Atc(0x0042));
            if cvn.uses_common_session_key() {
                let ac = cvn.card_ac(&icc, &card, &data).expect("ac");
                assert_eq!(cvn.session_ac(&luk, &data).expect("luk ac"), ac, "{cvn}");
                let input = match cvn.arpc_method() {
                    Some(2) => ArpcInput::Csu { csu: [0, 0, 0, 0], proprietary: vec![] },
                    _ => ArpcInput::Arc(*b"00"),
                };
                assert_eq!(
                    cvn.session_arpc(&luk, &ac, &input).expect("luk arpc"),
                    cvn.card_arpc(&icc, &card, &ac, &input).expect("arpc"),
                    "{cvn}"
                );
            } else {
                assert!(cvn.session_ac(&luk, &data).is_err(), "{cvn} cannot run on a session key");
            }
        }
    }

    /// A card key prepared once gives, transaction after transaction, the cryptogram the key
    /// gives unprepared and the one the issuer derives from its master key.
    #[test]
    fn a_prepared_card_key_computes_what_the_key_does() {
        let imk = TdesKey::from_hex("imk", "0123456789ABCDEFFEDCBA9876543210").expect("key");
        let issuer = SymmetricKey::Tdes(imk.clone());
        let pan = PanDigits::new("4761739001010010").expect("pan");
        let psn = Psn::new(1).expect("psn");
        for cvn in Cvn::ALL {
            let icc = cvn.icc_master_key(&imk, &pan, psn);
            let prepared = CardMasterKey::tdes(icc.clone());
            let mut seen = std::collections::HashSet::new();
            for atc in [0u16, 1, 0x0042, 0xFFFF] {
                let card =
                    CardInputs { pan: &pan, psn, atc: Atc(atc), un: Some(UnpredictableNumber([9, 8, 7, 6])) };
                let data = [atc as u8; 41];
                let ac = cvn.card_ac_from(&prepared, &card, &data).expect("prepared");
                assert_eq!(ac, cvn.card_ac(&icc, &card, &data).expect("unprepared"), "{cvn} {atc}");
                assert_eq!(ac, cvn.generate_ac(&issuer, &card, &data).expect("issuer"), "{cvn} {atc}");
                let input = match cvn.arpc_method() {
                    Some(2) => ArpcInput::Csu { csu: [0, 0, 0, 0x80], proprietary: vec![] },
                    _ => ArpcInput::Arc(*b"00"),
                };
                assert_eq!(
                    cvn.card_arpc_from(&prepared, &card, &ac, &input).expect("prepared arpc"),
                    cvn.card_arpc(&icc, &card, &ac, &input).expect("unprepared arpc"),
                    "{cvn} {atc}"
                );
                seen.insert(ac);
            }
            assert_eq!(seen.len(), 4, "{cvn}: each transaction its own cryptogram");
        }
        assert_eq!(format!("{:?}", CardMasterKey::tdes(imk)), "CardMasterKey::Tdes(..)");
    }

    #[test]
    fn visa18_pyemv_doc_example() {
        // pyemv 1.5.0 cvn module docstring (VisaCVN18).
        let imk =
            SymmetricKey::Tdes(TdesKey::from_hex("imk", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").expect("key"));
        let pan = PanDigits::new("1234567890123456").expect("pan");
        let card = CardInputs { pan: &pan, psn: Psn::new(0).expect("psn"), atc: Atc(0x0FFF), un: None };
        let data = hex::decode(concat!(
            "000000009999",
            "000000000000",
            "0840",
            "8000048000",
            "0840",
            "991231",
            "01",
            "52BF4585",
            "1800",
            "0FFF",
            "06011203A0B800"
        ))
        .expect("hex");
        let arqc = Cvn::Visa18.generate_ac(&imk, &card, &data).expect("ac");
        assert_eq!(to_hex(&arqc), "769577B5ABE9FE62");
        Cvn::Visa18.verify_ac(&imk, &card, &data, &arqc).expect("verifies");
        assert!(Cvn::Visa18.verify_ac(&imk, &card, &data[1..], &arqc).is_err());
        let arpc = Cvn::Visa18
            .generate_arpc(&imk, &card, &arqc, &ArpcInput::Csu { csu: [0; 4], proprietary: vec![] })
            .expect("arpc");
        assert_eq!(to_hex(&arpc), "76503F48");
        assert!(Cvn::Visa18.generate_arpc(&imk, &card, &arqc, &ArpcInput::Arc(*b"00")).is_err());
    }

    #[test]
    fn a_kept_verification_answers_the_arpc_the_master_key_does() {
        let imk =
            SymmetricKey::Tdes(TdesKey::from_hex("imk", "0123456789ABCDEFFEDCBA9876543210").expect("key"));
        let aes = SymmetricKey::Aes(crate::keys::AesKey::from_slice(&[0x3C; 16]).expect("aes"));
        let pan = PanDigits::new("4761739001010010").expect("pan");
        let card = CardInputs {
            pan: &pan,
            psn: Psn::new(1).expect("psn"),
            atc: Atc(0x0042),
            un: Some(UnpredictableNumber([1, 2, 3, 4])),
        };
        let data = [0x5Au8; 37];
        for cvn in Cvn::ALL {
            let imk = if cvn == Cvn::EmvCsk { &aes } else { &imk };
            let arqc = cvn.generate_ac(imk, &card, &data).expect("ac");
            let verified = cvn.verify_arqc_keeping_keys(imk, &card, &data, &arqc).expect("verifies");
            assert_eq!(verified.cvn(), cvn);
            for rc in [*b"00", *b"51"] {
                let input = match cvn.arpc_method() {
                    Some(2) => ArpcInput::Csu {
                        csu: [0, 0, 0, if rc == *b"00" { 0x80 } else { 0 }],
                        proprietary: vec![],
                    },
                    _ => ArpcInput::Arc(rc),
                };
                assert_eq!(
                    verified.arpc(&input).expect("kept"),
                    cvn.generate_arpc(imk, &card, &arqc, &input).expect("derived again"),
                    "{cvn}"
                );
            }
            // The wrong kind of ARPC input is refused as it is without the kept keys.
            let wrong = match cvn.arpc_method() {
                Some(2) => Some(ArpcInput::Arc(*b"00")),
                Some(_) => Some(ArpcInput::Csu { csu: [0; 4], proprietary: vec![] }),
                None => None,
            };
            if let Some(wrong) = wrong {
                assert!(verified.arpc(&wrong).is_err(), "{cvn}");
            }
            let mut bad = arqc;
            bad[7] ^= 1;
            assert_eq!(
                cvn.verify_arqc_keeping_keys(imk, &card, &data, &bad).expect_err("forged").kind,
                ErrorKind::Verification,
                "{cvn}"
            );
            assert!(!format!("{verified:?}").contains("icc_mk"), "no key in Debug");
        }
    }

    #[test]
    fn mastercard_skd_needs_un_and_aes_is_emv_csk_only() {
        let imk =
            SymmetricKey::Tdes(TdesKey::from_hex("imk", "0123456789ABCDEFFEDCBA9876543210").expect("key"));
        let pan = PanDigits::new("5413330089010608").expect("pan");
        let card = CardInputs { pan: &pan, psn: Psn::new(1).expect("psn"), atc: Atc(1), un: None };
        let e = Cvn::Mc16.generate_ac(&imk, &card, b"data").expect_err("no UN");
        assert_eq!(e.what, "un");
        let aes = SymmetricKey::Aes(AesKey::from_slice(&[7u8; 16]).expect("aes"));
        assert!(Cvn::Visa18.generate_ac(&aes, &card, b"data").is_err());
        let ac = Cvn::EmvCsk.generate_ac(&aes, &card, b"data").expect("aes ac");
        Cvn::EmvCsk.verify_ac(&aes, &card, b"data", &ac).expect("verifies");
        assert_eq!(
            Cvn::EmvCsk.generate_arpc(&aes, &card, &ac, &ArpcInput::Arc(*b"00")).expect("m1").len(),
            8
        );
        assert!("visa11".parse::<Cvn>().is_err());
        assert_eq!("emv-csk".parse::<Cvn>().expect("name"), Cvn::EmvCsk);
    }
}
