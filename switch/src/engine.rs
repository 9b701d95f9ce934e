//! The pipeline of one request (ARCHITECTURE.md, the hot path): duplicate check → validate →
//! detokenize → route → issuer link (or stand-in) → answer, each a small step, with the journal
//! and metrics beside it. Money safety lives here: an issuer that does not answer in time gets a
//! reversal through store-and-forward; a stand-in approval gets an advice the same way; reversals
//! and advices from acquirers are made durable before they are acknowledged.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use codecs::iso8583::{Message, Mti, Spec};
use tracing::{Instrument, debug, info_span, warn};
use zeroize::Zeroizing;

use crate::clock::{Clock, Entropy};
use crate::dedupe::{DuplicateCache, Seen};
use crate::detokenize::{Detokenizer, retokenize};
use crate::issuer::{IssuerPool, LinkError};
use crate::journal::JournalHandle;
use crate::metrics::Metrics;
use crate::route::RouteTable;
use crate::saf::SafQueue;
use crate::standin::{StandIn, StandInDecision, StandInRequest};
use crate::store::{Direction, SafKind};
use crate::{validate, wire};

/// One issuer as the pipeline sees it.
pub struct IssuerHandle {
    pub pool: Arc<IssuerPool>,
    /// The issuer's zone PIN key (keystore name): PIN blocks are translated to it.
    pub zpk: Option<String>,
    /// The issuer's IMK-AC (keystore name) when the switch verifies cryptograms on its behalf.
    pub imk_ac: Option<String>,
    pub stand_in: StandIn,
    pub saf: Arc<SafQueue>,
    /// Wakes the issuer's SAF worker when something was queued.
    pub saf_wake: Arc<tokio::sync::Notify>,
}

/// Where a request came from.
pub struct ListenerCtx {
    pub name: Arc<str>,
    pub spec: Arc<Spec>,
    /// DE 32 filled in when the terminal sends none.
    pub acquirer_id: String,
    /// The BDK (keystore name) of this listener's DUKPT terminals.
    pub bdk: Option<String>,
}

pub struct Engine {
    pub routes: RwLock<Arc<RouteTable>>,
    pub issuers: HashMap<Arc<str>, IssuerHandle>,
    pub dedupe: DuplicateCache,
    pub journal: JournalHandle,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    pub detokenizer: Arc<dyn Detokenizer>,
    pub hsm: Arc<dyn crypto::hsm::Hsm>,
    /// HMAC-SHA256 key of the journal's PAN fingerprints.
    pub fingerprint_key: Zeroizing<Vec<u8>>,
}

/// What the listener should do with a request.
pub enum Outcome {
    /// Send this answer back (in the listener's spec; the listener signs it when its link MACs).
    Answer(Message),
    /// Nothing to answer (a response sent by an acquirer, counted and dropped).
    Nothing,
}

impl Engine {
    fn fingerprint(&self, pan: &str) -> String {
        pan_fingerprint(&self.fingerprint_key, pan)
    }

    fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        self.entropy.fill(&mut n);
        n
    }

    /// Handles one decoded request from an acquirer.
    pub async fn handle(&self, ctx: &ListenerCtx, req: Message) -> Outcome {
        let mti = req.mti();
        if mti.is_response() {
            debug!(listener = %ctx.name, mti = %mti, "response from an acquirer ignored");
            return Outcome::Nothing;
        }
        let span = info_span!("txn", listener = %ctx.name, mti = %mti, stan = %req.text(11).unwrap_or_default(),
            tid = %req.text(41).unwrap_or_default());
        async move {
            let started = Instant::now();
            self.metrics.in_flight.inc();
            let (rsp, route) = match (mti.class(), mti.function()) {
                (8, 0) => (wire::answer(&req, "00"), "local".to_string()),
                (1 | 2, 0) => self.authorize(ctx, req.clone()).await,
                (4, 0) => self.reversal_request(ctx, &req).await,
                (1 | 4, 2) => self.advice(ctx, &req).await,
                _ => (wire::answer(&req, "12"), "local".to_string()),
            };
            let latency = started.elapsed();
            self.metrics.in_flight.dec();
            let rc = rsp.text(39).map(|c| c.into_owned()).unwrap_or_default();
            self.metrics.responses.with_label_values(&[mti.as_str(), &rc, &route]).inc();
            self.metrics.latency.with_label_values(&[mti.as_str()]).observe(latency.as_secs_f64());
            // One row per exchange: the request and its answer (masked, fingerprinted off the hot path).
            let rsp = match rsp.encode() {
                Ok(_) => rsp,
                Err(e) => {
                    warn!(error = %e, "answer does not encode in the listener's spec");
                    wire::answer(&req, "96")
                }
            };
            let entry = crate::journal::MessageEntry {
                msg: req,
                response: Some(rsp.clone()),
                direction: Direction::AcquirerExchange,
                at_ms: self.clock.now_ms(),
                route: Some(route),
                latency_us: Some(latency.as_micros() as u64),
            };
            self.journal.record_message(entry).await;
            Outcome::Answer(rsp)
        }
        .instrument(span)
        .await
    }

    /// 0100 / 0200, with duplicate-transmission protection.
    async fn authorize(&self, ctx: &ListenerCtx, req: Message) -> (Message, String) {
        let Some(key) = wire::transmission_key(&req) else {
            return (wire::answer(&req, "30"), "validate".into());
        };
        match self.dedupe.check(&key, self.clock.now_ms()) {
            Seen::New => {}
            Seen::Answered(bytes) => {
                self.metrics.duplicates.inc();
                return (self.decode_cached(&req, bytes), "duplicate".into());
            }
            Seen::InFlight(mut rx) => {
                self.metrics.duplicates.inc();
                let bytes = loop {
                    if let Some(b) = rx.borrow().clone() {
                        break Some(b);
                    }
                    if rx.changed().await.is_err() {
                        break None;
                    }
                };
                return match bytes {
                    Some(b) => (self.decode_cached(&req, b), "duplicate".into()),
                    None => (wire::answer(&req, "96"), "duplicate".into()),
                };
            }
        }
        let (rsp, route) = self.authorize_new(ctx, req).await;
        match rsp.encode() {
            Ok(b) => self.dedupe.complete(&key, b),
            Err(_) => self.dedupe.abandon(&key),
        }
        (rsp, route)
    }

    fn decode_cached(&self, req: &Message, bytes: Bytes) -> Message {
        Message::decode(req.spec(), bytes).unwrap_or_else(|_| wire::answer(req, "96"))
    }

    async fn authorize_new(&self, ctx: &ListenerCtx, mut req: Message) -> (Message, String) {
        let t = Instant::now();
        if let Err(e) = validate::authorization(&req) {
            warn!(reason = %e.reason, "request refused by validation");
            return (wire::answer(&req, e.rc), "validate".into());
        }
        if !req.contains(32) {
            let _ = req.set_text(32, &ctx.acquirer_id);
        }
        self.stage("validate", t);
        let t = Instant::now();
        let token = match self.detokenizer.detokenize(&mut req, self.clock.now_ms()) {
            Ok(t) => t,
            Err(r) => return (wire::answer(&req, r.0), "detokenize".into()),
        };
        self.stage("detokenize", t);
        let t = Instant::now();
        let Some(issuer) = self.route(&req) else {
            return (wire::answer(&req, "15"), "route".into());
        };
        self.stage("route", t);
        let route = issuer.pool.name().to_string();
        let mut iss_req = match wire::translate(&req, issuer.pool.spec()) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "request cannot be carried in the issuer's spec");
                return (wire::answer(&req, "30"), route);
            }
        };
        let t = Instant::now();
        if let Err(rc) = self.verify_on_behalf(issuer, &req) {
            return (self.finish(wire::answer(&req, rc), token), format!("{route}:verify"));
        }
        // The PAN the terminal formatted the PIN block with: the token, when the card was a token.
        let acquirer_pan = token.as_ref().and_then(|t| t.original.as_deref()).and_then(wire::pan_of);
        if let Err(rc) = self.translate_pin(ctx, issuer, &req, acquirer_pan.as_deref(), &mut iss_req) {
            return (self.finish(wire::answer(&req, rc), token), route);
        }
        self.stage("verify", t);
        let t = Instant::now();
        let result = issuer.pool.request(&iss_req).await;
        self.stage("issuer", t);
        let mut rsp = wire::answer(&req, "96");
        match result {
            Ok(answer) => {
                wire::take_decision(&mut rsp, &answer);
            }
            Err(LinkError::Down) => {
                let decision = self.stand_in(&req, &iss_req, issuer).await;
                let _ = rsp.set_text(39, decision.response_code());
                if let Some(t91) = self.arpc_on_behalf(issuer, &req, decision.response_code()) {
                    let mut b = codecs::tlv::TlvBuilder::new();
                    if b.primitive(codecs::tlv::Tag::new(0x91), &t91).is_ok() {
                        let _ = rsp.set_icc_data(&b.finish());
                    }
                }
                if decision == StandInDecision::Approve {
                    let code = format!("S{:05}", self.entropy.u32() % 100_000);
                    let _ = rsp.set_text(38, &code);
                    return (self.finish(rsp, token), format!("{route}:stand-in"));
                }
            }
            Err(LinkError::Timeout) => {
                let _ = rsp.set_text(39, "91");
                self.owe_reversal(issuer, &iss_req).await;
            }
            Err(LinkError::Duplicate) => {
                let _ = rsp.set_text(39, "94");
            }
            Err(LinkError::Encode) => {
                let _ = rsp.set_text(39, "30");
            }
        }
        (self.finish(rsp, token), route)
    }

    /// On-behalf cryptogram verification for issuers whose IMK-AC the switch holds: a chip
    /// request whose ARQC does not verify is declined here (82) and never reaches the issuer. The
    /// CVN is read from the issuer application data (tag 9F10) by the scheme's layout.
    fn verify_on_behalf(&self, issuer: &IssuerHandle, req: &Message) -> Result<(), &'static str> {
        let Some(imk) = &issuer.imk_ac else { return Ok(()) };
        let Ok(Some(icc)) = req.icc_data() else { return Ok(()) };
        let Ok(nodes) = codecs::tlv::decode_lenient(&icc) else { return Err("30") };
        let tag = |t: u32| nodes.iter().find(|n| n.tag().value() == t).map(|n| n.value());
        let pan = wire::pan_of(req).unwrap_or_default();
        let Some(cvn) = tag(0x9F10).and_then(|iad| cvn_from_iad(&pan, iad)) else {
            debug!("CVN not recognised from the IAD: left to the issuer");
            return Ok(());
        };
        let data = crypto::emv::ac_data_from_tags(cvn, tag).map_err(|_| "30")?;
        let (Some(arqc), Some(atc)) = (tag(0x9F26), tag(0x9F36)) else { return Err("30") };
        let pan_d = crypto::emv::PanDigits::new(&pan).map_err(|_| "14")?;
        let psn = req.text(23).and_then(|p| p.get(1..).and_then(|x| x.parse().ok())).unwrap_or_default();
        let inputs = crypto::emv::CardInputs {
            pan: &pan_d,
            psn,
            atc: crypto::emv::Atc::from_slice(atc).map_err(|_| "30")?,
            un: tag(0x9F37).and_then(|u| crypto::emv::UnpredictableNumber::from_slice(u).ok()),
        };
        match self.hsm.verify_arqc(imk, cvn, &inputs, &data, arqc, None) {
            Ok(_) => Ok(()),
            Err(e) if e.kind == crypto::ErrorKind::Verification => Err("82"),
            Err(e) => {
                warn!(error = %e, "on-behalf verification could not run");
                Err("96")
            }
        }
    }

    /// Tag 91 for a chip request answered by the switch itself (stand-in) when it holds the
    /// issuer's IMK-AC: ARPC ‖ ARC (method 1) or ARPC ‖ CSU (method 2), as the issuer would.
    fn arpc_on_behalf(&self, issuer: &IssuerHandle, req: &Message, rc: &str) -> Option<Vec<u8>> {
        self.arpc_with(issuer.imk_ac.as_ref()?, req, rc)
    }

    /// Tag 91 for `req`'s chip data under the IMK `imk`.
    fn arpc_with(&self, imk: &str, req: &Message, rc: &str) -> Option<Vec<u8>> {
        let icc = req.icc_data().ok()??;
        let nodes = codecs::tlv::decode_lenient(&icc).ok()?;
        let tag = |t: u32| nodes.iter().find(|n| n.tag().value() == t).map(|n| n.value());
        let pan = wire::pan_of(req)?;
        let cvn = cvn_from_iad(&pan, tag(0x9F10)?)?;
        let pan_d = crypto::emv::PanDigits::new(&pan).ok()?;
        let psn = req.text(23).and_then(|p| p.get(1..).and_then(|x| x.parse().ok())).unwrap_or_default();
        let inputs = crypto::emv::CardInputs {
            pan: &pan_d,
            psn,
            atc: crypto::emv::Atc::from_slice(tag(0x9F36)?).ok()?,
            un: tag(0x9F37).and_then(|u| crypto::emv::UnpredictableNumber::from_slice(u).ok()),
        };
        let arc: [u8; 2] = rc.as_bytes().try_into().ok()?;
        let (input, tail) = match cvn.arpc_method() {
            Some(2) => {
                let csu = [0, 0, 0, if rc == "00" { 0x80 } else { 0 }];
                (crypto::emv::ArpcInput::Csu { csu, proprietary: vec![] }, csu.to_vec())
            }
            _ => (crypto::emv::ArpcInput::Arc(arc), arc.to_vec()),
        };
        let mut out = self.hsm.generate_arpc(imk, cvn, &inputs, tag(0x9F26)?, &input).ok()?;
        out.extend_from_slice(&tail);
        Some(out)
    }

    /// The PIN block of a DUKPT terminal (DE 52, its KSN in DE 53) translated to the issuer's
    /// zone PIN key, ISO format 0; the KSN stays on the acquirer side. The clear PIN exists only
    /// inside the HSM call. `acquirer_pan` is the PAN the terminal bound into the block when it
    /// differs from the request's (a token, detokenized): the HSM re-binds the block to the card's
    /// PAN, which the issuer verifies with.
    fn translate_pin(
        &self,
        ctx: &ListenerCtx,
        issuer: &IssuerHandle,
        req: &Message,
        acquirer_pan: Option<&str>,
        iss_req: &mut Message,
    ) -> Result<(), &'static str> {
        let Some(block) = iss_req.field(52).map(|f| f.data.clone()) else { return Ok(()) };
        let (Some(bdk), Some(zpk)) = (&ctx.bdk, &issuer.zpk) else {
            warn!("PIN block received but the listener has no BDK or the issuer no ZPK");
            return Err("96");
        };
        let Some(ksn) = req.field(53).map(|f| f.data.clone()) else {
            warn!("PIN block without its KSN (DE 53)");
            return Err("30");
        };
        let pan = wire::pan_of(req).unwrap_or_default();
        let src = crypto::hsm::PinSource::Dukpt { bdk, ksn: &ksn, format: crypto::pin::PinBlockFormat::Iso0 };
        let from_pan = acquirer_pan.unwrap_or(&pan);
        let fmt = crypto::pin::PinBlockFormat::Iso0;
        match self.hsm.translate_pin_pan_change(&src, &block, from_pan, zpk, fmt, &pan) {
            Ok(out) => {
                iss_req.set_bytes(52, out).map_err(|_| "96")?;
                iss_req.remove(53);
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "PIN translation failed");
                Err(match e.kind {
                    crypto::ErrorKind::Pin | crypto::ErrorKind::Verification => "55",
                    crypto::ErrorKind::Ksn => "30",
                    _ => "96",
                })
            }
        }
    }

    fn finish(&self, mut rsp: Message, token: Option<crate::detokenize::TokenContext>) -> Message {
        if let Some(ctx) = token {
            retokenize(&mut rsp, &ctx);
            // The device verifies the ARPC with its token keys: tag 91 is the TSP's.
            if let (Some(imk), Some(orig)) = (&ctx.arpc_imk, &ctx.original) {
                let rc = rsp.text(39).map(|c| c.into_owned()).unwrap_or_default();
                match self.arpc_with(imk, orig, &rc) {
                    Some(t91) => {
                        let mut b = codecs::tlv::TlvBuilder::new();
                        if b.primitive(codecs::tlv::Tag::new(0x91), &t91).is_ok() {
                            let _ = rsp.set_icc_data(&b.finish());
                        }
                    }
                    None => {
                        rsp.remove(55);
                    }
                }
            }
        }
        rsp
    }

    fn stage(&self, name: &str, since: Instant) {
        self.metrics.stage_latency.with_label_values(&[name]).observe(since.elapsed().as_secs_f64());
    }

    /// A request of the switch's own (the token service's ID&V, notifications) to the issuer of
    /// `pan`, in the issuer link's spec.
    pub async fn issuer_call(&self, pan: &str, msg: &Message) -> Result<Message, LinkError> {
        let table = self.routes.read().unwrap_or_else(|p| p.into_inner()).clone();
        let name = table.lookup(pan.as_bytes()).ok_or(LinkError::Down)?;
        let issuer = self.issuers.get(name).ok_or(LinkError::Down)?;
        let m = wire::translate(msg, issuer.pool.spec()).map_err(|_| LinkError::Encode)?;
        issuer.pool.request(&m).await
    }

    /// A notification of the switch's own (the token service's 0620) to the issuer of `pan`: sent
    /// now when the issuer answers, otherwise kept in the issuer's store-and-forward queue and
    /// repeated until it does. False only when it could be neither delivered nor persisted.
    pub async fn issuer_notify(&self, pan: &str, msg: &Message) -> bool {
        let table = self.routes.read().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(issuer) = table.lookup(pan.as_bytes()).and_then(|n| self.issuers.get(n)) else {
            return false;
        };
        let Ok(m) = wire::translate(msg, issuer.pool.spec()) else { return false };
        match issuer.pool.request(&m).await {
            Ok(answer) if answer.mti().is_response() => true,
            _ => self.enqueue(issuer, SafKind::Notification, &m).await,
        }
    }

    /// The name of the issuer `pan` routes to.
    pub fn issuer_of(&self, pan: &str) -> Option<String> {
        let table = self.routes.read().unwrap_or_else(|p| p.into_inner()).clone();
        table.lookup(pan.as_bytes()).map(|n| n.to_string())
    }

    /// Whether some issuer is routed for `pan` (token eligibility).
    pub fn routes_pan(&self, pan: &str) -> bool {
        let table = self.routes.read().unwrap_or_else(|p| p.into_inner()).clone();
        table.lookup(pan.as_bytes()).is_some_and(|n| self.issuers.contains_key(n))
    }

    fn route(&self, req: &Message) -> Option<&IssuerHandle> {
        let pan = wire::pan_of(req)?;
        let table = self.routes.read().unwrap_or_else(|p| p.into_inner()).clone();
        let name = table.lookup(pan.as_bytes())?;
        self.issuers.get(name)
    }

    async fn stand_in(&self, req: &Message, iss_req: &Message, issuer: &IssuerHandle) -> StandInDecision {
        let pan = wire::pan_of(req).unwrap_or_default();
        let fingerprint = self.fingerprint(&pan);
        let pc = req.text(3).map(|c| c.into_owned()).unwrap_or_default();
        let currency = req.text(49).map(|c| c.into_owned()).unwrap_or_default();
        let amount = req.amount().ok().flatten().map(|a| a.0).unwrap_or(0);
        let decision = issuer.stand_in.decide(&StandInRequest {
            processing_code: &pc,
            amount_minor: amount,
            currency: &currency,
            has_pin: req.contains(52),
            card_fingerprint: &fingerprint,
        });
        if decision == StandInDecision::Approve {
            issuer_metric(&self.metrics.stand_in_approvals, issuer);
            let mut advice = wire::derived(iss_req, Mti::AUTHORIZATION_ADVICE, "00");
            let _ = advice.copy_from(iss_req, 55);
            self.enqueue(issuer, SafKind::Advice, &advice).await;
        }
        decision
    }

    async fn owe_reversal(&self, issuer: &IssuerHandle, orig: &Message) {
        let reversal = wire::reversal_for(orig, "68");
        self.enqueue(issuer, SafKind::Reversal, &reversal).await;
    }

    /// Persists a message owed to the issuer (returns once durable) and wakes its SAF worker.
    async fn enqueue(&self, issuer: &IssuerHandle, kind: SafKind, msg: &Message) -> bool {
        let Ok(bytes) = msg.encode() else { return false };
        let key = wire::original_key(msg);
        let saf = issuer.saf.clone();
        let now = self.clock.now_ms();
        let nonce = self.nonce();
        let bytes = Zeroizing::new(bytes.to_vec());
        let done = tokio::task::spawn_blocking(move || saf.enqueue(kind, &key, &bytes, now, nonce)).await;
        match done {
            Ok(Ok(_)) => {
                issuer.saf_wake.notify_one();
                true
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, kind = kind.as_str(), "could not persist a message owed to the issuer");
                false
            }
            Err(_) => false,
        }
    }

    /// 0400 from an acquirer: forwarded; when the issuer cannot take it now, made durable and
    /// delivered later as an 0420.
    async fn reversal_request(&self, ctx: &ListenerCtx, req: &Message) -> (Message, String) {
        if let Err(e) = validate::reversal_or_advice(req) {
            warn!(reason = %e.reason, "reversal refused by validation");
            return (wire::answer(req, e.rc), "validate".into());
        }
        let _ = ctx;
        if let Some(rc) = self.original_declined(req) {
            // The original was declined here: nothing was authorized, nothing to reverse.
            debug!(original_rc = %rc, "reversal of a declined original answered locally");
            return (wire::answer(req, "00"), "local".into());
        }
        let fwd = match self.card_pan_of_reference(req) {
            Ok(m) => m,
            Err(rc) => return (wire::answer(req, rc), "detokenize".into()),
        };
        let Some(issuer) = self.route(&fwd) else { return (wire::answer(req, "15"), "route".into()) };
        let route = issuer.pool.name().to_string();
        let Ok(iss_req) = wire::translate(&fwd, issuer.pool.spec()) else {
            return (wire::answer(req, "30"), route);
        };
        let mut rsp = wire::answer(req, "96");
        match issuer.pool.request(&iss_req).await {
            Ok(answer) => wire::take_decision(&mut rsp, &answer),
            Err(_) => {
                let mut advice = iss_req.clone();
                advice.set_mti(Mti::REVERSAL_ADVICE);
                if self.enqueue(issuer, SafKind::Reversal, &advice).await {
                    let _ = rsp.set_text(39, "00");
                }
            }
        }
        (rsp, route)
    }

    /// A reversal or advice as the issuer must see it: a token's (an ATM's 0420 after a phone's
    /// cash advance) carries the card's PAN instead. The answer to the acquirer is built from the
    /// acquirer's own message, so it keeps the token.
    fn card_pan_of_reference(&self, req: &Message) -> Result<Message, &'static str> {
        let mut fwd = req.clone();
        self.detokenizer.detokenize_reference(&mut fwd).map_err(|r| r.0)?;
        Ok(fwd)
    }

    /// The response code of the original a reversal refers to, when the switch answered it with
    /// a decline (matched through DE 90 and DE 41). `None` when approved or unknown here.
    fn original_declined(&self, reversal: &Message) -> Option<String> {
        let key = wire::original_transmission(reversal)?;
        let answer = self.dedupe.answered(&key)?;
        let msg = Message::decode(reversal.spec(), answer).ok()?;
        let rc = msg.text(39)?.into_owned();
        (rc != "00").then_some(rc)
    }

    /// 0420 / 0120 from an acquirer: durable first, acknowledged, delivered by SAF.
    async fn advice(&self, _ctx: &ListenerCtx, req: &Message) -> (Message, String) {
        if let Err(e) = validate::reversal_or_advice(req) {
            warn!(reason = %e.reason, "advice refused by validation");
            return (wire::answer(req, e.rc), "validate".into());
        }
        let fwd = match self.card_pan_of_reference(req) {
            Ok(m) => m,
            Err(rc) => return (wire::answer(req, rc), "detokenize".into()),
        };
        let Some(issuer) = self.route(&fwd) else { return (wire::answer(req, "15"), "route".into()) };
        let route = issuer.pool.name().to_string();
        let Ok(iss_req) = wire::translate(&fwd, issuer.pool.spec()) else {
            return (wire::answer(req, "30"), route);
        };
        let kind = if req.mti().class() == 4 { SafKind::Reversal } else { SafKind::Advice };
        if kind == SafKind::Reversal && self.original_declined(req).is_some() {
            return (wire::answer(req, "00"), "local".into());
        }
        let rc = if self.enqueue(issuer, kind, &iss_req).await { "00" } else { "96" };
        (wire::answer(req, rc), format!("{route}:saf"))
    }
}

/// The CVN of a cryptogram from its issuer application data (tag 9F10): Visa's layout (length,
/// DKI, CVN) for PANs starting with 4, Mastercard's (DKI, CVN) for 2 and 5.
pub fn cvn_from_iad(pan: &str, iad: &[u8]) -> Option<crypto::emv::Cvn> {
    use crypto::emv::Cvn;
    match pan.as_bytes().first()? {
        b'4' => match iad.get(2)? {
            0x0A => Some(Cvn::Visa10),
            0x12 => Some(Cvn::Visa18),
            0x16 => Some(Cvn::Visa22),
            _ => None,
        },
        b'2' | b'5' => match iad.get(1)? {
            0x10 => Some(Cvn::Mc16),
            0x11 => Some(Cvn::Mc17),
            0x14 => Some(Cvn::Mc20),
            0x15 => Some(Cvn::Mc21),
            _ => None,
        },
        _ => None,
    }
}

/// The keyed fingerprint of a PAN: HMAC-SHA256 under the node's fingerprint key, first 16 bytes,
/// hex — the journal's and stand-in's card identity, never reversible without the key.
pub fn pan_fingerprint(key: &[u8], pan: &str) -> String {
    hex::encode_upper(&crypto::mac::hmac_sha256(key, pan.as_bytes())[..16])
}

fn issuer_metric(c: &prometheus::IntCounterVec, issuer: &IssuerHandle) {
    c.with_label_values(&[issuer.pool.name()]).inc();
}

/// Delivers one issuer's store-and-forward queue: whenever its link comes up, something is queued,
/// or a second passes, due entries are sent; an 0430/0130 removes an entry, anything else
/// reschedules it with back-off. Runs until `stop`.
pub struct SafWorker {
    pub issuer: Arc<IssuerPool>,
    pub saf: Arc<SafQueue>,
    pub wake: Arc<tokio::sync::Notify>,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    pub metrics: Arc<Metrics>,
}

pub async fn saf_worker(
    w: SafWorker,
    stand_in_reset: impl Fn() + Send + 'static,
    stop: tokio_util::sync::CancellationToken,
) {
    let SafWorker { issuer, saf, wake, clock, entropy, metrics } = w;
    let name = issuer.name().to_string();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = issuer.came_up.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(1000)) => {}
        }
        let q = saf.clone();
        let pending = tokio::task::spawn_blocking(move || q.pending()).await.ok().and_then(Result::ok);
        if let Some(p) = pending {
            metrics.saf_pending.with_label_values(&[&name]).set(p as i64);
            if p == 0 {
                continue;
            }
        }
        if !issuer.is_up() {
            continue;
        }
        let q = saf.clone();
        let now = clock.now_ms();
        let due = match tokio::task::spawn_blocking(move || q.due(now, 64)).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::error!(issuer = %name, error = %e, "SAF queue unreadable");
                continue;
            }
            Err(_) => continue,
        };
        let mut delivered_advices = false;
        for item in due {
            if stop.is_cancelled() {
                return;
            }
            let msg = match Message::decode(issuer.spec(), Bytes::copy_from_slice(&item.message)) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(issuer = %name, id = item.entry.id, error = %e, "SAF entry does not decode; kept");
                    continue;
                }
            };
            let acked = match issuer.request(&msg).await {
                Ok(answer) => answer.mti().class() == msg.mti().class() && answer.mti().is_response(),
                Err(_) => false,
            };
            let q = saf.clone();
            let entry = item.entry.clone();
            let now = clock.now_ms();
            let random = entropy.u32();
            let _ = tokio::task::spawn_blocking(move || {
                if acked { q.acknowledged(entry.id).map(|_| 0) } else { q.failed(&entry, now, random) }
            })
            .await;
            if acked && item.entry.kind == SafKind::Advice {
                delivered_advices = true;
            }
            if !acked {
                break;
            }
        }
        if delivered_advices {
            stand_in_reset();
        }
    }
}
