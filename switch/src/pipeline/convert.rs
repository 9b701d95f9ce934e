//! Convert: a card billed in another currency than the terminal sells in gets, towards its issuer,
//! the cardholder billing amount (DE 6), the rate (DE 10) and the billing currency (DE 51); the
//! issuer books DE 6. The billing currency is the card's BIN range's (`[[route]]
//! billing_currency`), the rate the configured `[[rate]]` from the transaction currency; a pair
//! without a rate is declined 13 and goes nowhere. The terminal's answer shows both amounts.
//!
//! Reversals and advices are not converted here: they name their original, and the issuer
//! converts a partial amount at the rate it booked the original with (DE 10 of the original).

use codecs::iso8583::{Message, ResponseCode};

use super::{Decline, Pipeline, Stage, Txn};

/// DE 6, 10 and 51 on `sent` when the card is billed in another currency.
pub fn convert(p: &Pipeline, txn: &Txn, sent: &mut Message) -> Result<(), Decline> {
    let Some(pan) = sent.card_number() else { return Ok(()) };
    let table = p.routes.read().unwrap_or_else(|e| e.into_inner()).clone();
    let conversion = table
        .conversion(pan.as_bytes(), &txn.currency)
        .map_err(|why| Decline::new(ResponseCode::INVALID_AMOUNT, Stage::Convert, why))?;
    let Some(c) = conversion else { return Ok(()) };
    let billing = c.rate.convert(txn.amount, c.from, c.to).map_err(|e| {
        Decline::new(
            ResponseCode::INVALID_AMOUNT,
            Stage::Convert,
            format!("{} to {}: {e}", c.from.alpha, c.to.alpha),
        )
    })?;
    let set = |m: &mut Message, de: u16, v: &str| {
        m.set_text(de, v).map_err(|e| {
            Decline::new(
                ResponseCode::FORMAT_ERROR,
                Stage::Convert,
                format!("the issuer's spec cannot carry DE {de}: {e}"),
            )
        })
    };
    set(sent, 6, &format!("{billing:012}"))?;
    set(sent, 10, &c.rate.de10())?;
    set(sent, 51, c.to.numeric)?;
    Ok(())
}

/// The terminal's answer shows the billing amount, rate and currency the issuer was sent (for
/// the receipt and the ATM screen), when there were any and its spec carries them.
pub fn show_billing(sent: &Message, answer: &mut Message) {
    for de in [6u16, 10, 51] {
        if let Some(v) = sent.text(de) {
            let _ = answer.set_text(de, &v);
        }
    }
}
