//! The ATM's cassettes: notes of one denomination each, and the dispense plan — how many notes
//! of each cassette make an amount. An amount the notes cannot make (not a sum of the
//! denominations, or more notes than the cassettes hold) is refused before the card is even
//! tapped, so the ATM never asks the issuer for cash it cannot give.

use serde::{Deserialize, Serialize};

/// One cassette: its note value in minor units and the notes left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cassette {
    pub denomination: u64,
    pub count: u32,
}

/// The cassettes of an ATM, in the order they are loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cassettes(pub Vec<Cassette>);

/// Notes to take from each cassette (same order as [`Cassettes`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan(pub Vec<u32>);

/// Why an amount cannot be dispensed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispenseError {
    #[error("amount {amount}: the notes left ({notes}) cannot make it")]
    CannotMake { amount: u64, notes: String },
    #[error("the plan does not fit the cassettes")]
    PlanMismatch,
}

/// The depth-first search gives up after this many steps (an amount that needs more is refused).
const SEARCH_STEPS: u32 = 200_000;

impl Cassettes {
    /// The test ATMs of INTERFACES.md §5: notes of 10000 minor units worth 10,000,000.
    pub fn test_atm() -> Self {
        Cassettes(vec![Cassette { denomination: 10_000, count: 1_000 }])
    }

    /// Cash held, in minor units.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|c| c.denomination * u64::from(c.count)).sum()
    }

    fn describe(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|c| format!("{}x{}", c.count, c.denomination)).collect();
        parts.join(", ")
    }

    /// The plan for `amount`: the fewest large notes first, backtracking when the remainder cannot
    /// be made with the smaller ones.
    pub fn plan(&self, amount: u64) -> Result<Plan, DispenseError> {
        let mut order: Vec<usize> = (0..self.0.len()).filter(|i| self.0[*i].denomination > 0).collect();
        order.sort_by(|a, b| self.0[*b].denomination.cmp(&self.0[*a].denomination));
        let mut counts = vec![0u32; self.0.len()];
        let mut steps = 0u32;
        if amount > 0 && self.search(&order, 0, amount, &mut counts, &mut steps) {
            Ok(Plan(counts))
        } else {
            Err(DispenseError::CannotMake { amount, notes: self.describe() })
        }
    }

    fn search(&self, order: &[usize], at: usize, left: u64, counts: &mut [u32], steps: &mut u32) -> bool {
        if left == 0 {
            return true;
        }
        let Some(&i) = order.get(at) else { return false };
        let c = self.0[i];
        let most = (left / c.denomination).min(u64::from(c.count)) as u32;
        for n in (0..=most).rev() {
            *steps += 1;
            if *steps > SEARCH_STEPS {
                return false;
            }
            counts[i] = n;
            if self.search(order, at + 1, left - u64::from(n) * c.denomination, counts, steps) {
                return true;
            }
        }
        counts[i] = 0;
        false
    }

    /// The value of `plan`.
    pub fn value(&self, plan: &Plan) -> u64 {
        self.0.iter().zip(&plan.0).map(|(c, n)| c.denomination * u64::from(*n)).sum()
    }

    /// Takes the notes of `plan` out (they left the ATM).
    pub fn take(&mut self, plan: &Plan) -> Result<u64, DispenseError> {
        if plan.0.len() != self.0.len() || self.0.iter().zip(&plan.0).any(|(c, n)| *n > c.count) {
            return Err(DispenseError::PlanMismatch);
        }
        for (c, n) in self.0.iter_mut().zip(&plan.0) {
            c.count -= n;
        }
        Ok(self.value(plan))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mixed() -> Cassettes {
        Cassettes(vec![
            Cassette { denomination: 2_000, count: 10 },
            Cassette { denomination: 5_000, count: 3 },
            Cassette { denomination: 10_000, count: 2 },
        ])
    }

    #[test]
    fn plans_large_notes_first_and_backtracks() {
        let c = mixed();
        assert_eq!(c.plan(30_000).unwrap(), Plan(vec![0, 2, 2]));
        // 6000: no 5000 can be used (1000 is left over): three 2000s.
        assert_eq!(c.plan(6_000).unwrap(), Plan(vec![3, 0, 0]));
        assert_eq!(c.value(&c.plan(41_000).unwrap()), 41_000);
        assert!(c.plan(1_000).is_err(), "no note makes 1000");
        assert!(c.plan(c.total() + 2_000).is_err(), "more than the cassettes hold");
        assert!(c.plan(61_000).is_err(), "13 notes of 2000 needed, 10 held");
        assert!(c.plan(0).is_err());
    }

    #[test]
    fn take_debits_the_counts() {
        let mut c = Cassettes::test_atm();
        assert_eq!(c.total(), 10_000_000);
        let p = c.plan(200_000).unwrap();
        assert_eq!(c.take(&p).unwrap(), 200_000);
        assert_eq!(c.0[0].count, 980);
        assert_eq!(c.take(&Plan(vec![981])), Err(DispenseError::PlanMismatch));
        assert!(c.plan(155_000).is_err(), "not a multiple of the note");
    }
}
