//! The mixed traffic of a load run: contactless POS purchases and balance inquiries from the
//! ports file's test cards, ATM-shaped 0200s (balance inquiry, cash advance) with the PIN under
//! the ATM's DUKPT key, and requests the issuer must decline — over the open-to-buy (51) and a
//! wrong expiry date (54) — in a configurable proportion (`purchase=60,balance=10,...`).
//!
//! Every request is built before the run (the cards' cryptograms and the DUKPT PIN blocks are the
//! expensive part), so that during the run the generator spends its CPU sending. Each card
//! computes with a fresh ATC for every request — the issuer's replay check accepts an ATC once
//! per card (INTERFACES.md §5) — continuing from where the previous run left off (the CLI keeps
//! each card's next ATC in a state file, keyed by the masked PAN), or from a random point.
//! A card has 65,536 ATCs: a network that lives longer than that many requests per card will
//! see replays (82).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use codecs::iso8583::{Message, Mti, Spec};
use crypto::dukpt::tdes::TdesDukptDevice;
use crypto::dukpt::{KeyUsage, TdesKsn};
use crypto::emv::CardMasterKey;
use crypto::keys::{SymmetricKey, TdesKey};
use crypto::pin::{Pin, PinBlockFormat};

use crate::load::{self, Prepared, RequestSource};
use crate::{Error, Result};
use terminal_kit::ports::AtmTerminal;

/// DE 42 of the test network's ATMs (atm-sim's acceptor ID), as they are registered.
pub const ATM_ACCEPTOR_ID: &str = "PAYNETATM000001";
use terminal_kit::pos::{CardKey, TestCard, Tx, chip_request_with};

/// What a request of the mix is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// POS contactless purchase, small amount: approved.
    Purchase,
    /// POS contactless balance inquiry (0100, DE 3 = 313000): approved with DE 54.
    Balance,
    /// ATM balance inquiry (0200, DE 3 = 313000) with the PIN: approved.
    AtmBalance,
    /// ATM cash advance (0200, DE 3 = 013000, one 10000 note) with the PIN: approved while the
    /// open-to-buy lasts.
    AtmCash,
    /// A purchase over any test card's open-to-buy: declined 51.
    DeclineFunds,
    /// A purchase with an expiry date that is not the card's: declined 54.
    DeclineExpiry,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Purchase,
        Kind::Balance,
        Kind::AtmBalance,
        Kind::AtmCash,
        Kind::DeclineFunds,
        Kind::DeclineExpiry,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Purchase => "purchase",
            Kind::Balance => "balance",
            Kind::AtmBalance => "atm-balance",
            Kind::AtmCash => "atm-cash",
            Kind::DeclineFunds => "decline-funds",
            Kind::DeclineExpiry => "decline-expiry",
        }
    }

    /// The response code the network should give this kind.
    pub fn expected_rc(self) -> &'static str {
        match self {
            Kind::DeclineFunds => "51",
            Kind::DeclineExpiry => "54",
            _ => "00",
        }
    }

    fn needs_atm(self) -> bool {
        matches!(self, Kind::AtmBalance | Kind::AtmCash)
    }
}

impl FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            Error::invalid("mix", format!("unknown kind {s:?} (expected one of {})", names.join(", ")))
        })
    }
}

/// The proportion of each kind: weights, not necessarily summing to 100.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix(pub BTreeMap<Kind, u32>);

impl Default for Mix {
    /// Mostly approvals, POS and ATM, with a tenth of each decline reason. No cash: every note
    /// would take 10000 from the test cards' open-to-buy, which a long run would exhaust.
    fn default() -> Self {
        Mix(BTreeMap::from([
            (Kind::Purchase, 60),
            (Kind::Balance, 10),
            (Kind::AtmBalance, 10),
            (Kind::DeclineFunds, 10),
            (Kind::DeclineExpiry, 10),
        ]))
    }
}

impl FromStr for Mix {
    type Err = Error;
    /// `purchase=60,balance=10,atm-balance=10,decline-funds=10,decline-expiry=10`.
    fn from_str(s: &str) -> Result<Mix> {
        let mut m = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, w) = part
                .split_once('=')
                .ok_or_else(|| Error::invalid("mix", format!("{part:?} is not KIND=WEIGHT")))?;
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| Error::invalid("mix", format!("weight {w:?} is not a number")))?;
            if w > 0 {
                m.insert(k.trim().parse::<Kind>()?, w);
            }
        }
        if m.is_empty() {
            return Err(Error::invalid("mix", "no kind with a weight above 0"));
        }
        Ok(Mix(m))
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, w)| format!("{}={w}", k.name())).collect();
        f.write_str(&parts.join(","))
    }
}

impl Mix {
    /// One cycle of kinds in the given proportion, spread evenly (smooth weighted round-robin),
    /// so that every second of the run carries the mix, not runs of one kind.
    pub fn cycle(&self) -> Vec<Kind> {
        let total: i64 = self.0.values().map(|w| i64::from(*w)).sum();
        let mut current: Vec<(Kind, i64, i64)> = self.0.iter().map(|(k, w)| (*k, i64::from(*w), 0)).collect();
        let mut out = Vec::with_capacity(total as usize);
        for _ in 0..total {
            for c in current.iter_mut() {
                c.2 += c.1;
            }
            let Some(best) = current.iter_mut().max_by_key(|c| c.2) else { break };
            best.2 -= total;
            out.push(best.0);
        }
        out
    }
}

fn now() -> codecs::iso8583::datetime::Utc {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    codecs::iso8583::datetime::Utc::from_ms(ms as u64)
}

/// Today's transmission date-time (DE 7, MMDDhhmmss UTC), so that a run's requests never repeat
/// the DE 41 + DE 11 + DE 7 of an earlier run's (a duplicate transmission to the switch).
pub fn transmission_time_now() -> String {
    now().transmission()
}

/// Now, for people: `2026-11-25 09:30:49 UTC`.
pub fn utc_now_text() -> String {
    now().text()
}

fn random_u16() -> u16 {
    let mut b = [0u8; 2];
    // Only the ATC's starting point: a fixed start is still correct, merely more likely to meet
    // an ATC an earlier run against the same network used.
    let _ = getrandom::fill(&mut b);
    u16::from_be_bytes(b)
}

/// A test ATM while the requests are built: its terminal ID and DUKPT device.
struct Atm {
    tid: String,
    device: TdesDukptDevice,
}

/// The requests of a run, built before it.
pub struct Traffic {
    kinds: Vec<Kind>,
    wire: Vec<Prepared>,
    spec: Arc<Spec>,
    /// Each card's next unused ATC after this traffic, by [`atc_key`].
    pub next_atc: BTreeMap<String, u16>,
}

/// The key of a card's ATC counter in a state file: its masked PAN (never the clear PAN).
pub fn atc_key(card: &TestCard) -> String {
    codecs::iso8583::describe::mask_pan(&card.pan)
}

/// What a run's traffic is built from.
pub struct TrafficPlan<'a> {
    pub spec: Arc<Spec>,
    pub cards: &'a [TestCard],
    pub atms: &'a [AtmTerminal],
    pub mix: &'a Mix,
    pub total: u64,
    pub connections: usize,
    /// Each card's first ATC, by [`atc_key`]; cards not in it start at a random ATC.
    pub atc_start: Option<&'a BTreeMap<String, u16>>,
}

impl Traffic {
    /// Builds `total` requests; request `seq` goes on connection `seq % connections` (as
    /// [`load::run`] sends them) and carries that connection's terminal ID.
    pub fn build(p: &TrafficPlan<'_>) -> Result<Traffic> {
        if p.cards.is_empty() {
            return Err(Error::invalid("ports file", "no test cards"));
        }
        let cycle = p.mix.cycle();
        if cycle.iter().any(|k| k.needs_atm()) && p.atms.is_empty() {
            return Err(Error::invalid("mix", "ATM kinds need atm_terminals in the ports file"));
        }
        // Purchases and cash go to the roomy cards: every card but the one with the least
        // open-to-buy, unless there is only one.
        let balance = |c: &TestCard| c.balance.parse::<u64>().unwrap_or(0);
        let smallest = p.cards.iter().map(balance).min().unwrap_or(0);
        let all: Vec<usize> = (0..p.cards.len()).collect();
        let roomy: Vec<usize> = {
            let r: Vec<usize> = all.iter().copied().filter(|&i| balance(&p.cards[i]) > smallest).collect();
            if r.is_empty() { all.clone() } else { r }
        };
        // Each card's master key prepared once for all of its cryptograms (a key that does not
        // parse is refused, naming it, when the first request is built).
        let keys: Vec<Option<CardMasterKey>> = p
            .cards
            .iter()
            .map(|c| TdesKey::from_hex("icc_mk", &c.icc_mk).ok().map(CardMasterKey::tdes))
            .collect();
        let mut atms = p
            .atms
            .iter()
            .map(|a| {
                let ipek = TdesKey::from_hex("ipek", &a.ipek)
                    .map_err(|e| Error::invalid("atm ipek", e.to_string()))?;
                let ksn = TdesKsn::from_hex(&a.ksn).map_err(|e| Error::invalid("atm ksn", e.to_string()))?;
                let device = TdesDukptDevice::load_initial_key(&ipek, &ksn)
                    .map_err(|e| Error::invalid("atm key", e.to_string()))?;
                Ok(Atm { tid: a.tid.clone(), device })
            })
            .collect::<Result<Vec<Atm>>>()?;
        let mut atc: Vec<(u16, u32)> = p
            .cards
            .iter()
            .map(|c| (p.atc_start.and_then(|s| s.get(&atc_key(c)).copied()).unwrap_or_else(random_u16), 0))
            .collect();
        let de7 = transmission_time_now();
        let conns = p.connections.max(1) as u64;
        let mut kinds = Vec::with_capacity(p.total as usize);
        let mut wire = Vec::with_capacity(p.total as usize);
        let mut counters: BTreeMap<Kind, u64> = BTreeMap::new();
        for seq in 0..p.total {
            let kind = cycle[(seq % cycle.len() as u64) as usize];
            let n = counters.entry(kind).or_default();
            let i = *n;
            *n += 1;
            let pool = if matches!(kind, Kind::Purchase | Kind::AtmCash) { &roomy } else { &all };
            let idx = pool[(i % pool.len() as u64) as usize];
            let card = &p.cards[idx];
            let slot = &mut atc[idx];
            if slot.1 > u32::from(u16::MAX) {
                return Err(Error::invalid(
                    "plan",
                    format!(
                        "more than 65536 requests on one card would repeat its ATC: use more test cards or fewer requests ({} cards, {} requests)",
                        p.cards.len(),
                        p.total
                    ),
                ));
            }
            let this_atc = slot.0.wrapping_add(slot.1 as u16);
            slot.1 += 1;
            let conn = (seq % conns) as usize;
            let stan = (seq % 1_000_000) as u32;
            let mut tx = Tx { tid: load::terminal_id(conn), ..Tx::purchase(stan, 1 + i % 99, this_atc) };
            match kind {
                Kind::Purchase => {}
                Kind::Balance | Kind::AtmBalance => {
                    tx.processing_code = "313000".into();
                    tx.amount = 0;
                }
                Kind::AtmCash => {
                    tx.processing_code = "013000".into();
                    tx.amount = 10_000;
                }
                Kind::DeclineFunds => tx.amount = 999_999_999,
                Kind::DeclineExpiry => {}
            }
            let atm_index = (i % atms.len().max(1) as u64) as usize;
            if kind.needs_atm()
                && let Some(a) = atms.get(atm_index)
            {
                tx.tid = a.tid.clone();
            }
            let key = keys[idx].as_ref().map_or(CardKey::MasterKey, CardKey::Prepared);
            let mut m = chip_request_with(&p.spec, card, &tx, key)?;
            m.set_text(7, &de7).map_err(|e| Error::invalid("DE 7", e.to_string()))?;
            if kind == Kind::DeclineExpiry {
                let wrong = if card.expiry == "2001" { "2002" } else { "2001" };
                m.set_text(14, wrong).map_err(|e| Error::invalid("DE 14", e.to_string()))?;
            }
            if kind.needs_atm()
                && let Some(a) = atms.get_mut(atm_index)
            {
                m.set_mti(Mti::FINANCIAL_REQUEST);
                // The test ATMs are registered with the ATMs' acceptor ID (ports file `terminals`).
                m.set_text(42, ATM_ACCEPTOR_ID).map_err(|e| Error::invalid("DE 42", e.to_string()))?;
                pin_block(&mut m, a, card)?;
            }
            let bytes = m.encode().map_err(|e| Error::invalid("request", e.to_string()))?;
            let field = |de| m.bytes(de).unwrap_or_default();
            wire.push(Prepared { bytes, stan: field(11), tid: field(41) });
            kinds.push(kind);
        }
        let next_atc = p
            .cards
            .iter()
            .zip(atc.iter())
            .map(|(c, (start, used))| (atc_key(c), start.wrapping_add(*used as u16)))
            .collect();
        Ok(Traffic { kinds, wire, spec: p.spec.clone(), next_atc })
    }

    pub fn len(&self) -> usize {
        self.wire.len()
    }

    pub fn is_empty(&self) -> bool {
        self.wire.is_empty()
    }
}

/// DE 52 (ISO format 0 under the ATM's DUKPT PIN key) and DE 53 (its KSN).
fn pin_block(m: &mut Message, atm: &mut Atm, card: &TestCard) -> Result<()> {
    let bad = |what: &'static str| move |e: crypto::Error| Error::invalid(what, e.to_string());
    let (ksn, key) = atm.device.next_transaction().map_err(bad("DUKPT"))?;
    let pek = crypto::dukpt::tdes::working_key(&key, KeyUsage::Pin).map_err(bad("DUKPT"))?;
    let pin = Pin::new(&card.pin).map_err(bad("test card PIN"))?;
    let block = crypto::pin::encrypt_pin_block(
        &SymmetricKey::Tdes(pek),
        PinBlockFormat::Iso0,
        &pin,
        &card.pan,
        &[0xFF; 8],
    )
    .map_err(bad("PIN block"))?;
    m.set_bytes(52, block).map_err(|e| Error::invalid("DE 52", e.to_string()))?;
    m.set_bytes(53, ksn.as_bytes().to_vec()).map_err(|e| Error::invalid("DE 53", e.to_string()))?;
    let _ = &atm.tid;
    Ok(())
}

impl RequestSource for Traffic {
    fn request(&self, seq: u64, _conn: usize) -> Message {
        let bytes = self.wire.get(seq as usize).map(|p| p.bytes.clone()).unwrap_or_default();
        // Never reached in a run (prepared answers first); an empty message is an error there.
        Message::decode(&self.spec, bytes)
            .unwrap_or_else(|_| Message::new(self.spec.clone(), Mti::AUTHORIZATION_REQUEST))
    }

    fn prepared(&self, seq: u64, _conn: usize) -> Option<Prepared> {
        self.wire.get(seq as usize).cloned()
    }

    fn kind(&self, seq: u64) -> &'static str {
        self.kinds.get(seq as usize).map(|k| k.name()).unwrap_or("request")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_cycles_in_proportion() {
        let m: Mix = "purchase=3, decline-funds=1".parse().expect("mix");
        let c = m.cycle();
        assert_eq!(c.len(), 4);
        assert_eq!(c.iter().filter(|k| **k == Kind::Purchase).count(), 3);
        assert_eq!(m.to_string(), "purchase=3,decline-funds=1");
        assert!("purchase".parse::<Mix>().is_err());
        assert!("coffee=1".parse::<Mix>().is_err());
        assert!("purchase=0".parse::<Mix>().is_err());
        // Spread evenly: no two declines next to each other in 1:1.
        let even: Mix = "purchase=1,decline-expiry=1".parse().expect("mix");
        assert_ne!(even.cycle()[0], even.cycle()[1]);
    }

    #[test]
    fn transmission_time_is_ten_digits() {
        let t = transmission_time_now();
        assert_eq!(t.len(), 10);
        assert!(t.bytes().all(|b| b.is_ascii_digit()));
    }
}
