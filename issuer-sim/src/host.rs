//! The issuer's decisions: a function of its state, the request and the clock — no I/O. The server
//! holds one [`Issuer`] behind a mutex and asks it for the answer to each request.
//!
//! Authorizations (0100) and financial requests (0200): unknown card 14, expired 54, blocked or
//! closed 62, lost 41, unsupported processing code 12, wrong or replayed cryptogram 82, wrong PIN
//! 55 (75 after three), over the open-to-buy 51, wrong currency or zero amount 13 — else 00 with
//! an authorization code. Balance inquiries (31xxxx) answer with the open-to-buy in DE 54, and so
//! do approved cash advances (01xxxx: what is left after the advance, for the ATM's screen).
//! Chip requests get tag 91 (issuer authentication data) in DE 55 of every answer, approval or
//! decline: ARPC method 1 (ARPC ‖ ARC) or 2 (ARPC ‖ CSU) as the card's CVN says — except when the
//! token service verified a token's cryptogram (DE 123 DF8106), which the issuer believes only of
//! a request from the switch's authenticated link ([`Origin`]). Reversals
//! (0400/0420, matched to the original through DE 90 and DE 41, partial through DE 95), stand-in
//! advices (0120), token notifications (0620) and network management (0800: sign-on 001,
//! sign-off 002, echo 301 → 00; other DE 70 codes 12) are answered too. Token ID&V (0100 with DE 3
//! 90xxxx, OTP check 91xxxx) follows each card's ID&V policy (00, 05, or 1A with an OTP).
//! A request missing an element its class needs (DE 11; DE 70; DE 3, PAN, DE 4 and DE 49 for a
//! spending request) or with unreadable chip data or DE 95 is answered 30.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use codecs::iso8583::Message;
use codecs::tlv;
use crypto::emv::{
    ArpcInput, Atc, CardInputs, Cvn, PanDigits, Psn, UnpredictableNumber, VerifiedArqc, ac_data_from_tags,
};
use crypto::hsm::{Hsm, PinSource};
use crypto::pin::PinBlockFormat;
use serde::{Deserialize, Serialize};

use crate::cards::{CardConfig, CardsFile};
use crate::idv::{AttemptGuard, IdvLimits, IdvPolicy, OtpBook, OtpError};
use crate::ledger::{Account, AccountId, AccountStatus, Ledger, LedgerError, OriginalKey};
use codecs::pan::mask;

/// A PIN tried wrong this many times blocks PIN transactions (75).
const PIN_TRIES: u8 = 3;

struct Card {
    cfg: CardConfig,
    account: AccountId,
    cvn: Cvn,
    psn: Psn,
    atcs_seen: HashSet<u16>,
    pin_tries_left: u8,
    /// Limited-use keys sealed for a device (cloud payments on the real PAN): the first ATC of
    /// the first batch and of the current batch, and the first ATC not yet covered. A batch
    /// never covers an ATC issued before; a cryptogram on an ATC of a retired batch (from the
    /// first batch up to the current one) is refused like a bad cryptogram.
    luk_issued_from: Option<u16>,
    luk_batch_first: u16,
    luk_next_atc: u16,
}

/// The issuer's ID&V answer to a cloud platform that asks it to verify a cardholder and device
/// before perso (operating model 3 with the real PAN): the same decision as for a token's 0100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardholderCheck {
    Approved,
    /// A one-time password went to the cardholder (the `otp_outbox`, the SMS outbox).
    OtpSent,
    /// Declined, with the response code: 05 for anything the cardholder's data did not match
    /// (unknown card, wrong or past expiry, wrong CVV2, wrong OTP, a locked PAN or requestor) or
    /// the policy declined; 75 OTP tries exceeded.
    Declined {
        response_code: &'static str,
    },
}

/// How a request reached the issuer, as far as the issuer can tell: what it may believe of the
/// request's word about itself. The token service's "cryptogram verified" (DE 123 tag DF8106) is
/// such a word: believed from anyone who can reach the issuer's port, it would approve a token
/// payment with any cryptogram. Only the switch's authenticated link vouches for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Over a link whose message MAC verified under the key shared with the switch
    /// ([`crate::link_mac::LinkMac`]): the switch sent it, and DF8106 is believed.
    AuthenticatedLink,
    /// Anything else (a listener without a link MAC, a test, a fuzzer): DF8106 is ignored and the
    /// issuer verifies every cryptogram itself.
    Unauthenticated,
}

/// What the HSM needs to derive a card's keys (names and parameters, no key material).
struct PersoKey {
    imk: String,
    cvn: Cvn,
    psn: Psn,
    luk_next_atc: u16,
}

/// What a requestor asks the issuer to verify: the card and what the cardholder typed.
#[derive(Debug, Clone, Copy)]
pub struct IdvAsk<'a> {
    pub pan: &'a str,
    /// YYMM as the cardholder typed it.
    pub expiry: &'a str,
    /// The CVV2 as the cardholder typed it, when the requestor asked for it.
    pub cvv2: Option<&'a str>,
    /// Who asks (the token requestor's id, or the provider's name): failures are counted per
    /// requestor as well as per PAN.
    pub requestor: &'a str,
    pub session: &'a str,
    /// The one-time password of `session` (the second request of a step-up).
    pub otp: Option<&'a str>,
}

/// The most notices (0620) kept for inspection; the oldest go first.
pub const NOTICES_KEPT: usize = 1024;

/// The most OTPs kept in the test outbox.
pub const OTP_OUTBOX_KEPT: usize = 256;

/// The most text messages kept in the SMS outbox.
pub const SMS_KEPT: usize = 64;

/// The most entries any kept list may be configured to hold.
pub const KEPT_MAX: usize = 100_000;

/// How much the issuer keeps for inspection between requests, and for how long: every kept list
/// is bounded in size (the oldest go first) and in age (entries past it go at the next request).
/// The configuration's `[kept]` table sets the sizes and the notices' age; an OTP's age is its
/// lifetime, `[idv] otp_ttl_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeptLimits {
    /// Notices (0620) received, and for how long.
    pub notices: usize,
    pub notices_ttl_ms: u64,
    /// Text messages in the SMS outbox.
    pub sms: usize,
    /// OTPs in the OTP outbox.
    pub otps: usize,
    /// How long a texted OTP stays in both outboxes: its lifetime (`[idv] otp_ttl_ms`), after
    /// which it is of no use to anyone.
    #[serde(skip)]
    pub otp_ttl_ms: u64,
}

impl KeptLimits {
    /// Every problem, at once (the `[kept]` table's sizes and age).
    pub fn validate(&self) -> Result<(), String> {
        let mut bad = Vec::new();
        for (name, n) in [("notices", self.notices), ("sms", self.sms), ("otps", self.otps)] {
            if !(1..=KEPT_MAX).contains(&n) {
                bad.push(format!("kept.{name} must be from 1 to {KEPT_MAX} (it is {n})"));
            }
        }
        if self.notices_ttl_ms == 0 {
            bad.push("kept.notices_ttl_ms must be at least 1".to_string());
        }
        if bad.is_empty() { Ok(()) } else { Err(bad.join("; ")) }
    }
}

impl Default for KeptLimits {
    fn default() -> Self {
        KeptLimits {
            notices: NOTICES_KEPT,
            notices_ttl_ms: 60 * 60 * 1000,
            sms: SMS_KEPT,
            otps: OTP_OUTBOX_KEPT,
            otp_ttl_ms: IdvLimits::default().otp_ttl_ms,
        }
    }
}

/// A notification the issuer received (0620), kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub processing_code: String,
    pub pan_masked: String,
    pub token_data_len: usize,
    /// When it arrived (milliseconds since the epoch).
    pub at_ms: u64,
}

/// The OTPs "sent to the cardholder", by provisioning session: read like a map, bounded in size
/// and age ([`KeptLimits`]).
#[derive(Debug)]
pub struct OtpOutbox {
    sent: HashMap<String, (u64, String)>,
    /// No code kept was sent before this (a lower bound): ageing has nothing to do until it is
    /// past its time.
    oldest_ms: u64,
}

impl Default for OtpOutbox {
    fn default() -> Self {
        OtpOutbox { sent: HashMap::new(), oldest_ms: u64::MAX }
    }
}

impl OtpOutbox {
    /// The code sent for `session`.
    pub fn get(&self, session: &str) -> Option<&String> {
        self.sent.get(session).map(|(_, c)| c)
    }

    pub fn contains_key(&self, session: &str) -> bool {
        self.sent.contains_key(session)
    }

    /// (session, code) of every OTP kept.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.sent.iter().map(|(s, (_, c))| (s, c))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.sent.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &String> {
        self.sent.values().map(|(_, c)| c)
    }

    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    fn remove(&mut self, session: &str) {
        self.sent.remove(session);
    }

    /// Drops the codes past `ttl_ms`, then the oldest while over `capacity`.
    fn expire(&mut self, now_ms: u64, ttl_ms: u64, capacity: usize) {
        if now_ms.saturating_sub(self.oldest_ms) > ttl_ms {
            self.sent.retain(|_, (at, _)| now_ms.saturating_sub(*at) <= ttl_ms);
            self.oldest_ms = self.sent.values().map(|(at, _)| *at).min().unwrap_or(u64::MAX);
        }
        while self.sent.len() > capacity {
            let Some(oldest) = self.sent.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| k.clone()) else {
                break;
            };
            self.sent.remove(&oldest);
        }
    }

    fn insert(&mut self, session: String, code: String, now_ms: u64, l: &KeptLimits) {
        self.oldest_ms = self.oldest_ms.min(now_ms);
        self.sent.insert(session, (now_ms, code));
        self.expire(now_ms, l.otp_ttl_ms, l.otps.max(1));
    }
}

/// Drops the entries of a list kept in arrival order (oldest first) past `ttl_ms` (by `at`),
/// then the oldest while over `capacity`: only the stale head is looked at, so an idle list costs
/// one comparison per request.
fn expire_list<T>(list: &mut Vec<T>, at: impl Fn(&T) -> u64, now_ms: u64, ttl_ms: u64, capacity: usize) {
    let stale = list.iter().take_while(|x| now_ms.saturating_sub(at(x)) > ttl_ms).count();
    let over = list.len().saturating_sub(capacity);
    list.drain(..stale.max(over));
}

pub struct Issuer {
    hsm: Arc<dyn Hsm>,
    zpk: String,
    cards: HashMap<String, Card>,
    ledger: Ledger,
    otps: OtpBook,
    /// Failed ID&V attempts per PAN and per requestor.
    guard: AttemptGuard,
    /// OTPs "sent to the cardholder" (by SMS in real life): provisioning session → code (the
    /// outstanding ones, at most [`KeptLimits::otps`], for the OTP's lifetime).
    pub otp_outbox: OtpOutbox,
    /// The same OTPs as the cardholder's phone receives them, newest last: by masked PAN (what
    /// the admin port's `sms` command shows; at most the last [`KeptLimits::sms`], for the OTP's
    /// lifetime).
    pub sms_outbox: Vec<Sms>,
    /// The notices received, oldest first: at most the last [`KeptLimits::notices`], for
    /// [`KeptLimits::notices_ttl_ms`].
    pub notices: Vec<Notice>,
    kept_limits: KeptLimits,
}

/// A one-time password "texted" to a cardholder.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sms {
    /// The card's masked PAN (first 6, last 4).
    pub card: String,
    pub otp: String,
    pub at_ms: u64,
}

/// The network's conversion on a request: DE 6 (billing amount) with DE 10 (rate) and DE 51
/// (billing currency) and the sale's DE 49; `Ok(None)` without DE 51; `Err` when present but
/// incomplete or unreadable.
fn billing(req: &Message) -> Result<Option<(u64, crate::ledger::Conversion)>, ()> {
    let Some(to) = field(req, 51) else { return Ok(None) };
    let to = codecs::currency::by_numeric(&to).ok_or(())?;
    let from = field(req, 49).and_then(|c| codecs::currency::by_numeric(&c)).ok_or(())?;
    let rate = field(req, 10).and_then(|r| codecs::currency::Rate::parse_de10(&r).ok()).ok_or(())?;
    let billed: u64 = field(req, 6).and_then(|a| a.parse().ok()).ok_or(())?;
    Ok(Some((billed, crate::ledger::Conversion { from, to, rate })))
}

fn field(m: &Message, de: u16) -> Option<String> {
    m.text(de).map(|t| t.into_owned())
}

/// A subelement of DE 48 (two-digit tag, two-digit length, value; as Mastercard's DE 48 layout).
pub fn subelement(de48: &str, tag: &str) -> Option<String> {
    let mut rest = de48;
    while rest.len() >= 4 {
        let (t, l) = (rest.get(..2)?, rest.get(2..4)?.parse::<usize>().ok()?);
        let v = rest.get(4..4 + l)?;
        if t == tag {
            return Some(v.to_string());
        }
        rest = rest.get(4 + l..)?;
    }
    None
}

/// The original-transaction key of a request: DE 41 | DE 11 | DE 7.
fn own_key(m: &Message) -> OriginalKey {
    let text = |de| m.text(de).unwrap_or_default();
    OriginalKey::new(&text(41), &text(11), &text(7))
}

/// The key of the original a reversal refers to, from its DE 90 and DE 41.
fn original_key(m: &Message) -> OriginalKey {
    match field(m, 90) {
        Some(d) if d.len() >= 20 => OriginalKey::new(&m.text(41).unwrap_or_default(), &d[4..10], &d[10..20]),
        _ => own_key(m),
    }
}

/// The chip data of a request, if any: the tags, the ARQC, the ATC. `Err` when DE 55 is there
/// but is not TLV or lacks an 8-byte ARQC (9F26) or an ATC (9F36): a format error.
fn chip_of(req: &Message) -> Result<Option<Chip>, ()> {
    let Some(icc) = req.icc_data().map_err(|_| ())? else { return Ok(None) };
    let tags = tlv::TopLevel::parse(icc).map_err(|_| ())?;
    let arqc = tags.get(0x9F26).map(<[u8]>::to_vec).unwrap_or_default();
    let atc = tags.get(0x9F36).and_then(|v| Atc::from_slice(v).ok());
    let un = tags.get(0x9F37).and_then(|v| UnpredictableNumber::from_slice(v).ok());
    match atc {
        Some(atc) if arqc.len() == 8 => Ok(Some(Chip { tags, arqc, atc, un, verified_by_tsp: false })),
        _ => Err(()),
    }
}

/// What the chip part of a request gives the ARPC.
struct Chip {
    tags: tlv::TopLevel,
    arqc: Vec<u8>,
    atc: Atc,
    un: Option<UnpredictableNumber>,
    /// The token service verified the cryptogram with the token keys (DF8106, believed only
    /// from the switch's authenticated link): the issuer neither verifies it nor makes the ARPC.
    verified_by_tsp: bool,
}

impl Issuer {
    pub fn new(hsm: Arc<dyn Hsm>, zpk: &str, cards: &CardsFile) -> Self {
        let mut ledger = Ledger::default();
        let mut map = HashMap::new();
        for (i, c) in cards.cards.iter().enumerate() {
            let id = AccountId(i as u32);
            let status = match c.status.as_str() {
                "active" | "lost" => AccountStatus::Active,
                "blocked" => AccountStatus::Blocked,
                _ => AccountStatus::Closed,
            };
            ledger.add_account(
                id,
                Account {
                    status,
                    currency: c.currency.parse().unwrap_or(0),
                    credit_limit_minor: c.credit_limit,
                    outstanding_minor: c.outstanding,
                },
            );
            let (Ok(cvn), Ok(psn)) = (c.cvn.parse::<Cvn>(), c.psn.parse::<Psn>()) else { continue };
            map.insert(
                c.pan.clone(),
                Card {
                    cfg: c.clone(),
                    account: id,
                    cvn,
                    psn,
                    atcs_seen: HashSet::new(),
                    pin_tries_left: PIN_TRIES,
                    luk_issued_from: None,
                    luk_batch_first: 0,
                    luk_next_atc: 1,
                },
            );
        }
        Issuer {
            hsm,
            zpk: zpk.to_string(),
            cards: map,
            ledger,
            otps: OtpBook::new(IdvLimits::default().otp_ttl_ms, IdvLimits::default().otp_tries),
            guard: AttemptGuard::new(IdvLimits::default()),
            otp_outbox: OtpOutbox::default(),
            sms_outbox: Vec::new(),
            notices: Vec::new(),
            kept_limits: KeptLimits::default(),
        }
    }

    /// The same issuer with other ID&V limits (attempts, locks, OTP tries and lifetime; the
    /// outboxes keep an OTP for its lifetime).
    pub fn with_idv_limits(mut self, limits: IdvLimits) -> Self {
        self.otps = OtpBook::new(limits.otp_ttl_ms, limits.otp_tries).with_capacity(limits.capacity);
        self.guard = AttemptGuard::new(limits);
        self.kept_limits.otp_ttl_ms = limits.otp_ttl_ms;
        self
    }

    /// The same issuer keeping `limits` for inspection (the `[kept]` table): the sizes and the
    /// notices' age; an OTP stays kept for its lifetime, as the ID&V limits set it.
    pub fn with_kept_limits(mut self, limits: KeptLimits) -> Self {
        self.kept_limits = KeptLimits { otp_ttl_ms: self.kept_limits.otp_ttl_ms, ..limits };
        self
    }

    /// Changes how much is kept for inspection, and for how long; what is over the new bounds
    /// goes now.
    pub fn limit_kept(&mut self, limits: KeptLimits, now_ms: u64) {
        self.kept_limits = limits;
        self.expire_kept(now_ms);
    }

    /// The bounds of what is kept for inspection.
    pub fn kept_limits(&self) -> KeptLimits {
        self.kept_limits
    }

    /// Entries kept for inspection now: (notices, texts in the SMS outbox, OTPs in the outbox).
    pub fn kept_sizes(&self) -> (usize, usize, usize) {
        (self.notices.len(), self.sms_outbox.len(), self.otp_outbox.len())
    }

    /// Drops what is kept past its age or over its bound (at every request, and when the bounds
    /// change), and the OTPs past their lifetime.
    pub fn expire_kept(&mut self, now_ms: u64) {
        let l = self.kept_limits;
        expire_list(&mut self.notices, |n| n.at_ms, now_ms, l.notices_ttl_ms, l.notices.max(1));
        expire_list(&mut self.sms_outbox, |s| s.at_ms, now_ms, l.otp_ttl_ms, l.sms.max(1));
        self.otp_outbox.expire(now_ms, l.otp_ttl_ms, l.otps.max(1));
        self.otps.expire(now_ms);
    }

    /// ID&V entries tracked: (PANs, requestors, OTPs outstanding).
    pub fn idv_tracked(&self) -> (usize, usize, usize) {
        let (p, r) = self.guard.tracked();
        (p, r, self.otps.len())
    }

    /// The state a kept network saves (no PAN: cards by account, bookings by original).
    pub fn kept(&self) -> crate::kept::KeptIssuer {
        use crate::kept::{KeptAccount, KeptBooking, KeptCard, KeptIssuer};
        let mut cards: Vec<KeptCard> = self
            .cards
            .values()
            .map(|c| {
                let mut atcs_seen: Vec<u16> = c.atcs_seen.iter().copied().collect();
                atcs_seen.sort_unstable();
                KeptCard {
                    account: c.account.0,
                    atcs_seen,
                    pin_tries_left: c.pin_tries_left,
                    luk_issued_from: c.luk_issued_from,
                    luk_batch_first: c.luk_batch_first,
                    luk_next_atc: c.luk_next_atc,
                }
            })
            .collect();
        cards.sort_by_key(|c| c.account);
        let mut accounts: Vec<KeptAccount> = self
            .cards
            .values()
            .filter_map(|c| {
                let a = self.ledger.account(c.account)?;
                Some(KeptAccount { account: c.account.0, outstanding_minor: a.outstanding_minor })
            })
            .collect();
        accounts.sort_by_key(|a| a.account);
        let mut bookings: Vec<KeptBooking> = self
            .ledger
            .bookings()
            .map(|(k, b)| KeptBooking {
                original: k.as_str().to_owned(),
                account: b.account.0,
                approved_minor: b.approved_minor,
                standing_minor: b.standing_minor,
                conversion: b
                    .conversion
                    .map(|c| (c.from.numeric.to_string(), c.to.numeric.to_string(), c.rate.de10())),
            })
            .collect();
        bookings.sort_by(|a, b| a.original.cmp(&b.original));
        KeptIssuer { accounts, cards, bookings }
    }

    /// Puts back what [`Issuer::kept`] saved, on the same cards (a kept network restarting).
    /// Entries for accounts this issuer does not have, or with an unknown currency or rate, are
    /// refused with the first one named.
    pub fn restore(&mut self, kept: &crate::kept::KeptIssuer) -> Result<(), String> {
        use crate::ledger::{Booking, Conversion};
        for a in &kept.accounts {
            let acct = self
                .ledger
                .account_mut(AccountId(a.account))
                .ok_or_else(|| format!("kept account {} is not this issuer's", a.account))?;
            acct.outstanding_minor = a.outstanding_minor;
        }
        for k in &kept.cards {
            let card = self
                .cards
                .values_mut()
                .find(|c| c.account.0 == k.account)
                .ok_or_else(|| format!("kept card of account {} is not this issuer's", k.account))?;
            card.atcs_seen = k.atcs_seen.iter().copied().collect();
            card.pin_tries_left = k.pin_tries_left;
            card.luk_issued_from = k.luk_issued_from;
            card.luk_batch_first = k.luk_batch_first;
            card.luk_next_atc = k.luk_next_atc;
        }
        for b in &kept.bookings {
            let conversion = match &b.conversion {
                None => None,
                Some((from, to, de10)) => Some(Conversion {
                    from: codecs::currency::by_numeric(from)
                        .ok_or_else(|| format!("booking {}: currency {from}", b.original))?,
                    to: codecs::currency::by_numeric(to)
                        .ok_or_else(|| format!("booking {}: currency {to}", b.original))?,
                    rate: codecs::currency::Rate::parse_de10(de10)
                        .map_err(|e| format!("booking {}: {e}", b.original))?,
                }),
            };
            self.ledger.restore_booking(
                OriginalKey::from_text(&b.original),
                Booking {
                    account: AccountId(b.account),
                    approved_minor: b.approved_minor,
                    standing_minor: b.standing_minor,
                    conversion,
                },
            );
        }
        Ok(())
    }

    /// The open-to-buy of a card (tests, the ports file).
    pub fn open_to_buy(&self, pan: &str) -> Option<u64> {
        let c = self.cards.get(pan)?;
        self.ledger.account(c.account).map(Account::open_to_buy)
    }

    /// Personalisation data for one of the issuer's cards, for a secure element (operating models
    /// 1 and 2, real PAN): `{"pan","expiry","psn","cvn","aid","label","atc":0}` completed by the
    /// HSM with the card's ICC master key (derived from the issuer's IMK-AC, never in clear here)
    /// and sealed for `recipient_public_key` (P-256, SEC1) — the issuer's perso bureau or the SE
    /// TSM's HSM — under the context label `info` (see `crypto::device`). Refused for an unknown
    /// card, a card that is not active, or one past its expiry (`now_yymm`).
    pub fn perso_data(
        &self,
        pan: &str,
        now_yymm: &str,
        recipient_public_key: &[u8],
        info: &[u8],
    ) -> Result<Vec<u8>, String> {
        let (profile, k) = self.perso_profile(pan, now_yymm)?;
        let pan_d = PanDigits::new(pan).map_err(|e| e.to_string())?;
        let key = crypto::hsm::CardKey { imk: &k.imk, cvn: k.cvn, pan: &pan_d, psn: k.psn };
        self.hsm
            .seal_card_profile(&key, &profile, recipient_public_key, info)
            .map_err(|e| format!("sealing the perso data: {e}"))
    }

    /// ID&V of the cardholder and device for a provider asking the issuer directly (the cloud
    /// platform on the real PAN, the SP TSM): the checks and the card's policy as for a token
    /// request ([`Issuer::check_identity`]).
    pub fn verify_cardholder(
        &mut self,
        ask: &IdvAsk<'_>,
        now_ms: u64,
        now_yymm: &str,
        random: u32,
    ) -> CardholderCheck {
        self.expire_kept(now_ms);
        match self.check_identity(ask, now_ms, now_yymm, random).code {
            "00" => CardholderCheck::Approved,
            "1A" => CardholderCheck::OtpSent,
            rc => CardholderCheck::Declined { response_code: rc },
        }
    }

    /// The ID&V of `ask`: a locked PAN or requestor is declined unchecked; then the OTP of a
    /// step-up, or the card's data (known card, expiry in force and as typed, CVV2 when given)
    /// and the card's policy. Every mismatch is the same 05, and counts against the PAN and the
    /// requestor.
    fn check_identity(&mut self, ask: &IdvAsk<'_>, now_ms: u64, now_yymm: &str, random: u32) -> Decision {
        let known = self.cards.contains_key(ask.pan);
        let pan_key = known.then_some(ask.pan);
        if self.guard.locked(pan_key, ask.requestor, now_ms) {
            tracing::debug!(requestor = ask.requestor, card = %mask(ask.pan), "ID&V refused: locked after repeated failures");
            return Decision::rc("05");
        }
        if let Some(otp) = ask.otp {
            return match self.otps.verify(ask.session, otp, now_ms) {
                Ok(()) => {
                    self.otp_outbox.remove(ask.session);
                    self.guard.succeed(ask.pan);
                    Decision::rc("00")
                }
                Err(OtpError::TriesExceeded) => {
                    self.otp_outbox.remove(ask.session);
                    self.guard.fail(pan_key, ask.requestor, now_ms);
                    Decision::rc("75")
                }
                Err(_) => {
                    self.guard.fail(pan_key, ask.requestor, now_ms);
                    Decision::rc("05")
                }
            };
        }
        let matches = self.cards.get(ask.pan).is_some_and(|card| {
            let expiry_ok = card.cfg.expiry.as_str() >= now_yymm
                && bool::from(subtle::ConstantTimeEq::ct_eq(
                    card.cfg.expiry.as_bytes(),
                    ask.expiry.as_bytes(),
                ));
            let cvv2_ok =
                match ask.cvv2 {
                    None => true,
                    Some(c) => card.cfg.cvk.as_ref().is_some_and(|cvk| {
                        self.hsm.verify_cvv(cvk, ask.pan, &card.cfg.expiry, "000", c).is_ok()
                    }),
                };
            expiry_ok & cvv2_ok
        });
        if !matches {
            self.guard.fail(pan_key, ask.requestor, now_ms);
            return Decision::rc("05");
        }
        let d = self.idv_decision(ask.pan, ask.session, now_ms, random);
        if d.code == "00" {
            self.guard.succeed(ask.pan);
        }
        d
    }

    /// Perso data for a cloud (HCE) card on the real PAN: as [`Issuer::perso_data`], but instead
    /// of the ICC master key the HSM puts in the common session keys of the ATCs of `batch`
    /// (limited-use keys; the device never holds the master key), sealed for the device's key.
    /// A batch must start at or after the end of the last one sealed for this card (an ATC's key
    /// is handed out once; the earlier batch is retired); the card's CVN must use the EMV common
    /// session key.
    pub fn perso_luks(
        &mut self,
        pan: &str,
        now_yymm: &str,
        batch: crypto::hsm::LukBatch,
        device_public_key: &[u8],
        info: &[u8],
    ) -> Result<Vec<u8>, String> {
        let (profile, key_card) = self.perso_profile(pan, now_yymm)?;
        if batch.first_atc < key_card.luk_next_atc {
            return Err(format!(
                "limited-use keys from ATC {:04X} were already issued (next {:04X})",
                batch.first_atc, key_card.luk_next_atc
            ));
        }
        let pan_d = PanDigits::new(pan).map_err(|e| e.to_string())?;
        let key =
            crypto::hsm::CardKey { imk: &key_card.imk, cvn: key_card.cvn, pan: &pan_d, psn: key_card.psn };
        let sealed = self
            .hsm
            .seal_luk_profile(&key, batch, &profile, device_public_key, info)
            .map_err(|e| format!("sealing the limited-use keys: {e}"))?;
        if let Some(c) = self.cards.get_mut(pan) {
            // The previous batch is retired: its unused keys no longer count.
            c.luk_issued_from.get_or_insert(batch.first_atc);
            c.luk_batch_first = batch.first_atc;
            c.luk_next_atc = batch.first_atc.saturating_add(batch.count);
        }
        Ok(sealed)
    }

    /// The perso profile (without keys) of an active, unexpired card, and what its key needs.
    fn perso_profile(&self, pan: &str, now_yymm: &str) -> Result<(String, PersoKey), String> {
        let card = self.cards.get(pan).ok_or_else(|| format!("card {} is not one of ours", mask(pan)))?;
        if card.cfg.status != "active" {
            return Err(format!("card {} is {}", mask(pan), card.cfg.status));
        }
        if card.cfg.expiry.as_str() < now_yymm {
            return Err(format!("card {} expired", mask(pan)));
        }
        let aid = if card.cvn.name().starts_with("mc") { "A0000000041010" } else { "A0000000031010" };
        let profile = serde_json::json!({
            "pan": pan, "expiry": card.cfg.expiry, "psn": card.cfg.psn, "cvn": card.cvn.name(),
            "aid": aid, "label": "PAYNET CREDIT", "atc": 0,
        })
        .to_string();
        Ok((
            profile,
            PersoKey {
                imk: card.cfg.imk_ac.clone(),
                cvn: card.cvn,
                psn: card.psn,
                luk_next_atc: card.luk_next_atc,
            },
        ))
    }

    /// The answer to `req`, which arrived as `origin` says. `now_yymm` is today's year and month
    /// (expiry checks), `random` draws authorization codes and OTPs.
    pub fn handle(
        &mut self,
        req: &Message,
        origin: Origin,
        now_ms: u64,
        now_yymm: &str,
        random: u32,
    ) -> Option<Message> {
        let mti = req.mti();
        if mti.is_response() {
            return None;
        }
        self.expire_kept(now_ms);
        if let Some(rc) = format_error(req) {
            let mut rsp = answer(req, rc);
            if let (Some(pan), Ok(Some(chip))) = (req.card_number(), chip_of(req)) {
                self.attach_issuer_auth_data(&pan, &chip, &mut rsp, rc, None);
            }
            return Some(rsp);
        }
        Some(match (mti.class(), mti.function()) {
            (8, 0) => answer(req, network_management(req)),
            (1 | 2, 0) => self.authorize(req, origin, now_ms, now_yymm, random),
            (4, 0 | 2) => self.reverse(req),
            (1, 2) => self.advice(req),
            (6, 2) => self.notice(req, now_ms),
            _ => answer(req, "12"),
        })
    }

    fn expiry_of(req: &Message) -> Option<String> {
        if let Some(e) = field(req, 14) {
            return Some(e);
        }
        let t2 = field(req, 35)?;
        let sep = t2.find(['=', 'D'])?;
        t2.get(sep + 1..sep + 5).map(str::to_string)
    }

    fn authorize(
        &mut self,
        req: &Message,
        origin: Origin,
        now_ms: u64,
        now_yymm: &str,
        random: u32,
    ) -> Message {
        let pc = field(req, 3).unwrap_or_default();
        let Some(pan) = req.card_number() else { return answer(req, "30") };
        // ID&V (token provisioning) never tells a guesser that the card does not exist.
        let idv = matches!(pc.get(..2), Some("90" | "91"));
        if !self.cards.contains_key(&pan) && !idv {
            return answer(req, "14");
        }
        let Ok(mut chip) = chip_of(req) else { return answer(req, "30") };
        if let Some(c) = chip.as_mut() {
            c.verified_by_tsp = origin == Origin::AuthenticatedLink && tsp_says_verified(req);
        }
        // The ARQC's verification keeps the card's keys for the ARPC made once the answer is known.
        let mut verified = None;
        let rc = self.decide(req, &pan, &pc, chip.as_ref(), now_ms, now_yymm, random, &mut verified);
        let mut rsp = answer(req, rc.code);
        if let Some(code) = rc.auth_code {
            let _ = rsp.set_text(38, &code);
        }
        if let Some(de54) = rc.de54 {
            let _ = rsp.set_text(54, &de54);
        }
        // A token's cryptogram is under token keys the token service holds: it verified it and
        // makes the ARPC; the issuer sends none.
        if let Some(chip) = chip.as_ref().filter(|c| !c.verified_by_tsp) {
            self.attach_issuer_auth_data(&pan, chip, &mut rsp, rc.code, verified.as_ref());
        }
        rsp
    }

    /// Puts tag 91 in the answer's DE 55 (INTERFACES.md §5: on every chip answer, approval or
    /// decline) when the card is known; nothing when the ARPC cannot be made.
    /// `verified`: the ARQC's verification with its keys, when the decision got that far.
    fn attach_issuer_auth_data(
        &self,
        pan: &str,
        chip: &Chip,
        rsp: &mut Message,
        rc: &str,
        verified: Option<&VerifiedArqc>,
    ) {
        let Some(card) = self.cards.get(pan) else { return };
        if let Some(tag91) = self.issuer_auth_data(pan, card.cvn, chip, rc, verified) {
            let mut b = tlv::TlvBuilder::new();
            if b.primitive(tlv::Tag::new(0x91), &tag91).is_ok() {
                let _ = rsp.set_icc_data(&b.finish());
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        req: &Message,
        pan: &str,
        pc: &str,
        chip: Option<&Chip>,
        now_ms: u64,
        now_yymm: &str,
        random: u32,
        verified: &mut Option<VerifiedArqc>,
    ) -> Decision {
        let tx = pc.get(..2).unwrap_or("");
        // Token provisioning: ID&V and OTP checks come before any spending rule, and any mismatch
        // (unknown card, expiry, CVV2) is one generic 05 (docs/network-spec.md §6).
        if tx == "90" || tx == "91" {
            return self.idv(req, pan, tx, now_ms, now_yymm, random);
        }
        let Some(card) = self.cards.get(pan) else { return Decision::rc("14") };
        let expired =
            card.cfg.expiry.as_str() < now_yymm || Self::expiry_of(req).is_some_and(|e| e != card.cfg.expiry);
        if expired {
            return Decision::rc("54");
        }
        match card.cfg.status.as_str() {
            "active" => {}
            "lost" => return Decision::rc("41"),
            _ => return Decision::rc("62"),
        }
        if !matches!(tx, "00" | "01" | "31") {
            return Decision::rc("12");
        }
        // Card not present with a key-entered PAN: the CVV2 (DE 48 subelement 92) must verify.
        let entry = field(req, 22).unwrap_or_default();
        if chip.is_none() && matches!(entry.get(..2), Some("01" | "81")) {
            let cvv2 = field(req, 48).and_then(|d| subelement(&d, "92"));
            let ok = match (&card.cfg.cvk, cvv2) {
                (Some(cvk), Some(cvv2)) => {
                    self.hsm.verify_cvv(cvk, pan, &card.cfg.expiry, "000", &cvv2).is_ok()
                }
                _ => false,
            };
            if !ok {
                return Decision::rc("N7");
            }
        }
        if let Some(chip) = chip.filter(|c| !c.verified_by_tsp) {
            let pan_d = match PanDigits::new(pan) {
                Ok(p) => p,
                Err(_) => return Decision::rc("14"),
            };
            let Ok(data) = ac_data_from_tags(card.cvn, |t| chip.tags.get(t)) else {
                return Decision::rc("30");
            };
            let inputs = CardInputs { pan: &pan_d, psn: card.psn, atc: chip.atc, un: chip.un };
            match self.hsm.verify_arqc_keeping_keys(&card.cfg.imk_ac, card.cvn, &inputs, &data, &chip.arqc) {
                Ok(v) => *verified = Some(v),
                Err(_) => return Decision::rc("82"),
            }
            // Replay protection: a cryptogram's ATC is accepted once per card.
            let Some(card) = self.cards.get_mut(pan) else { return Decision::rc("14") };
            if card.luk_issued_from.is_some_and(|from| (from..card.luk_batch_first).contains(&chip.atc.0)) {
                return Decision::rc("82");
            }
            if !card.atcs_seen.insert(chip.atc.0) {
                return Decision::rc("82");
            }
        }
        // Cash is never given without the cardholder's PIN (no CVM but online PIN at an ATM):
        // a cash advance without DE 52 is declined as a PIN failure (55, the nearest code of
        // docs/network-spec.md §6), without using up a PIN try.
        if tx == "01" && !req.contains(52) {
            return Decision::rc("55");
        }
        if let Some(block) = req.bytes(52) {
            let block =
                if block.len() == 16 { hex::decode(&block).unwrap_or_default() } else { block.to_vec() };
            let Some(card) = self.cards.get_mut(pan) else { return Decision::rc("14") };
            if card.pin_tries_left == 0 {
                return Decision::rc("75");
            }
            let (Some(pvk), Some(pvv)) = (card.cfg.pvk.clone(), card.cfg.pvv.clone()) else {
                return Decision::rc("55");
            };
            let src = PinSource::Zone { key: &self.zpk, format: PinBlockFormat::Iso0 };
            match self.hsm.verify_pin_pvv(&src, &block, pan, &pvk, card.cfg.pvki, &pvv) {
                Ok(()) => card.pin_tries_left = PIN_TRIES,
                Err(_) => {
                    card.pin_tries_left -= 1;
                    return Decision::rc(if card.pin_tries_left == 0 { "75" } else { "55" });
                }
            }
        }
        let Some(card) = self.cards.get(pan) else { return Decision::rc("14") };
        let account = card.account;
        if tx == "31" {
            let Some(acct) = self.ledger.account(account) else { return Decision::rc("14") };
            let de54 = format!("3002{:0>3}C{:012}", card.cfg.currency, acct.open_to_buy());
            return Decision { code: "00", auth_code: None, de54: Some(de54) };
        }
        // A sale in another currency than the card's: the network's conversion (DE 6 in DE 51, at
        // DE 10) is what the account is charged; its rate is kept for a partial reversal.
        let conversion = match billing(req) {
            Ok(c) => c,
            Err(()) => return Decision::rc("30"),
        };
        let (amount, currency) = match &conversion {
            Some((billed, c)) => (*billed, c.to.numeric.parse().unwrap_or(0)),
            None => (
                req.amount().ok().flatten().map(|a| a.0).unwrap_or(0),
                field(req, 49).and_then(|c| c.parse().ok()).unwrap_or(0),
            ),
        };
        let key = own_key(req);
        match self.ledger.authorize(&key, account, amount, currency) {
            Ok(()) => {
                if let Some((_, c)) = conversion {
                    self.ledger.set_conversion(&key, c);
                }
                // A cash advance tells the ATM what is left, as a balance inquiry would (DE 54):
                // the ATM shows it on its screen after the cash.
                let de54 = (tx == "01")
                    .then(|| {
                        let left = self.ledger.account(account)?.open_to_buy();
                        Some(format!("3002{:0>3}C{left:012}", self.cards.get(pan)?.cfg.currency))
                    })
                    .flatten();
                Decision { code: "00", auth_code: Some(format!("{:06}", random % 1_000_000)), de54 }
            }
            Err(LedgerError::InsufficientFunds) => Decision::rc("51"),
            Err(LedgerError::Currency | LedgerError::ZeroAmount) => Decision::rc("13"),
            Err(LedgerError::NotActive) => Decision::rc("62"),
            Err(LedgerError::Conflict) => Decision::rc("94"),
            Err(_) => Decision::rc("96"),
        }
    }

    fn idv(
        &mut self,
        req: &Message,
        pan: &str,
        tx: &str,
        now_ms: u64,
        now_yymm: &str,
        random: u32,
    ) -> Decision {
        let session = field(req, 37).unwrap_or_else(|| field(req, 11).unwrap_or_default());
        let tags = req.bytes(123).and_then(|b| tlv::TopLevel::parse(b).ok()).unwrap_or_default();
        let text = |tag: u32| tags.get(tag).map(|v| String::from_utf8_lossy(v).into_owned());
        let otp = (tx == "91").then(|| text(0xDF8110).unwrap_or_default());
        // Who asks: the token requestor's id (9F19); without one, the acquiring terminal.
        let requestor = text(0x9F19).or_else(|| field(req, 41)).unwrap_or_default();
        let expiry = Self::expiry_of(req).unwrap_or_default();
        let cvv2 = field(req, 48).and_then(|d| subelement(&d, "92"));
        let ask = IdvAsk {
            pan,
            expiry: &expiry,
            cvv2: cvv2.as_deref(),
            requestor: &requestor,
            session: &session,
            otp: otp.as_deref(),
        };
        self.check_identity(&ask, now_ms, now_yymm, random)
    }

    /// The card's ID&V policy for provisioning `session` (the card's data already matched).
    fn idv_decision(&mut self, pan: &str, session: &str, now_ms: u64, random: u32) -> Decision {
        let Some(card) = self.cards.get(pan) else { return Decision::rc("05") };
        let active = card.cfg.status == "active";
        match crate::idv::decide(
            IdvPolicy::parse(&card.cfg.idv).unwrap_or(IdvPolicy::Decline),
            active,
            session,
        ) {
            crate::idv::IdvDecision::Approved => Decision::rc("00"),
            crate::idv::IdvDecision::Declined => Decision::rc("05"),
            crate::idv::IdvDecision::StepUp { session } => {
                let code = self.otps.issue(&session, now_ms, random);
                let l = self.kept_limits;
                self.sms_outbox.push(Sms { card: mask(pan), otp: code.clone(), at_ms: now_ms });
                expire_list(&mut self.sms_outbox, |s| s.at_ms, now_ms, l.otp_ttl_ms, l.sms.max(1));
                self.otp_outbox.insert(session, code, now_ms, &l);
                Decision::rc("1A")
            }
        }
    }

    /// Tag 91: method 1 → ARPC ‖ ARC (the response code in ASCII); method 2 → ARPC ‖ CSU.
    /// With `verified` (the ARQC verified under this card's keys), no key is derived again.
    fn issuer_auth_data(
        &self,
        pan: &str,
        cvn: Cvn,
        chip: &Chip,
        rc: &str,
        verified: Option<&VerifiedArqc>,
    ) -> Option<Vec<u8>> {
        let card = self.cards.get(pan)?;
        let pan_d = PanDigits::new(pan).ok()?;
        let inputs = CardInputs { pan: &pan_d, psn: card.psn, atc: chip.atc, un: chip.un };
        let arc: [u8; 2] = rc.as_bytes().try_into().ok()?;
        let (input, tail) = match cvn.arpc_method() {
            Some(2) => {
                // CSU: byte 4 bit 8 set when approved (issuer-proprietary, here: approval).
                let csu = [0, 0, 0, if rc == "00" { 0x80 } else { 0x00 }];
                (ArpcInput::Csu { csu, proprietary: vec![] }, csu.to_vec())
            }
            _ => (ArpcInput::Arc(arc), arc.to_vec()),
        };
        let mut out = match verified.filter(|v| v.cvn() == cvn) {
            Some(v) => v.arpc(&input).ok()?,
            None => self.hsm.generate_arpc(&card.cfg.imk_ac, cvn, &inputs, &chip.arqc, &input).ok()?,
        };
        out.extend_from_slice(&tail);
        Some(out)
    }

    fn reverse(&mut self, req: &Message) -> Message {
        let key = original_key(req);
        // DE 95 (ISO 8583:1987): the actual transaction amount first, 12 digits. Absent: a full
        // reversal. Present but unreadable: a format error, never a guess at releasing it all.
        let remaining = match field(req, 95) {
            None => 0,
            Some(d) => match d.get(..12).filter(|a| a.bytes().all(|b| b.is_ascii_digit())) {
                Some(a) => a.parse().unwrap_or(0),
                None => return answer(req, "30"),
            },
        };
        // A sale that was converted: the amount still standing, in the sale's currency, is
        // converted at the rate the sale was booked with.
        let remaining = match self.ledger.booking(&key).and_then(|b| b.conversion) {
            Some(c) if remaining > 0 => match c.rate.convert(remaining, c.from, c.to) {
                Ok(r) => r,
                Err(_) => return answer(req, "13"),
            },
            _ => remaining,
        };
        match self.ledger.reverse(&key, remaining) {
            Ok(_) => answer(req, "00"),
            Err(_) => answer(req, "13"),
        }
    }

    fn advice(&mut self, req: &Message) -> Message {
        let Some(pan) = req.card_number() else { return answer(req, "30") };
        let Some(card) = self.cards.get(&pan) else { return answer(req, "14") };
        let amount = req.amount().ok().flatten().map(|a| a.0).unwrap_or(0);
        match self.ledger.advise(&own_key(req), card.account, amount) {
            Ok(()) => answer(req, "00"),
            Err(_) => answer(req, "94"),
        }
    }

    fn notice(&mut self, req: &Message, now_ms: u64) -> Message {
        let pan = req.card_number().unwrap_or_default();
        self.notices.push(Notice {
            processing_code: field(req, 3).unwrap_or_default(),
            pan_masked: mask(&pan),
            token_data_len: req.field(123).map(|f| f.data.len()).unwrap_or(0),
            at_ms: now_ms,
        });
        let l = self.kept_limits;
        expire_list(&mut self.notices, |n| n.at_ms, now_ms, l.notices_ttl_ms, l.notices.max(1));
        answer(req, "00")
    }
}

/// The network management function (DE 70): sign-on 001, sign-off 002 and echo 301 are
/// acknowledged; anything else (key exchange 161 included: the simulator's keys are static) is
/// an invalid transaction.
fn network_management(req: &Message) -> &'static str {
    match field(req, 70).as_deref() {
        Some("001" | "002" | "301") => "00",
        _ => "12",
    }
}

/// `Some("30")` when a request lacks an element its class needs (docs/network-spec.md §2–4):
/// DE 11 always; DE 70 for network management; for authorizations and financial requests DE 3,
/// the PAN (DE 2 or 35) and, unless it is token ID&V, DE 4 and DE 49.
fn format_error(req: &Message) -> Option<&'static str> {
    let mti = req.mti();
    let has = |de: u16| req.contains(de);
    let ok = has(11)
        && match (mti.class(), mti.function()) {
            (8, _) => has(70),
            (1 | 2, 0) => {
                let idv = field(req, 3).is_some_and(|p| p.starts_with("90") || p.starts_with("91"));
                has(3) && (has(2) || has(35)) && (idv || (has(4) && has(49)))
            }
            (1, 2) => has(4) && (has(2) || has(35)),
            _ => true,
        };
    (!ok).then_some("30")
}

struct Decision {
    code: &'static str,
    auth_code: Option<String>,
    de54: Option<String>,
}

impl Decision {
    fn rc(code: &'static str) -> Self {
        Decision { code, auth_code: None, de54: None }
    }
}

/// Whether the request says the token service verified its (token) cryptogram: DE 123 tag
/// DF8106 = "1" (docs/network-spec.md §5). Its word only: see [`Origin`] for when it is believed.
pub fn tsp_says_verified(req: &Message) -> bool {
    req.field(123)
        .and_then(|f| {
            codecs::tlv::decode_lenient(f.data)
                .ok()
                .map(|n| n.iter().any(|x| x.tag().value() == 0xDF8106 && x.value() == b"1"))
        })
        .unwrap_or(false)
}

/// The answer to `req` with DE 39 = `rc`: the response MTI and the echoed elements.
pub fn answer(req: &Message, rc: &str) -> Message {
    codecs::iso8583::reply::response(req, rc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cards::{TestIssuer, generate_test_issuer};
    use codecs::iso8583::Spec;
    use crypto::keystore::Lmk;
    use testkit::TestRng;

    const T0: u64 = 1_795_000_000_000;

    fn issuer() -> (Issuer, TestIssuer) {
        let lmk = Lmk::from_hex(&"0123456789ABCDEF".repeat(4)).expect("test LMK");
        let test =
            generate_test_issuer(4, lmk.clone(), "2912", &mut TestRng::seeded(7).filler()).expect("cards");
        let ks = crypto::keystore::Keystore::from_toml(lmk, &test.keystore.to_toml()).expect("keystore");
        let hsm = Arc::new(crypto::hsm::SoftHsm::new(ks, TestRng::seeded(9).source()));
        (Issuer::new(hsm, crate::cards::ZPK_NAME, &test.cards), test)
    }

    fn spec() -> Arc<Spec> {
        Spec::builtin("network").expect("network spec").clone()
    }

    fn call(i: &mut Issuer, m: &Message, now_ms: u64) -> String {
        let a = i.handle(m, Origin::Unauthenticated, now_ms, "2611", 123_456).expect("an answer");
        a.text(39).map(|c| c.into_owned()).unwrap_or_default()
    }

    /// A step-up ID&V request for card 1 (its policy is `otp`) in provisioning session `rrn`.
    fn step_up(t: &TestIssuer, rrn: &str) -> Message {
        let c = &t.clear[1];
        let mut m = Message::new(spec(), "0100".parse().expect("mti"));
        m.set_text(2, &c.pan).expect("DE 2");
        m.set_text(3, "900000").expect("DE 3");
        m.set_text(11, "000001").expect("DE 11");
        m.set_text(14, &c.expiry).expect("DE 14");
        m.set_text(37, rrn).expect("DE 37");
        let mut tok = tlv::TlvBuilder::new();
        tok.primitive(tlv::Tag::new(0x9F19), b"40010030273").expect("tlv");
        m.set_bytes(123, tok.finish().freeze()).expect("DE 123");
        m
    }

    fn notice(t: &TestIssuer) -> Message {
        let mut m = Message::new(spec(), "0620".parse().expect("mti"));
        m.set_text(2, &t.clear[0].pan).expect("DE 2");
        m.set_text(3, "920000").expect("DE 3");
        m.set_text(11, "000002").expect("DE 11");
        m
    }

    fn echo() -> Message {
        let mut m = Message::new(spec(), "0800".parse().expect("mti"));
        m.set_text(11, "000003").expect("DE 11");
        m.set_text(70, "301").expect("DE 70");
        m
    }

    #[test]
    fn chip_data_naming_a_tag_twice_is_a_format_error_and_uses_nothing() {
        let (mut i, t) = issuer();
        let card = &t.clear[0];
        let purchase = |stan, atc| {
            crate::testing::chip_request(&spec(), card, &crate::testing::Tx::purchase(stan, 100, atc))
        };
        // The card's own data with a second 9F02 after it (another amount): refused whole.
        let mut twice = purchase(1, 1);
        let mut icc = twice.icc_data().expect("DE 55").expect("present").to_vec();
        icc.extend_from_slice(&[0x9F, 0x02, 0x06, 0x00, 0x00, 0x00, 0x00, 0x99, 0x99]);
        twice.set_icc_data(&icc).expect("DE 55");
        assert_eq!(call(&mut i, &twice, T0), "30");
        // Its ATC was not used up, nor its amount booked: the untouched request is approved.
        assert_eq!(call(&mut i, &purchase(2, 1), T0), "00");
    }

    #[test]
    fn texted_otps_go_with_their_lifetime_and_notices_after_theirs() {
        let (mut i, t) = issuer();
        let l = i.kept_limits();
        assert_eq!(call(&mut i, &step_up(&t, "000000000001"), T0), "1A");
        assert_eq!(call(&mut i, &notice(&t), T0), "00");
        assert_eq!(i.kept_sizes(), (1, 1, 1));
        assert!(i.otp_outbox.get("000000000001").is_some());
        // At the OTP's last moment both outboxes still hold it.
        assert_eq!(call(&mut i, &echo(), T0 + l.otp_ttl_ms), "00");
        assert_eq!(i.kept_sizes(), (1, 1, 1));
        // Past it, any request sweeps it out (the OTP book too); the notice stays its hour.
        assert_eq!(call(&mut i, &echo(), T0 + l.otp_ttl_ms + 1), "00");
        assert_eq!(i.kept_sizes(), (1, 0, 0));
        assert_eq!(i.idv_tracked().2, 0, "the expired OTP left the book");
        assert_eq!(call(&mut i, &echo(), T0 + l.notices_ttl_ms), "00");
        assert_eq!(i.kept_sizes().0, 1);
        assert_eq!(call(&mut i, &echo(), T0 + l.notices_ttl_ms + 1), "00");
        assert_eq!(i.kept_sizes(), (0, 0, 0));
    }

    #[test]
    fn a_flood_of_step_ups_and_notices_stays_at_the_bounds_and_keeps_the_newest() {
        let (mut i, t) = issuer();
        let small = KeptLimits { notices: 5, sms: 4, otps: 3, ..KeptLimits::default() };
        i.limit_kept(small, T0);
        for n in 0..50u64 {
            assert_eq!(call(&mut i, &step_up(&t, &format!("{n:012}")), T0 + n), "1A");
            assert_eq!(call(&mut i, &notice(&t), T0 + n), "00");
            let (notices, sms, otps) = i.kept_sizes();
            assert!(notices <= 5 && sms <= 4 && otps <= 3, "{notices} {sms} {otps} after {n}");
        }
        assert_eq!(i.kept_sizes(), (5, 4, 3));
        assert!(i.otp_outbox.get("000000000049").is_some(), "the newest OTP is kept");
        assert!(i.otp_outbox.get("000000000046").is_none(), "the oldest made room");
        assert_eq!(i.notices.last().map(|n| n.at_ms), Some(T0 + 49));
        // Tighter bounds take effect at once.
        i.limit_kept(KeptLimits { notices: 1, sms: 1, otps: 1, ..small }, T0 + 50);
        assert_eq!(i.kept_sizes(), (1, 1, 1));
    }

    #[test]
    fn kept_limits_from_the_configuration_keep_the_otp_lifetime_of_the_idv_limits() {
        let parsed: KeptLimits = toml::from_str("notices = 2\nsms = 3\n").expect("[kept]");
        assert_eq!(parsed, KeptLimits { notices: 2, sms: 3, ..KeptLimits::default() });
        let (i, t) = issuer();
        let mut i = i
            .with_idv_limits(IdvLimits { otp_ttl_ms: 1_000, ..IdvLimits::default() })
            .with_kept_limits(parsed);
        assert_eq!(
            i.kept_limits(),
            KeptLimits { notices: 2, sms: 3, otp_ttl_ms: 1_000, ..KeptLimits::default() }
        );
        for n in 0..5u64 {
            assert_eq!(call(&mut i, &step_up(&t, &format!("{n:012}")), T0 + n), "1A");
            assert_eq!(call(&mut i, &notice(&t), T0 + n), "00");
        }
        assert_eq!(i.kept_sizes(), (2, 3, 5));
        // The texts and OTPs go with the OTP's lifetime of 1 s; the notices stay their hour.
        assert_eq!(call(&mut i, &echo(), T0 + 4 + 1_001), "00");
        assert_eq!(i.kept_sizes(), (2, 0, 0));
    }

    #[test]
    fn kept_limits_out_of_range_are_named_all_at_once() {
        assert_eq!(KeptLimits::default().validate(), Ok(()));
        let bad = KeptLimits { notices: 0, otps: KEPT_MAX + 1, notices_ttl_ms: 0, ..KeptLimits::default() };
        let e = bad.validate().expect_err("out of range");
        assert!(e.contains("kept.notices must be from 1 to 100000 (it is 0)"), "{e}");
        assert!(e.contains("kept.otps must be from 1 to 100000 (it is 100001)"), "{e}");
        assert!(e.contains("kept.notices_ttl_ms must be at least 1"), "{e}");
        assert!(!e.contains("kept.sms"), "{e}");
        // An OTP's age is the ID&V's lifetime, not a kept setting.
        let e = toml::from_str::<KeptLimits>("otp_ttl_ms = 5\n").expect_err("not a [kept] key");
        assert!(e.to_string().contains("unknown field `otp_ttl_ms`"), "{e}");
    }

    #[test]
    fn the_otp_book_forgets_expired_otps() {
        let mut b = OtpBook::new(1_000, 3);
        b.issue("a", 0, 1);
        b.issue("b", 500, 2);
        b.expire(1_000);
        assert_eq!(b.len(), 2, "not past its lifetime yet");
        b.expire(1_001);
        assert_eq!((b.len(), b.contains("a"), b.contains("b")), (1, false, true));
        b.expire(1_501);
        assert!(b.is_empty());
    }
}
