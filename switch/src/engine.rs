//! The async shell around the pipeline (ARCHITECTURE.md, the hot path): a request from a listener
//! goes through [`Pipeline::begin`]; what it asks for — an issuer's answer, an original's record —
//! is fetched here and handed back; then the effects are carried out before the answer leaves:
//! messages owed to issuers made durable (store-and-forward), the decision state synced, the
//! answer sealed into the duplicate cache, the journal row queued, the metrics counted. The
//! decisions themselves are all in `pipeline`, with no I/O.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use codecs::iso8583::{Message, ResponseCode, Spec};
use tracing::{debug, warn};
use zeroize::Zeroizing;

use crate::clock::{Clock, Entropy};
use crate::issuer::{IssuerPool, LinkError};
use crate::macing::LinkMac;
use crate::metrics::Metrics;
use crate::pipeline::{Done, Owed, Pipeline, Stage, Step};
use crate::registry::Peer;
use crate::saf::SafQueue;
use crate::state::JournalHandle;
use crate::store::{Direction, SafKind};

pub use crate::pipeline::{ListenerCtx, pan_fingerprint};

/// How long a retransmission reaching one node waits for the answer of the node that has the
/// original in flight (that node's issuer timeout, and then some).
const REMOTE_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(35);

/// An issuer link as the shell uses it: the multiplexed TCP links in production, an in-memory
/// issuer in tests.
pub trait IssuerLink: Send + Sync + 'static {
    fn name(&self) -> &Arc<str>;
    fn spec(&self) -> &Arc<Spec>;
    fn is_up(&self) -> bool;
    /// Sends a request (already in the link's spec) and waits for its answer.
    fn request<'a>(
        &'a self,
        msg: &'a Message,
    ) -> Pin<Box<dyn Future<Output = Result<Message, LinkError>> + Send + 'a>>;
}

impl IssuerLink for IssuerPool {
    fn name(&self) -> &Arc<str> {
        IssuerPool::name(self)
    }
    fn spec(&self) -> &Arc<Spec> {
        IssuerPool::spec(self)
    }
    fn is_up(&self) -> bool {
        IssuerPool::is_up(self)
    }
    fn request<'a>(
        &'a self,
        msg: &'a Message,
    ) -> Pin<Box<dyn Future<Output = Result<Message, LinkError>> + Send + 'a>> {
        Box::pin(IssuerPool::request(self, msg))
    }
}

/// One issuer as the shell sees it.
pub struct IssuerHandle {
    pub link: Arc<dyn IssuerLink>,
    pub saf: Arc<SafQueue>,
    /// Wakes the issuer's SAF worker when something was queued.
    pub saf_wake: Arc<tokio::sync::Notify>,
}

pub struct Engine {
    pub pipeline: Pipeline,
    pub issuers: HashMap<Arc<str>, IssuerHandle>,
    pub journal: JournalHandle,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
}

/// What the listener should do with a request.
pub enum Outcome {
    /// Send this answer back, signed with the terminal's MAC key when it has one (else the
    /// listener's, when its link MACs). `bytes`: the answer already encoded, for a listener
    /// that signs nothing (it is encoded once).
    Answer { msg: Message, sign: Option<LinkMac>, bytes: Option<Bytes> },
    /// Nothing to answer (a response sent by an acquirer, counted and dropped).
    Nothing,
}

impl Engine {
    fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        self.entropy.fill(&mut n);
        n
    }

    /// Whether some registered acquirer may connect to `listener` as `peer`.
    pub fn admits(&self, listener: &str, peer: &Peer) -> bool {
        self.pipeline.registry.read().unwrap_or_else(|p| p.into_inner()).admits(listener, peer)
    }

    /// Handles one decoded request from an acquirer; `raw` is its payload as received.
    pub async fn handle(&self, ctx: &ListenerCtx, peer: &Peer, raw: &Bytes, req: Message) -> Outcome {
        let started = Instant::now();
        let mti = req.mti();
        if !self.pipeline.state.healthy() && !mti.is_response() {
            return self.refuse_unjournaled(req, started).await;
        }
        self.metrics.in_flight.inc();
        let step = self.pipeline.begin(ctx, peer, raw, req, self.clock.now_ms());
        let done = match step {
            Step::Ignore => {
                self.metrics.in_flight.dec();
                debug!(listener = %ctx.name, mti = %mti, "response from an acquirer ignored");
                return Outcome::Nothing;
            }
            Step::Answer(d) => *d,
            Step::Forward(f) => {
                // What the issuer is about to see (the original, the ATC accepted) is durable first.
                let t = Instant::now();
                let synced = self.pipeline.state.sync().await;
                stage(&self.metrics.stages.state_sync, t);
                let result = match synced {
                    Err(e) => {
                        tracing::error!(error = %e, "decision state not durable: request not forwarded");
                        Err(LinkError::NotSent)
                    }
                    Ok(()) if f.pending.retransmission().is_some() => {
                        let found = self.remote_answer(f.pending.retransmission().unwrap_or_default()).await;
                        let now = self.clock.now_ms();
                        return self
                            .finish(self.pipeline.remote_answer(f.pending, found, now), started)
                            .await;
                    }
                    Ok(()) if f.pending.replayed() => {
                        let now = self.clock.now_ms();
                        return self.finish(self.pipeline.replayed(f.pending, now), started).await;
                    }
                    Ok(()) => match self.issuers.get(&f.issuer) {
                        Some(h) => {
                            let t = Instant::now();
                            let r = h.link.request(f.msg()).await;
                            stage(&self.metrics.stages.issuer, t);
                            r
                        }
                        None => Err(LinkError::Down),
                    },
                };
                self.pipeline.complete(f.pending, result, self.clock.now_ms())
            }
            Step::AwaitDuplicate { mut rx, request, sign } => {
                let bytes = loop {
                    if let Some(b) = rx.borrow().clone() {
                        break Some(b);
                    }
                    if rx.changed().await.is_err() {
                        break None;
                    }
                };
                let answer = match bytes {
                    Some(b) => crate::pipeline::dedupe::decode_cached(&request, b),
                    None => crate::pipeline::respond::answer(&request, ResponseCode::SYSTEM_ERROR),
                };
                Done::duplicate(answer, *request, sign)
            }
            Step::NeedOriginal(r) => {
                let mut found = self.originals(&r).await;
                // A terminal that gave up waiting may send its reversal while the original is
                // still on its way through another task: look once more before saying 25.
                if matches!(found, Ok(Ok((None, _)))) && !r.original_key.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    found = self.originals(&r).await;
                }
                match found {
                    Ok(Ok((original, already))) => {
                        self.pipeline.resume_reference(*r, original, already, self.clock.now_ms())
                    }
                    _ => {
                        tracing::error!("the original of a reversal or advice could not be read");
                        self.pipeline.unreadable_reference(*r)
                    }
                }
            }
        };
        self.finish(done, started).await
    }

    /// The answer another node gave to a transmission it claimed: polled in the shared store until
    /// it is there (that node is still waiting for its issuer), for as long as an issuer may take.
    async fn remote_answer(&self, key: &str) -> Option<(String, Vec<u8>)> {
        let deadline = Instant::now() + REMOTE_ANSWER_WAIT;
        loop {
            let state = self.pipeline.state.clone();
            let k = key.to_string();
            match tokio::task::spawn_blocking(move || state.transmission(&k)).await {
                Ok(Ok(Some((content, Some(answer))))) => return Some((content, answer)),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "another node's answer could not be read"),
                Err(_) => return None,
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// A reversal's original and any earlier acceptance of the reversal itself.
    #[allow(clippy::type_complexity)]
    async fn originals(
        &self,
        r: &crate::pipeline::Reference,
    ) -> Result<
        crate::Result<(Option<crate::state::OriginalRecord>, Option<crate::state::OriginalRecord>)>,
        tokio::task::JoinError,
    > {
        let state = self.pipeline.state.clone();
        let (ok, own) = (r.original_key.clone(), r.own_key.clone());
        tokio::task::spawn_blocking(move || {
            let o = if ok.is_empty() { Ok(None) } else { state.original(&ok) };
            o.and_then(|o| state.original(&own).map(|a| (o, a)))
        })
        .await
    }

    /// Carries out an answer's effects, then lets it go.
    async fn finish(&self, mut done: Done, started: Instant) -> Outcome {
        let owed = std::mem::take(&mut done.owed);
        for o in owed {
            self.settle_owed(o, &mut done.answer).await;
        }
        if let Some(d) = &done.decline {
            match d.stage {
                Stage::Identify | Stage::Sanitize => {
                    warn!(code = d.code.as_str(), stage = d.stage.as_str(), reason = %d.reason, "request refused")
                }
                _ => {
                    debug!(code = d.code.as_str(), stage = d.stage.as_str(), reason = %d.reason, "request declined")
                }
            }
        }
        // Encoded once here; the same bytes are given to repeats once the answer may leave.
        let dedupe = done.dedupe.take();
        let mut encoded = crate::pipeline::Pipeline::encode_answer(&done.answer);
        if encoded.is_none() {
            let req = done.request.as_ref().unwrap_or(&done.answer);
            done.answer = crate::pipeline::respond::answer(req, ResponseCode::SYSTEM_ERROR);
        }
        let transmission = done.transmission.take();
        if let Some(issuer) = done.route.strip_suffix(":stand-in") {
            self.metrics.stand_in_approvals.with_label_values(&[issuer]).inc();
        }
        if done.route == "duplicate" {
            self.metrics.duplicates.inc();
        }
        let latency = started.elapsed();
        self.metrics.in_flight.dec();
        let mti = done.request.as_ref().map(|r| r.mti()).unwrap_or(done.answer.mti());
        let rc = done.answer.text(39).map(|c| c.into_owned()).unwrap_or_default();
        self.metrics.responses.with_label_values(&[mti.as_str(), &rc, &done.route]).inc();
        self.metrics.latency.with_label_values(&[mti.as_str()]).observe(latency.as_secs_f64());
        let mut answer = done.answer;
        if let Some(req) = &done.request {
            let entry = crate::journal::MessageEntry {
                msg: req,
                response: Some(&answer),
                direction: Direction::AcquirerExchange,
                at_ms: self.clock.now_ms(),
                route: Some(&done.route),
                latency_us: Some(latency.as_micros() as u64),
            };
            if !self.journal.record_message(entry) {
                tracing::error!("journal full of rows the store refused: request left unanswered");
                self.pipeline.publish(dedupe.as_ref(), None);
                return Outcome::Nothing;
            }
        }
        // The answer's row, and the decision state it rests on, are durable before it leaves.
        let t = Instant::now();
        let durable = self.journal.durable().await;
        stage(&self.metrics.stages.journal_durable, t);
        if let Err(e) = durable {
            tracing::error!(error = %e, "journal row not durable: answered 96 instead");
            answer = self.unjournaled(&answer);
            encoded = crate::pipeline::Pipeline::encode_answer(&answer);
            if let Some(u) = done.undo.take() {
                self.undo_approval(u.reversal()).await;
            }
        }
        self.pipeline.publish(dedupe.as_ref(), encoded.clone());
        // Over a shared store, a retransmission reaching another node gets the bytes the terminal
        // was given (committed with the next group; that node waits for them meanwhile).
        if let (Some(key), Some(bytes)) = (transmission, &encoded) {
            self.pipeline.state.record_answer(key, bytes);
        }
        Outcome::Answer { msg: answer, sign: done.sign, bytes: encoded }
    }

    /// The answer given instead of one whose journal row the store did not take in time: 96, with
    /// nothing of the decision (its row, queued and retried, records what the issuer said; this
    /// one's row records the 96).
    fn unjournaled(&self, answer: &Message) -> Message {
        let mut a = answer.clone();
        for de in [38, 54, 55] {
            a.remove(de);
        }
        let _ = a.set_text(39, ResponseCode::SYSTEM_ERROR.as_str());
        let _ = self.journal.record_message(crate::journal::MessageEntry {
            msg: &a,
            response: None,
            direction: Direction::AcquirerOut,
            at_ms: self.clock.now_ms(),
            route: Some("journal-unavailable"),
            latency_us: None,
        });
        a
    }

    /// Reverses at the issuer an approval the terminal was answered 96 for: at once (the store
    /// that would queue it is the one failing), queued when the issuer does not take it now.
    async fn undo_approval(&self, u: Owed) {
        let Some(issuer) = self.issuers.get(&u.issuer) else { return };
        let key = crate::wire::original_key(&u.msg);
        match issuer.link.request(&u.msg).await {
            Ok(a) if a.mti().is_response() => {
                tracing::warn!(original = %key, "approval answered 96 (journal not durable): reversed at the issuer");
            }
            _ => {
                if self.enqueue(issuer, u.kind, &u.msg).await {
                    tracing::warn!(original = %key, "approval answered 96 (journal not durable): reversal queued");
                } else {
                    tracing::error!(
                        original = %key,
                        "approval answered 96 (journal not durable): its reversal could be neither \
                         delivered nor queued; the issuer still holds it"
                    );
                }
            }
        }
    }

    /// While the store refuses commits: 96 at once, nothing forwarded, nothing decided.
    async fn refuse_unjournaled(&self, req: Message, started: Instant) -> Outcome {
        let answer = crate::pipeline::respond::answer(&req, ResponseCode::SYSTEM_ERROR);
        self.metrics
            .responses
            .with_label_values(&[
                req.mti().as_str(),
                ResponseCode::SYSTEM_ERROR.as_str(),
                "journal-unavailable",
            ])
            .inc();
        let entry = crate::journal::MessageEntry {
            msg: &req,
            response: Some(&answer),
            direction: Direction::AcquirerExchange,
            at_ms: self.clock.now_ms(),
            route: Some("journal-unavailable"),
            latency_us: Some(started.elapsed().as_micros() as u64),
        };
        if !self.journal.record_message(entry) {
            return Outcome::Nothing;
        }
        Outcome::Answer { msg: answer, sign: None, bytes: None }
    }

    /// A message owed to an issuer: offered at once when it may be, otherwise (or when not taken)
    /// made durable in the issuer's SAF queue.
    async fn settle_owed(&self, o: Owed, answer: &mut Message) {
        let Some(issuer) = self.issuers.get(&o.issuer) else {
            if let Some(rc) = o.on_failure {
                let _ = answer.set_text(39, rc.as_str());
            }
            return;
        };
        if o.online_first
            && let Ok(a) = issuer.link.request(&o.msg).await
            && a.mti().is_response()
        {
            crate::pipeline::respond::take_decision(answer, &a);
            answer.remove(55);
            return;
        }
        let mut msg = o.msg;
        if o.kind == SafKind::Reversal {
            msg.set_mti(codecs::iso8583::Mti::REVERSAL_ADVICE);
        }
        if !self.enqueue(issuer, o.kind, &msg).await
            && let Some(rc) = o.on_failure
        {
            let _ = answer.set_text(39, rc.as_str());
        }
    }

    /// A request of the switch's own (the token service's ID&V, through its gateway) to
    /// the issuer of `pan`, in the issuer link's spec.
    pub async fn issuer_call(&self, pan: &str, msg: &Message) -> Result<Message, LinkError> {
        let name = self.issuer_of(pan).ok_or(LinkError::Down)?;
        let issuer = self.issuers.get(name.as_str()).ok_or(LinkError::Down)?;
        let m = crate::wire::translate(msg, issuer.link.spec()).map_err(|_| LinkError::Encode)?;
        issuer.link.request(&m).await
    }

    /// A notification of the switch's own (the token service's 0620) to the issuer of `pan`: sent
    /// now when the issuer answers, otherwise kept in the issuer's store-and-forward queue and
    /// repeated until it does. False only when it could be neither delivered nor persisted.
    pub async fn issuer_notify(&self, pan: &str, msg: &Message) -> bool {
        let Some(issuer) = self.issuer_of(pan).and_then(|n| self.issuers.get(n.as_str())) else {
            return false;
        };
        let Ok(m) = crate::wire::translate(msg, issuer.link.spec()) else { return false };
        match issuer.link.request(&m).await {
            Ok(answer) if answer.mti().is_response() => true,
            _ => self.enqueue(issuer, SafKind::Notification, &m).await,
        }
    }

    /// The name of the issuer `pan` routes to.
    pub fn issuer_of(&self, pan: &str) -> Option<String> {
        self.pipeline.issuer_for(pan).map(|r| r.name.to_string())
    }

    /// Whether some issuer is routed for `pan` (token eligibility).
    pub fn routes_pan(&self, pan: &str) -> bool {
        self.pipeline.issuer_for(pan).is_some_and(|r| self.issuers.contains_key(&r.name))
    }

    /// Persists a message owed to the issuer (returns once durable) and wakes its SAF worker.
    async fn enqueue(&self, issuer: &IssuerHandle, kind: SafKind, msg: &Message) -> bool {
        let Ok(bytes) = msg.encode() else { return false };
        let key = crate::wire::original_key(msg);
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
            Ok(Ok(d)) => {
                if d.quarantined > 0 {
                    metrics.saf_quarantined.with_label_values(&[&name]).inc_by(u64::from(d.quarantined));
                }
                d.messages
            }
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
                    let (q, entry, reason) =
                        (saf.clone(), item.entry.clone(), format!("does not decode: {e}"));
                    let _ = tokio::task::spawn_blocking(move || q.quarantine(&entry, &reason, now)).await;
                    metrics.saf_quarantined.with_label_values(&[&name]).inc();
                    continue;
                }
            };
            let outcome = match issuer.request(&msg).await {
                Ok(answer) => crate::saf::delivery(item.entry.kind, &msg, &answer),
                Err(_) => crate::saf::Delivery::Retry,
            };
            let q = saf.clone();
            let entry = item.entry.clone();
            let now = clock.now_ms();
            let random = entropy.u32();
            let _ = tokio::task::spawn_blocking(move || match outcome {
                crate::saf::Delivery::Taken => q.acknowledged(entry.id),
                crate::saf::Delivery::Refused => q.quarantine(&entry, "refused by the issuer", now),
                crate::saf::Delivery::Retry => q.failed(&entry, now, random).map(|_| ()),
            })
            .await;
            match outcome {
                crate::saf::Delivery::Taken => delivered_advices |= item.entry.kind == SafKind::Advice,
                crate::saf::Delivery::Refused => metrics.saf_quarantined.with_label_values(&[&name]).inc(),
                crate::saf::Delivery::Retry => break,
            }
        }
        if delivered_advices {
            stand_in_reset();
        }
    }
}

/// Times a stage since `since`.
fn stage(h: &prometheus::Histogram, since: Instant) {
    h.observe(since.elapsed().as_secs_f64());
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
