//! The detokenize stage's contract, between the switch's pipeline (which calls it) and the token
//! service (which implements it: [`crate::VaultDetokenizer`]). A request whose PAN is a payment
//! token is rewritten towards the issuer with the real PAN (DE 2, 14, 35) and the token data
//! (DE 123); the answer to the acquirer carries the token again. A switch without a token service
//! passes every request through unchanged ([`NoTokens`]).

use codecs::iso8583::Message;

/// What detokenization did, to be undone on the answer.
#[derive(Debug, Clone, Default)]
pub struct TokenContext {
    /// The elements of the acquirer's request that were replaced (DE, its text form), put back on
    /// the answer.
    pub restore: Vec<(u16, String)>,
    /// The token IMK (keystore name) the token's cryptogram was verified with: the answer's ARPC
    /// (tag 91) is made with it, since the device holds token keys, not the card's.
    pub arpc_imk: Option<String>,
    /// The acquirer's request as it came (the token's chip data), for that ARPC.
    pub original: Option<Box<codecs::iso8583::Message>>,
    /// The ATC of the token cryptogram that was verified: the pipeline accepts it once, in the
    /// token's durable ATC window.
    pub atc: Option<u16>,
}

/// A refusal by the detokenize stage: the response code to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal(pub &'static str);

pub trait Detokenizer: Send + Sync + 'static {
    /// Rewrites `req` in place when its PAN is a token; `Ok(None)` when it is not.
    fn detokenize(&self, req: &mut Message, now_ms: u64) -> Result<Option<TokenContext>, Refusal>;

    /// Rewrites a reversal or advice (0400, 0420) whose PAN is a token with the card's PAN
    /// towards the issuer; no cryptogram or status check (it puts right money that already
    /// moved). `Ok(None)` when the PAN is not a token.
    fn detokenize_reference(&self, _req: &mut Message) -> Result<Option<TokenContext>, Refusal> {
        Ok(None)
    }
}

/// No token service: every PAN is a card PAN.
pub struct NoTokens;

impl Detokenizer for NoTokens {
    fn detokenize(&self, _req: &mut Message, _now_ms: u64) -> Result<Option<TokenContext>, Refusal> {
        Ok(None)
    }
}

/// Puts the acquirer's elements back on an answer.
pub fn retokenize(rsp: &mut Message, ctx: &TokenContext) {
    for (de, text) in &ctx.restore {
        if rsp.contains(*de) {
            let _ = rsp.set_text(*de, text);
        }
    }
}
