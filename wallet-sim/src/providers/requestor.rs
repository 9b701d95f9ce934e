//! The cloud (HCE) platform (model 3) and the DPSP wallet server (model 4): token requestors that
//! take the cardholder's card number from their app, ask the token service for a token bound to
//! the phone's device key, pass the sealed token data to the phone (only the phone opens it), tell
//! the token service when it is loaded (the token service then notifies the issuer), and — the
//! cloud platform — replenish limited-use keys.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `POST /v1/devices` | `{device_id, device_public_key}` | `{device_token}`: the device's credential (registration; an id registered once only) |
//! | `POST /v1/cards` | `{device_id, device_public_key, pan, expiry, cvv2?}` | the token service's outcome: `{status: approved, token_ref, encrypted_token_data, ...}`, `{status: otp_required, provisioning_id}`, `{status: declined ...}` |
//! | `POST /v1/cards/otp` | `{provisioning_id, otp}` | as above |
//! | `POST /v1/cards/{token_ref}/loaded` | `{device_id}` | `{status: active}` |
//! | `POST /v1/cards/{token_ref}/replenish` | `{device_id}` | `{encrypted_token_data}` |
//! | `POST /v1/pan-cards` | `{device_id, device_public_key, pan, expiry, cvv2?}` | the cloud platform only, the real PAN (`hce-pan`): the issuer's ID&V, then `{status: approved, card_ref, encrypted_card_data, luks}`, `{status: otp_required, provisioning_id}`, `{status: declined, response_code}` |
//! | `POST /v1/pan-cards/otp` | `{provisioning_id, otp}` | as above |
//! | `POST /v1/pan-cards/{card_ref}/replenish` | `{device_id}` | `{encrypted_card_data, luks}` |
//!
//! On the real PAN (model 3's first branch) there is no token: the cloud platform asks the issuer
//! to verify the cardholder and the device (ID&V, with an OTP step-up when the card's policy says
//! so), and the issuer's HSM derives a batch of limited-use keys — the common session keys of the
//! next ATCs, from the card's ICC master key — and seals them with the card's perso data for the
//! device's key. The cloud platform relays the package without being able to open it; the phone's
//! secure area never holds the master key. Replenishment asks the issuer for the next ATCs.
//!
//! Every answer carries `steps`: what the provider did on its side, for the cardholder's log.
//!
//! Every call but the registration carries the device's credential (`Authorization: Bearer
//! <device_token>`) and acts for that device only: the token data is sealed for the key the
//! device registered, a provisioning or a card of another device is not found. The front is no
//! longer an open proxy to the requestor's own credential at the token service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::auth::Registry;
use super::http::{ApiError, ApiResult, field};
use super::token::TokenClient;
use super::{IdvRequest, IssuerPerso, PersoKind, PersoOutcome, PersoRequest, Steps};
use axum::http::HeaderMap;
use door::bounded::BoundedMap;
use emv::mask;
use phone::hce::HCE_PERSO_INFO;

/// Step-ups waiting for the cardholder's OTP: at most this many, for at most this long.
pub const PENDING_MAX: usize = 10_000;
pub const PENDING_TTL_MS: u64 = 15 * 60 * 1000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Limited-use keys per batch for a real-PAN HCE card.
pub const PAN_LUK_BATCH: u16 = 5;

/// A real-PAN card the cloud platform delivered: whose device it is on.
#[derive(serde::Serialize, serde::Deserialize)]
struct PanCard {
    device_id: String,
    device_public_key: Vec<u8>,
    pan: String,
}

/// A real-PAN provisioning waiting for the cardholder's one-time password.
struct PendingPan {
    device_id: String,
    device_public_key: Vec<u8>,
    pan: String,
    expiry: String,
    /// The CVV2 the cardholder typed, when the app asked for it.
    cvv2: Option<String>,
    session: String,
}

/// One requestor front end (the cloud platform or the wallet server).
pub struct Front {
    kind: &'static str,
    name: &'static str,
    token: Option<TokenClient>,
    /// Token ref → device id; provisioning id → device id (OTP pending).
    devices: Mutex<HashMap<String, String>>,
    pending: Mutex<BoundedMap<String, String>>,
    seq: std::sync::atomic::AtomicU64,
    /// The issuer's perso system (the cloud platform on the real PAN).
    issuer: Option<IssuerPerso>,
    /// Card ref → real-PAN card; provisioning id → pending real-PAN provisioning.
    pan_cards: Mutex<HashMap<String, PanCard>>,
    pan_pending: Mutex<BoundedMap<String, PendingPan>>,
    /// PAN → the next ATC to ask the issuer keys for (every batch the cloud platform asked for a
    /// card, on any device, moves it on).
    pan_next_atc: Mutex<HashMap<String, u16>>,
    /// Registered devices: their credentials and their public keys.
    owners: Registry,
    device_keys: Mutex<HashMap<String, String>>,
}

impl Front {
    pub fn new(kind: &'static str, name: &'static str, token: Option<TokenClient>) -> Arc<Front> {
        Front::with_issuer(kind, name, token, None)
    }

    /// A front that can also provision the real PAN through the issuer's perso system.
    pub fn with_issuer(
        kind: &'static str,
        name: &'static str,
        token: Option<TokenClient>,
        issuer: Option<IssuerPerso>,
    ) -> Arc<Front> {
        Arc::new(Front {
            kind,
            name,
            token,
            devices: Mutex::new(HashMap::new()),
            pending: Mutex::new(BoundedMap::new(PENDING_MAX, PENDING_TTL_MS)),
            seq: std::sync::atomic::AtomicU64::new(1),
            issuer,
            pan_cards: Mutex::new(HashMap::new()),
            pan_pending: Mutex::new(BoundedMap::new(PENDING_MAX, PENDING_TTL_MS)),
            pan_next_atc: Mutex::new(HashMap::new()),
            owners: Registry::default(),
            device_keys: Mutex::new(HashMap::new()),
        })
    }

    /// The front `kind` as `store` saved it (new when it holds nothing).
    pub fn open(
        kind: &'static str,
        name: &'static str,
        token: Option<TokenClient>,
        issuer: Option<IssuerPerso>,
        store: Option<&Arc<dyn super::kept::KeptStore>>,
    ) -> crate::error::Result<Arc<Front>> {
        let front = Front::with_issuer(kind, name, token, issuer);
        let Some(saved) = super::kept::load::<SavedFront>(store, kind)? else { return Ok(front) };
        let mut front = Arc::try_unwrap(front).map_err(|_| crate::Error::start(name, "shared already"))?;
        front.devices = Mutex::new(saved.devices);
        front.seq = std::sync::atomic::AtomicU64::new(saved.seq);
        front.pan_cards = Mutex::new(saved.pan_cards);
        front.pan_next_atc = Mutex::new(saved.pan_next_atc);
        front.owners = Registry::restored(&saved.owners);
        front.device_keys = Mutex::new(saved.device_keys);
        Ok(Arc::new(front))
    }

    fn issuer(&self) -> Result<&IssuerPerso, ApiError> {
        self.issuer
            .as_ref()
            .ok_or_else(|| ApiError::refused(format!("the {} has no issuer perso connection", self.name)))
    }

    fn next_atc(&self, pan: &str) -> Result<u16, ApiError> {
        let m = self.pan_next_atc.lock().map_err(|_| ApiError::refused("state"))?;
        Ok(m.get(pan).copied().unwrap_or(1))
    }

    /// Asks the issuer for the next batch of limited-use keys of `pan` sealed for the device
    /// (after its ID&V when `idv` is given); the outcome and the batch asked for.
    fn issuer_batch(
        &self,
        pan: &str,
        device_public_key: &[u8],
        idv: Option<IdvRequest<'_>>,
    ) -> Result<(PersoOutcome, crypto::hsm::LukBatch), ApiError> {
        let first_atc = self.next_atc(pan)?;
        let batch = crypto::hsm::LukBatch { first_atc, count: PAN_LUK_BATCH };
        let out = self.issuer()?(PersoRequest {
            pan,
            recipient_public_key: device_public_key,
            info: HCE_PERSO_INFO,
            kind: PersoKind::LimitedUseKeys { first_atc, count: PAN_LUK_BATCH },
            idv,
        })
        .map_err(|e| ApiError::refused(format!("the issuer refused: {e}")))?;
        if matches!(out, PersoOutcome::Sealed(_)) {
            self.pan_next_atc
                .lock()
                .map_err(|_| ApiError::refused("state"))?
                .insert(pan.to_string(), first_atc.saturating_add(PAN_LUK_BATCH));
        }
        Ok((out, batch))
    }

    /// ID&V (and, approved, perso) of a pending real-PAN provisioning; the answer to the phone.
    /// `otp` is the cardholder's one-time password for provisioning `otp.0`: a wrong one leaves
    /// the provisioning pending (the issuer counts the tries), as the token service does.
    fn pan_outcome(&self, p: PendingPan, otp: Option<(&str, &str)>, mut steps: Steps) -> ApiResult {
        let idv = IdvRequest {
            expiry: &p.expiry,
            session: &p.session,
            otp: otp.map(|o| o.1),
            cvv2: p.cvv2.as_deref(),
            requestor: self.kind,
        };
        let (out, batch) = self.issuer_batch(&p.pan, &p.device_public_key, Some(idv))?;
        match out {
            PersoOutcome::Sealed(sealed) => {
                steps.push("issuer", self.name, "ID&V approved: cardholder and device verified");
                steps.push(
                    "issuer",
                    self.name,
                    format!(
                        "perso data for card {}: {} limited-use keys (ATC {:04X}-{:04X}) derived by the HSM \
                         from the IMK, sealed for the device",
                        mask(&p.pan),
                        batch.count,
                        batch.first_atc,
                        batch.first_atc + batch.count - 1
                    ),
                );
                steps.push(self.name, "phone", "perso data, encrypted for the device key (unreadable here)");
                let r: [u8; 8] = super::random()?;
                let card_ref = format!("PAN{}", hex::encode_upper(r));
                self.pan_cards.lock().map_err(|_| ApiError::refused("state"))?.insert(
                    card_ref.clone(),
                    PanCard { device_id: p.device_id, device_public_key: p.device_public_key, pan: p.pan },
                );
                Ok(Json(json!({
                    "status": "approved", "card_ref": card_ref, "luks": batch.count,
                    "encrypted_card_data": hex::encode_upper(sealed), "steps": steps.into_value(),
                })))
            }
            PersoOutcome::OtpRequired => {
                steps.push("issuer", "cardholder", "one-time password (step-up ID&V)");
                let r: [u8; 8] = super::random()?;
                let id = format!("PP{}", hex::encode_upper(r));
                self.pan_pending.lock().map_err(|_| ApiError::refused("state"))?.insert(
                    id.clone(),
                    p,
                    now_ms(),
                );
                Ok(Json(
                    json!({"status": "otp_required", "provisioning_id": id, "steps": steps.into_value()}),
                ))
            }
            PersoOutcome::Declined { response_code } => {
                steps.push("issuer", self.name, format!("ID&V declined ({response_code})"));
                if let (Some((id, _)), "05") = (otp, response_code.as_str()) {
                    self.pan_pending.lock().map_err(|_| ApiError::refused("state"))?.insert(
                        id.to_string(),
                        p,
                        now_ms(),
                    );
                }
                Ok(Json(json!({
                    "status": "declined", "response_code": response_code, "steps": steps.into_value(),
                })))
            }
        }
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
                    p.insert(id, device_id.to_string(), now_ms());
                }
            }
            other => steps.push("token service", self.name, format!("provisioning {other}")),
        }
        answer["steps"] = steps.into_value();
        Ok(Json(answer))
    }

    /// The authenticated device of a request and the key it registered; a `device_id` in the
    /// body must be that device.
    fn device(&self, headers: &HeaderMap, body: &Value) -> Result<(String, String), ApiError> {
        let device_id = self.owners.authenticate(headers)?;
        if let Some(claimed) = body.get("device_id").and_then(Value::as_str)
            && claimed != device_id
        {
            return Err(super::auth::refused(door::auth::Refusal::Wrong));
        }
        let key = self
            .device_keys
            .lock()
            .map_err(|_| ApiError::refused("state"))?
            .get(&device_id)
            .cloned()
            .ok_or_else(|| ApiError::refused("device not registered"))?;
        Ok((device_id, key))
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

/// What a kept network saves of a front (sealed by the store: it holds PANs and credentials).
#[derive(serde::Deserialize)]
struct SavedFront {
    devices: HashMap<String, String>,
    seq: u64,
    pan_cards: HashMap<String, PanCard>,
    pan_next_atc: HashMap<String, u16>,
    owners: std::collections::BTreeMap<String, String>,
    device_keys: HashMap<String, String>,
}

impl super::kept::Snapshot for Front {
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        #[derive(serde::Serialize)]
        struct SavedRef<'a> {
            devices: &'a HashMap<String, String>,
            seq: u64,
            pan_cards: &'a HashMap<String, PanCard>,
            pan_next_atc: &'a HashMap<String, u16>,
            owners: std::collections::BTreeMap<String, String>,
            device_keys: &'a HashMap<String, String>,
        }
        let gone = || format!("the {} state is unavailable", self.name);
        let devices = self.devices.lock().map_err(|_| gone())?;
        let pan_cards = self.pan_cards.lock().map_err(|_| gone())?;
        let pan_next_atc = self.pan_next_atc.lock().map_err(|_| gone())?;
        let device_keys = self.device_keys.lock().map_err(|_| gone())?;
        super::kept::to_json(&SavedRef {
            devices: &devices,
            seq: self.seq.load(std::sync::atomic::Ordering::Relaxed),
            pan_cards: &pan_cards,
            pan_next_atc: &pan_next_atc,
            owners: self.owners.snapshot(),
            device_keys: &device_keys,
        })
    }
}

async fn register(State(f): State<Arc<Front>>, Json(b): Json<Value>) -> ApiResult {
    let device_id = field(&b, "device_id")?;
    let dpk = field(&b, "device_public_key")?;
    // A key nothing can be sealed for is refused now, not at the first card.
    super::auth::seal_for(dpk, b"paynet device key check", b"")?;
    let token = f.owners.register(device_id)?;
    f.device_keys
        .lock()
        .map_err(|_| ApiError::refused("state"))?
        .insert(device_id.to_string(), dpk.to_string());
    let mut steps = Steps::default();
    steps.push(f.name, "phone", format!("device {device_id} registered; its credential"));
    Ok(Json(json!({"device_token": token, "steps": steps.into_value()})))
}

async fn add_card(State(f): State<Arc<Front>>, headers: HeaderMap, Json(b): Json<Value>) -> ApiResult {
    let (device_id, dpk) = f.device(&headers, &b)?;
    let (device_id, dpk) = (device_id.as_str(), dpk.as_str());
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
    let cvv2 = b.get("cvv2").and_then(Value::as_str);
    let a = super::http::relay(f.token()?.provision(&request_id, pan, expiry, cvv2, dpk).await?)?;
    f.outcome(device_id, a.body, steps)
}

async fn otp(State(f): State<Arc<Front>>, headers: HeaderMap, Json(b): Json<Value>) -> ApiResult {
    let (me, _) = f.device(&headers, &b)?;
    let id = field(&b, "provisioning_id")?;
    let code = field(&b, "otp")?;
    let device = f
        .pending
        .lock()
        .map_err(|_| ApiError::refused("state"))?
        .get(id, now_ms())
        .filter(|d| **d == me)
        .cloned()
        .ok_or_else(|| ApiError::not_found("no such provisioning here"))?;
    let mut steps = Steps::default();
    steps.push(f.name, "token service", "the cardholder's one-time password");
    steps.push("token service", "issuer", "OTP verification");
    let a = super::http::relay(f.token()?.otp(id, code).await?)?;
    f.outcome(&device, a.body, steps)
}

async fn loaded(
    State(f): State<Arc<Front>>,
    headers: HeaderMap,
    Path(token_ref): Path<String>,
    Json(b): Json<Value>,
) -> ApiResult {
    let (me, _) = f.device(&headers, &b)?;
    f.owner_check(&token_ref, &me)?;
    let mut steps = Steps::default();
    steps.push(f.name, "token service", "token loaded on the device: confirm");
    let r = f.token()?.confirm(&token_ref).await?;
    steps.push("token service", "issuer", "notice: token download completed (0620)");
    Ok(Json(json!({"status": r.get("status").cloned().unwrap_or(Value::Null), "steps": steps.into_value()})))
}

async fn replenish(
    State(f): State<Arc<Front>>,
    headers: HeaderMap,
    Path(token_ref): Path<String>,
    Json(b): Json<Value>,
) -> ApiResult {
    let (me, _) = f.device(&headers, &b)?;
    f.owner_check(&token_ref, &me)?;
    let mut steps = Steps::default();
    steps.push(f.name, "token service", "replenish limited-use keys");
    let r = f.token()?.replenish(&token_ref).await?;
    let sealed = field(&r, "encrypted_token_data")?.to_string();
    steps.push("token service", f.name, "next batch of limited-use keys, sealed for the device");
    steps.push(f.name, "phone", "limited-use keys, encrypted for the device key");
    Ok(Json(json!({"encrypted_token_data": sealed, "steps": steps.into_value()})))
}

async fn add_pan_card(State(f): State<Arc<Front>>, headers: HeaderMap, Json(b): Json<Value>) -> ApiResult {
    let (device_id, dpk_hex) = f.device(&headers, &b)?;
    let device_id = device_id.as_str();
    let dpk = hex::decode(dpk_hex).map_err(ApiError::bad)?;
    let pan = field(&b, "pan")?;
    let expiry = field(&b, "expiry")?;
    f.issuer()?;
    let n = f.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut steps = Steps::default();
    steps.push(
        f.name,
        "issuer",
        format!("ID&V request: cardholder of card {} and device {device_id}", mask(pan)),
    );
    let p = PendingPan {
        device_id: device_id.to_string(),
        device_public_key: dpk,
        pan: pan.to_string(),
        expiry: expiry.to_string(),
        cvv2: b.get("cvv2").and_then(Value::as_str).map(str::to_string),
        session: format!("{}-pan-{device_id}-{n}", f.kind),
    };
    f.pan_outcome(p, None, steps)
}

async fn pan_otp(State(f): State<Arc<Front>>, headers: HeaderMap, Json(b): Json<Value>) -> ApiResult {
    let (me, _) = f.device(&headers, &b)?;
    let id = field(&b, "provisioning_id")?;
    let code = field(&b, "otp")?;
    let p = {
        let mut pending = f.pan_pending.lock().map_err(|_| ApiError::refused("state"))?;
        match pending.get(id, now_ms()) {
            Some(p) if p.device_id == me => pending.remove(id),
            _ => None,
        }
    }
    .ok_or_else(|| ApiError::not_found("no such provisioning here"))?;
    let mut steps = Steps::default();
    steps.push(f.name, "issuer", "the cardholder's one-time password");
    f.pan_outcome(p, Some((id, code)), steps)
}

async fn pan_replenish(
    State(f): State<Arc<Front>>,
    headers: HeaderMap,
    Path(card_ref): Path<String>,
    Json(b): Json<Value>,
) -> ApiResult {
    let (device_id, _) = f.device(&headers, &b)?;
    let device_id = device_id.as_str();
    let (pan, dpk) = {
        let cards = f.pan_cards.lock().map_err(|_| ApiError::refused("state"))?;
        match cards.get(&card_ref) {
            Some(c) if c.device_id == device_id => (c.pan.clone(), c.device_public_key.clone()),
            Some(_) => return Err(ApiError::refused("that card belongs to another device")),
            None => return Err(ApiError::not_found("no such card here")),
        }
    };
    let mut steps = Steps::default();
    steps.push(f.name, "issuer", format!("replenish limited-use keys of card {}", mask(&pan)));
    let (out, batch) = f.issuer_batch(&pan, &dpk, None)?;
    let PersoOutcome::Sealed(sealed) = out else {
        return Err(ApiError::refused("the issuer did not seal a new batch"));
    };
    steps.push(
        "issuer",
        f.name,
        format!(
            "next {} limited-use keys (ATC {:04X}-{:04X}) sealed for the device; earlier ATCs never again",
            batch.count,
            batch.first_atc,
            batch.first_atc + batch.count - 1
        ),
    );
    steps.push(f.name, "phone", "limited-use keys, encrypted for the device key");
    Ok(Json(json!({
        "encrypted_card_data": hex::encode_upper(sealed), "luks": batch.count, "steps": steps.into_value(),
    })))
}

pub fn router(f: Arc<Front>) -> Router {
    Router::new()
        .route("/v1/devices", post(register))
        .route("/v1/pan-cards", post(add_pan_card))
        .route("/v1/pan-cards/otp", post(pan_otp))
        .route("/v1/pan-cards/{card_ref}/replenish", post(pan_replenish))
        .route("/v1/cards", post(add_card))
        .route("/v1/cards/otp", post(otp))
        .route("/v1/cards/{token_ref}/loaded", post(loaded))
        .route("/v1/cards/{token_ref}/replenish", post(replenish))
        .with_state(f)
}
