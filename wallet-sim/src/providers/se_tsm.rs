//! The secure-element operator and its SE TSM (model 2).
//!
//! The operator issues the SEs that go into phones (their issuer security domain keys are loaded
//! at the factory and kept by the operator), reviews cardholders' applications and gives each an
//! authentication code (HMAC-SHA256 under the operator's key over application and SE), answers
//! the issuer's optional cross-check and the SP TSM's verification of that authentication data.
//! Its SE TSM creates a supplementary security domain per service provider (INSTALL + PUT KEY
//! under the ISD), merges the card's perso data with the device's (its SE, domain, applet
//! instance) into OTA scripts under the domain's keys, and queues them for the phone; it is also a
//! token requestor (kind `se-tsm`): the token data is sealed for the TSM's own key, opened in its
//! HSM and re-encrypted for the SE. After the phone's receipt, tokens are confirmed (the token
//! service notifies the issuer).
//!
//! | method and path | credential | body | answer |
//! |---|---|---|---|
//! | `POST /v1/se/issue` | — | `{se_public_key}` | `{se_id, isd_aid, sealed_isd_keys, owner_token}` (the factory's key load, sealed for the SE) |
//! | `POST /v1/applications` | owner | `{se_id, cardholder}` | `{application_id, auth_code}` |
//! | `POST /v1/cross-check` | SP | `{se_id, application_id}` | `{match}` |
//! | `POST /v1/auth/verify` | SP | `{se_id, application_id, auth_code}` | `{verified}` |
//! | `GET /v1/tsm-key` | — | — | `{public_key}` (P-256, for perso data in transit) |
//! | `POST /v1/perso` | SP | `{se_id, sp_id, perso_data}` | `{card_id, scripts}` |
//! | `POST /v1/tokens` | owner | `{se_id, pan, expiry, cvv2?}` | `{status: approved, card_id}` or `otp_required` |
//! | `POST /v1/tokens/otp` | owner | `{provisioning_id, otp}` | as above |
//! | `GET /v1/ota/{se_id}` | owner | — | `{scripts: [OtaScript]}` (and clears them) |
//! | `POST /v1/ota/{se_id}/receipt` | owner | `{receipts: [OtaReceipt]}` | `{status}` |
//!
//! "owner": `Authorization: Bearer <owner_token>` as `/v1/se/issue` gave it, for that SE only;
//! "SP": a service provider's SP TSM (`<sp_id>:<secret>`, registered with
//! [`SeTsm::add_service_provider`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::{Registry, seal_for};
use super::http::{self, ApiError, ApiResult, field};
use super::token::TokenClient;
use super::{PERSO_INFO, Steps, random};
use axum::http::HeaderMap;
use phone::hce::PROFILE_INFO;
use phone::ota::{KeySet, OtaReceipt, OtaScript, commands, seal_script};
use phone::se::PersoData;

/// The operator's ISD AID (GP's default ISD AID).
pub const ISD_AID: &str = "A000000151000000";

#[derive(Serialize, Deserialize)]
struct Domain {
    aid: String,
    keys: KeySet,
    counter: u64,
}

#[derive(Serialize, Deserialize)]
struct SeRecord {
    isd: Domain,
    /// Supplementary domains by service provider.
    ssds: HashMap<String, Domain>,
    applets: u16,
    outbox: Vec<OtaScript>,
    /// Tokens to confirm once the phone's receipt says the scripts ran.
    to_confirm: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Application {
    se_id: String,
}

#[derive(Default, Serialize, Deserialize)]
struct Book {
    ses: HashMap<String, SeRecord>,
    applications: HashMap<String, Application>,
    /// Provisioning id → SE (OTP step-up pending).
    pending: HashMap<String, String>,
    seq: u64,
}

/// The SE operator and SE TSM.
pub struct SeTsm {
    book: Mutex<Book>,
    /// SE id → the owner's secret (issued with the SE).
    owners: Registry,
    /// Service provider id → its SP TSM's secret.
    sps: Registry,
    operator_key: zeroize::Zeroizing<[u8; 32]>,
    tsm_secret: zeroize::Zeroizing<[u8; 32]>,
    token: Option<TokenClient>,
}

/// What a kept network saves of the SE operator and SE TSM (sealed by the store).
#[derive(Serialize, Deserialize)]
struct Saved {
    book: Book,
    owners: std::collections::BTreeMap<String, String>,
    sps: std::collections::BTreeMap<String, String>,
    operator_key: String,
    tsm_secret: String,
}

impl super::kept::Snapshot for SeTsm {
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        let book = self.book.lock().map_err(|_| "operator state unavailable".to_string())?;
        super::kept::to_json(&SavedRef {
            book: &book,
            owners: self.owners.snapshot(),
            sps: self.sps.snapshot(),
            operator_key: hex::encode(self.operator_key.as_ref()),
            tsm_secret: hex::encode(self.tsm_secret.as_ref()),
        })
    }
}

#[derive(Serialize)]
struct SavedRef<'a> {
    book: &'a Book,
    owners: std::collections::BTreeMap<String, String>,
    sps: std::collections::BTreeMap<String, String>,
    operator_key: String,
    tsm_secret: String,
}

fn key32(hex_text: &str) -> Result<zeroize::Zeroizing<[u8; 32]>> {
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_text, k.as_mut()).map_err(|e| crate::Error::state("a saved key", e))?;
    Ok(k)
}

impl SeTsm {
    pub fn new(token: Option<TokenClient>) -> Result<Arc<SeTsm>> {
        SeTsm::open(token, None)
    }

    /// The SE operator and SE TSM as `store` saved them (new when it holds nothing).
    pub fn open(
        token: Option<TokenClient>,
        store: Option<&Arc<dyn super::kept::KeptStore>>,
    ) -> Result<Arc<SeTsm>> {
        let Some(saved) = super::kept::load::<Saved>(store, "se-tsm")? else {
            return Ok(Arc::new(SeTsm {
                book: Mutex::new(Book::default()),
                owners: Registry::default(),
                sps: Registry::default(),
                operator_key: zeroize::Zeroizing::new(random::<32>()?),
                tsm_secret: super::p256_secret()?,
                token,
            }));
        };
        Ok(Arc::new(SeTsm {
            book: Mutex::new(saved.book),
            owners: Registry::restored(&saved.owners),
            sps: Registry::restored(&saved.sps),
            operator_key: key32(&saved.operator_key)?,
            tsm_secret: key32(&saved.tsm_secret)?,
            token,
        }))
    }

    /// Lets service provider `sp_id` (its SP TSM) call the SP endpoints with `sp_id:secret`.
    pub fn add_service_provider(&self, sp_id: &str, secret: &str) -> Result<(), ApiError> {
        self.sps.insert(sp_id, secret)
    }

    fn auth_code(&self, application_id: &str, se_id: &str) -> String {
        let m = crypto::mac::hmac_sha256(
            self.operator_key.as_ref(),
            format!("{application_id}|{se_id}").as_bytes(),
        );
        hex::encode_upper(&m[..8])
    }

    fn book(&self) -> Result<std::sync::MutexGuard<'_, Book>, ApiError> {
        self.book.lock().map_err(|_| ApiError::refused("operator state unavailable"))
    }

    /// Merges card and device data: the SP's domain (created first if needed), a new applet
    /// instance, its perso data; scripts queued for the phone. The card id.
    fn queue_card(
        &self,
        se_id: &str,
        sp_id: &str,
        perso: &PersoData,
        steps: &mut Steps,
    ) -> Result<String, ApiError> {
        let mut book = self.book()?;
        let rec = book.ses.get_mut(se_id).ok_or_else(|| ApiError::not_found("unknown secure element"))?;
        if !rec.ssds.contains_key(sp_id) {
            let ssd_aid = format!("A0000001515350{:02X}", (rec.ssds.len() + 1) as u8);
            let raw = zeroize::Zeroizing::new(random::<48>()?);
            let keys = KeySet::from_random(0x01, &raw);
            let wrapped = rec.isd.keys.wrap_under_dek(raw.as_ref()).map_err(ApiError::refused)?;
            let aid = hex::decode(&ssd_aid).map_err(ApiError::bad)?;
            rec.isd.counter += 1;
            let isd_aid = hex::decode(&rec.isd.aid).map_err(ApiError::bad)?;
            let script = seal_script(
                se_id,
                &isd_aid,
                &rec.isd.keys,
                rec.isd.counter,
                &[commands::install_domain(&aid), commands::put_key(&aid, 0x01, &wrapped)],
            )
            .map_err(ApiError::refused)?;
            rec.outbox.push(script);
            steps.push(
                "SE TSM",
                "phone (SE)",
                format!(
                    "OTA script under the ISD: create security domain {ssd_aid} for {sp_id}, put its keys"
                ),
            );
            rec.ssds.insert(sp_id.to_string(), Domain { aid: ssd_aid, keys, counter: 0 });
        }
        rec.applets += 1;
        let instance = format!("{}{:04X}", perso.aid, rec.applets);
        let inst = hex::decode(&instance).map_err(ApiError::bad)?;
        let ssd = rec.ssds.get_mut(sp_id).ok_or_else(|| ApiError::refused("domain"))?;
        ssd.counter += 1;
        let json = zeroize::Zeroizing::new(serde_json::to_vec(perso).map_err(ApiError::bad)?);
        let mut cmds = vec![commands::install_applet(&inst)];
        cmds.extend(commands::store_data(&inst, &json));
        let ssd_aid = hex::decode(&ssd.aid).map_err(ApiError::bad)?;
        let script =
            seal_script(se_id, &ssd_aid, &ssd.keys, ssd.counter, &cmds).map_err(ApiError::refused)?;
        steps.push(
            "SE TSM",
            "phone (SE)",
            format!(
                "OTA script under domain {}: install applet {instance}, STORE DATA ×{} (encrypted, C-MAC)",
                ssd.aid,
                cmds.len() - 1
            ),
        );
        rec.outbox.push(script);
        Ok(format!("se:{se_id}:{instance}"))
    }

    /// Opens token data sealed for the TSM, queues it; the card id.
    async fn token_outcome(&self, se_id: &str, out: Value, mut steps: Steps) -> ApiResult {
        let status = out.get("status").and_then(Value::as_str).unwrap_or("").to_string();
        match status.as_str() {
            "approved" => {
                let sealed = hex::decode(field(&out, "encrypted_token_data")?).map_err(ApiError::bad)?;
                let token_ref = field(&out, "token_ref")?.to_string();
                let plain = crypto::device::open(self.tsm_secret.as_ref(), PROFILE_INFO, &sealed)
                    .map_err(|e| ApiError::refused(format!("token data does not open: {e}")))?;
                let t: Value = serde_json::from_slice(&plain).map_err(ApiError::bad)?;
                let cvn = field(&t, "cvn")?.to_string();
                let perso = PersoData {
                    pan: field(&t, "token")?.to_string(),
                    expiry: field(&t, "expiry")?.to_string(),
                    psn: field(&t, "psn")?.to_string(),
                    aid: if cvn.starts_with("mc") { "A0000000041010" } else { "A0000000031010" }.into(),
                    cvn,
                    label: "PAYNET TOKEN".into(),
                    icc_mk: field(&t, "icc_mk")?.to_string(),
                };
                steps.push("token service", "SE TSM", "token data, sealed for the SE TSM");
                let card_id = self.queue_card(se_id, "tsp", &perso, &mut steps)?;
                if let Some(r) = self.book()?.ses.get_mut(se_id) {
                    r.to_confirm.push(token_ref.clone());
                }
                Ok(Json(
                    json!({"status": "approved", "card_id": card_id, "token_ref": token_ref, "steps": steps.into_value()}),
                ))
            }
            "otp_required" => {
                let id = field(&out, "provisioning_id")?.to_string();
                let mut book = self.book()?;
                if book.pending.len() >= MAX_PENDING {
                    return Err(ApiError::refused("too many provisionings pending; try again later"));
                }
                book.pending.insert(id.clone(), se_id.to_string());
                drop(book);
                steps.push("issuer", "cardholder", "one-time password (step-up ID&V)");
                Ok(Json(
                    json!({"status": "otp_required", "provisioning_id": id, "steps": steps.into_value()}),
                ))
            }
            other => {
                steps.push("token service", "SE TSM", format!("provisioning {other}"));
                let mut a = out.clone();
                a["steps"] = steps.into_value();
                Ok(Json(a))
            }
        }
    }
}

/// The most applications and pending provisionings the operator keeps at once.
pub const MAX_PENDING: usize = 100_000;

async fn issue(State(s): State<Arc<SeTsm>>, Json(b): Json<Value>) -> ApiResult {
    let se_pk = field(&b, "se_public_key")?;
    let raw = zeroize::Zeroizing::new(random::<48>()?);
    let keys = KeySet::from_random(0x30, &raw);
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(&keys).map_err(ApiError::bad)?);
    let sealed = seal_for(se_pk, super::sp_tsm::ISD_KEYS_INFO, &plain)?;
    let id: [u8; 8] = random()?;
    let se_id = format!("SE{}", hex::encode_upper(id));
    let owner_token = s.owners.register(&se_id)?;
    let answer =
        json!({"se_id": se_id, "isd_aid": ISD_AID, "sealed_isd_keys": sealed, "owner_token": owner_token});
    s.book()?.ses.insert(
        se_id,
        SeRecord {
            isd: Domain { aid: ISD_AID.into(), keys, counter: 0 },
            ssds: HashMap::new(),
            applets: 0,
            outbox: Vec::new(),
            to_confirm: Vec::new(),
        },
    );
    Ok(Json(answer))
}

async fn apply(State(s): State<Arc<SeTsm>>, headers: HeaderMap, Json(b): Json<Value>) -> ApiResult {
    let se_id = field(&b, "se_id")?.to_string();
    s.owners.authenticate_as(&headers, &se_id)?;
    let mut book = s.book()?;
    if !book.ses.contains_key(&se_id) {
        return Err(ApiError::refused("the SE operator does not know that secure element"));
    }
    if book.applications.len() >= MAX_PENDING {
        return Err(ApiError::refused("too many applications open; try again later"));
    }
    book.seq += 1;
    let application_id = format!("APP{:06}", book.seq);
    book.applications.insert(application_id.clone(), Application { se_id: se_id.clone() });
    let auth_code = s.auth_code(&application_id, &se_id);
    Ok(Json(json!({"application_id": application_id, "auth_code": auth_code})))
}

async fn cross_check(State(s): State<Arc<SeTsm>>, headers: HeaderMap, Json(b): Json<Value>) -> ApiResult {
    s.sps.authenticate(&headers)?;
    let book = s.book()?;
    let m = book
        .applications
        .get(field(&b, "application_id")?)
        .is_some_and(|a| a.se_id == field(&b, "se_id").unwrap_or(""));
    Ok(Json(json!({"match": m})))
}

async fn verify(State(s): State<Arc<SeTsm>>, headers: HeaderMap, Json(b): Json<Value>) -> ApiResult {
    s.sps.authenticate(&headers)?;
    let app = field(&b, "application_id")?;
    let se_id = field(&b, "se_id")?;
    let code = field(&b, "auth_code")?;
    let known = s.book()?.applications.get(app).is_some_and(|a| a.se_id == se_id);
    use subtle::ConstantTimeEq;
    let ok = known && bool::from(s.auth_code(app, se_id).as_bytes().ct_eq(code.to_uppercase().as_bytes()));
    Ok(Json(json!({"verified": ok})))
}

async fn tsm_key(State(s): State<Arc<SeTsm>>) -> ApiResult {
    let pk = crypto::device::public_key(s.tsm_secret.as_ref()).map_err(ApiError::refused)?;
    Ok(Json(json!({"public_key": hex::encode_upper(pk)})))
}

async fn perso(State(s): State<Arc<SeTsm>>, headers: HeaderMap, Json(b): Json<Value>) -> ApiResult {
    let se_id = field(&b, "se_id")?;
    let sp_id = field(&b, "sp_id")?;
    // A service provider writes into its own domain only.
    s.sps.authenticate_as(&headers, sp_id)?;
    let sealed = hex::decode(field(&b, "perso_data")?).map_err(ApiError::bad)?;
    let plain = crypto::device::open(s.tsm_secret.as_ref(), PERSO_INFO, &sealed)
        .map_err(|e| ApiError::refused(format!("perso data does not open: {e}")))?;
    let perso: PersoData = serde_json::from_slice(&plain).map_err(ApiError::bad)?;
    let mut steps = Steps::default();
    steps.push(
        "SE TSM",
        "SE TSM (HSM)",
        "perso data opened; merged with the device data (SE, domain, instance)",
    );
    let card_id = s.queue_card(se_id, sp_id, &perso, &mut steps)?;
    Ok(Json(json!({"card_id": card_id, "steps": steps.into_value()})))
}

async fn tokens(State(s): State<Arc<SeTsm>>, headers: HeaderMap, Json(b): Json<Value>) -> ApiResult {
    let se_id = field(&b, "se_id")?.to_string();
    s.owners.authenticate_as(&headers, &se_id)?;
    if !s.book()?.ses.contains_key(&se_id) {
        return Err(ApiError::refused("the SE operator does not know that secure element"));
    }
    let token =
        s.token.as_ref().ok_or_else(|| ApiError::refused("the SE TSM has no token service credentials"))?;
    let pk = hex::encode_upper(crypto::device::public_key(s.tsm_secret.as_ref()).map_err(ApiError::refused)?);
    let mut steps = Steps::default();
    steps.push(
        "SE TSM",
        "token service",
        format!("provision (requestor {}, sealed for the SE TSM)", token.requestor_id),
    );
    steps.push("token service", "issuer", "ID&V request");
    let n = {
        let mut b = s.book()?;
        b.seq += 1;
        b.seq
    };
    let cvv2 = b.get("cvv2").and_then(Value::as_str);
    let a = http::relay(
        token
            .provision(&format!("se-tsm-{se_id}-{n}"), field(&b, "pan")?, field(&b, "expiry")?, cvv2, &pk)
            .await?,
    )?;
    s.token_outcome(&se_id, a.body, steps).await
}

async fn tokens_otp(State(s): State<Arc<SeTsm>>, headers: HeaderMap, Json(b): Json<Value>) -> ApiResult {
    let id = field(&b, "provisioning_id")?;
    let owner = s.owners.authenticate(&headers)?;
    let se_id =
        s.book()?.pending.get(id).cloned().ok_or_else(|| ApiError::not_found("no such provisioning"))?;
    if !door::auth::same(&owner, &se_id) {
        return Err(ApiError::not_found("no such provisioning"));
    }
    let token = s.token.as_ref().ok_or_else(|| ApiError::refused("no token service credentials"))?;
    let mut steps = Steps::default();
    steps.push("SE TSM", "token service", "the cardholder's one-time password");
    let a = http::relay(token.otp(id, field(&b, "otp")?).await?)?;
    // Settled one way or the other (a wrong OTP leaves it open for the next try).
    if a.body.get("status").and_then(Value::as_str) != Some("declined")
        || a.body.get("response_code").and_then(Value::as_str) != Some("05")
    {
        s.book()?.pending.remove(id);
    }
    s.token_outcome(&se_id, a.body, steps).await
}

async fn ota(State(s): State<Arc<SeTsm>>, headers: HeaderMap, Path(se_id): Path<String>) -> ApiResult {
    s.owners.authenticate_as(&headers, &se_id)?;
    let mut book = s.book()?;
    let rec = book.ses.get_mut(&se_id).ok_or_else(|| ApiError::not_found("unknown secure element"))?;
    let scripts = std::mem::take(&mut rec.outbox);
    Ok(Json(json!({"scripts": scripts})))
}

async fn receipt(
    State(s): State<Arc<SeTsm>>,
    headers: HeaderMap,
    Path(se_id): Path<String>,
    Json(b): Json<Value>,
) -> ApiResult {
    s.owners.authenticate_as(&headers, &se_id)?;
    let receipts: Vec<OtaReceipt> =
        serde_json::from_value(b.get("receipts").cloned().unwrap_or(Value::Null)).map_err(ApiError::bad)?;
    let all_ok = !receipts.is_empty() && receipts.iter().all(|r| r.sw == "9000");
    let mut steps = Steps::default();
    let confirm = {
        let mut book = s.book()?;
        let rec = book.ses.get_mut(&se_id).ok_or_else(|| ApiError::not_found("unknown secure element"))?;
        if all_ok { std::mem::take(&mut rec.to_confirm) } else { Vec::new() }
    };
    for t in confirm {
        if let Some(token) = &s.token {
            steps.push("SE TSM", "token service", "token installed in the SE: confirm");
            token.confirm(&t).await?;
            steps.push("token service", "issuer", "notice: token provisioned to the SE (0620)");
        }
    }
    Ok(Json(json!({"status": if all_ok { "installed" } else { "failed" }, "steps": steps.into_value()})))
}

pub fn router(s: Arc<SeTsm>) -> Router {
    Router::new()
        .route("/v1/se/issue", post(issue))
        .route("/v1/applications", post(apply))
        .route("/v1/cross-check", post(cross_check))
        .route("/v1/auth/verify", post(verify))
        .route("/v1/tsm-key", get(tsm_key))
        .route("/v1/perso", post(perso))
        .route("/v1/tokens", post(tokens))
        .route("/v1/tokens/otp", post(tokens_otp))
        .route("/v1/ota/{se_id}", get(ota))
        .route("/v1/ota/{se_id}/receipt", post(receipt))
        .with_state(s)
}
