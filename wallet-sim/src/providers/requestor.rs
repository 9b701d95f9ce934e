//! The cloud (HCE) platform (model 3) and the DPSP wallet server (model 4): token requestors that
//! take the cardholder's card number from their app, ask the token service for a token bound to
//! the phone's device key, pass the sealed token data to the phone (only the phone opens it), tell
//! the token service when it is loaded (the token service then notifies the issuer), and — the
//! cloud platform — replenish limited-use keys.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `POST /v1/cards` | `{device_id, device_public_key, pan, expiry}` | the token service's outcome: `{status: approved, token_ref, encrypted_token_data, ...}`, `{status: otp_required, provisioning_id}`, `{status: declined ...}` |
//! | `POST /v1/cards/otp` | `{provisioning_id, otp}` | as above |
//! | `POST /v1/cards/{token_ref}/loaded` | `{device_id}` | `{status: active}` |
//! | `POST /v1/cards/{token_ref}/replenish` | `{device_id}` | `{encrypted_token_data}` |
//!
//! Every answer carries `steps`: what the provider did on its side, for the cardholder's log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::Steps;
use super::http::{ApiError, ApiResult, field};
use super::token::TokenClient;

/// One requestor front end (the cloud platform or the wallet server).
pub struct Front {
    kind: &'static str,
    name: &'static str,
    token: Option<TokenClient>,
    /// Token ref → device id; provisioning id → device id (OTP pending).
    devices: Mutex<HashMap<String, String>>,
    pending: Mutex<HashMap<String, String>>,
    seq: std::sync::atomic::AtomicU64,
}

impl Front {
    pub fn new(kind: &'static str, name: &'static str, token: Option<TokenClient>) -> Arc<Front> {
        Arc::new(Front {
            kind,
            name,
            token,
            devices: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            seq: std::sync::atomic::AtomicU64::new(1),
        })
    }

    fn token(&self) -> Result<&TokenClient, ApiError> {
        self.token
            .as_ref()
            .ok_or_else(|| ApiError::refused(format!("the {} has no token service credentials", self.name)))
    }

    /// Turns the token service's outcome into this front's answer, remembering who it is for.
    fn outcome(&self, device_id: &str, out: Value, mut steps: Steps) -> ApiResult {
        let status = out.get("status").and_then(Value::as_str).unwrap_or("").to_string();
        let mut answer = out.clone();
        match status.as_str() {
            "approved" => {
                let token_ref = field(&out, "token_ref")?.to_string();
                steps.push(
                    "token service",
                    self.name,
                    format!(
                        "token data for token …{} sealed for the device",
                        out.get("token_last4").and_then(Value::as_str).unwrap_or("")
                    ),
                );
                steps.push(self.name, "phone", "token data, encrypted for the device key");
                if let Ok(mut d) = self.devices.lock() {
                    d.insert(token_ref, device_id.to_string());
                }
            }
            "otp_required" => {
                let id = field(&out, "provisioning_id")?.to_string();
                steps.push("issuer", "cardholder", "one-time password (step-up ID&V)");
                if let Ok(mut p) = self.pending.lock() {
                    p.insert(id, device_id.to_string());
                }
            }
            other => steps.push("token service", self.name, format!("provisioning {other}")),
        }
        answer["steps"] = steps.into_value();
        Ok(Json(answer))
    }

    fn owner_check(&self, token_ref: &str, device_id: &str) -> Result<(), ApiError> {
        let d = self.devices.lock().map_err(|_| ApiError::refused("state"))?;
        match d.get(token_ref) {
            Some(owner) if owner == device_id => Ok(()),
            Some(_) => Err(ApiError::refused("that token belongs to another device")),
            None => Err(ApiError::not_found("no such token here")),
        }
    }
}

async fn add_card(State(f): State<Arc<Front>>, Json(b): Json<Value>) -> ApiResult {
    let device_id = field(&b, "device_id")?;
    let dpk = field(&b, "device_public_key")?;
    let pan = field(&b, "pan")?;
    let expiry = field(&b, "expiry")?;
    let mut steps = Steps::default();
    let n = f.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let request_id = format!("{}-{}-{n}", f.kind, device_id);
    steps.push(
        f.name,
        "token service",
        format!("provision (requestor {}, device key of {device_id})", f.token()?.requestor_id),
    );
    steps.push("token service", "issuer", "ID&V request");
    let a = f.token()?.provision(&request_id, pan, expiry, dpk).await?;
    f.outcome(device_id, a.body, steps)
}

async fn otp(State(f): State<Arc<Front>>, Json(b): Json<Value>) -> ApiResult {
    let id = field(&b, "provisioning_id")?;
    let code = field(&b, "otp")?;
    let device = f
        .pending
        .lock()
        .map_err(|_| ApiError::refused("state"))?
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("no such provisioning here"))?;
    let mut steps = Steps::default();
    steps.push(f.name, "token service", "the cardholder's one-time password");
    steps.push("token service", "issuer", "OTP verification");
    let a = f.token()?.otp(id, code).await?;
    f.outcome(&device, a.body, steps)
}

async fn loaded(
    State(f): State<Arc<Front>>,
    Path(token_ref): Path<String>,
    Json(b): Json<Value>,
) -> ApiResult {
    f.owner_check(&token_ref, field(&b, "device_id")?)?;
    let mut steps = Steps::default();
    steps.push(f.name, "token service", "token loaded on the device: confirm");
    let r = f.token()?.confirm(&token_ref).await?;
    steps.push("token service", "issuer", "notice: token download completed (0620)");
    Ok(Json(json!({"status": r.get("status").cloned().unwrap_or(Value::Null), "steps": steps.into_value()})))
}

async fn replenish(
    State(f): State<Arc<Front>>,
    Path(token_ref): Path<String>,
    Json(b): Json<Value>,
) -> ApiResult {
    f.owner_check(&token_ref, field(&b, "device_id")?)?;
    let mut steps = Steps::default();
    steps.push(f.name, "token service", "replenish limited-use keys");
    let r = f.token()?.replenish(&token_ref).await?;
    let sealed = field(&r, "encrypted_token_data")?.to_string();
    steps.push("token service", f.name, "next batch of limited-use keys, sealed for the device");
    steps.push(f.name, "phone", "limited-use keys, encrypted for the device key");
    Ok(Json(json!({"encrypted_token_data": sealed, "steps": steps.into_value()})))
}

pub fn router(f: Arc<Front>) -> Router {
    Router::new()
        .route("/v1/cards", post(add_card))
        .route("/v1/cards/otp", post(otp))
        .route("/v1/cards/{token_ref}/loaded", post(loaded))
        .route("/v1/cards/{token_ref}/replenish", post(replenish))
        .with_state(f)
}
