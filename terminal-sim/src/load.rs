//! The open-loop load generator (INTERFACES.md §4).
//!
//! Request `i` has an intended send time `start + i / rate`, fixed before the run; it is sent at that
//! time (or at once, when the generator is behind), and its latency is measured from the intended
//! time, not from when it actually left — a stalled server therefore shows its stall in the
//! percentiles instead of hiding it (no coordinated omission). Requests are spread over many
//! connections and matched to their answers by DE 11 and DE 41, which the request source makes
//! unique per outstanding request. Every request sent ends as exactly one of approved, declined,
//! error or timeout; answers that match nothing are counted apart as unmatched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Spec};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead};

/// Where the load goes.
#[derive(Clone)]
pub struct Target {
    pub addr: String,
    pub spec: Arc<Spec>,
    pub framing: FramingKind,
}

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

/// Builds request `seq` for connection `conn`. DE 11 and DE 41 must identify it among the
/// requests outstanding on that connection.
pub trait RequestSource: Send + Sync + 'static {
    fn request(&self, seq: u64, conn: usize) -> Message;
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
    pub approved: u64,
    pub declined: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// The report of INTERFACES.md §4 (plus `connections` and `timeline`, added for the plots).
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
}

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
}

struct Shared {
    tally: Mutex<Tally>,
    hist: Mutex<Histogram<u64>>,
    start: Instant,
}

enum End {
    Approved,
    Declined,
    Error,
    Timeout,
}

impl Shared {
    fn finish(&self, intended: Instant, end: End) {
        let now = Instant::now();
        let us = now.saturating_duration_since(intended).as_micros().max(1) as u64;
        let second = intended.saturating_duration_since(self.start).as_secs();
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        let entry = t.per_second.entry(second).or_insert_with(|| {
            (Second { t: second, ..Second::default() }, Histogram::new_with_bounds(1, 60_000_000, 2).ok())
        });
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
    let conns = plan.connections.max(1);
    let total = plan.rate.saturating_mul(plan.duration.as_millis() as u64) / 1000;
    let shared = Arc::new(Shared {
        tally: Mutex::new(Tally::default()),
        hist: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
            Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"))
        })),
        // Connections open first; the schedule starts once they are all up.
        start: Instant::now() + Duration::from_millis(200),
    });
    let mut tasks = Vec::new();
    for k in 0..conns {
        let target = target.clone();
        let source = source.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(connection(k, conns, total, plan, target, source, shared)));
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
            p50_us: h.as_ref().map(|h| h.value_at_quantile(0.5)).unwrap_or(0),
            p99_us: h.as_ref().map(|h| h.value_at_quantile(0.99)).unwrap_or(0),
            ..s.clone()
        })
        .collect();
    timeline.sort_by_key(|s| s.t);
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
    }
}

async fn connection(
    k: usize,
    conns: usize,
    total: u64,
    plan: Plan,
    target: Target,
    source: Arc<dyn RequestSource>,
    shared: Arc<Shared>,
) {
    let outstanding: Arc<Mutex<HashMap<Key, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let stream = match TcpStream::connect(&target.addr).await {
        Ok(s) => s,
        Err(_) => {
            // Nothing can be sent on this connection: its share is counted as errors.
            let mine = (k as u64..total).step_by(conns).count() as u64;
            let mut t = shared.tally.lock().unwrap_or_else(|p| p.into_inner());
            t.sent += mine;
            t.errors += mine;
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let codec = FrameCodec::new(target.framing);
    // Reader: match answers until the writer is done and nothing is outstanding (or timeouts).
    let reader = {
        let outstanding = outstanding.clone();
        let shared = shared.clone();
        let spec = target.spec.clone();
        tokio::spawn(async move {
            let mut frames = FramedRead::new(rd, codec);
            while let Some(frame) = frames.next().await {
                let Ok(frame) = frame else { break };
                let Ok(msg) = Message::decode(&spec, frame.payload) else {
                    shared.tally.lock().unwrap_or_else(|p| p.into_inner()).unmatched += 1;
                    continue;
                };
                let intended =
                    key(&msg).and_then(|k| outstanding.lock().unwrap_or_else(|p| p.into_inner()).remove(&k));
                match intended {
                    Some(at) => {
                        let ok = msg.field(39).is_some_and(|f| &f.data[..] == b"00");
                        shared.finish(at, if ok { End::Approved } else { End::Declined });
                    }
                    None => shared.tally.lock().unwrap_or_else(|p| p.into_inner()).unmatched += 1,
                }
            }
        })
    };
    let interval_ns = 1_000_000_000u64 / plan.rate.max(1);
    let mut seq = k as u64;
    let mut codec = codec;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut broken = false;
    while seq < total {
        let intended = shared.start + Duration::from_nanos(seq.saturating_mul(interval_ns));
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
        let msg = source.request(seq, k);
        let Some(key) = key(&msg) else {
            shared.tally.lock().unwrap_or_else(|p| p.into_inner()).sent += 1;
            shared.finish(intended, End::Error);
            seq += conns as u64;
            continue;
        };
        let encoded = match msg.encode() {
            Ok(b) => b,
            Err(_) => {
                shared.tally.lock().unwrap_or_else(|p| p.into_inner()).sent += 1;
                shared.finish(intended, End::Error);
                seq += conns as u64;
                continue;
            }
        };
        outstanding.lock().unwrap_or_else(|p| p.into_inner()).insert(key, intended);
        shared.tally.lock().unwrap_or_else(|p| p.into_inner()).sent += 1;
        if codec.encode(Frame::new(encoded), &mut buf).is_err() {
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
        if outstanding.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reader.abort();
    let left: Vec<Instant> =
        outstanding.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, at)| at).collect();
    for at in left {
        shared.finish(at, if broken { End::Error } else { End::Timeout });
    }
    // Requests never sent because the connection broke are not counted as sent.
    let _ = wr.shutdown().await;
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
