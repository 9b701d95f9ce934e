//! The operating system's secure area for host card emulation: the device's P-256 key pair and the
//! token profiles that cloud platforms and wallets deliver sealed for it (ECIES, see
//! `crypto::device`) — or, on the real PAN, the issuer's perso data with limited-use keys that the
//! cloud platform relays. Only this area opens them; it never holds a card's master key from an
//! issuer (a real-PAN package carrying one is refused).

use serde::{Deserialize, Serialize};

use crate::PhoneError;
use emv::card::{CardKeys, CardProfile, Luk};

/// The context label the token service seals token data under. Copied from the token service
/// (`tsp::service::PROFILE_INFO`): simulators speak the wire, never link the token service;
/// docs/token-service.md names it.
pub const PROFILE_INFO: &[u8] = b"paynet token profile v1";

/// The context label the issuer seals a device's real-PAN perso data under (limited-use keys;
/// operating model 3 on the real PAN).
pub const HCE_PERSO_INFO: &[u8] = b"paynet hce perso data v1";

/// What an HCE card carries: a token, or the card's real PAN (issuer perso data).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HceKind {
    #[default]
    Token,
    /// The real PAN, on limited-use keys the issuer's HSM derived (no token, no master key).
    RealPan,
}

/// A card held in the secure area.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HceCard {
    /// The token reference, or for a real-PAN card the cloud platform's card reference.
    pub token_ref: String,
    /// Who delivered it: "cloud" (HCE platform) or "wallet" (DPSP).
    pub provider: String,
    #[serde(default)]
    pub kind: HceKind,
    pub profile: CardProfile,
    pub enabled: bool,
}

/// The secure area.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HceArea {
    /// The device's P-256 secret scalar, hex.
    device_secret: String,
    pub cards: Vec<HceCard>,
}

impl std::fmt::Debug for HceArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HceArea").field("cards", &self.cards).finish()
    }
}

impl Drop for HceArea {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.device_secret);
    }
}

/// A fresh device secret (a valid P-256 scalar), hex.
pub fn new_device_secret() -> Result<String, PhoneError> {
    for _ in 0..8 {
        let mut b = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(b.as_mut()).map_err(|e| PhoneError::Refused(format!("random source: {e}")))?;
        if crypto::device::public_key(b.as_ref()).is_ok() {
            return Ok(hex::encode_upper(b.as_ref()));
        }
    }
    Err(PhoneError::Refused("no valid P-256 scalar drawn".into()))
}

/// The token profile as the token service seals it.
#[derive(Deserialize)]
struct TokenProfile {
    token: String,
    expiry: String,
    psn: String,
    cvn: String,
    #[serde(default)]
    icc_mk: Option<String>,
    #[serde(default)]
    luks: Option<Vec<Luk>>,
}

impl Drop for TokenProfile {
    fn drop(&mut self) {
        if let Some(k) = self.icc_mk.as_mut() {
            zeroize::Zeroize::zeroize(k);
        }
    }
}

/// The issuer's perso data for a device, as its HSM seals it (`Hsm::seal_luk_profile`).
#[derive(Deserialize)]
struct PanPerso {
    pan: String,
    expiry: String,
    psn: String,
    cvn: String,
    aid: String,
    label: String,
    #[serde(default)]
    icc_mk: Option<String>,
    #[serde(default)]
    luks: Option<Vec<Luk>>,
}

impl Drop for PanPerso {
    fn drop(&mut self) {
        if let Some(k) = self.icc_mk.as_mut() {
            zeroize::Zeroize::zeroize(k);
        }
    }
}

impl HceArea {
    pub fn new(device_secret: String) -> Self {
        HceArea { device_secret, cards: Vec::new() }
    }

    fn secret(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, PhoneError> {
        hex::decode(&self.device_secret)
            .map(zeroize::Zeroizing::new)
            .map_err(|_| PhoneError::Refused("device key unreadable".into()))
    }

    pub fn public_key_hex(&self) -> Result<String, PhoneError> {
        let pk =
            crypto::device::public_key(&self.secret()?).map_err(|e| PhoneError::Refused(e.to_string()))?;
        Ok(hex::encode_upper(pk))
    }

    fn open(&self, sealed_hex: &str) -> Result<TokenProfile, PhoneError> {
        let plain = self.open_raw(sealed_hex, PROFILE_INFO, "token data")?;
        serde_json::from_slice(&plain).map_err(|e| PhoneError::Refused(format!("token data: {e}")))
    }

    fn open_raw(
        &self,
        sealed_hex: &str,
        info: &[u8],
        what: &str,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, PhoneError> {
        let sealed =
            hex::decode(sealed_hex).map_err(|_| PhoneError::Refused(format!("{what} is not hex")))?;
        crypto::device::open(&self.secret()?, info, &sealed)
            .map_err(|e| PhoneError::Refused(format!("{what} does not open for this device: {e}")))
    }

    /// Opens the issuer's perso data: limited-use keys only.
    fn open_pan(&self, sealed_hex: &str) -> Result<(PanPerso, Vec<Luk>), PhoneError> {
        let plain = self.open_raw(sealed_hex, HCE_PERSO_INFO, "perso data")?;
        let p: PanPerso =
            serde_json::from_slice(&plain).map_err(|e| PhoneError::Refused(format!("perso data: {e}")))?;
        if p.icc_mk.is_some() {
            return Err(PhoneError::Refused(
                "perso data with a card master key: the OS secure area takes limited-use keys only".into(),
            ));
        }
        let luks = match &p.luks {
            Some(l) if !l.is_empty() => l.clone(),
            _ => return Err(PhoneError::Refused("perso data without limited-use keys".into())),
        };
        Ok((p, luks))
    }

    /// Opens the issuer's perso data for a real-PAN card (sealed for this device, relayed by the
    /// cloud platform) and stores the card (not yet enabled) on its limited-use keys; its card id.
    pub fn install_pan(
        &mut self,
        card_ref: &str,
        provider: &str,
        sealed_hex: &str,
    ) -> Result<String, PhoneError> {
        let (p, luks) = self.open_pan(sealed_hex)?;
        let profile = CardProfile {
            pan: p.pan.clone(),
            expiry: p.expiry.clone(),
            psn: p.psn.clone(),
            cvn: p.cvn.clone(),
            aid: p.aid.clone(),
            label: p.label.clone(),
            keys: CardKeys::Limited { luks },
            atc: 0,
        };
        self.cards.retain(|c| c.token_ref != card_ref);
        self.cards.push(HceCard {
            token_ref: card_ref.into(),
            provider: provider.into(),
            kind: HceKind::RealPan,
            profile,
            enabled: false,
        });
        Ok(format!("hce:{card_ref}"))
    }

    /// Opens token data and stores the card (not yet enabled); its card id.
    pub fn install(
        &mut self,
        token_ref: &str,
        provider: &str,
        sealed_hex: &str,
    ) -> Result<String, PhoneError> {
        let t = self.open(sealed_hex)?;
        let keys = match (&t.icc_mk, &t.luks) {
            (Some(k), _) => CardKeys::Master { icc_mk: k.clone() },
            (None, Some(l)) => CardKeys::Limited { luks: l.clone() },
            (None, None) => return Err(PhoneError::Refused("token data holds no keys".into())),
        };
        let aid = if t.cvn.starts_with("mc") { "A0000000041010" } else { "A0000000031010" };
        let profile = CardProfile {
            pan: t.token.clone(),
            expiry: t.expiry.clone(),
            psn: t.psn.clone(),
            cvn: t.cvn.clone(),
            aid: aid.into(),
            label: "PAYNET TOKEN".into(),
            keys,
            atc: 0,
        };
        self.cards.retain(|c| c.token_ref != token_ref);
        self.cards.push(HceCard {
            token_ref: token_ref.into(),
            provider: provider.into(),
            kind: HceKind::Token,
            profile,
            enabled: false,
        });
        Ok(format!("hce:{token_ref}"))
    }

    /// Takes a new batch of limited-use keys in place of the old; how many the card holds now.
    pub fn replenish(&mut self, token_ref: &str, sealed_hex: &str) -> Result<usize, PhoneError> {
        let kind = self.card(token_ref).ok_or_else(|| PhoneError::NoCard(format!("hce:{token_ref}")))?.kind;
        let new = match kind {
            HceKind::Token => self
                .open(sealed_hex)?
                .luks
                .clone()
                .ok_or_else(|| PhoneError::Refused("no limited-use keys in the batch".into()))?,
            HceKind::RealPan => {
                let (p, luks) = self.open_pan(sealed_hex)?;
                if self.card(token_ref).is_none_or(|c| c.profile.pan != p.pan) {
                    return Err(PhoneError::Refused("limited-use keys for another card".into()));
                }
                luks
            }
        };
        let card = self.card_mut(token_ref).ok_or_else(|| PhoneError::NoCard(format!("hce:{token_ref}")))?;
        match &mut card.profile.keys {
            // The token service (the issuer, on the real PAN) retires the previous batch when it
            // issues the next one.
            CardKeys::Limited { luks } => {
                *luks = new;
                Ok(luks.len())
            }
            CardKeys::Master { .. } => Err(PhoneError::Refused("this card holds its own key".into())),
        }
    }

    pub fn card(&self, token_ref: &str) -> Option<&HceCard> {
        self.cards.iter().find(|c| c.token_ref == token_ref)
    }

    pub fn card_mut(&mut self, token_ref: &str) -> Option<&mut HceCard> {
        self.cards.iter_mut().find(|c| c.token_ref == token_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area() -> HceArea {
        HceArea::new(new_device_secret().expect("device secret"))
    }

    fn seal_for(a: &HceArea, info: &[u8], plain: &str) -> String {
        let pk = hex::decode(a.public_key_hex().expect("pk")).expect("hex");
        let sealed =
            crypto::device::seal(&pk, &[0x11; 32], [0x22; 12], info, plain.as_bytes()).expect("seal");
        hex::encode_upper(sealed)
    }

    const PERSO: &str = r#"{"pan":"4761739001010010","expiry":"2912","psn":"00","cvn":"visa18",
        "aid":"A0000000031010","label":"PAYNET CREDIT","atc":0"#;

    #[test]
    fn real_pan_perso_installs_on_limited_use_keys_only() {
        let mut a = area();
        let luks = r#","luks":[{"atc":"0001","key":"00112233445566778899AABBCCDDEEFF"}]}"#;
        let with_mk = format!(r#"{PERSO},"icc_mk":"00112233445566778899AABBCCDDEEFF"{luks}"#);
        let e = a.install_pan("PAN1", "cloud", &seal_for(&a, HCE_PERSO_INFO, &with_mk));
        assert!(e.is_err_and(|e| e.to_string().contains("limited-use keys only")));
        let none = format!("{PERSO}}}");
        assert!(a.install_pan("PAN1", "cloud", &seal_for(&a, HCE_PERSO_INFO, &none)).is_err());
        let good = format!("{PERSO}{luks}");
        // Sealed under the token label, the same bytes are not perso data.
        assert!(a.install_pan("PAN1", "cloud", &seal_for(&a, PROFILE_INFO, &good)).is_err());
        assert!(a.cards.is_empty());
        let id = a.install_pan("PAN1", "cloud", &seal_for(&a, HCE_PERSO_INFO, &good)).expect("install");
        assert_eq!(id, "hce:PAN1");
        let c = a.card("PAN1").expect("card");
        assert_eq!(
            (c.kind, c.profile.pan.as_str(), c.profile.luks_left()),
            (HceKind::RealPan, "4761739001010010", Some(1))
        );
        // A batch for another card does not replace this card's keys.
        let other = good.replace("4761739001010010", "4761739001010028");
        assert!(a.replenish("PAN1", &seal_for(&a, HCE_PERSO_INFO, &other)).is_err());
        let two = format!(
            r#"{PERSO},"luks":[{{"atc":"0002","key":"00112233445566778899AABBCCDDEEFF"}},{{"atc":"0003","key":"00112233445566778899AABBCCDDEEFF"}}]}}"#
        );
        assert_eq!(a.replenish("PAN1", &seal_for(&a, HCE_PERSO_INFO, &two)).expect("replenish"), 2);
    }
}
