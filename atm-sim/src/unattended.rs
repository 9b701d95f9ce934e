//! Unattended mode, for the load generator: one ATM running cash advance after cash advance over
//! a set of cards, with faults injected by a rule, and a tally at the end — including the money
//! check the ATM can make on its own: the cash that left equals the sum of what was dispensed.

use crypto::pin::Pin;
use emv::card::Contactless;

use crate::atm::{Atm, Fault, Outcome, ReversalKind};
use crate::link::SwitchLink;

/// A card the unattended ATM taps, and its PIN.
pub struct Cardholder {
    pub card: Box<dyn Contactless + Send>,
    pub pin: Pin,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub attempted: u64,
    pub approved: u64,
    pub declined: u64,
    pub no_answer: u64,
    /// Transactions that could not run (card, link, state).
    pub errors: u64,
    pub reversals: u64,
    pub reversals_acknowledged: u64,
    pub requested_minor: u64,
    pub dispensed_minor: u64,
    /// Cash held before and after the run.
    pub cash_before_minor: u64,
    pub cash_after_minor: u64,
}

/// Runs `n` cash advances of `amount`, card after card round-robin, the fault of each chosen by
/// `fault(i)`. Stops early only if there are no cards.
pub fn run(
    atm: &mut Atm,
    link: &mut SwitchLink,
    cards: &mut [Cardholder],
    n: u64,
    amount: u64,
    fault: impl Fn(u64) -> Fault,
) -> Report {
    let mut r = Report { cash_before_minor: atm.cassettes.total(), ..Report::default() };
    if cards.is_empty() {
        r.cash_after_minor = r.cash_before_minor;
        return r;
    }
    for i in 0..n {
        let Some(ch) = cards.get_mut((i % cards.len() as u64) as usize) else { break };
        r.attempted += 1;
        match atm.cash_advance(link, ch.card.as_mut(), amount, &ch.pin, fault(i)) {
            Ok(o) => tally(&mut r, &o),
            Err(_) => r.errors += 1,
        }
    }
    r.cash_after_minor = atm.cassettes.total();
    r
}

fn tally(r: &mut Report, o: &Outcome) {
    r.requested_minor += o.requested;
    r.dispensed_minor += o.dispensed;
    match o.response_code.as_deref() {
        None => r.no_answer += 1,
        Some("00") => r.approved += 1,
        Some(_) => r.declined += 1,
    }
    if o.reversal != ReversalKind::None {
        r.reversals += 1;
        if o.reversal_acknowledged {
            r.reversals_acknowledged += 1;
        }
    }
}
