//! The reversal advices a merchant terminal owes: an 0420 it sent — or is about to send — because
//! it could not stand by a transaction's outcome (no answer in time, DE 39 `68`; an approval whose
//! ARPC the card refused, `82`), kept in the terminal's state folder until the network has taken
//! it in charge, so that a lost acknowledgement or a crash never leaves the cardholder's
//! open-to-buy reduced for money that never moved.
//!
//! ```text
//! DIR/owed-TERM0001.lock   exclusive lock: one process at a time delivers or adds for a TID
//! DIR/owed-TERM0001.json   {"tid", "owed": [{stan, original_stan, rrn, pan (masked), amount, …,
//!                          attempts, sealed}]}
//! DIR/seal.key             32 random bytes (mode 0600): the secret the advices are sealed under
//! ```
//!
//! * An advice is written (atomically, synced) **before** its first send, and removed only once
//!   answered; every send counts in `attempts`.
//! * Before each new transaction `pos` and `checkout` deliver every advice their TID owes, then
//!   send the new 0100; `terminal-sim reversals` delivers them on demand.
//! * A repeat is the same 0420, byte for byte (same DE 11 and DE 7): the message set of
//!   docs/network-spec.md §2 has no 0421 repeat MTI, and a duplicate transmission is recognised
//!   as the same DE 41 + DE 11 + DE 7; the issuer books a repeated reversal once.
//! * What an 0430 means ([`verdict`]): DE 39 `00` (or `94`, already known) — taken in charge,
//!   removed. `91`, `96` (the switch could not make it durable or reach the issuer), `63` (the
//!   link's MAC: a configuration the operator fixes) or no DE 39 — not taken, still owed. Any
//!   other code (`30` format, `15` no route, `12`, `14`, …) is the switch's final word on these
//!   bytes: sending them again would be refused again, so the advice is removed and reported as
//!   refused, for the operator to settle by hand.
//!
//! The 0420 carries the PAN (DE 2) and the expiry (DE 14), so it is stored sealed
//! (AES-256-GCM, [`crate::state::Sealer`], under a key derived from `seal.key` and the TID): the
//! listing beside it holds only the masked PAN. The key file sits in the same folder, which
//! protects against the listing or a copy of it leaking on its own (logs, bug reports, a shared
//! test folder), not against someone who reads the whole folder. A real terminal keeps that key in
//! its tamper-responsive security module; for a simulator whose cards are test cards this is the
//! same protection the ATM gives its owed advices (sealed under a key derived from its IPEK, which
//! the ports file beside it also holds), and no clear PAN is ever written to a file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use codecs::framing::Tpdu;
use codecs::iso8583::{Message, Mti, Spec};
use codecs::pan::mask;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::link::{CONNECT_TIMEOUT, Link, Target};
use crate::state::{Sealer, lock_file, safe_name, write_atomic};

/// The name of the sealing secret in the state folder.
pub const KEY_FILE: &str = "seal.key";

/// One reversal advice owed, as listed (the message itself only sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwedAdvice {
    /// DE 11 of the advice: with the TID, its identity.
    pub stan: String,
    /// DE 11 of the original it reverses (from DE 90).
    pub original_stan: String,
    /// DE 37 of the original.
    pub rrn: String,
    /// The PAN or token of DE 2, masked (first 6, last 4).
    pub pan: String,
    /// DE 4, minor units.
    pub amount_minor: u64,
    /// DE 49, ISO 4217 numeric.
    pub currency: String,
    /// DE 39 of the advice: `68` no answer in time, `82` the card refused the ARPC.
    pub reason: String,
    /// DE 7 of the advice (MMDDhhmmss, UTC).
    pub transmitted: String,
    /// How many times it was sent.
    pub attempts: u32,
    /// The 0420 as sent, sealed (hex of nonce ‖ ciphertext ‖ tag); empty in listings.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sealed: String,
}

impl OwedAdvice {
    /// The entry without its sealed message, for printing.
    pub fn listing(&self) -> OwedAdvice {
        OwedAdvice { sealed: String::new(), ..self.clone() }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OwedFile {
    tid: String,
    #[serde(default)]
    owed: Vec<OwedAdvice>,
}

/// The advices one terminal owes, held locked from [`OwedAdvices::open`] until dropped.
pub struct OwedAdvices {
    path: PathBuf,
    sealer: Sealer,
    file: OwedFile,
    _lock: File,
}

impl std::fmt::Debug for OwedAdvices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwedAdvices")
            .field("tid", &self.file.tid)
            .field("owed", &self.file.owed.len())
            .finish()
    }
}

/// Random bytes from the operating system.
fn random(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::fill(buf).map_err(|e| std::io::Error::other(format!("random source: {e}")))
}

/// The folder's sealing secret, made on first use (under `seal.lock`, so two terminals starting
/// together agree on one).
fn sealing_secret(dir: &Path) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let _lock = lock_file(&dir.join("seal.lock"))?;
    let path = dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(k) if k.len() == 32 => return Ok(Zeroizing::new(k)),
        Ok(k) => {
            return Err(std::io::Error::other(format!(
                "{}: expected 32 bytes, found {}",
                path.display(),
                k.len()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut key = Zeroizing::new(vec![0u8; 32]);
    random(&mut key)?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(&tmp)?;
        f.write_all(&key)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(key)
}

impl OwedAdvices {
    fn paths(dir: &Path, tid: &str) -> (PathBuf, PathBuf) {
        let name = safe_name(tid);
        (dir.join(format!("owed-{name}.lock")), dir.join(format!("owed-{name}.json")))
    }

    /// The advices terminal `tid` owes in state folder `dir`: waits for its lock, then reads them.
    pub fn open(dir: &Path, tid: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (lock, path) = Self::paths(dir, tid);
        let lock = lock_file(&lock)?;
        Self::load(dir, tid, path, lock)
    }

    /// [`OwedAdvices::open`] without waiting: `None` while another process holds the lock.
    pub fn try_open(dir: &Path, tid: &str) -> std::io::Result<Option<Self>> {
        std::fs::create_dir_all(dir)?;
        let (lock, path) = Self::paths(dir, tid);
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock)?;
        match f.try_lock() {
            Ok(()) => Self::load(dir, tid, path, f).map(Some),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn load(dir: &Path, tid: &str, path: PathBuf, lock: File) -> std::io::Result<Self> {
        let file = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => OwedFile { tid: tid.into(), owed: vec![] },
            Err(e) => return Err(e),
        };
        let secret = sealing_secret(dir)?;
        let label = format!("terminal-sim owed reversals {}", tid.trim_end());
        Ok(OwedAdvices { path, sealer: Sealer::derived(&secret, label.as_bytes()), file, _lock: lock })
    }

    /// The TIDs that have an owed-advice file in `dir` (with or without advices left).
    pub fn tids(dir: &Path) -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for e in entries {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("owed-") && name.ends_with(".json") {
                let file: OwedFile = serde_json::from_slice(&std::fs::read(dir.join(name.as_ref()))?)
                    .map_err(|e| std::io::Error::other(format!("{name}: {e}")))?;
                out.push(file.tid);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The advices owed, oldest first.
    pub fn list(&self) -> &[OwedAdvice] {
        &self.file.owed
    }

    /// The terminal these advices belong to.
    pub fn tid(&self) -> &str {
        &self.file.tid
    }

    fn save(&self) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(&self.file).map_err(std::io::Error::other)?;
        write_atomic(&self.path, &json)
    }

    /// Keeps `advice` (an 0420), sealed, and saves the file: call before sending it.
    pub fn add(&mut self, advice: &Message) -> std::io::Result<()> {
        let t = |de| advice.text(de).map(|c| c.into_owned()).unwrap_or_default();
        let mut nonce = [0u8; 12];
        random(&mut nonce)?;
        let bytes = Zeroizing::new(advice.encode().map_err(std::io::Error::other)?.to_vec());
        let entry = OwedAdvice {
            stan: t(11),
            original_stan: t(90).get(4..10).unwrap_or_default().to_string(),
            rrn: t(37),
            pan: mask(&t(2)),
            amount_minor: t(4).parse().unwrap_or(0),
            currency: t(49),
            reason: t(39),
            transmitted: t(7),
            attempts: 0,
            sealed: self.sealer.seal(&bytes, nonce)?,
        };
        self.file.owed.retain(|a| a.stan != entry.stan);
        self.file.owed.push(entry);
        self.save()
    }

    /// The 0420 of an owed entry, opened and decoded in `spec`.
    pub fn message(&self, entry: &OwedAdvice, spec: &Arc<Spec>) -> std::io::Result<Message> {
        let plain = self.sealer.open(&entry.sealed)?;
        Message::decode_slice(spec, &plain).map_err(|e| std::io::Error::other(format!("owed advice: {e}")))
    }

    /// Counts one more send of the advice with DE 11 `stan`, saved before it leaves.
    pub fn sending(&mut self, stan: &str) -> std::io::Result<()> {
        if let Some(a) = self.file.owed.iter_mut().find(|a| a.stan == stan) {
            a.attempts = a.attempts.saturating_add(1);
        }
        self.save()
    }

    /// Forgets the advice with DE 11 `stan` (answered), saved.
    pub fn remove(&mut self, stan: &str) -> std::io::Result<()> {
        self.file.owed.retain(|a| a.stan != stan);
        self.save()
    }
}

/// What became of one send of an owed advice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// An 0430 took it in charge (DE 39 `00`, or `94`: it was known already).
    Acknowledged,
    /// An 0430 refused these bytes for good (the DE 39 given): no longer owed, for the operator.
    Refused(String),
    /// No 0430, or one saying it was not taken (`63`, `91`, `96`, no DE 39): still owed.
    Pending,
    /// The switch could not be reached: still owed, and no point trying the others now.
    Unreachable,
}

/// The rule of what an answer to an 0420 means (see the module's documentation).
pub fn verdict(answer: Option<&Message>) -> Delivery {
    let Some(a) = answer else { return Delivery::Pending };
    if a.mti() != Mti::REVERSAL_ADVICE_RESPONSE {
        return Delivery::Pending;
    }
    match a.text(39).map(|c| c.into_owned()) {
        Some(rc) if rc == "00" || rc == "94" => Delivery::Acknowledged,
        None => Delivery::Pending,
        Some(rc) if matches!(rc.as_str(), "63" | "91" | "96") => Delivery::Pending,
        Some(rc) => Delivery::Refused(rc),
    }
}

/// A connection to the acquirer listener, made when first needed and again after a failure —
/// over one node, or over the network's several nodes in turn: a node that cannot be reached is
/// passed over for the next, and after a failure on a link (the node may have died) the next
/// connection goes to the next node, as a terminal configured with several hosts does.
pub struct Connection<'a> {
    targets: &'a [Target],
    /// The node in use (index into `targets`).
    at: usize,
    tpdu: Option<Tpdu>,
    link: Option<Link>,
}

impl<'a> Connection<'a> {
    pub fn new(target: &'a Target, tpdu: Option<Tpdu>) -> Self {
        Connection::over(std::slice::from_ref(target), tpdu)
    }

    /// A connection over several nodes, the first first.
    pub fn over(targets: &'a [Target], tpdu: Option<Tpdu>) -> Self {
        Connection { targets, at: 0, tpdu, link: None }
    }

    /// The node the connection is on, or goes to next.
    pub fn target(&self) -> Option<&'a Target> {
        self.targets.get(self.at)
    }

    /// The open link, connecting within `timeout` when there is none: to the current node, else
    /// to each of the others in turn.
    pub async fn link(&mut self, timeout: Duration) -> crate::Result<&mut Link> {
        if self.link.is_none() {
            let mut last = None;
            for _ in 0..self.targets.len() {
                let Some(target) = self.targets.get(self.at) else { break };
                match Link::connect(target, self.tpdu, timeout).await {
                    Ok(l) => {
                        self.link = Some(l);
                        break;
                    }
                    Err(e) => {
                        last = Some(e);
                        self.next();
                    }
                }
            }
            if self.link.is_none() {
                return Err(last.unwrap_or_else(|| crate::Error::Net("no acquirer endpoint".into())));
            }
        }
        match &mut self.link {
            Some(l) => Ok(l),
            None => Err(crate::Error::Net("no acquirer endpoint".into())),
        }
    }

    fn next(&mut self) {
        self.at = (self.at + 1) % self.targets.len().max(1);
    }

    /// Forgets the link after a failure on it; the next connection goes to the next node.
    pub fn drop_link(&mut self) {
        if self.link.take().is_some() {
            self.next();
        }
    }

    /// Sends `advice` and waits `wait` for its 0430.
    pub async fn deliver(&mut self, advice: &Message, wait: Duration) -> Delivery {
        let link = match self.link(CONNECT_TIMEOUT).await {
            Ok(l) => l,
            Err(_) => return Delivery::Unreachable,
        };
        match link.call(advice, wait).await {
            Ok(a) => verdict(a.as_ref()),
            Err(_) => {
                // The node went away mid-call: once more, on the next node.
                self.drop_link();
                let Ok(link) = self.link(CONNECT_TIMEOUT).await else { return Delivery::Unreachable };
                match link.call(advice, wait).await {
                    Ok(a) => verdict(a.as_ref()),
                    Err(_) => {
                        self.drop_link();
                        Delivery::Pending
                    }
                }
            }
        }
    }
}

/// One owed advice sent and its outcome booked: the send counted before it leaves, the advice
/// removed when acknowledged or refused.
pub async fn send_owed(
    store: &mut OwedAdvices,
    entry: &OwedAdvice,
    advice: &Message,
    conn: &mut Connection<'_>,
    wait: Duration,
) -> std::io::Result<Delivery> {
    store.sending(&entry.stan)?;
    let d = conn.deliver(advice, wait).await;
    if matches!(d, Delivery::Acknowledged | Delivery::Refused(_)) {
        store.remove(&entry.stan)?;
    }
    Ok(d)
}

/// What delivering the owed advices gave.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Settled {
    /// Acknowledged now.
    pub delivered: usize,
    /// Refused for good now (removed; listed for the operator).
    pub refused: Vec<Refused>,
    /// Still owed.
    pub remaining: Vec<OwedAdvice>,
}

/// An advice the switch refused for good.
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    #[serde(flatten)]
    pub advice: OwedAdvice,
    pub response_code: String,
}

/// Sends every advice `store` holds, oldest first, over `conn`, each waited for `wait`; stops at
/// the first the switch cannot be reached for.
pub async fn settle(
    store: &mut OwedAdvices,
    conn: &mut Connection<'_>,
    spec: &Arc<Spec>,
    wait: Duration,
) -> std::io::Result<Settled> {
    let mut s = Settled::default();
    for entry in store.list().to_vec() {
        // An advice that does not open (its key file replaced) stays, listed, for the operator.
        let Ok(advice) = store.message(&entry, spec) else { continue };
        match send_owed(store, &entry, &advice, conn, wait).await? {
            Delivery::Acknowledged => s.delivered += 1,
            Delivery::Refused(rc) => s.refused.push(Refused { advice: entry.listing(), response_code: rc }),
            Delivery::Pending => {}
            Delivery::Unreachable => break,
        }
    }
    s.remaining = store.list().iter().map(OwedAdvice::listing).collect();
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pos::reversal_advice;

    const PAN: &str = "4761739001010010";

    fn original() -> Message {
        let spec = Spec::builtin("network").expect("spec");
        let mut m = Message::new(spec.clone(), Mti::AUTHORIZATION_REQUEST);
        for (de, v) in [
            (2u16, PAN),
            (3, "000000"),
            (4, "000000001250"),
            (7, "1125093049"),
            (11, "000042"),
            (12, "093049"),
            (13, "1125"),
            (14, "2912"),
            (18, "5411"),
            (22, "071"),
            (23, "001"),
            (25, "00"),
            (37, "633009000042"),
            (41, "TERM0001"),
            (42, "MERCHANT0000001"),
            (49, "978"),
        ] {
            m.set_text(de, v).expect("element");
        }
        m
    }

    fn advice(stan: u32) -> Message {
        reversal_advice(&original(), stan, "1125093115", "68").expect("advice")
    }

    #[test]
    fn an_advice_is_kept_sealed_survives_reopening_and_goes_when_removed() {
        let d = tempfile::tempdir().expect("tempdir");
        let spec = Spec::builtin("network").expect("spec");
        {
            let mut s = OwedAdvices::open(d.path(), "TERM0001").expect("open");
            assert!(s.list().is_empty());
            s.add(&advice(43)).expect("add");
            // Kept before any send: the file is there now, with the masked PAN and no clear one.
            let text = std::fs::read_to_string(d.path().join("owed-TERM0001.json")).expect("file");
            assert!(!text.contains(PAN), "no clear PAN in the state folder: {text}");
            assert!(text.contains("476173******0010"), "{text}");
        }
        for f in std::fs::read_dir(d.path()).expect("dir") {
            let b = std::fs::read(f.expect("entry").path()).expect("read");
            assert!(!b.windows(PAN.len()).any(|w| w == PAN.as_bytes()), "no clear PAN in any file");
        }
        let mut s = OwedAdvices::open(d.path(), "TERM0001").expect("reopen");
        let e = s.list().first().cloned().expect("still owed after reopening");
        assert_eq!(
            (e.stan.as_str(), e.original_stan.as_str(), e.amount_minor, e.reason.as_str(), e.attempts),
            ("000043", "000042", 1250, "68", 0)
        );
        let m = s.message(&e, spec).expect("opens");
        assert_eq!(m.encode().expect("encode"), advice(43).encode().expect("encode"), "byte for byte");
        s.sending("000043").expect("count");
        assert_eq!(s.list().first().map(|a| a.attempts), Some(1));
        assert!(e.listing().sealed.is_empty(), "listings carry no sealed message");
        s.remove("000043").expect("remove");
        drop(s);
        let s = OwedAdvices::open(d.path(), "TERM0001").expect("reopen");
        assert!(s.list().is_empty(), "removed for good");
        assert_eq!(OwedAdvices::tids(d.path()).expect("tids"), vec!["TERM0001".to_string()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.path().join(KEY_FILE)).expect("key file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the sealing secret is readable by its owner only");
        }
    }

    #[test]
    fn the_file_is_locked_while_open_and_bound_to_its_terminal() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut s = OwedAdvices::open(d.path(), "TERM0001").expect("open");
        s.add(&advice(43)).expect("add");
        assert!(OwedAdvices::try_open(d.path(), "TERM0001").expect("try").is_none(), "locked");
        assert!(OwedAdvices::try_open(d.path(), "TERM0002").expect("try").is_some(), "other TIDs free");
        drop(s);
        assert!(OwedAdvices::try_open(d.path(), "TERM0001").expect("try").is_some(), "released");
        // The sealed advice moved into another terminal's file does not open there.
        std::fs::copy(d.path().join("owed-TERM0001.json"), d.path().join("owed-TERM0002.json")).expect("cp");
        let other = OwedAdvices::open(d.path(), "TERM0002").expect("open");
        let e = other.list().first().cloned().expect("entry");
        assert!(other.message(&e, Spec::builtin("network").expect("spec")).is_err());
    }

    #[test]
    fn what_an_answer_means() {
        let spec = Spec::builtin("network").expect("spec");
        let ack = |rc: Option<&str>| {
            let mut m = Message::new(spec.clone(), Mti::REVERSAL_ADVICE_RESPONSE);
            if let Some(rc) = rc {
                m.set_text(39, rc).expect("DE 39");
            }
            verdict(Some(&m))
        };
        assert_eq!(ack(Some("00")), Delivery::Acknowledged);
        assert_eq!(ack(Some("94")), Delivery::Acknowledged);
        for rc in ["91", "96", "63"] {
            assert_eq!(ack(Some(rc)), Delivery::Pending, "{rc}");
        }
        assert_eq!(ack(None), Delivery::Pending);
        assert_eq!(ack(Some("30")), Delivery::Refused("30".into()));
        assert_eq!(ack(Some("15")), Delivery::Refused("15".into()));
        assert_eq!(verdict(None), Delivery::Pending);
        let wrong = Message::new(spec.clone(), Mti::AUTHORIZATION_RESPONSE);
        assert_eq!(verdict(Some(&wrong)), Delivery::Pending);
    }

    /// A host that answers each 0420 by its STAN as `script` says (None: silence), and notes
    /// whether the terminal's file held the advice, counted as sent, when it arrived.
    async fn scripted_host(
        dir: PathBuf,
        script: Vec<(&'static str, Option<&'static str>)>,
    ) -> (Target, tokio::task::JoinHandle<Vec<(String, bool)>>) {
        use bytes::BytesMut;
        use codecs::framing::{FrameCodec, FramingKind};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_util::codec::{Decoder, Encoder};
        let spec = Spec::builtin("network").expect("spec").clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let host_spec = spec.clone();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut codec = FrameCodec::new(FramingKind::Binary2Tpdu);
            let mut buf = BytesMut::new();
            while seen.len() < script.len() {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.expect("read");
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Ok(Some(f)) = codec.decode(&mut buf) {
                    let m = Message::decode(&host_spec, f.payload.clone()).expect("advice");
                    let stan = m.text(11).map(|c| c.into_owned()).unwrap_or_default();
                    let text = std::fs::read_to_string(dir.join("owed-TERM0001.json")).unwrap_or_default();
                    let file: OwedFile = serde_json::from_str(&text).unwrap_or_default();
                    let kept = file.owed.iter().any(|a| a.stan == stan && a.attempts >= 1);
                    seen.push((stan.clone(), kept));
                    let rc = script.iter().find(|(s, _)| *s == stan).and_then(|(_, rc)| *rc);
                    if let Some(rc) = rc {
                        let mut a = Message::new(host_spec.clone(), Mti::REVERSAL_ADVICE_RESPONSE);
                        a.set_text(11, &stan).expect("DE 11");
                        a.set_text(41, "TERM0001").expect("DE 41");
                        a.set_text(39, rc).expect("DE 39");
                        let mut out = BytesMut::new();
                        codec.encode(f.reply(a.encode().expect("encode")), &mut out).expect("frame");
                        s.write_all(&out).await.expect("write");
                    }
                }
            }
            seen
        });
        (Target { addr, spec, framing: FramingKind::Binary2Tpdu }, task)
    }

    #[tokio::test]
    async fn owed_advices_are_counted_before_they_leave_and_kept_until_taken_in_charge() {
        let d = tempfile::tempdir().expect("tempdir");
        let spec = Spec::builtin("network").expect("spec");
        let mut store = OwedAdvices::open(d.path(), "TERM0001").expect("open");
        for stan in [43, 44, 45, 46] {
            store.add(&advice(stan)).expect("add");
        }
        // 43 acknowledged, 44 silent (still owed), 45 refused for good (format), 46 not taken (96).
        let (target, host) = scripted_host(
            d.path().to_path_buf(),
            vec![("000043", Some("00")), ("000044", None), ("000045", Some("30")), ("000046", Some("96"))],
        )
        .await;
        let mut conn = Connection::new(&target, None);
        let s = settle(&mut store, &mut conn, spec, Duration::from_millis(300)).await.expect("settle");
        assert_eq!(s.delivered, 1);
        assert_eq!(
            s.refused.iter().map(|r| (r.advice.stan.as_str(), r.response_code.as_str())).collect::<Vec<_>>(),
            vec![("000045", "30")]
        );
        let left: Vec<_> =
            s.remaining.iter().map(|a| (a.stan.as_str(), a.attempts, a.sealed.is_empty())).collect();
        assert_eq!(left, vec![("000044", 1, true), ("000046", 1, true)]);
        let seen = host.await.expect("host");
        assert_eq!(seen.len(), 4);
        assert!(
            seen.iter().all(|(_, kept)| *kept),
            "each advice was in the file, counted, before it left: {seen:?}"
        );
        drop(store);
        let store = OwedAdvices::open(d.path(), "TERM0001").expect("reopen");
        assert_eq!(
            store.list().iter().map(|a| a.stan.as_str()).collect::<Vec<_>>(),
            vec!["000044", "000046"]
        );
    }

    #[tokio::test]
    async fn over_several_nodes_a_dead_one_is_passed_over_and_a_lost_link_moves_to_the_next() {
        let d = tempfile::tempdir().expect("tempdir");
        let spec = Spec::builtin("network").expect("spec");
        let mut store = OwedAdvices::open(d.path(), "TERM0001").expect("open");
        store.add(&advice(43)).expect("add");
        store.add(&advice(44)).expect("add");
        // Node 0: nothing listens any more (it died). Node 1: takes the connection, reads the
        // first advice and dies without answering. Node 2: answers.
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let dead = free.local_addr().expect("addr").to_string();
        drop(free);
        let dying = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let dying_addr = dying.local_addr().expect("addr").to_string();
        let dies = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut s, _) = dying.accept().await.expect("accept");
            let mut chunk = [0u8; 4096];
            let _ = s.read(&mut chunk).await;
        });
        let (live, host) =
            scripted_host(d.path().to_path_buf(), vec![("000043", Some("00")), ("000044", Some("00"))]).await;
        let framing = codecs::framing::FramingKind::Binary2Tpdu;
        let nodes = vec![
            Target { addr: dead, spec: spec.clone(), framing },
            Target { addr: dying_addr, spec: spec.clone(), framing },
            live,
        ];
        let mut conn = Connection::over(&nodes, None);
        let s = settle(&mut store, &mut conn, spec, Duration::from_millis(2_000)).await.expect("settle");
        dies.await.expect("node 1");
        assert_eq!((s.delivered, s.remaining.len()), (2, 0), "both taken in charge by node 2");
        assert_eq!(conn.target().map(|t| t.addr.clone()), Some(nodes[2].addr.clone()));
        let seen = host.await.expect("host");
        assert_eq!(seen.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["000043", "000044"]);
    }

    #[tokio::test]
    async fn an_unreachable_switch_stops_the_round_and_everything_stays_owed() {
        let d = tempfile::tempdir().expect("tempdir");
        let spec = Spec::builtin("network").expect("spec");
        let mut store = OwedAdvices::open(d.path(), "TERM0001").expect("open");
        store.add(&advice(43)).expect("add");
        store.add(&advice(44)).expect("add");
        // A port nothing listens on.
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = free.local_addr().expect("addr").to_string();
        drop(free);
        let target = Target { addr, spec: spec.clone(), framing: codecs::framing::FramingKind::Binary2Tpdu };
        let mut conn = Connection::new(&target, None);
        let s = settle(&mut store, &mut conn, spec, Duration::from_millis(300)).await.expect("settle");
        assert_eq!((s.delivered, s.refused.len(), s.remaining.len()), (0, 0, 2));
        assert_eq!(
            store.list().iter().map(|a| a.attempts).collect::<Vec<_>>(),
            vec![1, 0],
            "stopped after the first"
        );
    }
}
