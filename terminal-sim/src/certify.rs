//! Certification suites: named lists of cases a device or acquirer host must see the switch
//! handle as docs/network-spec.md says, run one after another on one terminal connection, each
//! ending pass, fail (with what was expected and what was observed) or skipped (with why).
//!
//! Suite `basic`: an approval whose ARPC (tag 91) the card accepts and whose amount leaves the
//! open-to-buy; balance inquiry (DE 54); declines for insufficient funds (51), a wrong expiry
//! (54) and an unknown card (14); a reversal (0400 → 0410, the funds released, checked with a
//! balance inquiry); an issuer timeout (the issuer made to drop the request through its admin
//! port: answered 91 and the booking released by the switch's reversal — skipped without an
//! admin port); a malformed message (answered 30, or the connection closed); and a duplicate
//! transmission (same DE 41 + DE 11 + DE 7 again: the same answer, booked once).

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use codecs::framing::{Frame, FrameCodec};
use codecs::iso8583::{Message, Mti};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

use crate::mix::transmission_time_now;
use crate::{Error, Result};
use terminal_kit::link::Target;
use terminal_kit::pos::{TestCard, Tx, card_accepts_arpc, chip_request};

/// The suites this runner knows.
pub const SUITES: &[&str] = &["basic"];

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skipped,
}

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub status: Status,
    pub expected: String,
    pub observed: String,
}

/// A suite's report.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    pub suite: String,
    pub target: String,
    /// True only when every case passed (a skipped case is not a pass).
    pub ok: bool,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub cases: Vec<CaseResult>,
}

impl SuiteReport {
    /// The cases as a plain-text table.
    pub fn table(&self) -> String {
        let w = self.cases.iter().map(|c| c.name.len()).max().unwrap_or(4).max(4);
        let mut out = format!("{:<w$}  {:<7}  expected / observed\n", "case", "status");
        for c in &self.cases {
            let status = match c.status {
                Status::Pass => "pass",
                Status::Fail => "FAIL",
                Status::Skipped => "skipped",
            };
            out.push_str(&format!("{:<w$}  {status:<7}  {}\n", c.name, c.expected));
            out.push_str(&format!("{:<w$}  {:<7}  {}\n", "", "", c.observed));
        }
        out.push_str(&format!(
            "{}: {} passed, {} failed, {} skipped\n",
            if self.ok { "OK" } else { "NOT CERTIFIED" },
            self.passed,
            self.failed,
            self.skipped
        ));
        out
    }
}

/// The issuer simulator's admin port (HTTP, `Authorization: Bearer <token>`: `GET`/`PUT
/// /v1/faults`), for cases that need the issuer slow or silent.
#[derive(Clone)]
pub struct IssuerAdmin {
    /// `http://host:port` or `host:port`.
    pub addr: String,
    /// The admin port's bearer credential.
    pub token: String,
}

impl std::fmt::Debug for IssuerAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerAdmin").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl IssuerAdmin {
    /// The fault rules in force, as JSON.
    pub async fn faults(&self) -> Result<String> {
        self.call("GET", "").await
    }

    /// Replaces the fault rules (a JSON array).
    pub async fn set_faults(&self, rules: &str) -> Result<()> {
        self.call("PUT", rules).await.map(|_| ())
    }

    async fn call(&self, method: &str, body: &str) -> Result<String> {
        let host = self.addr.strip_prefix("http://").unwrap_or(&self.addr).trim_end_matches('/');
        let net = |e: std::io::Error| Error::Net(format!("issuer admin {host}: {e}"));
        let mut s = TcpStream::connect(host).await.map_err(net)?;
        let req = format!(
            "{method} /v1/faults HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.token,
            body.len()
        );
        s.write_all(req.as_bytes()).await.map_err(net)?;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
            .await
            .map_err(|_| Error::Net(format!("issuer admin {host}: no answer")))?
            .map_err(net)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| Error::Net(format!("issuer admin {host}: no HTTP answer")))?;
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            return Err(Error::Net(format!(
                "issuer admin {host}: {method} answered {status}: {}",
                rest.trim()
            )));
        }
        Ok(rest.trim().to_string())
    }
}

/// What a suite runs against.
pub struct Setup {
    pub target: Target,
    pub cards: Vec<TestCard>,
    pub issuer_admin: Option<IssuerAdmin>,
    /// How long to wait for an answer (above the switch's issuer timeout, so that a timeout
    /// case sees the switch's 91).
    pub response_timeout: Duration,
    /// The terminal ID the suite's requests carry.
    pub tid: String,
}

/// A terminal connection that sends one request and reads its answer.
struct Conn {
    stream: TcpStream,
    codec: FrameCodec,
    buf: BytesMut,
}

/// What came back.
enum Reply {
    Answer(Message),
    Closed,
    Silent,
}

/// The suite's terminal: its connection, STAN counter and each card's ATC.
struct Terminal<'a> {
    setup: &'a Setup,
    conn: Option<Conn>,
    stan: u32,
    atc: HashMap<String, u16>,
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // Only starting points for STAN and ATC: a fixed start is still correct.
    let _ = getrandom::fill(&mut b);
    u32::from_be_bytes(b)
}

impl<'a> Terminal<'a> {
    fn new(setup: &'a Setup) -> Self {
        Terminal { setup, conn: None, stan: 1 + random_u32() % 900_000, atc: HashMap::new() }
    }

    async fn connect(&mut self) -> Result<&mut Conn> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(&self.setup.target.addr)
                .await
                .map_err(|e| Error::Net(format!("{}: {e}", self.setup.target.addr)))?;
            let _ = stream.set_nodelay(true);
            self.conn = Some(Conn {
                stream,
                codec: FrameCodec::new(self.setup.target.framing),
                buf: BytesMut::new(),
            });
        }
        self.conn.as_mut().ok_or_else(|| Error::Net("no connection".into()))
    }

    /// A request for `card` with a fresh STAN, ATC and transmission time.
    fn tx(&mut self, card: &TestCard, amount: u64, processing_code: &str) -> Tx {
        self.stan = self.stan % 999_999 + 1;
        let atc = self.atc.entry(card.pan.clone()).or_insert_with(|| random_u32() as u16);
        *atc = atc.wrapping_add(1);
        Tx {
            processing_code: processing_code.into(),
            tid: self.setup.tid.clone(),
            ..Tx::purchase(self.stan, amount, *atc)
        }
    }

    fn request(&mut self, card: &TestCard, amount: u64, processing_code: &str) -> Result<Message> {
        let tx = self.tx(card, amount, processing_code);
        let mut m = chip_request(&self.setup.target.spec, card, &tx)?;
        m.set_text(7, &transmission_time_now()).map_err(|e| Error::invalid("DE 7", e.to_string()))?;
        Ok(m)
    }

    async fn send_bytes(&mut self, payload: bytes::Bytes) -> Result<Reply> {
        let timeout = self.setup.response_timeout;
        let conn = self.connect().await?;
        let mut out = BytesMut::new();
        conn.codec.encode(Frame::new(payload), &mut out).map_err(|e| Error::Net(e.to_string()))?;
        if conn.stream.write_all(&out).await.is_err() {
            self.conn = None;
            return Ok(Reply::Closed);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match conn.codec.decode(&mut conn.buf) {
                Ok(Some(f)) => {
                    return match Message::decode(&self.setup.target.spec, f.payload) {
                        Ok(m) => Ok(Reply::Answer(m)),
                        Err(e) => Err(Error::Net(format!("the answer does not decode: {e}"))),
                    };
                }
                Ok(None) => {}
                Err(e) => return Err(Error::Net(format!("framing of the answer: {e}"))),
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, conn.stream.read(&mut chunk)).await {
                Err(_) => return Ok(Reply::Silent),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.conn = None;
                    return Ok(Reply::Closed);
                }
                Ok(Ok(n)) => conn.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn call(&mut self, m: &Message) -> Result<Reply> {
        let bytes = m.encode().map_err(|e| Error::invalid("request", e.to_string()))?;
        self.send_bytes(bytes).await
    }

    /// The card's open-to-buy, from a balance inquiry's DE 54 (INTERFACES.md §5).
    async fn balance(&mut self, card: &TestCard) -> Result<u64> {
        let m = self.request(card, 0, "313000")?;
        match self.call(&m).await? {
            Reply::Answer(r) if rc(&r) == "00" => {
                let de54 = r.text(54).map(|t| t.into_owned()).unwrap_or_default();
                de54.get(de54.len().saturating_sub(12)..)
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(|| Error::Net(format!("balance inquiry: DE 54 {de54:?} has no amount")))
            }
            Reply::Answer(r) => Err(Error::Net(format!("balance inquiry answered {}", rc(&r)))),
            Reply::Closed => Err(Error::Net("balance inquiry: connection closed".into())),
            Reply::Silent => Err(Error::Net("balance inquiry: no answer".into())),
        }
    }
}

fn rc(m: &Message) -> String {
    m.text(39).map(|c| c.into_owned()).unwrap_or_default()
}

fn describe(r: &Reply) -> String {
    match r {
        Reply::Answer(m) => format!("{} DE 39 = {}", m.mti(), rc(m)),
        Reply::Closed => "connection closed".into(),
        Reply::Silent => "no answer".into(),
    }
}

fn case(name: &str, pass: bool, expected: impl Into<String>, observed: impl Into<String>) -> CaseResult {
    CaseResult {
        name: name.into(),
        status: if pass { Status::Pass } else { Status::Fail },
        expected: expected.into(),
        observed: observed.into(),
    }
}

fn failed(name: &str, expected: &str, e: Error) -> CaseResult {
    case(name, false, expected, format!("error: {e}"))
}

/// Runs suite `name` against `setup`.
pub async fn run_suite(name: &str, setup: &Setup) -> Result<SuiteReport> {
    if !SUITES.contains(&name) {
        return Err(Error::invalid("suite", format!("{name:?} is not one of {}", SUITES.join(", "))));
    }
    if setup.cards.len() < 2 {
        return Err(Error::invalid("ports file", "suite basic needs at least two test cards"));
    }
    let mut t = Terminal::new(setup);
    let mut cases = Vec::new();
    cases.push(approve(&mut t).await);
    cases.push(balance_inquiry(&mut t).await);
    cases.push(insufficient_funds(&mut t).await);
    cases.push(wrong_expiry(&mut t).await);
    cases.push(unknown_card(&mut t).await);
    cases.push(reversal(&mut t).await);
    cases.push(issuer_timeout(&mut t).await);
    cases.push(malformed(&mut t).await);
    cases.push(duplicate(&mut t).await);
    let count = |s| cases.iter().filter(|c| c.status == s).count();
    let (passed, failed, skipped) = (count(Status::Pass), count(Status::Fail), count(Status::Skipped));
    Ok(SuiteReport {
        suite: name.into(),
        target: setup.target.addr.clone(),
        ok: failed == 0 && skipped == 0,
        passed,
        failed,
        skipped,
        cases,
    })
}

/// The roomiest card (approvals) and the one with the least open-to-buy (insufficient funds).
fn roomy(setup: &Setup) -> &TestCard {
    let b = |c: &TestCard| c.balance.parse::<u64>().unwrap_or(0);
    setup.cards.iter().max_by_key(|c| b(c)).unwrap_or(&setup.cards[0])
}

async fn approve(t: &mut Terminal<'_>) -> CaseResult {
    const NAME: &str = "approve";
    let expected = "0110 DE 39 = 00 with DE 38, tag 91 accepted by the card, open-to-buy down by 1234";
    let card = roomy(t.setup).clone();
    let go = async {
        let before = t.balance(&card).await?;
        let req = t.request(&card, 1234, "000000")?;
        let reply = t.call(&req).await?;
        let after = t.balance(&card).await?;
        Ok::<_, Error>((before, req, reply, after))
    };
    match go.await {
        Ok((before, req, Reply::Answer(r), after)) => {
            let arpc = card_accepts_arpc(&card, &req, &r);
            let pass = r.mti() == Mti::AUTHORIZATION_RESPONSE
                && rc(&r) == "00"
                && r.contains(38)
                && arpc
                && before.checked_sub(after) == Some(1234);
            let observed = format!(
                "{} DE 39 = {}, DE 38 {}, ARPC {}, open-to-buy {before} → {after}",
                r.mti(),
                rc(&r),
                if r.contains(38) { "present" } else { "absent" },
                if arpc { "accepted" } else { "rejected" },
            );
            case(NAME, pass, expected, observed)
        }
        Ok((_, _, other, _)) => case(NAME, false, expected, describe(&other)),
        Err(e) => failed(NAME, expected, e),
    }
}

async fn balance_inquiry(t: &mut Terminal<'_>) -> CaseResult {
    const NAME: &str = "balance-inquiry";
    let expected = "0110 DE 39 = 00, DE 54 = 3002 + currency + C + 12 digits";
    let card = roomy(t.setup).clone();
    let go = async {
        let m = t.request(&card, 0, "313000")?;
        t.call(&m).await
    };
    match go.await {
        Ok(Reply::Answer(r)) => {
            let de54 = r.text(54).map(|t| t.into_owned()).unwrap_or_default();
            let b = de54.as_bytes();
            let shape = b.len() == 20
                && de54.starts_with("3002")
                && b.get(7) == Some(&b'C')
                && b.get(8..).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
            case(
                NAME,
                rc(&r) == "00" && shape,
                expected,
                format!("{} DE 39 = {}, DE 54 {de54:?}", r.mti(), rc(&r)),
            )
        }
        Ok(other) => case(NAME, false, expected, describe(&other)),
        Err(e) => failed(NAME, expected, e),
    }
}

/// A decline case: `build` makes the request, `want` is the response code.
async fn decline(
    t: &mut Terminal<'_>,
    name: &str,
    want: &str,
    what: &str,
    build: impl FnOnce(&mut Terminal<'_>) -> Result<Message>,
) -> CaseResult {
    let expected = format!("0110 DE 39 = {want} ({what})");
    let go = async {
        let m = build(t)?;
        t.call(&m).await
    };
    match go.await {
        Ok(Reply::Answer(r)) => {
            case(name, rc(&r) == want, expected, format!("{} DE 39 = {}", r.mti(), rc(&r)))
        }
        Ok(other) => case(name, false, expected, describe(&other)),
        Err(e) => failed(name, &expected, e),
    }
}

async fn insufficient_funds(t: &mut Terminal<'_>) -> CaseResult {
    let b = |c: &TestCard| c.balance.parse::<u64>().unwrap_or(0);
    let card = t.setup.cards.iter().min_by_key(|c| b(c)).unwrap_or(&t.setup.cards[0]).clone();
    // Over anything the card could have: its open-to-buy as issued, plus one.
    let amount = b(&card) + 1;
    decline(t, "decline-insufficient-funds", "51", "amount over the open-to-buy", |t| {
        t.request(&card, amount, "000000")
    })
    .await
}

async fn wrong_expiry(t: &mut Terminal<'_>) -> CaseResult {
    let card = roomy(t.setup).clone();
    decline(t, "decline-wrong-expiry", "54", "DE 14 not the card's expiry", |t| {
        let mut m = t.request(&card, 100, "000000")?;
        let wrong = if card.expiry == "2001" { "2002" } else { "2001" };
        m.set_text(14, wrong).map_err(|e| Error::invalid("DE 14", e.to_string()))?;
        Ok(m)
    })
    .await
}

async fn unknown_card(t: &mut Terminal<'_>) -> CaseResult {
    let mut stranger = roomy(t.setup).clone();
    // In the test BIN, Luhn-valid, issued to nobody.
    stranger.pan = "4761739999999995".into();
    decline(t, "decline-unknown-card", "14", "a PAN the issuer never issued", |t| {
        t.request(&stranger, 100, "000000")
    })
    .await
}

/// A reversal (0400) of `orig`, with DE 90 naming it (docs/network-spec.md §2).
fn reversal_of(t: &mut Terminal<'_>, orig: &Message) -> Result<Message> {
    let bad = |e: codecs::Error| Error::invalid("reversal", e.to_string());
    let mut m = Message::new(orig.spec().clone(), Mti::REVERSAL_REQUEST);
    for de in [2u16, 3, 4, 12, 13, 14, 18, 22, 23, 25, 37, 41, 42, 49] {
        if orig.contains(de) {
            m.copy_from(orig, de).map_err(bad)?;
        }
    }
    t.stan = t.stan % 999_999 + 1;
    m.set_text(11, &format!("{:06}", t.stan)).map_err(bad)?;
    m.set_text(7, &transmission_time_now()).map_err(bad)?;
    let text = |de| orig.text(de).map(|c| c.into_owned()).unwrap_or_default();
    let de90 = format!("{}{:0>6}{:0>10}{}{}", orig.mti(), text(11), text(7), "0".repeat(11), "0".repeat(11));
    m.set_text(90, &de90).map_err(bad)?;
    Ok(m)
}

async fn reversal(t: &mut Terminal<'_>) -> CaseResult {
    const NAME: &str = "reversal";
    let expected = "original approved; 0410 DE 39 = 00; open-to-buy back where it was";
    let card = roomy(t.setup).clone();
    let go = async {
        let before = t.balance(&card).await?;
        let orig = t.request(&card, 2500, "000000")?;
        let first = t.call(&orig).await?;
        let mid = t.balance(&card).await?;
        let rev = reversal_of(t, &orig)?;
        let answer = t.call(&rev).await?;
        let after = t.balance(&card).await?;
        Ok::<_, Error>((before, first, mid, answer, after))
    };
    match go.await {
        Ok((before, Reply::Answer(o), mid, Reply::Answer(r), after)) => {
            let pass = rc(&o) == "00"
                && r.mti() == Mti::REVERSAL_RESPONSE
                && rc(&r) == "00"
                && before.checked_sub(mid) == Some(2500)
                && after == before;
            let observed = format!(
                "original DE 39 = {}; {} DE 39 = {}; open-to-buy {before} → {mid} → {after}",
                rc(&o),
                r.mti(),
                rc(&r)
            );
            case(NAME, pass, expected, observed)
        }
        Ok((_, o, _, r, _)) => {
            case(NAME, false, expected, format!("original: {}; reversal: {}", describe(&o), describe(&r)))
        }
        Err(e) => failed(NAME, expected, e),
    }
}

async fn issuer_timeout(t: &mut Terminal<'_>) -> CaseResult {
    const NAME: &str = "issuer-timeout";
    let expected = "0110 DE 39 = 91 after the switch's issuer timeout; the booking released by its reversal";
    let Some(admin) = t.setup.issuer_admin.clone() else {
        return CaseResult {
            name: NAME.into(),
            status: Status::Skipped,
            expected: expected.into(),
            observed: "no issuer admin port (--issuer-admin): the issuer cannot be made silent".into(),
        };
    };
    let card = roomy(t.setup).clone();
    let go = async {
        let saved = admin.faults().await?;
        let before = t.balance(&card).await?;
        // The issuer books the 0100 and never answers; its reversal (0420) gets through.
        admin.set_faults(r#"[{"when_amount": 1777, "when_mti": "0100", "action": "drop"}]"#).await?;
        let m = t.request(&card, 1777, "000000")?;
        let reply = t.call(&m).await;
        admin.set_faults(&saved).await?;
        let reply = reply?;
        let mut after = t.balance(&card).await?;
        for _ in 0..50 {
            if after == before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            after = t.balance(&card).await?;
        }
        Ok::<_, Error>((before, reply, after))
    };
    match go.await {
        Ok((before, Reply::Answer(r), after)) => {
            let pass = rc(&r) == "91" && after == before;
            case(
                NAME,
                pass,
                expected,
                format!("{} DE 39 = {}; open-to-buy {before} → {after}", r.mti(), rc(&r)),
            )
        }
        Ok((_, other, _)) => case(NAME, false, expected, describe(&other)),
        Err(e) => failed(NAME, expected, e),
    }
}

async fn malformed(t: &mut Terminal<'_>) -> CaseResult {
    const NAME: &str = "malformed-message";
    let expected = "0110 DE 39 = 30 (DE 11 and DE 41 readable), or the connection closed";
    let card = roomy(t.setup).clone();
    let go = async {
        let m = t.request(&card, 100, "000000")?;
        let whole = m.encode().map_err(|e| Error::invalid("request", e.to_string()))?;
        let mut head = m.clone();
        head.remove(55);
        let before55 = head.encode().map_err(|e| Error::invalid("request", e.to_string()))?.len();
        // DE 55 is the last element: its length prefix starts where the message without it ends.
        // A letter in it makes the length unreadable, after DE 11 and DE 41 were read.
        let mut bad = whole.to_vec();
        let at = before55 + 1;
        if let Some(b) = bad.get_mut(at) {
            *b = b'X';
        }
        let reply = t.send_bytes(bad.into()).await?;
        Ok::<_, Error>((reply, at))
    };
    match go.await {
        Ok((Reply::Answer(r), at)) => case(
            NAME,
            r.mti() == Mti::AUTHORIZATION_RESPONSE && rc(&r) == "30",
            expected,
            format!("DE 55 length prefix broken at byte {at}: {} DE 39 = {}", r.mti(), rc(&r)),
        ),
        Ok((Reply::Closed, at)) => {
            case(NAME, true, expected, format!("DE 55 length prefix broken at byte {at}: connection closed"))
        }
        Ok((Reply::Silent, _)) => case(NAME, false, expected, "no answer and the connection kept open"),
        Err(e) => failed(NAME, expected, e),
    }
}

async fn duplicate(t: &mut Terminal<'_>) -> CaseResult {
    const NAME: &str = "duplicate-transmission";
    let expected = "the same answer twice (DE 39, DE 38), the amount booked once";
    let card = roomy(t.setup).clone();
    let go = async {
        let before = t.balance(&card).await?;
        let m = t.request(&card, 321, "000000")?;
        let first = t.call(&m).await?;
        let second = t.call(&m).await?;
        let after = t.balance(&card).await?;
        Ok::<_, Error>((before, first, second, after))
    };
    match go.await {
        Ok((before, Reply::Answer(a), Reply::Answer(b), after)) => {
            let pass = rc(&a) == "00"
                && rc(&a) == rc(&b)
                && a.text(38) == b.text(38)
                && before.checked_sub(after) == Some(321);
            let observed = format!(
                "first DE 39 = {} DE 38 {:?}; again DE 39 = {} DE 38 {:?}; open-to-buy {before} → {after}",
                rc(&a),
                a.text(38).unwrap_or_default(),
                rc(&b),
                b.text(38).unwrap_or_default()
            );
            case(NAME, pass, expected, observed)
        }
        Ok((_, a, b, _)) => {
            case(NAME, false, expected, format!("first: {}; again: {}", describe(&a), describe(&b)))
        }
        Err(e) => failed(NAME, expected, e),
    }
}
