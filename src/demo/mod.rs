//! The whole mission in one run (`paynet demo`, MISSION.md "What done means"): the network on
//! 127.0.0.1 — switch, issuer simulator, token service, the phone's providers — and, for each of
//! the five provisioning flows (`issuer-se`, `tsm-se-pan`, `tsm-se-token`, `hce`, `wallet`), a
//! phone provisioned by real code that then pays by tap at a contactless POS, pays online (in-app)
//! and takes a cash advance at an ATM. Then one declined case per reason the network knows.
//!
//! Every step is reported as it happens, "party → party: what", with PANs and tokens masked
//! (first six, last four) and never a PIN or a key, to an output function the caller gives (the
//! binary prints it, the tests capture it). What is reported is what was observed: the answer's
//! DE 39, the phone's own check of the ARPC (tag 91, EMV Book 2 §8.2), the issuer's booking on the
//! card's account, the ATM's dispense and the PAN the terminal read (a token in the token BIN
//! range 489537 for the tokenized models).
//!
//! The runs are functions of a [`World`] so that the end-to-end tests (`tests/e2e.rs`) run the
//! same flows one model × channel at a time. ATM transactions are blocking I/O (`atm-sim`): the
//! runtime must be a multi-thread one (they run under `block_in_place`).
//!
//! * `world` — the running network and the terminals' connections, the ATM and its state folder;
//! * `runs` — provisioning each model's phone, and paying on each channel;
//! * `declines` — one declined case per reason;
//! * `report` — the runs' and declines' records, the report JSON and the closing table.

mod declines;
mod report;
mod runs;
mod world;

pub use declines::declines;
pub use report::{Channel, Decline, Report, Run};
pub use runs::{ProvisionedPhone, card_of, pay, provision, runs, tokenized};
pub use world::World;

use codecs::iso8583::Message;
use emv::kernel::{issuer_authenticate, tag91};

/// Where the demo's steps go: one line at a time, as they happen.
pub type Out<'a> = &'a mut (dyn FnMut(&str) + Send);

/// The network's token BIN range (never a card BIN; `network::token_ranges`).
pub const TOKEN_BIN: &str = "489537";

/// Test cards the demo's network is started with: one per model, and the declines' own.
pub const CARDS: usize = 9;

fn random4() -> [u8; 4] {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    b
}

fn now() -> atm_sim::Utc {
    atm_sim::Utc::from_ms(atm_sim::now_ms())
}

/// Test cards billed in New Taiwan dollars (`network::Options::twd_cards`): the `tsm-se-pan` and
/// `hce` phones' cards and the declines' SE phone's; the others are billed in EUR.
pub const TWD_CARDS: [usize; 3] = [2, 4, 5];

/// The demo's merchants and ATM are in Taiwan (country 158): they sell in TWD (901).
pub const MERCHANT_CURRENCY: u16 = 901;
pub const MERCHANT_COUNTRY: u16 = 158;

/// Minor units of the currency with ISO 4217 numeric code `numeric`, grouped: `TWD 1,234.50`;
/// the decimal point placed by the currency's exponent (`codecs::currency`).
pub fn money(numeric: &str, minor: u64) -> String {
    let (alpha, exponent) =
        codecs::currency::by_numeric(numeric).map_or((numeric, 0), |c| (c.alpha, c.exponent));
    let scale = 10u64.pow(u32::from(exponent));
    let units = (minor / scale).to_string();
    let mut grouped = String::new();
    for (i, c) in units.chars().enumerate() {
        if i > 0 && (units.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if exponent == 0 {
        format!("{alpha} {grouped}")
    } else {
        format!("{alpha} {grouped}.{:0width$}", minor % scale, width = usize::from(exponent))
    }
}

/// Minor units as euros: `EUR 1,234.50`.
pub fn eur(minor: u64) -> String {
    money("978", minor)
}

/// Minor units as New Taiwan dollars: `TWD 1,234.50`.
pub fn twd(minor: u64) -> String {
    money("901", minor)
}

fn say(out: Out<'_>, from: &str, to: &str, what: &str) {
    out(&format!("  {from} → {to}: {what}"));
}

/// A tag's value in chip data (DE 55).
fn tag_of(icc: &[u8], t: u32) -> Option<Vec<u8>> {
    let nodes = codecs::tlv::decode_lenient(icc).ok()?;
    codecs::tlv::find(&nodes, codecs::tlv::Tag::new(t)).map(|n| n.value().to_vec())
}

fn atc_of(icc: &[u8]) -> String {
    match tag_of(icc, 0x9F36) {
        Some(a) if a.len() == 2 => u16::from_be_bytes([a[0], a[1]]).to_string(),
        _ => "?".into(),
    }
}

fn rc_of(m: &Message) -> String {
    m.text(39).map(|c| c.into_owned()).unwrap_or_default()
}

/// The phone's check of the answer's ARPC (tag 91 in DE 55), EXTERNAL AUTHENTICATE.
fn arpc_check(phone: &mut dyn emv::card::Contactless, rsp: &Message) -> Option<bool> {
    let icc = rsp.icc_data().ok().flatten()?;
    let t91 = tag91(&icc)?;
    Some(issuer_authenticate(phone, &t91))
}

fn arpc_words(a: Option<bool>) -> &'static str {
    match a {
        Some(true) => "ARPC (tag 91) checked by the phone: accepted",
        Some(false) => "ARPC (tag 91) checked by the phone: REFUSED",
        None => "no ARPC in the answer",
    }
}

/// Everything: the fifteen runs, then the declines.
pub async fn run_all(w: &mut World, out: Out<'_>) -> Report {
    let runs = runs(w, out).await;
    let declines = declines(w, out).await;
    Report::new(runs, declines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn euros_are_grouped() {
        assert_eq!(eur(0), "EUR 0.00");
        assert_eq!(eur(2_350), "EUR 23.50");
        assert_eq!(eur(4_972_660), "EUR 49,726.60");
        assert_eq!(eur(123_456_789), "EUR 1,234,567.89");
        assert_eq!(twd(100_000), "TWD 1,000.00");
        assert_eq!(money("392", 1_234_567), "JPY 1,234,567");
    }
}
