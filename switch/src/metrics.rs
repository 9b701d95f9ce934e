//! The switch's prometheus registry (its own, not the global default), scraped at `/metrics`.
//!
//! Label values are bounded sets — MTI, response code, route name, stage, link name — and never
//! card data: a PAN, token or terminal-specific value is never a label.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets in seconds, from 10 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] =
    [1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.5, 1.0, 10.0];

pub struct Metrics {
    registry: Registry,
    /// Messages answered, by request MTI, response code and route.
    pub responses: IntCounterVec,
    /// End-to-end latency of a request inside the switch, by request MTI.
    pub latency: HistogramVec,
    /// Time spent per pipeline stage.
    pub stage_latency: HistogramVec,
    /// Its stages timed for every authorization, their handles taken once (no label look-up
    /// per request).
    pub stages: Stages,
    pub in_flight: IntGauge,
    pub acquirer_connections: IntGaugeVec,
    /// Frames that could not be decoded, by listener.
    pub format_errors: IntCounterVec,
    /// Issuer answers that matched no outstanding request, by link.
    pub unmatched: IntCounterVec,
    /// Issuer links up (1) or down (0).
    pub issuer_up: IntGaugeVec,
    pub issuer_timeouts: IntCounterVec,
    pub saf_pending: IntGaugeVec,
    /// Entries moved out of a SAF queue because they cannot be delivered (alert on any).
    pub saf_quarantined: IntCounterVec,
    pub stand_in_approvals: IntCounterVec,
    /// Stand-in refused because the node already holds `[stand_in] max_cards` running totals.
    pub stand_in_full: IntCounterVec,
    pub duplicates: IntCounter,
    /// The state writer's group commits (decision state and journal rows, one sync of the disk
    /// each), from their start to durable: what every authorization waits for twice.
    pub store_commit: Histogram,
    pub journal_rows: IntCounter,
    pub journal_errors: IntCounter,
}

/// The stages of [`Metrics::stage_latency`] every forwarded authorization goes through.
pub struct Stages {
    /// Waiting for the decision state to be durable before forwarding.
    pub state_sync: Histogram,
    /// The issuer's round trip.
    pub issuer: Histogram,
    /// Waiting for the answer's row to be durable before answering.
    pub journal_durable: Histogram,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    // Names are static and unique within this registry, so registration cannot collide.
    r.register(Box::new(c.clone())).expect("unique metric name");
    c
}

impl Metrics {
    pub fn new(node: &str) -> Self {
        let registry = Registry::new_custom(
            Some("paynet".into()),
            Some([("node".to_string(), node.to_string())].into()),
        )
        .expect("valid prefix and labels");
        let r = &registry;
        let h = |name: &str, help: &str, labels: &[&str]| {
            reg(
                r,
                HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels)
                    .expect("valid"),
            )
        };
        let c = |name: &str, help: &str, labels: &[&str]| {
            reg(r, IntCounterVec::new(Opts::new(name, help), labels).expect("valid"))
        };
        let g = |name: &str, help: &str, labels: &[&str]| {
            reg(r, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid"))
        };
        let stage_latency = h("stage_latency_seconds", "Time per pipeline stage", &["stage"]);
        let stage = |name: &str| stage_latency.with_label_values(&[name]);
        let stages = Stages {
            state_sync: stage("state_sync"),
            issuer: stage("issuer"),
            journal_durable: stage("journal_durable"),
        };
        Metrics {
            responses: c(
                "responses_total",
                "Requests answered, by MTI, response code and route",
                &["mti", "response_code", "route"],
            ),
            latency: h("request_latency_seconds", "Time from request decoded to response written", &["mti"]),
            stage_latency,
            stages,
            in_flight: reg(r, IntGauge::new("in_flight", "Requests in flight").expect("valid")),
            acquirer_connections: g("acquirer_connections", "Open acquirer connections", &["listener"]),
            format_errors: c(
                "format_errors_total",
                "Frames that did not decode or broke the spec",
                &["listener"],
            ),
            unmatched: c(
                "unmatched_responses_total",
                "Issuer answers matching no outstanding request",
                &["link"],
            ),
            issuer_up: g("issuer_link_up", "Issuer connections up", &["issuer"]),
            issuer_timeouts: c(
                "issuer_timeouts_total",
                "Requests the issuer did not answer in time",
                &["issuer"],
            ),
            saf_pending: g("saf_pending", "Store-and-forward entries waiting", &["issuer"]),
            saf_quarantined: c(
                "saf_quarantined_total",
                "Store-and-forward entries quarantined because they cannot be delivered",
                &["issuer"],
            ),
            stand_in_approvals: c("stand_in_approvals_total", "Approvals given in stand-in", &["issuer"]),
            stand_in_full: c(
                "stand_in_refused_full_total",
                "Stand-in refused (91) because the node holds as many cards' stand-in totals as it may",
                &["issuer"],
            ),
            duplicates: reg(
                r,
                IntCounter::new("duplicate_transmissions_total", "Duplicates answered from the original")
                    .expect("valid"),
            ),
            store_commit: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "store_commit_seconds",
                        "Group commits of the decision state and journal rows, from start to durable",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )
                .expect("valid"),
            ),
            journal_rows: reg(
                r,
                IntCounter::new("journal_rows_total", "Journal rows written").expect("valid"),
            ),
            journal_errors: reg(
                r,
                IntCounter::new("journal_errors_total", "Journal batches that failed to write")
                    .expect("valid"),
            ),
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding our own well-formed families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_node_label() {
        let m = Metrics::new("n1");
        m.responses.with_label_values(&["0100", "00", "issuer-a"]).inc();
        m.latency.with_label_values(&["0100"]).observe(0.0002);
        let text = m.render();
        assert!(
            text.contains(
                "paynet_responses_total{mti=\"0100\",response_code=\"00\",route=\"issuer-a\",node=\"n1\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("paynet_request_latency_seconds_bucket"));
    }
}
