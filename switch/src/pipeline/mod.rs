//! The pipeline of one acquirer request, with no I/O (ARCHITECTURE.md, the hot path).
//!
//! [`Pipeline::begin`] takes a decoded request, where it came from and the time, and returns a
//! [`Step`]: an answer with its effects ([`Done`]), or a request to forward to an issuer
//! ([`Forward`]), whose link result goes back through [`Pipeline::complete`]. The listener and the
//! issuer links (the async shell, `engine`) do the I/O and carry the effects out: messages owed to
//! issuers made durable, the decision state synced, the journal row written, before the answer
//! leaves.
//!
//! The stages, one file each, in order: [`identify`] (which acquirer and terminal), [`sanitize`]
//! (what only the network may set), [`validate`] (format, and chip data agreeing with the
//! message), [`dedupe`] (a repeat of the same transaction gets the same answer), [`detokenize`],
//! [`route`], [`verify`] (cryptogram on the issuer's behalf, durable ATC window, PIN
//! translation), then the issuer or [`standin`], and [`respond`] (the answer to the acquirer,
//! which never carries a card's PAN for a token). Reversals and advices go through
//! [`original`] instead of the authorization stages: only against an original this switch
//! answered for the same acquirer and terminal. A refusal is a [`Decline`] naming its stage; it
//! forwards nothing and books nothing.

pub mod chip;
pub mod convert;
pub mod dedupe;
pub mod detokenize;
pub mod fixture;
pub mod identify;
pub mod original;
pub mod respond;
pub mod route;
pub mod sanitize;
pub mod standin;
pub mod validate;
pub mod verify;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use codecs::iso8583::{Message, Mti, Pan, ResponseCode, Spec};

use crate::dedupe::{DuplicateCache, TransmissionKey};
use crate::detokenize::{Detokenizer, TokenContext};
use crate::issuer::LinkError;
use crate::macing::LinkMac;
use crate::registry::{Identity, Peer, Registry};
use crate::route::RouteTable;
use crate::standin::StandIn;
use crate::state::StateBook;
use crate::store::SafKind;

pub use chip::Chip;

/// The stages, for declines, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Identify,
    Sanitize,
    Validate,
    Dedupe,
    Detokenize,
    Route,
    Verify,
    Issuer,
    StandIn,
    Convert,
    Original,
    Respond,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Identify => "identify",
            Stage::Sanitize => "sanitize",
            Stage::Validate => "validate",
            Stage::Dedupe => "dedupe",
            Stage::Detokenize => "detokenize",
            Stage::Route => "route",
            Stage::Verify => "verify",
            Stage::Issuer => "issuer",
            Stage::StandIn => "stand-in",
            Stage::Convert => "convert",
            Stage::Original => "original",
            Stage::Respond => "respond",
        }
    }
}

/// A refusal: the response code, the stage, and why (for the log: never a PAN, PIN or key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decline {
    pub code: ResponseCode,
    pub stage: Stage,
    pub reason: String,
}

impl Decline {
    pub fn new(code: ResponseCode, stage: Stage, reason: impl Into<String>) -> Decline {
        Decline { code, stage, reason: reason.into() }
    }
}

impl fmt::Display for Decline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.code.as_str(), self.stage.as_str(), self.reason)
    }
}

/// Where a request came from: the listener.
pub struct ListenerCtx {
    pub name: Arc<str>,
    pub spec: Arc<Spec>,
    /// The BDK (keystore name) of this listener's DUKPT terminals.
    pub bdk: Option<String>,
}

/// What kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 0100 / 0200.
    Authorization,
    /// 0400 (reversal request) and 0420 (reversal advice).
    Reversal,
    /// 0120 (authorization advice).
    Advice,
    /// 0800.
    NetworkManagement,
    Other,
}

/// A request parsed once, at the edge, into what the stages read.
pub struct Txn {
    /// The acquirer's request after sanitize: answers are built from it, never from what went
    /// to the issuer.
    pub msg: Message,
    pub identity: Identity,
    pub class: Class,
    pub mti: Mti,
    pub tid: String,
    pub stan: String,
    /// DE 7.
    pub transmitted: String,
    /// DE 2, else the PAN of DE 35: as the acquirer sent it (a token stays a token).
    pub pan: Option<Pan>,
    /// Keyed fingerprint of `pan`.
    pub card: Option<String>,
    pub amount: u64,
    pub currency: String,
    pub processing_code: String,
    /// The listener's DUKPT BDK (keystore name), for PIN blocks.
    pub bdk: Option<String>,
    /// DE 22, three digits.
    pub entry: Option<String>,
    pub chip: Option<Chip>,
}

/// The MTI a repeat (origin 1: 0401, 0421, 0101...) repeats: the same transaction under the same
/// keys as its first transmission, never a second one.
pub fn first_mti(mti: Mti) -> Mti {
    if mti.origin() != 1 {
        return mti;
    }
    let mut d = *mti.digits();
    d[3] = b'0';
    Mti::from_digits(&d).unwrap_or(mti)
}

impl Txn {
    /// The MTI this transaction is keyed under: its first transmission's.
    pub fn first_mti(&self) -> Mti {
        first_mti(self.mti)
    }

    /// The PAN entry mode: DE 22 positions 1–2.
    pub fn pan_entry(&self) -> &str {
        self.entry.as_deref().and_then(|e| e.get(..2)).unwrap_or("")
    }
}

/// A message owed to an issuer, to be made durable (store-and-forward) before the answer leaves.
pub struct Owed {
    pub issuer: Arc<str>,
    pub kind: SafKind,
    pub msg: Message,
    /// When it cannot be made durable, the acquirer is answered this instead (an acquirer's
    /// reversal or advice is acknowledged only once it is safe).
    pub on_failure: Option<ResponseCode>,
    /// Offered to the issuer at once (an acquirer's 0400), made durable only if not taken.
    pub online_first: bool,
}

/// An answer and what must happen with it.
pub struct Done {
    pub answer: Message,
    /// The acquirer's request (sanitized), for the journal.
    pub request: Option<Message>,
    /// The route or stage that decided (metrics, journal).
    pub route: String,
    pub decline: Option<Decline>,
    pub owed: Vec<Owed>,
    /// The terminal's own MAC key, to sign the answer with.
    pub sign: Option<LinkMac>,
    /// The duplicate-cache entry this answer completes.
    pub dedupe: Option<TransmissionKey>,
    /// The transmission this node claimed in a shared store: its answer is recorded there too.
    pub transmission: Option<String>,
    /// What undoes the issuer's approval when this answer cannot be given after all (its journal
    /// row did not become durable, so the terminal hears 96): a reversal of what was sent.
    pub undo: Option<Undo>,
}

/// An approval that may have to be undone: the request as its issuer received it. The reversal
/// is built only when it is needed (rarely: the journal refusing the approval's row).
pub struct Undo {
    pub issuer: Arc<str>,
    pub sent: Message,
}

impl Undo {
    /// The reversal (0420, DE 39 `68`) owed to the issuer, offered to it at once.
    pub fn reversal(&self) -> Owed {
        Owed {
            issuer: self.issuer.clone(),
            kind: SafKind::Reversal,
            msg: crate::wire::reversal_for(&self.sent, ResponseCode::TOO_LATE.as_str()),
            on_failure: None,
            online_first: true,
        }
    }
}

impl Done {
    /// An answer with nothing else to do: no decline, nothing owed, no state to sync, no cache
    /// entry to complete (the callers set what differs).
    pub fn plain(
        answer: Message,
        request: Option<Message>,
        route: impl Into<String>,
        sign: Option<LinkMac>,
    ) -> Done {
        Done {
            answer,
            request,
            route: route.into(),
            decline: None,
            owed: vec![],
            sign,
            dedupe: None,
            transmission: None,
            undo: None,
        }
    }

    /// A repeat answered with its original's answer.
    pub fn duplicate(answer: Message, request: Message, sign: Option<LinkMac>) -> Done {
        Done::plain(answer, Some(request), "duplicate", sign)
    }

    /// A refusal of `request`: its answer with the decline's code, routed to the stage; `dedupe`
    /// is the cache entry it completes (none before the request was identified and validated).
    pub fn declined(
        request: &Message,
        d: Decline,
        sign: Option<LinkMac>,
        dedupe: Option<TransmissionKey>,
    ) -> Done {
        let mut done =
            Done::plain(respond::answer(request, d.code), Some(request.clone()), d.stage.as_str(), sign);
        done.decline = Some(d);
        done.dedupe = dedupe;
        done
    }
}

/// A request to forward to an issuer; its link result goes to [`Pipeline::complete`].
pub struct Forward {
    pub issuer: Arc<str>,
    pub pending: Pending,
}

impl Forward {
    /// The request to send, in the issuer link's spec.
    pub fn msg(&self) -> &Message {
        &self.pending.sent
    }
}

/// What the pipeline keeps of a forwarded request.
pub struct Pending {
    txn: Txn,
    issuer: Arc<str>,
    token: Option<TokenContext>,
    /// The switch verified the cryptogram (on the issuer's behalf, or the token service did).
    verified: bool,
    dedupe: Option<TransmissionKey>,
    /// The request as the issuer saw it (for the reversal or advice it may be owed).
    sent: Message,
    /// ATCs claimed in a shared store, decided by the commit before forwarding.
    claims: Vec<crate::state::Claim>,
    /// The transmission claimed in a shared store, decided by the same commit.
    transmission: Option<Transmission>,
}

/// A transmission claimed in a shared store.
struct Transmission {
    key: String,
    content: String,
    claim: crate::state::Claim,
}

impl Pending {
    /// The key of this transmission when another node claimed it first (read after the commit
    /// before forwarding): a retransmission, to be answered with that node's answer.
    pub fn retransmission(&self) -> Option<&str> {
        self.transmission.as_ref().filter(|t| t.claim.lost()).map(|t| t.key.as_str())
    }

    /// Whether another node accepted one of this request's ATCs first (read after the commit
    /// before forwarding): it is then a replay, declined, never forwarded.
    pub fn replayed(&self) -> bool {
        self.claims.iter().any(|c| c.lost())
    }
}

/// A reversal or advice waiting for its original's record (the shell reads it from the state
/// book, possibly the store, then calls [`Pipeline::resume_reference`]).
pub struct Reference {
    txn: Txn,
    /// The original's key, and the reversal's own.
    pub original_key: String,
    pub own_key: String,
    dedupe: Option<TransmissionKey>,
}

/// What to do next.
pub enum Step {
    /// A response sent by an acquirer: counted and dropped.
    Ignore,
    Answer(Box<Done>),
    Forward(Box<Forward>),
    /// The same transaction is in flight: answer with its answer when it comes.
    AwaitDuplicate {
        rx: tokio::sync::watch::Receiver<Option<Bytes>>,
        request: Box<Message>,
        sign: Option<LinkMac>,
    },
    /// A reversal or advice: its original must be read first.
    NeedOriginal(Box<Reference>),
}

/// An issuer as the pipeline sees it (no link: that is the shell's).
pub struct IssuerRules {
    pub name: Arc<str>,
    /// The issuer link's spec: requests are translated into it.
    pub spec: Arc<Spec>,
    /// The issuer's zone PIN key (keystore name): PIN blocks are translated to it.
    pub zpk: Option<String>,
    /// The issuer's IMK-AC (keystore name) when the switch verifies cryptograms on its behalf.
    pub imk_ac: Option<String>,
    /// ATCs accepted below a card's highest (see `state`).
    pub atc_window: u32,
    pub stand_in: StandIn,
}

/// The pipeline's state: everything it decides with, nothing that does I/O.
pub struct Pipeline {
    pub registry: RwLock<Arc<Registry>>,
    pub routes: RwLock<Arc<RouteTable>>,
    pub issuers: HashMap<Arc<str>, IssuerRules>,
    pub dedupe: DuplicateCache,
    pub state: Arc<StateBook>,
    pub detokenizer: Arc<dyn Detokenizer>,
    pub hsm: Arc<dyn crypto::hsm::Hsm>,
    /// Randomness (stand-in authorization codes): an input, so tests are deterministic.
    pub entropy: Arc<dyn crate::clock::Entropy>,
    /// HMAC-SHA256 key of the PAN fingerprints (keyed once).
    pub fingerprint_key: crypto::mac::HmacSha256Key,
}

/// The keyed fingerprint of a PAN: HMAC-SHA256 under the node's fingerprint key, first 16 bytes,
/// hex — the journal's and the state's card identity, never reversible without the key.
pub fn pan_fingerprint(key: &crypto::mac::HmacSha256Key, pan: &str) -> String {
    codecs::hex_upper(&key.mac(pan.as_bytes())[..16])
}

impl Pipeline {
    pub fn fingerprint(&self, pan: &str) -> String {
        pan_fingerprint(&self.fingerprint_key, pan)
    }

    /// Starts a request: `raw` is the frame's payload as received (for MAC verification).
    pub fn begin(&self, listener: &ListenerCtx, peer: &Peer, raw: &[u8], msg: Message, now_ms: u64) -> Step {
        let mti = msg.mti();
        if mti.is_response() {
            return Step::Ignore;
        }
        // An acquirer's message (origin 0) or its repeat (origin 1); anything else is not an
        // acquirer's to send.
        let class = match (mti.class(), mti.function(), mti.origin()) {
            (_, _, 2..) => Class::Other,
            (1 | 2, 0, _) => Class::Authorization,
            (4, 0 | 2, _) => Class::Reversal,
            (1, 2, _) => Class::Advice,
            (8, 0, _) => Class::NetworkManagement,
            _ => Class::Other,
        };
        if class == Class::NetworkManagement {
            // Sign-on and echo carry no card data and book nothing; answered by the listener.
            let answer = respond::answer(&msg, ResponseCode::APPROVED);
            return Step::Answer(Box::new(Done::plain(answer, None, "local", None)));
        }
        let registry = self.registry.read().unwrap_or_else(|p| p.into_inner()).clone();
        let identity = match identify::identify(&registry, listener, peer, raw, &msg) {
            Ok(id) => id,
            // Nothing of the request is trusted, not even its DE 32: the answer echoes only what
            // the sender sent, the journal gets the refusal.
            Err(d) => return self.refuse(&msg, d, None),
        };
        let sign = identity.terminal.mac.clone();
        let msg = match sanitize::sanitize(msg, &identity, class) {
            Ok(m) => m,
            Err((m, d)) => return self.refuse(&m, d, sign),
        };
        if class == Class::Other {
            let d = Decline::new(
                ResponseCode::INVALID_TRANSACTION,
                Stage::Validate,
                format!("MTI {mti} not carried"),
            );
            return self.refuse(&msg, d, sign);
        }
        let txn = match validate::parse(self, listener, msg, identity, class) {
            Ok(t) => t,
            Err((m, d)) => return self.refuse(&m, d, sign),
        };
        match class {
            Class::Authorization => self.authorize(txn, now_ms),
            _ => self.reference(txn, now_ms),
        }
    }

    fn authorize(&self, txn: Txn, now_ms: u64) -> Step {
        let sign = txn.identity.terminal.mac.clone();
        if let Err(d) = validate::authorization(&txn) {
            return self.refuse(&txn.msg, d, sign);
        }
        let (txn, key) = match self.first_time(txn, now_ms) {
            Ok(x) => x,
            Err(step) => return step,
        };
        let transmission = self.claim_transmission(&txn, now_ms);
        let dk = Some(key);
        let (mut sent, token, token_claim) = match detokenize::detokenize(self, &txn, now_ms) {
            Ok(x) => x,
            Err(d) => return self.decided(txn, d, dk),
        };
        let rules = match route::route(self, &sent) {
            Ok(r) => r,
            Err(d) => return self.decided(txn, d, dk),
        };
        sent = match route::translate(sent, &rules.spec) {
            Ok(m) => m,
            Err(d) => return self.decided(txn, d, dk),
        };
        let (verified, card_claim) =
            match verify::verify(self, &txn, rules, token.as_ref(), &mut sent, now_ms) {
                Ok(v) => v,
                Err(d) => {
                    // A cryptogram failure on the issuer's behalf still gets tag 91, as the issuer
                    // would give it.
                    let mut done = self.decided_done(&txn, d, dk);
                    done.route = format!("{}:verify", rules.name);
                    if let Some(imk) = &rules.imk_ac {
                        respond::attach_arpc(self, imk, &txn, &mut done.answer);
                    }
                    return Step::Answer(done);
                }
            };
        if let Err(d) = convert::convert(self, &txn, &mut sent) {
            return self.decided(txn, d, dk);
        }
        original::record_forwarded(self, &txn, &rules.name, now_ms);
        let issuer = rules.name.clone();
        Step::Forward(Box::new(Forward {
            issuer: issuer.clone(),
            pending: Pending {
                txn,
                issuer,
                token,
                verified,
                dedupe: dk,
                sent,
                claims: token_claim.into_iter().chain(card_claim).collect(),
                transmission,
            },
        }))
    }

    /// Finishes a forwarded request with what its issuer link gave.
    pub fn complete(&self, p: Pending, result: Result<Message, LinkError>, now_ms: u64) -> Done {
        let Pending { txn, issuer, token, verified, dedupe, sent, claims: _, transmission } = p;
        let sign = txn.identity.terminal.mac.clone();
        let mut owed = Vec::new();
        let mut route = issuer.to_string();
        let mut decline = None;
        let mut approved = false;
        let mut answer = match result {
            Ok(issuer_answer) => {
                approved = issuer_answer
                    .text(39)
                    .and_then(|c| ResponseCode::parse(&c))
                    .is_some_and(|c| c.approves());
                respond::from_issuer(&txn, &issuer_answer)
            }
            Err(LinkError::Down) => {
                let (answer, advice) =
                    standin::decide(self, &txn, &issuer, &sent, verified, self.entropy.u32());
                if let Some(a) = advice {
                    route = format!("{issuer}:stand-in");
                    // A stand-in approval leaves only once its advice is durable: the issuer
                    // must hear of every approval given in its name.
                    owed.push(Owed {
                        issuer: issuer.clone(),
                        kind: SafKind::Advice,
                        msg: a,
                        on_failure: Some(ResponseCode::SYSTEM_ERROR),
                        online_first: false,
                    });
                } else {
                    decline =
                        Some(Decline::new(ResponseCode::ISSUER_UNAVAILABLE, Stage::StandIn, "issuer down"));
                }
                answer
            }
            Err(LinkError::Timeout) => {
                owed.push(Owed {
                    issuer: issuer.clone(),
                    kind: SafKind::Reversal,
                    msg: crate::wire::reversal_for(&sent, ResponseCode::TOO_LATE.as_str()),
                    on_failure: None,
                    online_first: false,
                });
                decline =
                    Some(Decline::new(ResponseCode::ISSUER_UNAVAILABLE, Stage::Issuer, "issuer timed out"));
                respond::answer(&txn.msg, ResponseCode::ISSUER_UNAVAILABLE)
            }
            Err(LinkError::Duplicate) => respond::answer(&txn.msg, ResponseCode::DUPLICATE),
            Err(LinkError::Encode) => respond::answer(&txn.msg, ResponseCode::FORMAT_ERROR),
            Err(LinkError::NotSent) => {
                decline = Some(Decline::new(
                    ResponseCode::SYSTEM_ERROR,
                    Stage::Issuer,
                    "state not durable: not sent",
                ));
                respond::answer(&txn.msg, ResponseCode::SYSTEM_ERROR)
            }
        };
        convert::show_billing(&sent, &mut answer);
        respond::for_token(self, &txn, token.as_ref(), &mut answer);
        original::record_answered(self, &txn, &issuer, &answer, now_ms);
        let undo = approved.then(|| Undo { issuer: issuer.clone(), sent });
        Done {
            answer,
            request: Some(txn.msg),
            route,
            decline,
            owed,
            sign,
            dedupe,
            transmission: transmission.map(|t| t.key),
            undo,
        }
    }

    /// Claims the transmission in a shared store (nothing with a store of one node's own): its
    /// identifiers, with the spec it came in (the answer is kept encoded in it), and a keyed
    /// digest of its card, amount and currency.
    fn claim_transmission(&self, txn: &Txn, now_ms: u64) -> Option<Transmission> {
        let mut parts = None;
        let claim = self.state.claim_transmission(
            || {
                let key = format!(
                    "{}|{}|{}|{}|{}|{}",
                    txn.msg.spec().name,
                    txn.identity.acquirer.id,
                    txn.first_mti().as_str(),
                    txn.tid.trim_end(),
                    txn.stan,
                    txn.transmitted
                );
                let raw = |de| txn.msg.field(de).map(|f| hex::encode(f.data)).unwrap_or_default();
                let pan = txn.msg.field(2).or_else(|| txn.msg.field(35)).map(|f| hex::encode(f.data));
                let content =
                    self.fingerprint(&format!("{}|{}|{}", pan.unwrap_or_default(), raw(4), raw(49)));
                parts = Some((key.clone(), content.clone()));
                (key, content)
            },
            now_ms,
        )?;
        let (key, content) = parts?;
        Some(Transmission { key, content, claim })
    }

    /// A retransmission another node claimed first: answered with that node's answer (`found`:
    /// its content digest and answer), 94 when the identifiers are another transaction's, 96 when
    /// no answer came in time. Nothing is forwarded or booked here.
    pub fn remote_answer(&self, p: Pending, found: Option<(String, Vec<u8>)>, now_ms: u64) -> Done {
        let Pending { txn, issuer, dedupe, transmission, .. } = p;
        let sign = txn.identity.terminal.mac.clone();
        let mine = transmission.map(|t| t.content).unwrap_or_default();
        match found {
            Some((content, bytes)) if content == mine => {
                let answer = dedupe::cached_answer(&txn, Bytes::from(bytes));
                original::record_answered(self, &txn, &issuer, &answer, now_ms);
                let mut done = Done::duplicate(answer, txn.msg, sign);
                done.dedupe = dedupe;
                done
            }
            Some(_) => {
                let d = Decline::new(
                    ResponseCode::DUPLICATE,
                    Stage::Dedupe,
                    "terminal, STAN and DE 7 of another node's transaction with another card, amount or currency",
                );
                Done::declined(&txn.msg, d, sign, dedupe)
            }
            None => {
                if let Some(k) = &dedupe {
                    self.dedupe.abandon(k);
                }
                let d = Decline::new(
                    ResponseCode::SYSTEM_ERROR,
                    Stage::Dedupe,
                    "another node's answer did not come",
                );
                Done::declined(&txn.msg, d, sign, None)
            }
        }
    }

    /// A request whose ATC another node accepted first (the shared store refused its claim): a
    /// replay, declined as the node's own window would have, never forwarded.
    pub fn replayed(&self, p: Pending, now_ms: u64) -> Done {
        let Pending { txn, issuer, dedupe, .. } = p;
        let d = Decline::new(ResponseCode::CRYPTOGRAM_FAILURE, Stage::Verify, "ATC accepted by another node");
        let done = self.decided_done(&txn, d, dedupe);
        original::record_answered(self, &txn, &issuer, &done.answer, now_ms);
        *done
    }

    /// A reversal or advice: checked against its original.
    fn reference(&self, txn: Txn, now_ms: u64) -> Step {
        let sign = txn.identity.terminal.mac.clone();
        if let Err(d) = validate::reference(&txn) {
            return self.refuse(&txn.msg, d, sign);
        }
        let (txn, key) = match self.first_time(txn, now_ms) {
            Ok(x) => x,
            Err(step) => return step,
        };
        let (original_key, own_key) = original::keys(&txn);
        Step::NeedOriginal(Box::new(Reference { txn, original_key, own_key, dedupe: Some(key) }))
    }

    /// The dedupe stage: the transaction's cache entry when it is seen for the first time,
    /// otherwise the step that answers the repeat (the original's answer, now or when it comes)
    /// or refuses it (94).
    fn first_time(&self, txn: Txn, now_ms: u64) -> Result<(Txn, TransmissionKey), Step> {
        let sign = txn.identity.terminal.mac.clone();
        match dedupe::check(&self.dedupe, &txn, now_ms) {
            dedupe::Outcome::New(k) => Ok((txn, k)),
            dedupe::Outcome::Answered(bytes) => {
                let answer = dedupe::cached_answer(&txn, bytes);
                Err(Step::Answer(Box::new(Done::duplicate(answer, txn.msg, sign))))
            }
            dedupe::Outcome::InFlight(rx) => {
                Err(Step::AwaitDuplicate { rx, request: Box::new(txn.msg), sign })
            }
            dedupe::Outcome::Refused(d) => Err(self.refuse(&txn.msg, d, sign)),
        }
    }

    /// Goes on with a reversal or advice once its original (and any earlier acceptance of this
    /// very message) has been read.
    pub fn resume_reference(
        &self,
        r: Reference,
        original: Option<crate::state::OriginalRecord>,
        already: Option<crate::state::OriginalRecord>,
        now_ms: u64,
    ) -> Done {
        let Reference { txn, dedupe, .. } = r;
        let sign = txn.identity.terminal.mac.clone();
        let settled = match original::settle(self, &txn, original, already, now_ms) {
            Ok(s) => s,
            Err(d) => return Done::declined(&txn.msg, d, sign, dedupe),
        };
        let answer = respond::answer(&txn.msg, ResponseCode::APPROVED);
        let mut done = match settled {
            original::Settled::Nothing => Done::plain(answer, None, "local", sign),
            original::Settled::Owed { issuer, kind, msg } => {
                let mut done = Done::plain(answer, None, format!("{issuer}:saf"), sign);
                done.owed.push(Owed {
                    online_first: txn.first_mti() == Mti::REVERSAL_REQUEST,
                    issuer,
                    kind,
                    msg,
                    on_failure: Some(ResponseCode::SYSTEM_ERROR),
                });
                done
            }
        };
        done.request = Some(txn.msg);
        done.dedupe = dedupe;
        done
    }

    /// A reversal or advice whose original could not be read (the store failed): 96, and its
    /// cache entry is let go so that the acquirer's retry is decided afresh, not kept waiting on
    /// an answer that will never be cached.
    pub fn unreadable_reference(&self, r: Reference) -> Done {
        if let Some(k) = &r.dedupe {
            self.dedupe.abandon(k);
        }
        let d = Decline::new(ResponseCode::SYSTEM_ERROR, Stage::Original, "the original could not be read");
        Done::declined(&r.txn.msg, d, r.txn.identity.terminal.mac.clone(), None)
    }

    /// Refused before the transaction was identified and validated: answered, nothing cached or
    /// recorded.
    fn refuse(&self, msg: &Message, d: Decline, sign: Option<LinkMac>) -> Step {
        Step::Answer(Box::new(Done::declined(msg, d, sign, None)))
    }

    /// Declined after identification and validation: the answer is cached for repeats.
    fn decided_done(&self, txn: &Txn, d: Decline, dedupe: Option<TransmissionKey>) -> Box<Done> {
        Box::new(Done::declined(&txn.msg, d, txn.identity.terminal.mac.clone(), dedupe))
    }

    fn decided(&self, txn: Txn, d: Decline, dedupe: Option<TransmissionKey>) -> Step {
        Step::Answer(self.decided_done(&txn, d, dedupe))
    }

    /// Encodes the final answer (after the shell carried out the effects) and completes its
    /// duplicate-cache entry, so that a repeat gets exactly these bytes.
    pub fn seal(&self, done: &Done) -> Option<Bytes> {
        let bytes = Self::encode_answer(&done.answer);
        self.publish(done.dedupe.as_ref(), bytes.clone());
        bytes
    }

    /// The answer's bytes, or `None` (logged) when it does not encode in the listener's spec.
    pub fn encode_answer(answer: &Message) -> Option<Bytes> {
        match answer.encode() {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(error = %e, "answer does not encode in the listener's spec");
                None
            }
        }
    }

    /// Gives repeats of a transmission the bytes it was answered with (`None`: it was not, and a
    /// retry is processed afresh).
    pub fn publish(&self, key: Option<&TransmissionKey>, answer: Option<Bytes>) {
        match (key, answer) {
            (Some(k), Some(b)) => self.dedupe.complete(k, b),
            (Some(k), None) => self.dedupe.abandon(k),
            (None, _) => {}
        }
    }

    /// The issuer `pan` routes to.
    pub fn issuer_for(&self, pan: &str) -> Option<&IssuerRules> {
        let table = self.routes.read().unwrap_or_else(|p| p.into_inner()).clone();
        let name = table.lookup(pan.as_bytes())?;
        self.issuers.get(name)
    }
}

#[cfg(test)]
pub(crate) mod tests;
