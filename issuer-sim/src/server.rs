//! The issuer simulator on the network: a TCP listener speaking the network spec with its framing,
//! many requests in flight per connection answered as they complete, and injectable faults so that
//! tests can make one request slow, lost, garbled or fatal to its connection, deterministically.
//!
//! A fault rule is data: conditions (all that are given must hold; none given matches every
//! request) and an action. The rules live in [`ServerState::faults`] and can change while the
//! server runs (in-process tests write them; the binary has an authenticated admin port for it,
//! [`crate::admin`]).
//!
//! With a link MAC ([`ServerState::link_mac`], the switch's `[issuer.mac]` at the other end) the
//! listener is the switch's authenticated link: a request whose MAC (DE 64/128) is missing or wrong
//! is answered 63 and decided no further, every answer is signed, and only a request whose MAC
//! verified may carry the token service's word that it verified a token cryptogram (DE 123
//! DF8106, [`Origin`]). Without one, anyone may connect, and that word is never believed.
//!
//! ```toml
//! [[fault]]
//! when_amount = 777             # requests whose DE 4 is this amount (minor units)...
//! when_mti = "0100"             # ...of this MTI...
//! when_pan_suffix = "0011"      # ...whose PAN ends with these digits (at most 4)...
//! when_stan_multiple_of = 10    # ...whose STAN (DE 11) is a multiple of this (every 10th)...
//! action = "drop"               # ...get no answer; or "delay:3000" (ms), "garble", "disconnect"
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codecs::framing::{Frame, FrameCodec, FramingKind, Tpdu};
use codecs::iso8583::{Message, Spec};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::faults::{Fault, parse_action};
pub use crate::faults::{FaultRule, check_faults};
use crate::host::{Issuer, Origin};
use crate::link_mac::LinkMac;

/// What the server needs.
pub struct ServerState {
    pub issuer: Mutex<Issuer>,
    pub spec: Arc<Spec>,
    pub framing: FramingKind,
    /// Changeable while running (tests switch a fault on and off).
    pub faults: std::sync::RwLock<Vec<FaultRule>>,
    /// Milliseconds since the epoch.
    pub clock: Box<dyn Fn() -> u64 + Send + Sync>,
    pub random: Box<dyn Fn() -> u32 + Send + Sync>,
    /// The switch's link MAC: requests must carry a valid one, answers are signed, and DF8106 is
    /// believed of verified requests only. `None`: an unauthenticated listener.
    pub link_mac: Option<LinkMac>,
}

impl ServerState {
    fn fault_for(&self, req: &Message) -> Option<Fault> {
        let faults = self.faults.read().unwrap_or_else(|p| p.into_inner());
        faults.iter().find(|r| r.matches(req)).and_then(|r| parse_action(&r.action))
    }

    /// The answer to `req` (`raw`: the request as received), signed when the listener has a link
    /// MAC; `None` when there is nothing to send (a response, or an answer that cannot be signed).
    ///
    /// With a link MAC, a request whose MAC is missing or wrong is answered 63 and goes no further:
    /// it is not decided and nothing is booked. Only a request whose MAC verified comes from the
    /// switch ([`Origin::AuthenticatedLink`]); without a link MAC every request is
    /// [`Origin::Unauthenticated`].
    pub fn answer(&self, raw: &[u8], req: &Message) -> Option<Message> {
        let mut answer = self.unsigned_answer(raw, req)?;
        self.wire(&mut answer)?;
        Some(answer)
    }

    /// [`Self::answer`] before it is signed.
    fn unsigned_answer(&self, raw: &[u8], req: &Message) -> Option<Message> {
        let origin = match &self.link_mac {
            None => {
                if crate::host::tsp_says_verified(req) {
                    // Most likely a switch whose link has a MAC key this listener was not given.
                    warn!(
                        mti = %req.mti(),
                        stan = %req.text(11).unwrap_or_default(),
                        "DF8106 ignored: no request is from the switch's link without a link MAC"
                    );
                }
                Origin::Unauthenticated
            }
            Some(link) => match link.verify(raw, req) {
                Ok(()) => Origin::AuthenticatedLink,
                Err(e) => {
                    if req.mti().is_response() {
                        return None;
                    }
                    warn!(
                        mti = %req.mti(),
                        stan = %req.text(11).unwrap_or_default(),
                        error = %e,
                        "request refused on the switch's link: answered 63"
                    );
                    return Some(crate::host::answer(req, "63"));
                }
            },
        };
        let now = (self.clock)();
        let rnd = (self.random)();
        let mut issuer = self.issuer.lock().unwrap_or_else(|p| p.into_inner());
        issuer.handle(req, origin, now, &yymm(now), rnd)
    }

    /// `msg` encoded as it goes on the link: signed (in place, and on the wire) when the listener
    /// has a link MAC. `None` (logged) when it cannot be signed or encoded: an answer the switch
    /// would drop is not sent.
    pub fn wire(&self, msg: &mut Message) -> Option<Bytes> {
        let Some(link) = &self.link_mac else { return msg.encode().ok() };
        match link.sign(msg) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                warn!(mti = %msg.mti(), error = %e, "answer not sent: it cannot be signed");
                None
            }
        }
    }

    /// [`Self::answer`] encoded, logged at debug level (masked PAN only, PCI DSS 3.4; never the
    /// PIN block, DE 55 or keys) with the fault it will meet.
    fn answer_bytes(&self, raw: &[u8], req: &Message, fault: Option<&Fault>) -> Option<Bytes> {
        let started = Instant::now();
        let mut answer = self.unsigned_answer(raw, req)?;
        let bytes = self.wire(&mut answer)?;
        debug!(
            mti = %req.mti(),
            stan = %req.text(11).unwrap_or_default(),
            pan = %req.card_number().map(|p| codecs::pan::mask(&p)).unwrap_or_default(),
            rc = %answer.text(39).unwrap_or_default(),
            fault = ?fault,
            decide_us = started.elapsed().as_micros(),
            "answered"
        );
        Some(bytes)
    }
}

/// 32 unpredictable bits for [`ServerState::random`] (one-time passwords, approval codes): the
/// calling thread's generator (ChaCha12, seeded and reseeded from the operating system), so an
/// authorization costs no system call for them.
pub fn thread_random() -> u32 {
    use rand::Rng;
    rand::rng().next_u32()
}

/// Today's YYMM from milliseconds since the epoch (civil calendar, UTC).
pub fn yymm(now_ms: u64) -> String {
    codecs::iso8583::datetime::Utc::from_ms(now_ms).yymm()
}

/// How long a connection may hold a partial frame, and how long it may stay silent, before it is
/// closed (the same rules as the switch's listeners, INTERFACES.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A frame begun and not completed within this is dropped with its connection.
    pub read_timeout: Duration,
    /// A connection with nothing received for this long (and no partial frame) is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits { read_timeout: Duration::from_secs(10), idle_timeout: Duration::from_secs(300) }
    }
}

/// Serves until `stop`, with the default [`ConnectionLimits`].
pub async fn run(listener: TcpListener, state: Arc<ServerState>, stop: CancellationToken) {
    run_with(listener, state, stop, ConnectionLimits::default()).await
}

/// Serves until `stop`: one task per connection reading frames and deciding each (under the
/// state's mutex, briefly), one writer per connection sending every answer ready in one write; a
/// request with an injected delay waits on a task of its own, so answers leave as they complete,
/// in whatever order that is.
pub async fn run_with(
    listener: TcpListener,
    state: Arc<ServerState>,
    stop: CancellationToken,
    limits: ConnectionLimits,
) {
    // How often a quiet connection is looked at (partial frame age, idleness).
    let tick = limits
        .read_timeout
        .min(limits.idle_timeout)
        .min(Duration::from_secs(1))
        .max(Duration::from_millis(10));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            debug!(%peer, "switch connected");
            let (rd, wr) = stream.into_split();
            let codec = FrameCodec::new(state.framing);
            let mut reader = FramedRead::new(rd, codec);
            let mut writer = FramedWrite::new(wr, codec);
            let (tx, mut rx) = mpsc::channel::<Option<Frame>>(1024);
            let conn_stop = stop.child_token();
            let w_stop = conn_stop.clone();
            // Writer: every answer ready when it wakes goes out in one flush.
            let writer_task = tokio::spawn(async move {
                'conn: while let Some(mut item) = rx.recv().await {
                    loop {
                        // None: the fault "disconnect".
                        let Some(frame) = item else { break 'conn };
                        if writer.feed(frame).await.is_err() {
                            break 'conn;
                        }
                        match rx.try_recv() {
                            Ok(next) => item = next,
                            Err(_) => break,
                        }
                    }
                    if SinkExt::<Frame>::flush(&mut writer).await.is_err() {
                        break;
                    }
                }
                let _ = SinkExt::<Frame>::flush(&mut writer).await;
                w_stop.cancel();
            });
            let mut partial_since: Option<Instant> = None;
            let mut last_frame = Instant::now();
            loop {
                let next = tokio::select! {
                    _ = conn_stop.cancelled() => break,
                    f = tokio::time::timeout(tick, reader.next()) => f,
                };
                // FramedRead keeps what it has buffered when `next` is cancelled by the timeout.
                let Ok(frame) = next else {
                    let now = Instant::now();
                    if reader.read_buffer().is_empty() {
                        partial_since = None;
                        if now.duration_since(last_frame) >= limits.idle_timeout {
                            debug!(%peer, "idle connection closed");
                            break;
                        }
                    } else if now.duration_since(*partial_since.get_or_insert(now)) >= limits.read_timeout {
                        warn!(%peer, buffered = reader.read_buffer().len(), "partial frame not completed in time; connection closed");
                        break;
                    }
                    continue;
                };
                partial_since = None;
                last_frame = Instant::now();
                let Some(Ok(frame)) = frame else { break };
                let tpdu = frame.tpdu.map(Tpdu::swapped);
                let req = match Message::decode(&state.spec, frame.payload.clone()) {
                    Ok(m) => m,
                    Err(e) => {
                        // INTERFACES.md §5: answer 30 when MTI, DE 11 and DE 41 can be read,
                        // otherwise close the connection (the stream cannot be trusted).
                        let answer = format_error_answer(&state.spec, &frame.payload)
                            .and_then(|mut m| state.wire(&mut m));
                        match answer {
                            Some(bytes) => {
                                warn!(%peer, error = %e, "request breaks the spec: answered 30");
                                let _ = tx.send(Some(Frame { tpdu, payload: bytes })).await;
                                continue;
                            }
                            None => {
                                warn!(%peer, error = %e, "undecodable request: connection closed");
                                break;
                            }
                        }
                    }
                };
                // Decided here, on the task that read it (the decision is brief); only an
                // injected delay waits on a task of its own, so that it holds up nothing else.
                let fault = state.fault_for(&req);
                let Some(bytes) = state.answer_bytes(&frame.payload, &req, fault.as_ref()) else { continue };
                match fault {
                    Some(Fault::Drop) => {}
                    Some(Fault::Delay(ms)) => {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            let _ = tx.send(Some(Frame { tpdu, payload: bytes })).await;
                        });
                    }
                    Some(Fault::Garble) => {
                        let mut b = bytes.to_vec();
                        for x in b.iter_mut().skip(4) {
                            *x ^= 0x5A;
                        }
                        let _ = tx.send(Some(Frame { tpdu, payload: Bytes::from(b) })).await;
                    }
                    Some(Fault::Disconnect) => {
                        let _ = tx.send(None).await;
                    }
                    None => {
                        if tx.send(Some(Frame { tpdu, payload: bytes })).await.is_err() {
                            break;
                        }
                    }
                }
            }
            drop(tx);
            conn_stop.cancel();
            let _ = writer_task.await;
        });
    }
}

/// The answer to a request that does not decode under `spec`: its response MTI with DE 11, DE 41
/// and DE 39 = 30, when the MTI, DE 11 and DE 41 can be read by a lenient reading of the same
/// layout (every element taken as raw bytes, no content checks) and are valid themselves; `None`
/// otherwise, or when the message is itself a response.
pub fn format_error_answer(spec: &Arc<Spec>, payload: &[u8]) -> Option<Message> {
    codecs::iso8583::reply::format_error(spec, Bytes::copy_from_slice(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yymm_of_known_dates() {
        assert_eq!(yymm(0), "7001");
        assert_eq!(yymm(1_764_028_800_000), "2511"); // 2025-11-25
        assert_eq!(yymm(951_782_400_000), "0002"); // 2000-02-29
    }

    fn request() -> Message {
        let spec = Spec::builtin("network").expect("spec").clone();
        let mut m = Message::new(spec, "0100".parse().expect("mti"));
        for (de, v) in [(3u16, "000000"), (4, "000000001000"), (11, "000123"), (41, "TERM0001")] {
            m.set_text(de, v).expect("set");
        }
        m
    }

    #[test]
    fn a_request_breaking_the_spec_is_answered_30_when_stan_and_terminal_can_be_read() {
        let spec = Spec::builtin("network").expect("spec").clone();
        let mut raw = request().encode().expect("encode").to_vec();
        // DE 4 starts after MTI (4), bitmap (8) and DE 3 (6): a letter in a numeric element.
        raw[4 + 8 + 6 + 3] = b'X';
        assert!(Message::decode_slice(&spec, &raw).is_err());
        let rsp = format_error_answer(&spec, &raw).expect("an answer");
        assert_eq!(rsp.mti().as_str(), "0110");
        assert_eq!(rsp.text(39).as_deref(), Some("30"));
        assert_eq!(rsp.text(11).as_deref(), Some("000123"));
        assert_eq!(rsp.text(41).as_deref(), Some("TERM0001"));
        // Without DE 41, or cut short, or a response: nothing to answer.
        let mut m = request();
        m.remove(41);
        let mut raw = m.encode().expect("encode").to_vec();
        raw[4 + 8 + 6 + 3] = b'X';
        assert!(format_error_answer(&spec, &raw).is_none());
        let raw = request().encode().expect("encode");
        assert!(format_error_answer(&spec, &raw[..raw.len() - 3]).is_none());
        let mut m = request();
        m.set_mti("0110".parse().expect("mti"));
        let mut raw = m.encode().expect("encode").to_vec();
        raw[4 + 8 + 6 + 3] = b'X';
        assert!(format_error_answer(&spec, &raw).is_none());
        // A STAN that is itself bad is not echoed.
        let mut raw = request().encode().expect("encode").to_vec();
        raw[4 + 8 + 6 + 12 + 2] = b'?';
        assert!(format_error_answer(&spec, &raw).is_none());
    }

    fn state(link_mac: Option<LinkMac>) -> (ServerState, crate::cards::TestIssuer) {
        crate::testing::server_state(link_mac, &mut testkit::TestRng::seeded(7).filler())
    }

    fn answer_to(state: &ServerState, req: &Message) -> Option<Message> {
        state.answer(&req.encode().expect("encode"), req)
    }

    fn open_to_buy(state: &ServerState, pan: &str) -> Option<u64> {
        state.issuer.lock().expect("issuer").open_to_buy(pan)
    }

    const LINK_KEY: [u8; 16] = *b"link-mac-key-16b";

    #[test]
    fn a_forged_tsp_flag_on_an_unauthenticated_listener_is_not_approved_and_books_nothing() {
        use crate::testing::{Tx, chip_request, with_tsp_verified, with_zero_cryptogram};
        let (state, t) = state(None);
        let card = &t.clear[0];
        let before = open_to_buy(&state, &card.pan);
        let forged = with_tsp_verified(with_zero_cryptogram(chip_request(
            &state.spec,
            card,
            &Tx::purchase(1, 5_000, 1),
        )));
        let a = answer_to(&state, &forged).expect("an answer");
        assert_eq!(a.text(39).as_deref(), Some("82"), "the issuer checked the cryptogram itself");
        assert_eq!(open_to_buy(&state, &card.pan), before, "nothing booked");
        assert!(!a.contains(64) && !a.contains(128), "no link MAC: nothing signed");
    }

    #[test]
    fn on_the_link_a_request_without_a_valid_mac_is_answered_63_and_never_decided() {
        use crate::testing::{Tx, chip_request, link_mac, with_tsp_verified, with_zero_cryptogram};
        let (state, t) = state(Some(link_mac(&LINK_KEY)));
        let switch = link_mac(&LINK_KEY);
        let card = &t.clear[0];
        let before = open_to_buy(&state, &card.pan);
        let refused = |req: &Message| {
            let a = answer_to(&state, req).expect("an answer");
            assert_eq!(a.text(39).as_deref(), Some("63"), "STAN {:?}", req.text(11));
            assert_eq!(a.text(11), req.text(11));
            let raw = a.encode().expect("encode");
            switch.verify(&raw, &a).expect("the 63 is signed too");
        };
        // Unsigned, signed under another key, and changed after signing.
        let forged = with_tsp_verified(with_zero_cryptogram(chip_request(
            &state.spec,
            card,
            &Tx::purchase(1, 5_000, 1),
        )));
        refused(&forged);
        let mut other_key = forged.clone();
        link_mac(b"another-key-16b!").sign(&mut other_key).expect("sign");
        refused(&other_key);
        let mut tampered = chip_request(&state.spec, card, &Tx::purchase(2, 5_000, 2));
        switch.sign(&mut tampered).expect("sign");
        tampered.set_text(4, "000000500000").expect("DE 4");
        refused(&tampered);
        // Network management too.
        let mut echo = Message::new(state.spec.clone(), "0800".parse().expect("MTI"));
        echo.set_text(11, "000009").expect("DE 11");
        echo.set_text(70, "301").expect("DE 70");
        refused(&echo);
        assert_eq!(open_to_buy(&state, &card.pan), before, "nothing booked");
        // Never decided: the ATC of the refused request is still unused, so the genuine request
        // with it is approved (a decided one would have been recorded, and this a replay: 82).
        let mut genuine = chip_request(&state.spec, card, &Tx::purchase(3, 5_000, 2));
        switch.sign(&mut genuine).expect("sign");
        assert_eq!(
            answer_to(&state, &genuine).and_then(|a| a.text(39).map(|c| c.into_owned())).as_deref(),
            Some("00")
        );
        // A response with a bad MAC is not answered at all.
        let mut rsp = echo.clone();
        rsp.set_mti("0810".parse().expect("MTI"));
        assert!(answer_to(&state, &rsp).is_none());
    }

    #[test]
    fn on_the_link_a_genuine_request_is_decided_believed_and_its_answer_signed() {
        use crate::testing::{Tx, chip_request, link_mac, tag91, with_tsp_verified, with_zero_cryptogram};
        let (state, t) = state(Some(link_mac(&LINK_KEY)));
        let switch = link_mac(&LINK_KEY);
        let card = &t.clear[0];
        let before = open_to_buy(&state, &card.pan).expect("card");
        // The token service's word, from the switch: believed.
        let mut token_payment = with_tsp_verified(with_zero_cryptogram(chip_request(
            &state.spec,
            card,
            &Tx::purchase(1, 5_000, 1),
        )));
        switch.sign(&mut token_payment).expect("sign");
        let a = answer_to(&state, &token_payment).expect("an answer");
        assert_eq!(a.text(39).as_deref(), Some("00"));
        assert!(tag91(&a).is_none(), "the token service makes the ARPC");
        let raw = a.encode().expect("encode");
        switch.verify(&raw, &a).expect("the answer's MAC verifies at the switch");
        assert_eq!(a.fields().last().map(|f| f.de), Some(64), "the MAC is the last element");
        assert_eq!(open_to_buy(&state, &card.pan), Some(before - 5_000));
        // Network management: answered and signed.
        let mut echo = Message::new(state.spec.clone(), "0800".parse().expect("MTI"));
        echo.set_text(11, "000010").expect("DE 11");
        echo.set_text(70, "301").expect("DE 70");
        switch.sign(&mut echo).expect("sign");
        let a = answer_to(&state, &echo).expect("an answer");
        assert_eq!((a.mti().as_str(), a.text(39).as_deref()), ("0810", Some("00")));
        switch.verify(&a.encode().expect("encode"), &a).expect("signed");
    }

    #[test]
    fn fault_actions() {
        assert_eq!(parse_action("delay:250"), Some(Fault::Delay(250)));
        assert!(check_faults(&[FaultRule::on_amount(1, None, "explode")]).is_err());
    }
}
