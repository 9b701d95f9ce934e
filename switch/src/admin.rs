//! The admin HTTP endpoint (axum): `/metrics` for prometheus, `/health` (the process is alive and
//! its store answers) and `/ready` (every listener accepts and the node is not shutting down).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Readiness as the rest of the node reports it.
#[derive(Default)]
pub struct Readiness {
    listeners_up: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    pub fn set_listeners_up(&self, up: bool) {
        self.listeners_up.store(up, Ordering::Release);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.listeners_up.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// The per-terminal reports of certification listeners, when the node has any.
    pub certification: Option<Arc<crate::certify::CertificationLog>>,
    /// The bearer credential `/metrics` and `/certification` require, when one is configured.
    pub token: Option<Arc<zeroize::Zeroizing<String>>>,
}

pub fn router(state: AdminState) -> Router {
    let guarded = Router::new()
        .route("/certification", get(certification_terminals))
        .route("/certification/{tid}", get(certification_terminal))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), credential));
    Router::new()
        .merge(guarded)
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .with_state(state)
}

/// The admin credential, when the node has one.
async fn credential(
    State(s): State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(token) = &s.token
        && let Err(r) = door::auth::check(req.headers(), token)
    {
        return (r.status(), format!("{}\n", r.detail())).into_response();
    }
    next.run(req).await
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}

/// `GET /certification`: the terminals seen on certification listeners, with their counts.
async fn certification_terminals(State(s): State<AdminState>) -> axum::response::Response {
    match &s.certification {
        Some(log) => axum::Json(serde_json::json!({ "terminals": log.terminals() })).into_response(),
        None => (StatusCode::NOT_FOUND, "no certification listener on this node\n").into_response(),
    }
}

/// `GET /certification/{tid}`: one terminal's report (each message's checks and findings).
async fn certification_terminal(
    State(s): State<AdminState>,
    axum::extract::Path(tid): axum::extract::Path<String>,
) -> axum::response::Response {
    match s.certification.as_ref().and_then(|log| log.terminal(&tid)) {
        Some(r) => axum::Json(r).into_response(),
        None => (StatusCode::NOT_FOUND, "no messages from that terminal on a certification listener\n")
            .into_response(),
    }
}

async fn ready(State(s): State<AdminState>) -> impl IntoResponse {
    if s.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves the admin endpoint on `listener` behind `door` (limits, TLS) until `shutdown` is
/// cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    door: door::DoorConfig,
    shutdown: CancellationToken,
) -> Result<(), door::Error> {
    door::serve(listener, router(state), door, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        get_with(addr, path, "").await
    }

    async fn get_with(addr: std::net::SocketAddr, path: &str, extra: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn endpoints_answer_and_readiness_flips() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let readiness = Arc::new(Readiness::default());
        let metrics = Arc::new(Metrics::new("t"));
        metrics.duplicates.inc();
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            AdminState { metrics, readiness: readiness.clone(), certification: None, token: None },
            door::DoorConfig::default(),
            stop.clone(),
        ));
        assert!(get(addr, "/health").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/ready").await.starts_with("HTTP/1.1 503"));
        readiness.set_listeners_up(true);
        assert!(get(addr, "/ready").await.starts_with("HTTP/1.1 200"));
        let m = get(addr, "/metrics").await;
        assert!(m.contains("paynet_duplicate_transmissions_total{node=\"t\"} 1"), "{m}");
        readiness.set_draining();
        assert!(get(addr, "/ready").await.starts_with("HTTP/1.1 503"));
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn with_a_credential_metrics_and_certification_need_it_and_probes_do_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let readiness = Arc::new(Readiness::default());
        readiness.set_listeners_up(true);
        let stop = CancellationToken::new();
        let token = Some(Arc::new(zeroize::Zeroizing::new("admin-credential-0123".to_string())));
        let st = AdminState { metrics: Arc::new(Metrics::new("t")), readiness, certification: None, token };
        let task = tokio::spawn(serve(listener, st, door::DoorConfig::default(), stop.clone()));
        for path in ["/metrics", "/certification", "/certification/T0000001"] {
            assert!(get(addr, path).await.starts_with("HTTP/1.1 401"), "{path} without a credential");
            let wrong = get_with(addr, path, "Authorization: Bearer admin-credential-0124\r\n").await;
            assert!(wrong.starts_with("HTTP/1.1 403"), "{path} with a wrong one");
            assert!(!wrong.contains("admin-credential"), "the credential is never echoed");
        }
        let right = get_with(addr, "/metrics", "Authorization: Bearer admin-credential-0123\r\n").await;
        assert!(right.starts_with("HTTP/1.1 200") && right.contains("paynet_"), "{right}");
        assert!(get(addr, "/health").await.starts_with("HTTP/1.1 200"), "probes stay open");
        assert!(get(addr, "/ready").await.starts_with("HTTP/1.1 200"));
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}
