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
//! The generator costs the machine as little as it can, so that what a run measures is the target:
//! it runs on a thread of its own (a single-threaded runtime: no wake-ups across threads), each
//! connection is one task that wakes once per timer tick to write every request then due in one
//! write, and once per read to match every whole answer that read brought; the outcomes of a batch
//! are counted under one lock. The report gives what that cost: `generator_cpu_us_per_request`,
//! the generator thread's CPU time per request sent.
//!
//! Beyond the fields of §4 the report carries, for the plots and for reading a mixed run, the
//! per-second timeline (sent, approved, declined, errors, timeouts, p50/p99), the latency
//! percentile distribution, the response codes seen, and the same tally per request kind.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use codecs::framing::{Frame, FrameCodec, FramingError};
use codecs::iso8583::{Message, Spec};
use hdrhistogram::Histogram;
use serde::Serialize;
use terminal_kit::link::Target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};

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
    /// The generator's own CPU time (user + system of the thread it runs on) per request sent, in
    /// µs: what the load itself costs the machine, apart from the target's work. `None` where the
    /// thread's CPU time cannot be read (no `/proc`), or nothing was sent.
    pub generator_cpu_us_per_request: Option<f64>,
    /// How late each request was put on its connection after its intended send time, over every
    /// request sent: the generator's own lag (its timer's millisecond, its thread waiting for a
    /// core, a target that stopped reading). `latency_us` includes it; where the two come close,
    /// the generator, not the target, set the latency.
    pub send_lag_us: Latency,
}

/// The quantiles the distribution chart shows: the body, then ever more nines of the tail.
const DISTRIBUTION: [f64; 20] = [
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995,
    0.99999, 0.999999, 1.0,
];

type Key = (Bytes, Bytes);

fn key(m: &Message) -> Option<Key> {
    Some((m.bytes(11)?, m.bytes(41).unwrap_or_default()))
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
            (Second { t: second, ..Second::default() }, Histogram::new_with_bounds(1, MAX_US, 2).ok())
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

/// The requests of a leg waiting for their answers, by DE 11 and DE 41.
type Outstanding = HashMap<Key, Pending>;

struct Shared {
    tally: Mutex<Tally>,
    hist: Mutex<Histogram<u64>>,
    /// The send lags (see [`Report::send_lag_us`]).
    lag: Mutex<Histogram<u64>>,
    start: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Approved,
    Declined,
    Error,
    Timeout,
}

/// A request that ended, with DE 39 of its answer when it had one.
struct Ended {
    pending: Pending,
    end: End,
    rc: Option<Bytes>,
}

/// What a connection counted since it last reported: requests sent (intended time and kind),
/// requests ended, answers that matched nothing. Applied to the tally under one lock.
#[derive(Default)]
struct Batch {
    sent: Vec<(Instant, &'static str)>,
    /// The send lag of each request put on the connection, in µs (see [`Report::send_lag_us`]).
    lags_us: Vec<u64>,
    ended: Vec<Ended>,
    unmatched: u64,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.sent.is_empty() && self.ended.is_empty() && self.unmatched == 0 && self.lags_us.is_empty()
    }
}

/// Adds one to the count of `code` in `codes` (allocating the key only the first time).
fn count_code(codes: &mut BTreeMap<String, u64>, code: &str) {
    match codes.get_mut(code) {
        Some(n) => *n += 1,
        None => {
            codes.insert(code.to_string(), 1);
        }
    }
}

impl Shared {
    fn second_of(&self, intended: Instant) -> u64 {
        intended.saturating_duration_since(self.start).as_secs()
    }

    /// Counts what `batch` holds (emptying it, its room kept); the latency of each request ended
    /// is `now` minus its intended send time.
    fn apply(&self, batch: &mut Batch, now: Instant) {
        if batch.is_empty() {
            return;
        }
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        for (intended, kind) in batch.sent.drain(..) {
            t.sent(self.second_of(intended), kind);
        }
        t.unmatched += std::mem::take(&mut batch.unmatched);
        if !batch.lags_us.is_empty() {
            let mut lag = self.lag.lock().unwrap_or_else(|p| p.into_inner());
            for us in batch.lags_us.drain(..) {
                let _ = lag.record(us.min(MAX_US));
            }
        }
        if batch.ended.is_empty() {
            return;
        }
        let mut hist = self.hist.lock().unwrap_or_else(|p| p.into_inner());
        for Ended { pending: p, end, rc } in batch.ended.drain(..) {
            let us = now.saturating_duration_since(p.intended).as_micros().clamp(1, MAX_US as u128) as u64;
            let second = self.second_of(p.intended);
            if let Some(rc) = rc {
                let code = String::from_utf8_lossy(&rc);
                count_code(&mut t.response_codes, &code);
                count_code(&mut t.by_kind.entry(p.kind).or_default().response_codes, &code);
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
            let answered = matches!(end, End::Approved | End::Declined);
            if answered && let Some(h) = entry.1.as_mut() {
                let _ = h.record(us);
            }
            match end {
                End::Approved => t.approved += 1,
                End::Declined => t.declined += 1,
                End::Error => t.errors += 1,
                End::Timeout => t.timeouts += 1,
            }
            if answered {
                let _ = hist.record(us);
            }
        }
    }
}

/// CPU time of the calling thread so far (user + system), in ns: the on-CPU time of
/// `/proc/thread-self/schedstat`, or else utime + stime of `/proc/thread-self/stat` (clock ticks,
/// Linux's USER_HZ of 100). `None` where neither can be read.
fn thread_cpu_ns() -> Option<u64> {
    if let Ok(s) = std::fs::read_to_string("/proc/thread-self/schedstat")
        && let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok())
    {
        return Some(ns);
    }
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    let mut f = after.split_whitespace().skip(11).map(|x| x.parse::<u64>().ok());
    let (utime, stime) = (f.next()??, f.next()??);
    Some((utime + stime).saturating_mul(10_000_000))
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
///
/// The run has a thread of its own with a single-threaded runtime, whatever runtime the caller
/// awaits it on (and `progress` is called on that thread); should the system refuse a thread, it
/// runs on the caller's runtime, without `generator_cpu_us_per_request`.
pub async fn run_spread(
    targets: Vec<Target>,
    plan: Plan,
    source: Arc<dyn RequestSource>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Report {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let spawned = runtime.map_err(|_| ()).and_then(|rt| {
        let (targets, source, progress) = (targets.clone(), source.clone(), progress.clone());
        std::thread::Builder::new()
            .name("load-generator".into())
            .spawn(move || {
                let report = rt.block_on(generate(targets, plan, source, progress, true));
                let _ = tx.send(report);
            })
            .map_err(|_| ())
    });
    let Ok(thread) = spawned else {
        return generate(targets, plan, source, progress, false).await;
    };
    match rx.await {
        Ok(report) => report,
        // The thread ended without a report: it panicked; so does the caller.
        Err(_) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => Report::default(),
        },
    }
}

/// The run itself, on the runtime it is awaited on; `own_thread`: alone on its thread, whose CPU
/// time is then the generator's.
async fn generate(
    targets: Vec<Target>,
    plan: Plan,
    source: Arc<dyn RequestSource>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
    own_thread: bool,
) -> Report {
    let cpu_start = if own_thread { thread_cpu_ns() } else { None };
    let conns = plan.connections.max(1);
    let total = total_requests(&plan);
    let shared = Arc::new(Shared {
        tally: Mutex::new(Tally::default()),
        hist: Mutex::new(histogram()),
        lag: Mutex::new(histogram()),
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
    let cpu_ns = cpu_start.zip(thread_cpu_ns()).map(|(a, b)| b.saturating_sub(a));
    let t = shared.tally.lock().unwrap_or_else(|p| p.into_inner());
    let h = shared.hist.lock().unwrap_or_else(|p| p.into_inner());
    let lag = shared.lag.lock().unwrap_or_else(|p| p.into_inner());
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
        latency_us: Latency::of(&h),
        connections: conns,
        timeline,
        percentiles,
        response_codes: t.response_codes.clone(),
        by_kind: t.by_kind.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        failovers: t.failovers,
        reversal_advices: t.reversal_advices,
        reversal_advices_settled: t.reversal_advices_settled,
        generator_cpu_us_per_request: cpu_ns
            .filter(|_| t.sent > 0)
            .map(|ns| (ns as f64 / 1000.0 / t.sent as f64 * 100.0).round() / 100.0),
        send_lag_us: Latency::of(&lag),
    }
}

/// The longest latency or lag recorded, in µs (a minute: far beyond any timeout).
const MAX_US: u64 = 60_000_000;

/// A histogram of µs from 1 to [`MAX_US`], three significant figures.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"))
    })
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// How many requests a plan sends: `rate` × `duration`.
pub fn total_requests(plan: &Plan) -> u64 {
    plan.rate.saturating_mul(plan.duration.as_millis() as u64) / 1000
}

/// One connection's share of the schedule: requests `next`, `next + step`, … below `total`,
/// request `seq` due at `start + seq / rate`.
#[derive(Clone, Copy)]
struct Schedule {
    next: u64,
    step: u64,
    total: u64,
    start: Instant,
    interval_ns: u64,
}

impl Schedule {
    fn new(first: u64, plan: &Plan, conns: usize, total: u64, start: Instant) -> Schedule {
        let interval_ns = 1_000_000_000u64 / plan.rate.max(1);
        Schedule { next: first, step: conns.max(1) as u64, total, start, interval_ns }
    }

    fn intended(&self, seq: u64) -> Instant {
        self.start + Duration::from_nanos(seq.saturating_mul(self.interval_ns))
    }

    /// When the next request is due; `None` once the share is all sent.
    fn next_due(&self) -> Option<Instant> {
        (self.next < self.total).then(|| self.intended(self.next))
    }
}

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
            LegEnd::Done => return,
            LegEnd::Unreachable if n > 1 && unreachable + 1 < n => {
                unreachable += 1;
                at = (at + 1) % n;
            }
            LegEnd::Unreachable => {
                // Nothing can be sent on this connection any more: its share is counted as errors.
                let schedule = Schedule::new(seq, &plan, conns, total, shared.start);
                let mut batch = Batch::default();
                for s in (seq..total).step_by(conns) {
                    let intended = schedule.intended(s);
                    let pending = Pending { intended, kind: source.kind(s), sent: None };
                    batch.sent.push((intended, pending.kind));
                    batch.ended.push(Ended { pending, end: End::Error, rc: None });
                }
                shared.apply(&mut batch, Instant::now());
                return;
            }
            LegEnd::Broken(lost) => {
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
enum LegEnd {
    /// Its whole share was sent and answered (or timed out).
    Done,
    /// Its node could not be reached; nothing was sent.
    Unreachable,
    /// The node went away: the requests whose answers were lost (as sent, when kept).
    Broken(Vec<Bytes>),
}

/// Above this many bytes waiting to be written, no more requests are queued until the target
/// reads: they go later, and their latency, counted from their intended time, shows it.
const WRITE_BACKLOG: usize = 256 * 1024;

/// The request-building side of a leg: puts the requests due into the write buffer.
struct Sender<'a> {
    k: usize,
    source: &'a Arc<dyn RequestSource>,
    codec: FrameCodec,
    /// Keep each request as sent (for its reversal advice should the node go away).
    keep_sent: bool,
}

impl Sender<'_> {
    /// Queues in `out` every request of `schedule` due by `now` (one write carries them all) while
    /// `out` holds less than [`WRITE_BACKLOG`], each registered in `outstanding` and counted in
    /// `batch` as sent; a request the source cannot build ends at once as an error. `Err` when a
    /// request does not fit the target's framing (the leg cannot go on).
    fn queue_due(
        &mut self,
        schedule: &mut Schedule,
        now: Instant,
        out: &mut BytesMut,
        outstanding: &mut Outstanding,
        batch: &mut Batch,
    ) -> Result<(), FramingError> {
        while let Some(intended) = schedule.next_due().filter(|t| *t <= now) {
            if out.len() >= WRITE_BACKLOG {
                break;
            }
            let seq = schedule.next;
            schedule.next += schedule.step;
            let kind = self.source.kind(seq);
            let pending = Pending { intended, kind, sent: None };
            let prepared = self.source.prepared(seq, self.k).or_else(|| {
                let msg = self.source.request(seq, self.k);
                let (stan, tid) = key(&msg)?;
                Some(Prepared { bytes: msg.encode().ok()?, stan, tid })
            });
            batch.sent.push((intended, kind));
            let Some(prepared) = prepared else {
                // Not buildable (no DE 11, or it does not encode): an error of the generator's own.
                batch.ended.push(Ended { pending, end: End::Error, rc: None });
                continue;
            };
            let pending = Pending { sent: self.keep_sent.then(|| prepared.bytes.clone()), ..pending };
            outstanding.insert((prepared.stan, prepared.tid), pending);
            self.codec.encode(Frame::new(prepared.bytes), out)?;
            batch.lags_us.push(now.saturating_duration_since(intended).as_micros() as u64);
        }
        Ok(())
    }
}

/// Takes every whole frame in `buf` — one read may bring several, and the last may be cut short,
/// its start left in `buf` for the next read — and matches each answer to its request in
/// `outstanding` by DE 11 and DE 41: approved (DE 39 `00`), declined (any other), or a timeout when
/// it came more than `timeout` after the request's intended time. Answers that match nothing, or
/// do not decode, count as unmatched. `Err` when the framing is broken (nothing after it can be
/// read).
fn take_answers(
    codec: &mut FrameCodec,
    buf: &mut BytesMut,
    spec: &Arc<Spec>,
    outstanding: &mut Outstanding,
    timeout: Duration,
    now: Instant,
    batch: &mut Batch,
) -> Result<(), FramingError> {
    while let Some(frame) = codec.decode(buf)? {
        let Ok(msg) = Message::decode(spec, frame.payload) else {
            batch.unmatched += 1;
            continue;
        };
        match key(&msg).and_then(|k| outstanding.remove(&k)) {
            Some(pending) if now.saturating_duration_since(pending.intended) > timeout => {
                batch.ended.push(Ended { pending, end: End::Timeout, rc: None });
            }
            Some(pending) => {
                let rc = msg.bytes(39);
                let end = if rc.as_deref() == Some(b"00") { End::Approved } else { End::Declined };
                batch.ended.push(Ended { pending, end, rc });
            }
            None => batch.unmatched += 1,
        }
    }
    Ok(())
}

/// What woke a leg.
enum Wake {
    Wrote(std::io::Result<usize>),
    Read(std::io::Result<usize>),
    Tick,
}

/// One connection to one target, as a single task: it writes every request due in one write per
/// timer tick, reads every answer available in one read, until its share is sent and answered,
/// the drain deadline passes (what is left times out), or the connection breaks.
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
) -> LegEnd {
    let mut stream = match TcpStream::connect(&target.addr).await {
        Ok(s) => s,
        Err(_) => return LegEnd::Unreachable,
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.split();
    let mut schedule = Schedule::new(*next_seq, &plan, conns, total, shared.start);
    let mut sender = Sender { k, source, codec: FrameCodec::new(target.framing), keep_sent };
    let mut codec = FrameCodec::new(target.framing);
    let mut outstanding = Outstanding::new();
    let mut batch = Batch::default();
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    // Answers may still arrive up to the timeout after the last intended send time.
    let drain_deadline = shared.start + plan.duration + plan.timeout;
    let sleep = tokio::time::sleep_until(shared.start);
    tokio::pin!(sleep);
    let mut broken = false;
    loop {
        let now = Instant::now();
        if sender.queue_due(&mut schedule, now, &mut wbuf, &mut outstanding, &mut batch).is_err() {
            broken = true;
            break;
        }
        shared.apply(&mut batch, now);
        let sent_all = schedule.next_due().is_none() && wbuf.is_empty();
        if (sent_all && outstanding.is_empty()) || now >= drain_deadline {
            break;
        }
        // Wake for the next request due (unless the target is not reading), or at the deadline.
        let wake = match schedule.next_due() {
            Some(due) if wbuf.len() < WRITE_BACKLOG => due.min(drain_deadline),
            _ => drain_deadline,
        };
        if sleep.deadline() != wake {
            sleep.as_mut().reset(wake);
        }
        rbuf.reserve(16 * 1024);
        let woke = tokio::select! {
            biased;
            r = wr.write(&wbuf), if !wbuf.is_empty() => Wake::Wrote(r),
            r = rd.read_buf(&mut rbuf) => Wake::Read(r),
            () = &mut sleep => Wake::Tick,
        };
        match woke {
            Wake::Wrote(Ok(n)) if n > 0 => wbuf.advance(n),
            Wake::Read(Ok(n)) if n > 0 => {
                let now = Instant::now();
                let taken = take_answers(
                    &mut codec,
                    &mut rbuf,
                    &target.spec,
                    &mut outstanding,
                    plan.timeout,
                    now,
                    &mut batch,
                );
                shared.apply(&mut batch, now);
                if taken.is_err() {
                    broken = true;
                    break;
                }
            }
            Wake::Tick => {}
            // Closed, or failed: the node went away.
            Wake::Wrote(_) | Wake::Read(_) => {
                broken = true;
                break;
            }
        }
    }
    let mut lost = Vec::new();
    for (_, mut pending) in outstanding.drain() {
        if broken && let Some(b) = pending.sent.take() {
            lost.push(b);
        }
        batch.ended.push(Ended { pending, end: if broken { End::Error } else { End::Timeout }, rc: None });
    }
    shared.apply(&mut batch, Instant::now());
    // Requests never sent because the connection broke are not counted as sent: with several
    // targets they are sent at the next one.
    let _ = wr.shutdown().await;
    *next_seq = schedule.next;
    if broken { LegEnd::Broken(lost) } else { LegEnd::Done }
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

#[cfg(test)]
mod tests {
    use super::*;
    use codecs::framing::FramingKind;
    use codecs::iso8583::Mti;
    use tokio::io::AsyncReadExt;

    fn spec() -> Arc<Spec> {
        Spec::builtin("network").expect("spec").clone()
    }

    fn request(spec: &Arc<Spec>, seq: u64, conn: usize) -> Message {
        let mut m = Message::new(spec.clone(), Mti::NETWORK_MANAGEMENT_REQUEST);
        m.set_text(7, "1125101010").expect("DE 7");
        m.set_text(11, &stan(seq)).expect("DE 11");
        m.set_text(41, &terminal_id(conn)).expect("DE 41");
        m.set_text(70, "301").expect("DE 70");
        m
    }

    /// The framed answer to request `seq` of connection 0, with DE 39 `rc`.
    fn answer(spec: &Arc<Spec>, seq: u64, rc: &str) -> BytesMut {
        let a = codecs::iso8583::reply::response(&request(spec, seq, 0), rc);
        let mut out = BytesMut::new();
        FrameCodec::new(FramingKind::Binary2)
            .encode(Frame::new(a.encode().expect("encode")), &mut out)
            .expect("frame");
        out
    }

    fn outstanding(seqs: &[u64], intended: Instant) -> Outstanding {
        seqs.iter()
            .map(|s| {
                let k = (Bytes::from(stan(*s)), Bytes::from(terminal_id(0)));
                (k, Pending { intended, kind: "request", sent: None })
            })
            .collect()
    }

    fn ends(batch: &Batch) -> Vec<(End, Option<String>)> {
        batch
            .ended
            .iter()
            .map(|e| (e.end, e.rc.as_ref().map(|r| String::from_utf8_lossy(r).into_owned())))
            .collect()
    }

    #[test]
    fn one_read_with_several_answers_and_one_cut_across_reads() {
        let spec = spec();
        let now = Instant::now();
        let mut waiting = outstanding(&[1, 2, 3], now);
        let mut codec = FrameCodec::new(FramingKind::Binary2);
        let mut batch = Batch::default();
        let third = answer(&spec, 3, "00");
        let cut = third.len() / 2;
        // One read: the answers to 1 and 2, one to nothing outstanding, and half the third.
        let mut buf = answer(&spec, 1, "00");
        buf.extend_from_slice(&answer(&spec, 2, "51"));
        buf.extend_from_slice(&answer(&spec, 99, "00"));
        buf.extend_from_slice(&third[..cut]);
        let timeout = Duration::from_secs(5);
        take_answers(&mut codec, &mut buf, &spec, &mut waiting, timeout, now, &mut batch).expect("framing");
        assert_eq!(
            ends(&batch),
            vec![(End::Approved, Some("00".into())), (End::Declined, Some("51".into()))]
        );
        assert_eq!(batch.unmatched, 1);
        assert_eq!(buf.len(), cut, "the cut frame waits for the rest");
        assert_eq!(waiting.len(), 1);
        // The next read brings the rest of it.
        buf.extend_from_slice(&third[cut..]);
        take_answers(&mut codec, &mut buf, &spec, &mut waiting, timeout, now, &mut batch).expect("framing");
        assert_eq!(ends(&batch).len(), 3);
        assert_eq!(ends(&batch)[2], (End::Approved, Some("00".into())));
        assert!(buf.is_empty() && waiting.is_empty());
    }

    #[test]
    fn a_late_answer_is_a_timeout_and_broken_framing_stops_the_reader() {
        let spec = spec();
        let now = Instant::now();
        let mut waiting = outstanding(&[7], now);
        let mut codec = FrameCodec::new(FramingKind::Binary2);
        let mut batch = Batch::default();
        let mut buf = answer(&spec, 7, "00");
        let later = now + Duration::from_secs(3);
        take_answers(&mut codec, &mut buf, &spec, &mut waiting, Duration::from_secs(2), later, &mut batch)
            .expect("framing");
        assert_eq!(ends(&batch), vec![(End::Timeout, None)]);
        // A frame that is no message is unmatched; a zero length header breaks the stream.
        let mut buf = BytesMut::from(&[0u8, 3, b'x', b'y', b'z', 0, 0][..]);
        let r =
            take_answers(&mut codec, &mut buf, &spec, &mut waiting, Duration::from_secs(2), now, &mut batch);
        assert!(r.is_err());
        assert_eq!(batch.unmatched, 1);
    }

    #[test]
    fn every_request_due_goes_into_one_write() {
        let spec = spec();
        let s2 = spec.clone();
        let source: Arc<dyn RequestSource> = Arc::new(move |seq: u64, conn: usize| request(&s2, seq, conn));
        let plan = Plan {
            rate: 1000,
            duration: Duration::from_millis(10),
            connections: 2,
            timeout: Duration::from_secs(1),
        };
        let start = Instant::now();
        let mut schedule = Schedule::new(0, &plan, 2, total_requests(&plan), start);
        let mut sender =
            Sender { k: 0, source: &source, codec: FrameCodec::new(FramingKind::Binary2), keep_sent: true };
        let mut out = BytesMut::new();
        let mut waiting = Outstanding::new();
        let mut batch = Batch::default();
        // 4.5 ms in: requests 0, 2 and 4 of this connection are due (one every 2 ms).
        let now = start + Duration::from_micros(4_500);
        sender.queue_due(&mut schedule, now, &mut out, &mut waiting, &mut batch).expect("queued");
        let mut codec = FrameCodec::new(FramingKind::Binary2);
        let mut stans = Vec::new();
        while let Some(f) = codec.decode(&mut out).expect("frames") {
            stans.push(
                Message::decode(&spec, f.payload).expect("request").text(11).expect("DE 11").into_owned(),
            );
        }
        assert_eq!(stans, ["000000", "000002", "000004"]);
        assert_eq!(batch.sent.len(), 3);
        // Each as late as the time since it was due; counted when the batch is applied (one sent
        // exactly on time too).
        assert_eq!(batch.lags_us, [4_500, 2_500, 500]);
        let shared = Shared {
            tally: Mutex::new(Tally::default()),
            hist: Mutex::new(histogram()),
            lag: Mutex::new(histogram()),
            start,
        };
        let mut lags = Batch { lags_us: [batch.lags_us.clone(), vec![0]].concat(), ..Batch::default() };
        shared.apply(&mut lags, now);
        let lag = shared.lag.lock().expect("lag");
        assert_eq!((lag.len(), lag.min()), (4, 0), "every lag counted, none lost");
        assert!(lag.equivalent(lag.max(), 4_500), "{}", lag.max());
        assert!(lags.lags_us.is_empty());
        drop(lag);
        assert!(waiting.values().all(|p| p.sent.is_some()), "kept for a reversal advice");
        assert_eq!(schedule.next_due(), Some(start + Duration::from_millis(6)));
        // Nothing more is due at the same moment; at the end the share is all queued.
        sender.queue_due(&mut schedule, now, &mut out, &mut waiting, &mut batch).expect("queued");
        assert!(out.is_empty());
        sender
            .queue_due(&mut schedule, start + Duration::from_secs(1), &mut out, &mut waiting, &mut batch)
            .expect("queued");
        assert_eq!((waiting.len(), schedule.next_due()), (5, None));
    }

    /// A host that answers every request 00, all the answers of one read in one write, that write
    /// cut in two so that a frame arrives in pieces.
    async fn answering_host(listener: tokio::net::TcpListener, spec: Arc<Spec>) {
        while let Ok((mut s, _)) = listener.accept().await {
            let spec = spec.clone();
            tokio::spawn(async move {
                let mut codec = FrameCodec::new(FramingKind::Binary2);
                let mut buf = BytesMut::new();
                loop {
                    match s.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let mut out = BytesMut::new();
                    while let Ok(Some(f)) = codec.decode(&mut buf) {
                        let req = Message::decode(&spec, f.payload).expect("request");
                        let a = codecs::iso8583::reply::response(&req, "00").encode().expect("answer");
                        codec.encode(Frame::new(a), &mut out).expect("frame");
                    }
                    let cut = out.len() / 2 + 1;
                    for part in [&out[..cut.min(out.len())], &out[cut.min(out.len())..]] {
                        if s.write_all(part).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn a_run_against_a_host_that_batches_its_answers_adds_up() {
        let spec = spec();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(answering_host(listener, spec.clone()));
        let plan = Plan {
            rate: 3000,
            duration: Duration::from_secs(1),
            connections: 3,
            timeout: Duration::from_secs(5),
        };
        let s2 = spec.clone();
        let source = Arc::new(move |seq: u64, conn: usize| request(&s2, seq, conn));
        let target = Target { addr, spec, framing: FramingKind::Binary2 };
        let report = run(target, plan, source, Arc::new(|_| {})).await;
        assert_eq!((report.sent, report.approved, report.unmatched), (3000, 3000, 0), "{report:?}");
        assert_eq!((report.errors, report.timeouts, report.failovers), (0, 0, 0));
        assert_eq!(report.response_codes.get("00"), Some(&3000));
        assert_eq!(report.timeline.iter().map(|s| s.sent).sum::<u64>(), 3000);
        if cfg!(target_os = "linux") {
            assert!(report.generator_cpu_us_per_request.is_some_and(|us| us > 0.0), "{report:?}");
        }
        // Every request's latency includes its send lag, so each point of the one distribution
        // is at or above the other's.
        let (lag, lat) = (&report.send_lag_us, &report.latency_us);
        assert!(lag.p50 <= lat.p50 && lag.p99 <= lat.p99 && lag.max <= lat.max, "{report:?}");
    }

    #[tokio::test]
    async fn an_unreachable_target_ends_every_request_as_an_error() {
        // A port nothing listens on: bound, then closed.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let spec = spec();
        let s2 = spec.clone();
        let source = Arc::new(move |seq: u64, conn: usize| request(&s2, seq, conn));
        let plan = Plan {
            rate: 100,
            duration: Duration::from_secs(1),
            connections: 2,
            timeout: Duration::from_secs(1),
        };
        let report =
            run(Target { addr, spec, framing: FramingKind::Binary2 }, plan, source, Arc::new(|_| {})).await;
        assert_eq!((report.sent, report.errors, report.approved), (100, 100, 0));
    }
}
