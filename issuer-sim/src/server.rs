//! The issuer simulator on the network: a TCP listener speaking the network spec with its framing,
//! many requests in flight per connection answered as they complete, and injectable faults so that
//! tests can make one request slow, lost, garbled or fatal to its connection, deterministically.
//!
//! A fault rule is data: conditions (all that are given must hold; none given matches every
//! request) and an action. The rules live in [`ServerState::faults`] and can change while the
//! server runs (in-process tests write them; the binary has a small admin port for it).
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
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::host::Issuer;

/// A fault applied to the requests it matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Matches requests with this DE 4 amount.
    #[serde(default)]
    pub when_amount: Option<u64>,
    /// ...and, when set, this MTI only (e.g. `0100`, so that the reversal of a dropped request
    /// gets through).
    #[serde(default)]
    pub when_mti: Option<String>,
    /// ...and, when set, PANs (DE 2, else the track 2 PAN) ending with these digits (1 to 4).
    #[serde(default)]
    pub when_pan_suffix: Option<String>,
    /// ...and, when set, STANs (DE 11) that are a multiple of this: every Nth request of a
    /// sender that counts its STANs up.
    #[serde(default)]
    pub when_stan_multiple_of: Option<u32>,
    /// `drop`, `delay:MS`, `garble` or `disconnect`.
    pub action: String,
}

impl FaultRule {
    /// A rule on DE 4 (and optionally the MTI): what most tests need.
    pub fn on_amount(amount: u64, mti: Option<&str>, action: &str) -> Self {
        FaultRule {
            when_amount: Some(amount),
            when_mti: mti.map(str::to_string),
            action: action.to_string(),
            ..FaultRule::default()
        }
    }

    /// Whether `req` meets every condition given.
    pub fn matches(&self, req: &Message) -> bool {
        if let Some(a) = self.when_amount
            && req.amount().ok().flatten().map(|x| x.0) != Some(a)
        {
            return false;
        }
        if let Some(m) = &self.when_mti
            && m != req.mti().as_str()
        {
            return false;
        }
        if let Some(suffix) = &self.when_pan_suffix
            && !crate::host::pan_of(req).is_some_and(|p| p.ends_with(suffix.as_str()))
        {
            return false;
        }
        if let Some(n) = self.when_stan_multiple_of
            && !req.stan().ok().flatten().is_some_and(|s| n > 0 && s.0 % n == 0)
        {
            return false;
        }
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Drop,
    Delay(u64),
    Garble,
    Disconnect,
}

fn parse_action(a: &str) -> Option<Fault> {
    match a {
        "drop" => Some(Fault::Drop),
        "garble" => Some(Fault::Garble),
        "disconnect" => Some(Fault::Disconnect),
        _ => a.strip_prefix("delay:").and_then(|ms| ms.parse().ok()).map(Fault::Delay),
    }
}

/// Checks fault rules; every problem at once.
pub fn check_faults(rules: &[FaultRule]) -> Result<(), String> {
    let mut bad = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        if parse_action(&r.action).is_none() {
            bad.push(format!(
                "fault[{i}].action: {:?} is not drop, delay:MS, garble or disconnect",
                r.action
            ));
        }
        if let Some(m) = &r.when_mti
            && m.parse::<codecs::iso8583::Mti>().is_err()
        {
            bad.push(format!("fault[{i}].when_mti: {m:?} is not 4 digits"));
        }
        if let Some(s) = &r.when_pan_suffix
            && !(1..=4).contains(&s.len())
        {
            bad.push(format!(
                "fault[{i}].when_pan_suffix: expected 1 to 4 digits, found {} characters",
                s.len()
            ));
        } else if let Some(s) = &r.when_pan_suffix
            && !s.bytes().all(|b| b.is_ascii_digit())
        {
            bad.push(format!("fault[{i}].when_pan_suffix: expected digits only"));
        }
        if r.when_stan_multiple_of == Some(0) {
            bad.push(format!("fault[{i}].when_stan_multiple_of: must be at least 1"));
        }
    }
    if bad.is_empty() { Ok(()) } else { Err(bad.join("; ")) }
}

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
}

impl ServerState {
    fn fault_for(&self, req: &Message) -> Option<Fault> {
        let faults = self.faults.read().unwrap_or_else(|p| p.into_inner());
        faults.iter().find(|r| r.matches(req)).and_then(|r| parse_action(&r.action))
    }
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

/// Serves until `stop`: one task per connection reading frames, one task per request deciding
/// it (under the state's mutex, briefly) and one writer per connection sending the answers as
/// they complete, in whatever order that is.
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
            let writer_task = tokio::spawn(async move {
                while let Some(item) = rx.recv().await {
                    // None: the fault "disconnect".
                    let Some(frame) = item else { break };
                    if writer.send(frame).await.is_err() {
                        break;
                    }
                }
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
                        match format_error_answer(&state.spec, &frame.payload).and_then(|m| m.encode().ok()) {
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
                let state = state.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let fault = state.fault_for(&req);
                    let now = (state.clock)();
                    let rnd = (state.random)();
                    let started = Instant::now();
                    let answer = {
                        let mut issuer = state.issuer.lock().unwrap_or_else(|p| p.into_inner());
                        issuer.handle(&req, now, &yymm(now), rnd)
                    };
                    let decide_us = started.elapsed().as_micros();
                    let Some(answer) = answer else { return };
                    // Masked PAN only (PCI DSS 3.4); never PIN block, DE 55 or keys.
                    debug!(
                        mti = %req.mti(),
                        stan = %req.text(11).unwrap_or_default(),
                        pan = %crate::host::pan_of(&req).map(|p| crate::cards::mask(&p)).unwrap_or_default(),
                        rc = %answer.text(39).unwrap_or_default(),
                        fault = ?fault,
                        decide_us,
                        "answered"
                    );
                    let Ok(mut bytes) = answer.encode() else { return };
                    match fault {
                        Some(Fault::Drop) => return,
                        Some(Fault::Delay(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
                        Some(Fault::Garble) => {
                            let mut b = bytes.to_vec();
                            for x in b.iter_mut().skip(4) {
                                *x ^= 0x5A;
                            }
                            bytes = Bytes::from(b);
                        }
                        Some(Fault::Disconnect) => {
                            let _ = tx.send(None).await;
                            return;
                        }
                        None => {}
                    }
                    let _ = tx.send(Some(Frame { tpdu, payload: bytes })).await;
                });
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
    use codecs::iso8583::{ContentType, DataEncoding};
    let mut lenient = (**spec).clone();
    let defined: Vec<u16> = spec.defined().collect();
    for de in defined {
        let Some(f) = spec.field(de) else { continue };
        if f.encoding == DataEncoding::Ascii {
            let raw = codecs::iso8583::FieldSpec {
                content: ContentType::B,
                encoding: DataEncoding::Binary,
                ..f.clone()
            };
            lenient = lenient.with_field(de, raw);
        }
    }
    let lenient = Arc::new(lenient);
    let m = Message::decode_slice(&lenient, payload).ok()?;
    let mti = m.mti().response()?;
    let text = |de: u16| m.field(de).and_then(|f| std::str::from_utf8(&f.data).ok().map(str::to_string));
    let (stan, tid) = (text(11)?, text(41)?);
    let mut rsp = Message::new(spec.clone(), mti);
    rsp.set_text(11, &stan).ok()?;
    rsp.set_text(41, &tid).ok()?;
    rsp.set_text(39, "30").ok()?;
    Some(rsp)
}

/// The admin port: one command a line, one answer a line, for switching faults on and off in a
/// running simulator (tests in other processes, an operator rehearsing an outage). Bind it to
/// 127.0.0.1 only: it has no authentication.
///
/// ```text
/// faults                       → the rules now in force, as a JSON array
/// faults set [{"when_amount": 777, "action": "drop"}]  → "ok 1" (the rules replaced)
/// faults clear                 → "ok 0"
/// sms                          → the OTPs texted to cardholders: [{"card": "476173******0027", "otp": "…", "at_ms": …}]
/// ```
/// Anything else, or rules that do not check, gets `error: ...` and changes nothing.
pub async fn run_admin(listener: TcpListener, state: Arc<ServerState>, stop: CancellationToken) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut lines = BufReader::new(rd).lines();
            loop {
                let line = tokio::select! {
                    _ = stop.cancelled() => return,
                    l = lines.next_line() => l,
                };
                let Ok(Some(line)) = line else { return };
                let reply = admin_command(&state, line.trim());
                if wr.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// One admin command's answer (see [`run_admin`]).
pub fn admin_command(state: &ServerState, line: &str) -> String {
    if line == "sms" {
        // The one-time passwords the issuer has texted to cardholders (test cards only).
        return match state.issuer.lock() {
            Ok(i) => serde_json::to_string(&i.sms_outbox).unwrap_or_else(|e| format!("error: {e}")),
            Err(_) => "error: issuer unavailable".into(),
        };
    }
    let mut faults = state.faults.write().unwrap_or_else(|p| p.into_inner());
    match line {
        "faults" => serde_json::to_string(&*faults).unwrap_or_else(|e| format!("error: {e}")),
        "faults clear" => {
            faults.clear();
            "ok 0".into()
        }
        _ => match line.strip_prefix("faults set ") {
            Some(json) => match serde_json::from_str::<Vec<FaultRule>>(json) {
                Ok(rules) => match check_faults(&rules) {
                    Ok(()) => {
                        *faults = rules;
                        format!("ok {}", faults.len())
                    }
                    Err(e) => format!("error: {e}"),
                },
                Err(e) => format!("error: fault rules (JSON): {e}"),
            },
            None => "error: expected faults, faults set [JSON rules], faults clear or sms".into(),
        },
    }
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

    #[test]
    fn fault_actions() {
        assert_eq!(parse_action("delay:250"), Some(Fault::Delay(250)));
        assert!(check_faults(&[FaultRule::on_amount(1, None, "explode")]).is_err());
    }
}
