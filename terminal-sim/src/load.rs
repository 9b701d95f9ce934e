//! The open-loop load generator (INTERFACES.md §4).
//!
//! Request `i` has an intended send time `start + i / rate`, fixed before the run; it is sent at that
//! time (or at once, when the generator is behind), and its latency is measured from the intended
//! time, not from when it actually left — a stalled server therefore shows its stall in the
//! percentiles instead of hiding it (no coordinated omission). Requests are spread over many
//! connections and matched to their answers by DE 11 and DE 41, which the request source makes
//! unique per outstanding request. Every request sent ends as exactly one of approved, declined,
//! error or timeout; answers that match nothing are counted apart as unmatched. An answer later
//! than the response timeout ends its request as a timeout.
//!
//! Beyond the fields of §4 the report carries, for the plots and for reading a mixed run, the
//! per-second timeline (sent, approved, declined, errors, timeouts, p50/p99), the latency
//! percentile distribution, the response codes seen, and the same tally per request kind.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use codecs::framing::{Frame, FrameCodec};
use codecs::iso8583::Message;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use terminal_kit::link::Target;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead};

/// How much load, for how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Offered requests per second.
    pub rate: u64,
    pub duration: Duration,
    pub connections: usize,
    /// An answer later than this after the intended send time is a timeout.
    pub timeout: Duration,
}

/// A request already encoded, with the elements that match its answer (DE 11 and DE 41 as
/// carried).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub bytes: Bytes,
    pub stan: Bytes,
    pub tid: Bytes,
}

/// Builds request `seq` for connection `conn`. DE 11 and DE 41 must identify it among the
/// requests outstanding on that connection.
pub trait RequestSource: Send + Sync + 'static {
    fn request(&self, seq: u64, conn: usize) -> Message;

    /// The request already encoded (sources that build their requests before the run, so that
    /// the generator spends the run sending, not encoding). `None`: use [`Self::request`].
    fn prepared(&self, _seq: u64, _conn: usize) -> Option<Prepared> {
        None
    }

    /// What kind of request `seq` is (`purchase`, `balance`, ...), for the per-kind tally.
    fn kind(&self, _seq: u64) -> &'static str {
        "request"
    }
}

impl<F: Fn(u64, usize) -> Message + Send + Sync + 'static> RequestSource for F {
    fn request(&self, seq: u64, conn: usize) -> Message {
        self(seq, conn)
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// One second of the run, for the plots.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Second {
    /// Seconds since the start.
    pub t: u64,
    /// Requests whose intended send time falls in this second.
    pub sent: u64,
    pub approved: u64,
    pub declined: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// One request kind's outcomes.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct KindTally {
    pub sent: u64,
    pub approved: u64,
    pub declined: u64,
    pub errors: u64,
    pub timeouts: u64,
    /// DE 39 of the answers, by code.
    pub response_codes: BTreeMap<String, u64>,
}

/// A point of the latency distribution: the latency at or below which `percentile` % of the
/// answered requests fell.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PercentilePoint {
    pub percentile: f64,
    pub us: u64,
}

/// The report of INTERFACES.md §4 (plus, added: `connections`, `timeline`, `percentiles`,
/// `response_codes` and `by_kind`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    pub sent: u64,
    pub approved: u64,
    pub declined: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub unmatched: u64,
    pub duration_s: f64,
    pub offered_tps: u64,
    pub achieved_tps: f64,
    pub latency_us: Latency,
    pub connections: usize,
    pub timeline: Vec<Second>,
    /// The latency distribution of the answered requests (approved and declined).
    pub percentiles: Vec<PercentilePoint>,
    /// DE 39 of every matched answer, by code.
    pub response_codes: BTreeMap<String, u64>,
    /// The outcomes per request kind (see [`RequestSource::kind`]).
    pub by_kind: BTreeMap<String, KindTally>,
    /// Connections that lost their node and went on at the next one (with several targets).
    pub failovers: u64,
    /// Reversal advices (0420) sent at the next node for requests whose answer was lost with a
    /// node, and how many got the network's final word: taken in charge (00, 94), or nothing to
    /// reverse (25: the original never reached an issuer).
    pub reversal_advices: u64,
    pub reversal_advices_settled: u64,
}

/// The quantiles the distribution chart shows: the body, then ever more nines of the tail.
const DISTRIBUTION: [f64; 20] = [
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995,
    0.99999, 0.999999, 1.0,
];

type Key = (Bytes, Bytes);

fn key(m: &Message) -> Option<Key> {
    Some((m.field(11)?.data.clone(), m.field(41).map(|f| f.data.clone()).unwrap_or_default()))
}

#[derive(Default)]
struct Tally {
    sent: u64,
    approved: u64,
    declined: u64,
    errors: u64,
    timeouts: u64,
    unmatched: u64,
    per_second: HashMap<u64, (Second, Option<Histogram<u64>>)>,
    response_codes: BTreeMap<String, u64>,
    by_kind: BTreeMap<&'static str, KindTally>,
    failovers: u64,
    reversal_advices: u64,
    reversal_advices_settled: u64,
}

impl Tally {
    fn second(&mut self, second: u64) -> &mut (Second, Option<Histogram<u64>>) {
        self.per_second.entry(second).or_insert_with(|| {
            (Second { t: second, ..Second::default() }, Histogram::new_with_bounds(1, 60_000_000, 2).ok())
        })
    }

    /// A request written (or given up before writing, which still ends as an error).
    fn sent(&mut self, second: u64, kind: &'static str) {
        self.sent += 1;
        self.second(second).0.sent += 1;
        self.by_kind.entry(kind).or_default().sent += 1;
    }
}

/// What an outstanding request remembers.
#[derive(Clone)]
struct Pending {
    intended: Instant,
    kind: &'static str,
    /// The request as sent, kept while several targets are in use: its reversal advice is built
    /// from it when the node goes away with its answer.
    sent: Option<Bytes>,
}

struct Shared {
    tally: Mutex<Tally>,
    hist: Mutex<Histogram<u64>>,
    start: Instant,
}

#[derive(Clone, Copy)]
enum End {
    Approved,
    Declined,
    Error,
    Timeout,
}

impl Shared {
    fn second_of(&self, intended: Instant) -> u64 {
        intended.saturating_duration_since(self.start).as_secs()
    }

    fn sent(&self, intended: Instant, kind: &'static str) {
        let second = self.second_of(intended);
        self.tally.lock().unwrap_or_else(|p| p.into_inner()).sent(second, kind);
    }

    /// Ends a request; `rc` is DE 39 of its answer, when it had one.
    fn finish(&self, p: Pending, end: End, rc: Option<&[u8]>) {
        let intended = p.intended;
        let now = Instant::now();
        let us = now.saturating_duration_since(intended).as_micros().max(1) as u64;
        let second = self.second_of(intended);
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rc) = rc {
            let code = String::from_utf8_lossy(rc).into_owned();
            *t.response_codes.entry(code.clone()).or_default() += 1;
            *t.by_kind.entry(p.kind).or_default().response_codes.entry(code).or_default() += 1;
        }
        let k = t.by_kind.entry(p.kind).or_default();
        match end {
            End::Approved => k.approved += 1,
            End::Declined => k.declined += 1,
            End::Error => k.errors += 1,
            End::Timeout => k.timeouts += 1,
        }
        let entry = t.second(second);
        match end {
            End::Approved => entry.0.approved += 1,
            End::Declined => entry.0.declined += 1,
            End::Error => entry.0.errors += 1,
            End::Timeout => entry.0.timeouts += 1,
        }
        if matches!(end, End::Approved | End::Declined)
            && let Some(h) = entry.1.as_mut()
        {
            let _ = h.record(us.min(60_000_000));
        }
        match end {
            End::Approved => t.approved += 1,
            End::Declined => t.declined += 1,
            End::Error => t.errors += 1,
            End::Timeout => t.timeouts += 1,
        }
        drop(t);
        if matches!(end, End::Approved | End::Declined) {
            let _ = self.hist.lock().unwrap_or_else(|p| p.into_inner()).record(us.min(60_000_000));
        }
    }
}

/// Runs the plan against the target. `progress` is called about every 100 ms with the number of
/// requests sent so far.
pub async fn run(
    target: Target,
    plan: Plan,
    source: Arc<dyn RequestSource>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Report {
    run_spread(vec![target], plan, source, progress).await
}

/// [`run`] over several targets (the nodes of one network): connection `k` goes to target
/// `k % targets.len()`, so the load is spread evenly; one report for all.
pub async fn run_spread(
    targets: Vec<Target>,
    plan: Plan,
    source: Arc<dyn RequestSource>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Report {
    let conns = plan.connections.max(1);
    let total = total_requests(&plan);
    let shared = Arc::new(Shared {
        tally: Mutex::new(Tally::default()),
        hist: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
            Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"))
        })),
        // Connections open first; the schedule starts once they are all up.
        start: Instant::now() + Duration::from_millis(200),
    });
    let mut tasks = Vec::new();
    let targets = Arc::new(targets);
    for k in 0..conns {
        let targets = targets.clone();
        let source = source.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(connection(k, conns, total, plan, targets, source, shared)));
    }
    let reporter = {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let sent = shared.tally.lock().unwrap_or_else(|p| p.into_inner()).sent;
                progress(sent);
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    reporter.abort();
    let t = shared.tally.lock().unwrap_or_else(|p| p.into_inner());
    let h = shared.hist.lock().unwrap_or_else(|p| p.into_inner());
    let duration_s = plan.duration.as_secs_f64();
    let mut timeline: Vec<Second> = t
        .per_second
        .values()
        .map(|(s, h)| Second {
            p50_us: h.as_ref().filter(|h| !h.is_empty()).map(|h| h.value_at_quantile(0.5)).unwrap_or(0),
            p99_us: h.as_ref().filter(|h| !h.is_empty()).map(|h| h.value_at_quantile(0.99)).unwrap_or(0),
            ..s.clone()
        })
        .collect();
    timeline.sort_by_key(|s| s.t);
    let percentiles = if h.is_empty() {
        Vec::new()
    } else {
        DISTRIBUTION
            .iter()
            .map(|q| PercentilePoint { percentile: q * 100.0, us: h.value_at_quantile(*q) })
            .collect()
    };
    Report {
        sent: t.sent,
        approved: t.approved,
        declined: t.declined,
        errors: t.errors,
        timeouts: t.timeouts,
        unmatched: t.unmatched,
        duration_s,
        offered_tps: plan.rate,
        achieved_tps: if duration_s > 0.0 { (t.approved + t.declined) as f64 / duration_s } else { 0.0 },
        latency_us: Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        },
        connections: conns,
        timeline,
        percentiles,
        response_codes: t.response_codes.clone(),
        by_kind: t.by_kind.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        failovers: t.failovers,
        reversal_advices: t.reversal_advices,
        reversal_advices_settled: t.reversal_advices_settled,
    }
}

/// How many requests a plan sends: `rate` × `duration`.
pub fn total_requests(plan: &Plan) -> u64 {
    plan.rate.saturating_mul(plan.duration.as_millis() as u64) / 1000
}

type Outstanding = Arc<Mutex<HashMap<Key, Pending>>>;

/// Connection `k`'s share of the schedule, on its node and — when there are several targets —
/// on the next one after its node went away: the requests whose answers went with it are counted
/// as errors and reversed by advices sent to the next node, and the schedule goes on there.
async fn connection(
    k: usize,
    conns: usize,
    total: u64,
    plan: Plan,
    targets: Arc<Vec<Target>>,
    source: Arc<dyn RequestSource>,
    shared: Arc<Shared>,
) {
    let n = targets.len().max(1);
    let mut at = k % n;
    let mut seq = k as u64;
    let mut unreachable = 0;
    let mut advice_stan = 999_999u32;
    while seq < total {
        let Some(target) = targets.get(at) else { return };
        match leg(k, conns, total, plan, target, &source, &shared, &mut seq, n > 1).await {
            Leg::Done => return,
            Leg::Unreachable if n > 1 && unreachable + 1 < n => {
                unreachable += 1;
                at = (at + 1) % n;
            }
            Leg::Unreachable => {
                // Nothing can be sent on this connection any more: its share is counted as errors.
                let interval_ns = 1_000_000_000u64 / plan.rate.max(1);
                for s in (seq..total).step_by(conns) {
                    let intended = shared.start + Duration::from_nanos(s.saturating_mul(interval_ns));
                    let p = Pending { intended, kind: source.kind(s), sent: None };
                    shared.sent(p.intended, p.kind);
                    shared.finish(p, End::Error, None);
                }
                return;
            }
            Leg::Broken(lost) => {
                if n == 1 {
                    return;
                }
                unreachable = 0;
                at = (at + 1) % n;
                shared.tally.lock().unwrap_or_else(|p| p.into_inner()).failovers += 1;
                let Some(next) = targets.get(at) else { return };
                reverse_lost(next, lost, &mut advice_stan, &shared).await;
            }
        }
    }
}

/// Reversal advices for the requests in `lost` (their answers went with a node), sent to `next`
/// one at a time, each waited for up to 5 s.
async fn reverse_lost(next: &Target, lost: Vec<Bytes>, advice_stan: &mut u32, shared: &Shared) {
    if lost.is_empty() {
        return;
    }
    let Ok(mut link) = terminal_kit::link::Link::connect(next, None, Duration::from_secs(5)).await else {
        return;
    };
    let transmitted = crate::terminal::Moment::now().transmitted();
    for bytes in lost {
        let Ok(req) = Message::decode(&next.spec, bytes) else { continue };
        let advice = match terminal_kit::pos::reversal_advice(&req, *advice_stan, &transmitted, "68") {
            Ok(a) => a,
            Err(_) => continue,
        };
        *advice_stan = advice_stan.saturating_sub(1).max(900_000);
        shared.tally.lock().unwrap_or_else(|p| p.into_inner()).reversal_advices += 1;
        if let Ok(Some(a)) = link.call(&advice, Duration::from_secs(5)).await {
            use terminal_kit::owed::Delivery;
            let settled = match terminal_kit::owed::verdict(Some(&a)) {
                Delivery::Acknowledged => true,
                Delivery::Refused(rc) => rc == "25",
                Delivery::Pending | Delivery::Unreachable => false,
            };
            if settled {
                shared.tally.lock().unwrap_or_else(|p| p.into_inner()).reversal_advices_settled += 1;
            }
        }
    }
}

/// How a leg of a connection ended.
enum Leg {
    /// Its whole share was sent and answered (or timed out).
    Done,
    /// Its node could not be reached; nothing was sent.
    Unreachable,
    /// The node went away: the requests whose answers were lost (as sent, when kept).
    Broken(Vec<Bytes>),
}

#[allow(clippy::too_many_arguments)]
async fn leg(
    k: usize,
    conns: usize,
    total: u64,
    plan: Plan,
    target: &Target,
    source: &Arc<dyn RequestSource>,
    shared: &Arc<Shared>,
    next_seq: &mut u64,
    keep_sent: bool,
) -> Leg {
    let outstanding: Outstanding = Arc::new(Mutex::new(HashMap::new()));
    let interval_ns = 1_000_000_000u64 / plan.rate.max(1);
    let intended_of = |seq: u64| shared.start + Duration::from_nanos(seq.saturating_mul(interval_ns));
    let stream = match TcpStream::connect(&target.addr).await {
        Ok(s) => s,
        Err(_) => return Leg::Unreachable,
    };
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let codec = FrameCodec::new(target.framing);
    // Reader: match answers until the writer is done and nothing is outstanding (or timeouts).
    let reader = {
        let outstanding = outstanding.clone();
        let shared = shared.clone();
        let spec = target.spec.clone();
        let timeout = plan.timeout;
        tokio::spawn(async move {
            let mut frames = FramedRead::new(rd, codec);
            while let Some(frame) = frames.next().await {
                let Ok(frame) = frame else { break };
                let Ok(msg) = Message::decode(&spec, frame.payload) else {
                    shared.tally.lock().unwrap_or_else(|p| p.into_inner()).unmatched += 1;
                    continue;
                };
                let pending =
                    key(&msg).and_then(|k| outstanding.lock().unwrap_or_else(|p| p.into_inner()).remove(&k));
                match pending {
                    Some(p) if p.intended.elapsed() > timeout => shared.finish(p, End::Timeout, None),
                    Some(p) => {
                        let rc = msg.field(39).map(|f| f.data.clone());
                        let ok = rc.as_deref() == Some(b"00");
                        shared.finish(p, if ok { End::Approved } else { End::Declined }, rc.as_deref());
                    }
                    None => shared.tally.lock().unwrap_or_else(|p| p.into_inner()).unmatched += 1,
                }
            }
        })
    };
    let mut seq = *next_seq;
    let mut codec = codec;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut broken = false;
    while seq < total {
        if reader.is_finished() {
            // The node closed the connection: what is left goes elsewhere.
            broken = true;
            break;
        }
        let intended = intended_of(seq);
        if intended > Instant::now() {
            if !buf.is_empty() {
                if wr.write_all(&buf).await.is_err() {
                    broken = true;
                    break;
                }
                buf.clear();
            }
            tokio::time::sleep_until(intended).await;
        }
        let kind = source.kind(seq);
        let p = Pending { intended, kind, sent: None };
        let prepared = source.prepared(seq, k).or_else(|| {
            let msg = source.request(seq, k);
            let (stan, tid) = key(&msg)?;
            Some(Prepared { bytes: msg.encode().ok()?, stan, tid })
        });
        let Some(prepared) = prepared else {
            // Not buildable (no DE 11, or it does not encode): an error of the generator's own.
            shared.sent(intended, kind);
            shared.finish(p, End::Error, None);
            seq += conns as u64;
            continue;
        };
        let p = Pending { sent: keep_sent.then(|| prepared.bytes.clone()), ..p };
        outstanding.lock().unwrap_or_else(|p| p.into_inner()).insert((prepared.stan, prepared.tid), p);
        shared.sent(intended, kind);
        if codec.encode(Frame::new(prepared.bytes), &mut buf).is_err() {
            broken = true;
            break;
        }
        seq += conns as u64;
    }
    if !broken && !buf.is_empty() && wr.write_all(&buf).await.is_err() {
        broken = true;
    }
    // Drain: answers may still arrive up to the timeout after the last intended send time.
    let deadline = shared.start + plan.duration + plan.timeout;
    while !broken && Instant::now() < deadline {
        if outstanding.lock().unwrap_or_else(|p| p.into_inner()).is_empty() || reader.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A reader that ended early means the connection closed under outstanding requests.
    if reader.is_finished() {
        broken = true;
    }
    reader.abort();
    let left: Vec<Pending> =
        outstanding.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, p)| p).collect();
    let mut lost = Vec::new();
    for mut p in left {
        if broken && let Some(b) = p.sent.take() {
            lost.push(b);
        }
        shared.finish(p, if broken { End::Error } else { End::Timeout }, None);
    }
    // Requests never sent because the connection broke are not counted as sent: with several
    // targets they are sent at the next one.
    let _ = wr.shutdown().await;
    *next_seq = seq;
    if broken { Leg::Broken(lost) } else { Leg::Done }
}

/// A unique terminal ID for connection `conn` (DE 41, 8 characters).
pub fn terminal_id(conn: usize) -> String {
    format!("LG{:06}", conn % 1_000_000)
}

/// DE 11 for request `seq` (6 digits; unique among a connection's outstanding requests as long as
/// fewer than a million are outstanding on it).
pub fn stan(seq: u64) -> String {
    format!("{:06}", seq % 1_000_000)
}
