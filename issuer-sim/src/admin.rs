//! The simulator's admin port: fault rules, and — in test mode only — the text messages the
//! issuer sent to cardholders (their one-time passwords). HTTP on the shared door
//! (`door::serve`: timeouts, limits, TLS off loopback), every request authenticated with
//! `Authorization: Bearer <admin_token>` compared in constant time: 401 without a credential,
//! 403 with a wrong one.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /v1/faults` | — | the rules in force, a JSON array |
//! | `PUT /v1/faults` | a JSON array of rules | `{"rules": N}` (replaced), or 400 and nothing changes |
//! | `DELETE /v1/faults` | — | `{"rules": 0}` |
//! | `GET /v1/sms` | — | test mode only (404 otherwise): `[{"card": "476173******0027", "otp", "at_ms"}]` |

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::{FaultRule, ServerState, check_faults};

/// Who may use the admin port, and what it offers.
#[derive(Clone)]
pub struct AdminAccess {
    /// The bearer credential every request must carry.
    pub token: Arc<zeroize::Zeroizing<String>>,
    /// Serve `GET /v1/sms` (cardholders' OTPs): a test network only.
    pub test_mode: bool,
}

impl std::fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccess").field("token", &"…").field("test_mode", &self.test_mode).finish()
    }
}

impl AdminAccess {
    /// Refuses an empty or short credential (anything a guesser could find).
    pub fn new(token: &str, test_mode: bool) -> Result<AdminAccess, String> {
        if token.len() < 16 {
            return Err("admin_token: at least 16 characters are required".into());
        }
        Ok(AdminAccess { token: Arc::new(zeroize::Zeroizing::new(token.to_string())), test_mode })
    }
}

#[derive(Clone)]
struct Admin {
    state: Arc<ServerState>,
    access: AdminAccess,
}

fn answer(status: StatusCode, error: &str, detail: &str) -> Response {
    (status, Json(json!({"error": error, "detail": detail}))).into_response()
}

async fn authenticate(State(a): State<Admin>, req: Request, next: Next) -> Response {
    match door::auth::check(req.headers(), a.access.token.as_str()) {
        Ok(()) => next.run(req).await,
        Err(r) => answer(r.status(), "unauthorized", r.detail()),
    }
}

async fn faults(State(a): State<Admin>) -> Response {
    let faults = a.state.faults.read().unwrap_or_else(|p| p.into_inner());
    Json(json!(*faults)).into_response()
}

async fn set_faults(State(a): State<Admin>, body: axum::body::Bytes) -> Response {
    let rules: Vec<FaultRule> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return answer(StatusCode::BAD_REQUEST, "bad_request", &format!("fault rules (JSON): {e}")),
    };
    if let Err(e) = check_faults(&rules) {
        return answer(StatusCode::BAD_REQUEST, "bad_request", &e);
    }
    let mut faults = a.state.faults.write().unwrap_or_else(|p| p.into_inner());
    *faults = rules;
    Json(json!({"rules": faults.len()})).into_response()
}

async fn clear_faults(State(a): State<Admin>) -> Response {
    a.state.faults.write().unwrap_or_else(|p| p.into_inner()).clear();
    Json(json!({"rules": 0})).into_response()
}

async fn sms(State(a): State<Admin>) -> Response {
    match a.state.issuer.lock() {
        Ok(mut i) => {
            // Texts past their OTP's lifetime are not shown, even when no request swept them.
            i.expire_kept((a.state.clock)());
            Json(json!(i.sms_outbox)).into_response()
        }
        Err(_) => answer(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "issuer unavailable"),
    }
}

/// The admin routes, authenticated.
pub fn router(state: Arc<ServerState>, access: AdminAccess) -> Router {
    let a = Admin { state, access };
    let mut r = Router::new().route("/v1/faults", get(faults).put(set_faults).delete(clear_faults));
    if a.access.test_mode {
        r = r.route("/v1/sms", get(sms));
    }
    let guard = axum::middleware::from_fn_with_state(a.clone(), authenticate);
    r.with_state(a).layer(guard)
}

/// Serves the admin port on `listener` behind `door` until `stop`.
pub async fn run_admin(
    listener: TcpListener,
    state: Arc<ServerState>,
    access: AdminAccess,
    door: door::DoorConfig,
    stop: CancellationToken,
) -> Result<(), door::Error> {
    door::serve(listener, router(state, access), door, stop).await
}
