//! The per-request limits every door's router is wrapped in: the request deadline (408) and the
//! body limit (413, up front from Content-Length, and on the stream for chunked bodies).

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::DoorConfig;

#[derive(Clone, Copy)]
struct Limits {
    request_timeout: Duration,
    body_limit: usize,
}

pub(crate) fn apply(router: axum::Router, cfg: &DoorConfig) -> axum::Router {
    let limits =
        Limits { request_timeout: Duration::from_millis(cfg.request_timeout_ms), body_limit: cfg.body_limit };
    router
        .layer(DefaultBodyLimit::max(cfg.body_limit))
        .layer(axum::middleware::from_fn_with_state(limits, guard))
}

fn too_large(limit: usize) -> Response {
    (StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {limit} bytes\n")).into_response()
}

async fn guard(State(l): State<Limits>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > l.body_limit as u64) {
        return too_large(l.body_limit);
    }
    let req = req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, l.body_limit)));
    match tokio::time::timeout(l.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request took too long\n").into_response(),
    }
}
