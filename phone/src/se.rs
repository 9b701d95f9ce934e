//! The secure element: security domains (the issuer security domain and supplementary domains
//! created for each TSM) and the card applets installed under them by scripts that arrive over the
//! air (or, for an issuer-owned SE, over the contact interface at the issuer's perso bureau).
//!
//! Keys stay inside: nothing here hands a domain's keys out; a script is accepted only when every
//! C-MAC verifies under the domain's session keys (see [`crate::ota`]), its sequence counter is
//! above the last one, and its key version is the domain's. A script is all or nothing: on any
//! failure the element is left as it was.

use serde::{Deserialize, Serialize};

use crate::ota::{KeySet, OtaReceipt, OtaScript, SessionKeys, sw};
use emv::Sw;
use emv::card::{CardKeys, CardProfile};

/// A security domain: its AID, keys, last script counter, and the domain it was created under.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecurityDomain {
    pub aid: String,
    keys: KeySet,
    counter: u64,
    pub parent: Option<String>,
}

/// The life cycle of a card applet instance (GP §5.3, simplified).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AppletState {
    /// Installed, waiting for its personalisation data.
    Installed,
    /// Personalised; waiting for the cardholder to enable it.
    Personalized,
    /// Enabled by the cardholder: it pays.
    Enabled,
}

/// A card applet instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Applet {
    pub instance_aid: String,
    pub sd_aid: String,
    pub state: AppletState,
    pub profile: Option<CardProfile>,
}

/// The personalisation data a STORE DATA sequence carries (JSON).
#[derive(Clone, Serialize, Deserialize)]
pub struct PersoData {
    pub pan: String,
    pub expiry: String,
    pub psn: String,
    pub cvn: String,
    pub aid: String,
    pub label: String,
    pub icc_mk: String,
}

impl Drop for PersoData {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.icc_mk.zeroize();
    }
}

impl PersoData {
    pub fn into_profile(self) -> CardProfile {
        CardProfile {
            pan: self.pan.clone(),
            expiry: self.expiry.clone(),
            psn: self.psn.clone(),
            cvn: self.cvn.clone(),
            aid: self.aid.clone(),
            label: self.label.clone(),
            keys: CardKeys::Master { icc_mk: self.icc_mk.clone() },
            atc: 0,
        }
    }
}

/// The context label ISD keys travel under, sealed for the secure element's own P-256 key
/// (`crypto::device`): whoever issues an SE never sends its keys in clear.
pub const ISD_KEYS_INFO: &[u8] = b"paynet isd keys v1";

/// One secure element.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecureElement {
    pub se_id: String,
    /// Who owns it: "se-operator" (embedded SE, OTA) or "issuer" (issuer-owned SE).
    pub owner: String,
    pub domains: Vec<SecurityDomain>,
    pub applets: Vec<Applet>,
}

impl SecureElement {
    /// An element as it leaves the factory: its issuer security domain with the owner's keys.
    pub fn manufactured(se_id: &str, owner: &str, isd_aid: &str, isd_keys: KeySet) -> Self {
        SecureElement {
            se_id: se_id.to_string(),
            owner: owner.to_string(),
            domains: vec![SecurityDomain {
                aid: isd_aid.to_uppercase(),
                keys: isd_keys,
                counter: 0,
                parent: None,
            }],
            applets: Vec::new(),
        }
    }

    /// Runs a script; the element changes only if every command succeeds.
    pub fn run_script(&mut self, script: &OtaScript) -> OtaReceipt {
        let mut work = self.clone();
        let (sw, executed) = match work.apply(script) {
            Ok(n) => {
                *self = work;
                (Sw::OK, n)
            }
            Err((sw, n)) => (sw, n),
        };
        OtaReceipt { sd_aid: script.sd_aid.clone(), counter: script.counter, sw: sw.to_string(), executed }
    }

    fn apply(&mut self, script: &OtaScript) -> Result<usize, (Sw, usize)> {
        if script.se_id != self.se_id {
            return Err((sw::NO_DOMAIN, 0));
        }
        let sd_aid = script.sd_aid.to_uppercase();
        let aid_bytes = hex::decode(&sd_aid).map_err(|_| (Sw::WRONG_DATA, 0))?;
        let sd = self.domains.iter_mut().find(|d| d.aid == sd_aid).ok_or((sw::NO_DOMAIN, 0))?;
        if sd.keys.kvn != script.kvn {
            return Err((sw::KEY_VERSION, 0));
        }
        if script.counter <= sd.counter {
            return Err((sw::COUNTER_LOW, 0));
        }
        let mut session = SessionKeys::derive(&sd.keys, &aid_bytes, script.counter).map_err(|e| (e, 0))?;
        let parent_keys = sd.keys.clone();
        sd.counter = script.counter;
        let mut store: Vec<u8> = Vec::new();
        let mut last_domain: Option<String> = None;
        for (i, c) in script.commands.iter().enumerate() {
            let apdu = hex::decode(c).map_err(|_| (Sw::WRONG_DATA, i))?;
            let (_cla, ins, p1, p2, data) = session.unwrap(&apdu).map_err(|e| (e, i))?;
            let r = match (ins, p2) {
                (0xE6, 0x01) => {
                    let aid = hex::encode_upper(&data);
                    if self.domains.iter().any(|d| d.aid == aid) {
                        Err(Sw::CONDITIONS_NOT_SATISFIED)
                    } else {
                        last_domain = Some(aid);
                        Ok(())
                    }
                }
                (0xE6, _) if p1 == 0x0C => {
                    let aid = hex::encode_upper(&data);
                    if self.applets.iter().any(|a| a.instance_aid == aid) {
                        Err(Sw::CONDITIONS_NOT_SATISFIED)
                    } else {
                        self.applets.push(Applet {
                            instance_aid: aid,
                            sd_aid: sd_aid.clone(),
                            state: AppletState::Installed,
                            profile: None,
                        });
                        Ok(())
                    }
                }
                (0xD8, _) => self.put_key(&data, &parent_keys, last_domain.as_deref(), &sd_aid),
                (0xE2, _) => {
                    if usize::from(p2) == 0 {
                        store.clear();
                    }
                    store.extend_from_slice(&data);
                    if p1 & 0x80 != 0 {
                        self.personalize(&std::mem::take(&mut store), &sd_aid)
                    } else {
                        Ok(())
                    }
                }
                _ => Err(Sw::INS_NOT_SUPPORTED),
            };
            r.map_err(|e| (e, i))?;
        }
        Ok(script.commands.len())
    }

    fn put_key(
        &mut self,
        data: &[u8],
        parent: &KeySet,
        created: Option<&str>,
        parent_aid: &str,
    ) -> Result<(), Sw> {
        let (&n, rest) = data.split_first().ok_or(Sw::WRONG_DATA)?;
        let aid = rest.get(..usize::from(n)).ok_or(Sw::WRONG_DATA)?;
        let rest = &rest[usize::from(n)..];
        let (&kvn, wrapped) = rest.split_first().ok_or(Sw::WRONG_DATA)?;
        if wrapped.len() != 48 {
            return Err(Sw::WRONG_LENGTH);
        }
        let clear = zeroize::Zeroizing::new(parent.unwrap_under_dek(wrapped)?);
        let mut r = [0u8; 48];
        r.copy_from_slice(&clear);
        let keys = KeySet::from_random(kvn, &r);
        zeroize::Zeroize::zeroize(&mut r);
        let aid = hex::encode_upper(aid);
        if created != Some(aid.as_str()) {
            return Err(Sw::CONDITIONS_NOT_SATISFIED);
        }
        self.domains.push(SecurityDomain { aid, keys, counter: 0, parent: Some(parent_aid.to_string()) });
        Ok(())
    }

    fn personalize(&mut self, payload: &[u8], sd_aid: &str) -> Result<(), Sw> {
        let (&n, rest) = payload.split_first().ok_or(Sw::WRONG_DATA)?;
        let aid = hex::encode_upper(rest.get(..usize::from(n)).ok_or(Sw::WRONG_DATA)?);
        let perso: PersoData = serde_json::from_slice(&rest[usize::from(n)..]).map_err(|_| Sw::WRONG_DATA)?;
        let applet = self
            .applets
            .iter_mut()
            .find(|a| a.instance_aid == aid && a.sd_aid == sd_aid)
            .ok_or(Sw::FILE_NOT_FOUND)?;
        applet.profile = Some(perso.into_profile());
        applet.state = AppletState::Personalized;
        Ok(())
    }

    /// The domain's last accepted counter (status display).
    pub fn counter(&self, sd_aid: &str) -> Option<u64> {
        self.domains.iter().find(|d| d.aid == sd_aid).map(|d| d.counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ota::{commands, seal_script};

    const ISD: &str = "A000000151000000";

    fn isd_keys() -> KeySet {
        KeySet::from_random(0x30, &[9u8; 48])
    }

    fn perso() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"pan": "4761730000000011", "expiry": "2912", "psn": "00",
            "cvn": "visa18", "aid": "A0000000031010", "label": "PAYNET CREDIT CARD WITH A LONG LABEL THAT PUSHES THE DATA OVER ONE BLOCK", "icc_mk": "00112233445566778899AABBCCDDEEFF"}))
        .expect("json")
    }

    #[test]
    fn a_domain_is_created_then_an_applet_installed_and_personalised() {
        let mut se = SecureElement::manufactured("SE1", "se-operator", ISD, isd_keys());
        let ssd = hex::decode("A0000001515350").expect("aid");
        let new_keys = KeySet::from_random(0x01, &[3u8; 48]);
        let raw = [hex::decode(&new_keys.enc), hex::decode(&new_keys.mac), hex::decode(&new_keys.dek)]
            .into_iter()
            .flat_map(|k| k.expect("hex"))
            .collect::<Vec<u8>>();
        let wrapped = isd_keys().wrap_under_dek(&raw).expect("wrap");
        let s1 = seal_script(
            "SE1",
            &hex::decode(ISD).expect("aid"),
            &isd_keys(),
            1,
            &[commands::install_domain(&ssd), commands::put_key(&ssd, 0x01, &wrapped)],
        )
        .expect("script");
        assert_eq!(se.run_script(&s1).sw, "9000");
        let inst = hex::decode("A000000003101001").expect("aid");
        let mut cmds = vec![commands::install_applet(&inst)];
        cmds.extend(commands::store_data(&inst, &perso()));
        assert!(cmds.len() > 2, "perso data spans blocks");
        let s2 = seal_script("SE1", &ssd, &new_keys, 1, &cmds).expect("script");
        assert_eq!(se.run_script(&s2).sw, "9000");
        assert_eq!(se.applets[0].state, AppletState::Personalized);
        // Replayed: refused, nothing changes.
        let before = se.clone();
        assert_eq!(se.run_script(&s2).sw, "6985");
        assert_eq!(se, before);
        // Wrong key version.
        let mut s3 = seal_script("SE1", &ssd, &new_keys, 2, &cmds).expect("script");
        s3.kvn = 0x02;
        assert_eq!(se.run_script(&s3).sw, "6A88");
        // A bad MAC in the last command: nothing of the script stays.
        let mut s4 =
            seal_script("SE1", &ssd, &new_keys, 3, &[commands::install_applet(b"\xA0\x01")]).expect("s");
        let last = s4.commands.len() - 1;
        let mut b = hex::decode(&s4.commands[last]).expect("hex");
        let n = b.len() - 1;
        b[n] ^= 0x01;
        s4.commands[last] = hex::encode_upper(b);
        assert_eq!(se.run_script(&s4).sw, "6982");
        assert_eq!(se, before);
    }
}
