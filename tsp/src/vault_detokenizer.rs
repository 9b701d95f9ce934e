//! The detokenize stage over the token vault (ARCHITECTURE.md, the hot path): a PAN in one of the
//! network's token BIN ranges is a token — looked up in the vault's cache (no query once it is
//! cached; over a shared store a token not yet cached is read from it), checked
//! (status, expiry, domain restriction controls), its cryptogram verified with the token keys
//! (ICC keys derived by option A over the token PAN from the range's token IMK) inside an ATC
//! replay window, then replaced towards the issuer by the card's PAN and expiry (DE 2, 14, 35)
//! with the token data in DE 123 (docs/network-spec.md §5). The answer to the acquirer gets the
//! token back. A token used outside its domain is declined here and the issuer never sees it.

use std::sync::Arc;

use codecs::iso8583::Message;
use codecs::tlv::{Tag, TlvBuilder};
use crypto::emv::{Atc, CardInputs, PanDigits, UnpredictableNumber, ac_data_from_tags};
use crypto::hsm::Hsm;

use crate::detokenize::{Detokenizer, Refusal, TokenContext};
use crate::luk::LukRegistry;
use crate::number::TokenRange;
use crate::vault::{TokenStatus, TokenVault};

/// A token BIN range and the keystore name of its token IMK-AC.
#[derive(Debug, Clone)]
pub struct TokenKeys {
    pub range: TokenRange,
    pub imk_ac: String,
}

pub struct VaultDetokenizer {
    vault: Arc<TokenVault>,
    hsm: Arc<dyn Hsm>,
    ranges: Vec<TokenKeys>,
    /// Limited-use keys of cloud (HCE) tokens.
    luks: Option<Arc<LukRegistry>>,
}

fn refuse(rc: &'static str) -> Refusal {
    Refusal(rc)
}

/// Today's YYMM from milliseconds since the epoch (UTC civil calendar).
fn yymm(now_ms: u64) -> String {
    codecs::iso8583::datetime::Utc::from_ms(now_ms).yymm()
}

impl VaultDetokenizer {
    pub fn new(vault: Arc<TokenVault>, hsm: Arc<dyn Hsm>, ranges: Vec<TokenKeys>) -> Self {
        VaultDetokenizer { vault, hsm, ranges, luks: None }
    }

    /// Enforces limited-use keys for cloud tokens.
    pub fn with_luks(mut self, luks: Arc<LukRegistry>) -> Self {
        self.luks = Some(luks);
        self
    }

    /// The token's vault record: unknown is 14, a store that cannot answer 96.
    fn record(&self, token: &str) -> Result<Arc<crate::vault::TokenRecord>, Refusal> {
        self.vault
            .lookup(token)
            .map_err(|e| {
                tracing::error!(error = %e, "vault could not be read");
                refuse("96")
            })?
            .ok_or(refuse("14"))
    }

    /// Verifies the token cryptogram; returns its ATC, which the pipeline accepts once in the
    /// token's durable window (replay protection lives there, shared by every path).
    fn verify_cryptogram(
        &self,
        keys: &TokenKeys,
        token: &str,
        req: &Message,
        now_ms: u64,
    ) -> Result<u16, Refusal> {
        let Ok(Some(icc)) = req.icc_data() else {
            // Tokens are chip or in-app credentials: a cryptogram is always required.
            return Err(refuse("82"));
        };
        let nodes = codecs::tlv::decode_lenient(&icc).map_err(|_| refuse("30"))?;
        let tag = |t: u32| nodes.iter().find(|n| n.tag().value() == t).map(|n| n.value());
        let cvn = tag(0x9F10).and_then(|iad| crypto::emv::Cvn::from_iad(token, iad)).ok_or(refuse("82"))?;
        let data = ac_data_from_tags(cvn, tag).map_err(|_| refuse("30"))?;
        let (Some(arqc), Some(atc)) = (tag(0x9F26), tag(0x9F36)) else { return Err(refuse("30")) };
        let atc = Atc::from_slice(atc).map_err(|_| refuse("30"))?;
        // A cloud token's cryptogram must come from a live limited-use key.
        if let Some(luks) = &self.luks {
            let permitted = luks.permits(token, atc.0, now_ms).map_err(|e| {
                tracing::error!(error = %e, "limited-use keys could not be read");
                refuse("96")
            })?;
            if !permitted {
                return Err(refuse("82"));
            }
        }
        let pan = PanDigits::new(token).map_err(|_| refuse("14"))?;
        let psn = req.text(23).and_then(|p| p.get(1..).and_then(|x| x.parse().ok())).unwrap_or_default();
        let inputs = CardInputs {
            pan: &pan,
            psn,
            atc,
            un: tag(0x9F37).and_then(|u| UnpredictableNumber::from_slice(u).ok()),
        };
        self.hsm.verify_arqc(&keys.imk_ac, cvn, &inputs, &data, arqc, None).map_err(|_| refuse("82"))?;
        Ok(atc.0)
    }
}

impl Detokenizer for VaultDetokenizer {
    fn detokenize(&self, req: &mut Message, now_ms: u64) -> Result<Option<TokenContext>, Refusal> {
        let Some(token) = req.card_number() else { return Ok(None) };
        let Some(keys) = self.ranges.iter().find(|k| k.range.contains(&token)) else { return Ok(None) };
        let rec = self.record(&token)?;
        match rec.status {
            TokenStatus::Active => {}
            TokenStatus::Suspended => return Err(refuse("57")),
            TokenStatus::Inactive | TokenStatus::Deleted => return Err(refuse("62")),
        }
        let presented_expiry = req.text(14).map(|c| c.into_owned()).or_else(|| {
            let t2 = req.text(35)?;
            let sep = t2.find(['=', 'D'])?;
            t2.get(sep + 1..sep + 5).map(str::to_string)
        });
        if rec.expiry.as_str() < yymm(now_ms).as_str()
            || presented_expiry.as_deref().is_some_and(|e| e != rec.expiry)
        {
            return Err(refuse("54"));
        }
        let entry = req.text(22).map(|c| c.into_owned()).unwrap_or_default();
        let pc = req.text(3).map(|c| c.into_owned()).unwrap_or_default();
        if !rec.domain.allows(&entry, &pc) {
            return Err(refuse("12"));
        }
        let atc = self.verify_cryptogram(keys, &token, req, now_ms)?;
        let original = Box::new(req.clone());
        let (pan, card_expiry) = self.vault.card(&rec).map_err(|e| {
            tracing::error!(error = %e, "vault row does not open");
            refuse("96")
        })?;
        let restore = card_elements(req, &token, pan.as_str(), &card_expiry)?;
        // Token data towards the issuer (docs/network-spec.md §5).
        let mut t = TlvBuilder::new();
        let push = |t: &mut TlvBuilder, tag: u32, v: &[u8]| {
            t.primitive(Tag::new(tag), v).map(|_| ()).map_err(|_| refuse("96"))
        };
        push(&mut t, 0xDF8101, token.as_bytes())?;
        push(&mut t, 0xDF8102, rec.expiry.as_bytes())?;
        push(&mut t, 0x9F19, rec.domain.requestor_id.as_bytes())?;
        push(&mut t, 0x9F24, rec.par.as_bytes())?;
        push(&mut t, 0xDF8104, rec.status.as_str().as_bytes())?;
        // The token cryptogram was verified here, with the token keys (the issuer cannot).
        push(&mut t, 0xDF8106, b"1")?;
        if req.spec().field(123).is_some() {
            let data = t.finish();
            let ok = match req.spec().field(123).map(|f| f.content) {
                Some(codecs::iso8583::ContentType::B) => req.set_bytes(123, data.to_vec()),
                _ => req.set_text(123, &hex::encode_upper(&data)),
            };
            ok.map_err(|_| refuse("96"))?;
        }
        Ok(Some(TokenContext {
            restore,
            arpc_imk: Some(keys.imk_ac.clone()),
            original: Some(original),
            atc: Some(atc),
        }))
    }

    /// A reversal or advice about a token's transaction: the money has moved (or must be given
    /// back) whatever the token's status is now, so only the vault look-up applies.
    fn detokenize_reference(&self, req: &mut Message) -> Result<Option<TokenContext>, Refusal> {
        let Some(token) = req.card_number() else { return Ok(None) };
        if !self.ranges.iter().any(|k| k.range.contains(&token)) {
            return Ok(None);
        }
        let rec = self.record(&token)?;
        let (pan, card_expiry) = self.vault.card(&rec).map_err(|e| {
            tracing::error!(error = %e, "vault row does not open");
            refuse("96")
        })?;
        let restore = card_elements(req, &token, pan.as_str(), &card_expiry)?;
        Ok(Some(TokenContext { restore, arpc_imk: None, original: None, atc: None }))
    }
}

/// Replaces the token by the card's PAN and expiry in DE 2, 14 and 35 (those present; DE 2
/// always); returns the elements replaced, to put back on the answer.
fn card_elements(
    req: &mut Message,
    token: &str,
    pan: &str,
    card_expiry: &str,
) -> Result<Vec<(u16, String)>, Refusal> {
    let mut restore = vec![(2u16, token.to_string())];
    if let Some(e) = req.text(14).map(|c| c.into_owned()) {
        restore.push((14, e));
        req.set_text(14, card_expiry).map_err(|_| refuse("96"))?;
    }
    if let Some(t2) = req.text(35).map(|c| c.into_owned()) {
        restore.push((35, t2.clone()));
        let rest = t2.find(['=', 'D']).map(|i| &t2[i + 5.min(t2.len() - i)..]).unwrap_or("");
        let sep = if t2.contains('D') { 'D' } else { '=' };
        req.set_text(35, &format!("{pan}{sep}{card_expiry}{rest}")).map_err(|_| refuse("96"))?;
    }
    req.set_text(2, pan).map_err(|_| refuse("96"))?;
    Ok(restore)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yymm_matches_the_calendar() {
        assert_eq!(yymm(1_764_028_800_000), "2511");
        assert_eq!(yymm(0), "7001");
    }
}
