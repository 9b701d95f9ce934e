//! Detokenize: a PAN in one of the network's token ranges is a token. The token service checks it
//! (status, expiry, domain controls, its cryptogram with the token keys, limited-use keys) and
//! gives the card it stands for; the request towards the issuer carries the card's PAN and the
//! token data, the acquirer's own request keeps the token. The token cryptogram's ATC is accepted
//! once, in the durable window kept for the token.

use codecs::iso8583::{Message, ResponseCode};

use super::{Decline, Pipeline, Stage, Txn};
use crate::detokenize::TokenContext;
use crate::state::Claim;

/// The request as it goes on towards the issuer, what detokenization did, and the token ATC
/// claimed in a shared store.
pub fn detokenize(
    p: &Pipeline,
    txn: &Txn,
    now_ms: u64,
) -> Result<(Message, Option<TokenContext>, Option<Claim>), Decline> {
    let mut sent = txn.msg.clone();
    let token = p.detokenizer.detokenize(&mut sent, now_ms).map_err(|r| {
        let code = ResponseCode::parse(r.0).unwrap_or(ResponseCode::SYSTEM_ERROR);
        Decline::new(code, Stage::Detokenize, format!("the token service refused the token ({})", r.0))
    })?;
    let mut claim = None;
    if let Some(ctx) = &token
        && let (Some(atc), Some(card)) = (ctx.atc, txn.card.as_deref())
    {
        claim = p.state.accept_atc(card, u32::from(atc), crate::state::WINDOW, now_ms).map_err(|why| {
            Decline::new(
                ResponseCode::CRYPTOGRAM_FAILURE,
                Stage::Detokenize,
                format!("token ATC {atc}: {why:?}"),
            )
        })?;
    }
    Ok((sent, token, claim))
}
