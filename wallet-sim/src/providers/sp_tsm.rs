//! The issuer's side: its SP TSM (model 2, real PAN) and its perso bureau for issuer-owned secure
//! elements (model 1, no OTA).
//!
//! Model 2: the cardholder applies to the issuer with the SE operator's application id and
//! authentication code; the issuer reviews (the card must be its own and active — its perso
//! function refuses otherwise) and may cross-check the application with the SE operator; it hands
//! the SP TSM the perso data, sealed for the SE TSM's key (the SP TSM cannot read it), with the
//! authentication data; the SP TSM has the SE operator verify that data, then passes the perso
//! data to the SE TSM.
//!
//! Model 1: the issuer issues its own SE (it holds the ISD keys) and its perso bureau writes the
//! card applet into it over the contact interface — the same secure channel, no OTA, no TSM.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `POST /v1/applications` | `{pan, expiry, se_id, application_id, auth_code, cross_check?}` | `{card_id, steps}` |
//! | `POST /v1/issuer-se/issue` | `{se_public_key}` | `{se_id, isd_aid, sealed_isd_keys}` (bureau only) |
//! | `POST /v1/issuer-se/perso` | `{se_id, pan}` | `{card_id, script, steps}` (bureau only) |
//!
//! The issuer-SE endpoints serve the issuer's perso bureau only (`Authorization: Bearer
//! <bureau credential>`): the ISD keys leave sealed for the SE's own P-256 key (ECDH + HKDF +
//! AES-GCM, `crypto::device`, label [`ISD_KEYS_INFO`]) and the perso script is encrypted and
//! MACed under those keys — no answer holds a key in clear. A cardholder's application goes
//! through the issuer's ID&V (the expiry the cardholder typed) before any perso data is made;
//! the SP TSM speaks to the SE TSM with its service provider credential.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::auth::{check_single, seal_for};
use super::http::{self, ApiError, ApiResult, field};
use super::{IdvRequest, IssuerPerso, PERSO_INFO, PersoKind, PersoOutcome, PersoRequest, Steps, random};
use axum::http::HeaderMap;
use emv::mask;
use phone::ota::{KeySet, commands, seal_script};
use phone::se::PersoData;

/// The issuer's SE ISD AID.
pub const ISSUER_ISD_AID: &str = "A000000151000001";

/// The service provider id the issuer's domains go by at the SE TSM.
pub const SP_ID: &str = "issuer-a";

pub use phone::se::ISD_KEYS_INFO;

#[derive(serde::Serialize, serde::Deserialize)]
struct IssuerSe {
    keys: KeySet,
    counter: u64,
    applets: u16,
}

/// The SP TSM and the issuer's perso bureau.
pub struct SpTsm {
    perso: Option<IssuerPerso>,
    se_operator: String,
    bureau_secret: zeroize::Zeroizing<[u8; 32]>,
    /// The perso bureau's bearer credential (issuer-SE endpoints).
    bureau_token: zeroize::Zeroizing<String>,
    /// This SP TSM's credential at the SE TSM (`SP_ID:secret`).
    sp_credential: zeroize::Zeroizing<String>,
    ses: Mutex<HashMap<String, IssuerSe>>,
    seq: std::sync::atomic::AtomicU64,
}

/// What a kept network saves of the SP TSM (sealed by the store).
#[derive(serde::Deserialize)]
struct SavedSpTsm {
    bureau_secret: String,
    ses: HashMap<String, IssuerSe>,
    seq: u64,
}

impl super::kept::Snapshot for SpTsm {
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        #[derive(serde::Serialize)]
        struct SavedRef<'a> {
            bureau_secret: String,
            ses: &'a HashMap<String, IssuerSe>,
            seq: u64,
        }
        let ses = self.ses.lock().map_err(|_| "SP TSM state unavailable".to_string())?;
        super::kept::to_json(&SavedRef {
            bureau_secret: hex::encode(self.bureau_secret.as_ref()),
            ses: &ses,
            seq: self.seq.load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}

/// The most issuer-owned SEs one SP TSM keeps.
pub const MAX_ISSUER_SES: usize = 100_000;

impl SpTsm {
    /// `bureau_token`: what the perso bureau presents; `sp_secret`: the SP TSM's secret at the SE
    /// TSM.
    pub fn new(
        perso: Option<IssuerPerso>,
        se_operator: &str,
        bureau_token: &str,
        sp_secret: &str,
    ) -> Result<Arc<SpTsm>> {
        SpTsm::open(perso, se_operator, bureau_token, sp_secret, None)
    }

    /// The SP TSM as `store` saved it (new when it holds nothing).
    pub fn open(
        perso: Option<IssuerPerso>,
        se_operator: &str,
        bureau_token: &str,
        sp_secret: &str,
        store: Option<&Arc<dyn super::kept::KeptStore>>,
    ) -> Result<Arc<SpTsm>> {
        let saved = super::kept::load::<SavedSpTsm>(store, "sp-tsm")?;
        let (bureau_secret, ses, seq) = match saved {
            Some(s) => {
                let mut k = zeroize::Zeroizing::new([0u8; 32]);
                hex::decode_to_slice(&s.bureau_secret, k.as_mut())
                    .map_err(|e| anyhow::anyhow!("the SP TSM's saved key: {e}"))?;
                (k, s.ses, s.seq)
            }
            None => (super::p256_secret()?, HashMap::new(), 1),
        };
        Ok(Arc::new(SpTsm {
            perso,
            se_operator: se_operator.to_string(),
            bureau_secret,
            bureau_token: zeroize::Zeroizing::new(bureau_token.to_string()),
            sp_credential: zeroize::Zeroizing::new(format!("{SP_ID}:{sp_secret}")),
            ses: Mutex::new(ses),
            seq: std::sync::atomic::AtomicU64::new(seq),
        }))
    }

    fn issuer_perso(
        &self,
        pan: &str,
        recipient: &[u8],
        idv: Option<IdvRequest<'_>>,
    ) -> Result<Vec<u8>, ApiError> {
        let f =
            self.perso.as_ref().ok_or_else(|| ApiError::refused("no issuer perso system is connected"))?;
        let out = f(PersoRequest {
            pan,
            recipient_public_key: recipient,
            info: PERSO_INFO,
            kind: PersoKind::CardProfile,
            idv,
        })
        .map_err(|e| ApiError::refused(format!("the issuer refused: {e}")))?;
        match out {
            PersoOutcome::Sealed(b) => Ok(b),
            PersoOutcome::OtpRequired => Err(ApiError::refused("the issuer asked for a one-time password")),
            PersoOutcome::Declined { response_code } => {
                Err(ApiError::refused(format!("the issuer declined ({response_code})")))
            }
        }
    }
}

async fn applications(State(s): State<Arc<SpTsm>>, Json(b): Json<Value>) -> ApiResult {
    let pan = field(&b, "pan")?;
    let expiry = field(&b, "expiry")?;
    let sp = Some(s.sp_credential.as_str());
    let se_id = field(&b, "se_id")?;
    let app = field(&b, "application_id")?;
    let code = field(&b, "auth_code")?;
    let mut steps = Steps::default();
    steps.push("issuer", "issuer", format!("review the application for card {}", mask(pan)));
    if b.get("cross_check").and_then(Value::as_bool).unwrap_or(false) {
        let a = http::post(
            &s.se_operator,
            "/v1/cross-check",
            sp,
            &json!({"se_id": se_id, "application_id": app}),
        )
        .await?;
        let m = http::ok("SE operator", a)?.get("match").and_then(Value::as_bool).unwrap_or(false);
        steps.push(
            "issuer",
            "SE operator",
            format!("cross-check cardholder and device: {}", if m { "match" } else { "no match" }),
        );
        if !m {
            return Err(ApiError::refused("the SE operator does not know this application for that SE"));
        }
    }
    let key = http::ok("SE TSM", http::get(&s.se_operator, "/v1/tsm-key", None).await?)?;
    let tsm_pk = hex::decode(field(&key, "public_key")?).map_err(ApiError::bad)?;
    // The cardholder's application is verified by the issuer (ID&V) before any perso data.
    let n = s.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let session = format!("sp-tsm-{se_id}-{n}");
    let idv = IdvRequest {
        expiry,
        session: &session,
        otp: None,
        cvv2: b.get("cvv2").and_then(Value::as_str),
        requestor: "sp-tsm",
    };
    let sealed = s.issuer_perso(pan, &tsm_pk, Some(idv))?;
    steps.push(
        "issuer",
        "SP TSM",
        "perso data (sealed for the SE TSM, ICC key derived from the IMK) + authentication data",
    );
    let v = http::post(
        &s.se_operator,
        "/v1/auth/verify",
        sp,
        &json!({"se_id": se_id, "application_id": app, "auth_code": code}),
    )
    .await?;
    let verified = http::ok("SE operator", v)?.get("verified").and_then(Value::as_bool).unwrap_or(false);
    steps.push(
        "SP TSM",
        "SE operator",
        format!("verify the authentication data: {}", if verified { "verified" } else { "refused" }),
    );
    if !verified {
        return Err(ApiError::refused("the SE operator did not verify the authentication data"));
    }
    steps.push("SP TSM", "SE TSM", "perso data for the SE");
    let r = http::post(
        &s.se_operator,
        "/v1/perso",
        sp,
        &json!({"se_id": se_id, "sp_id": SP_ID, "perso_data": hex::encode_upper(&sealed)}),
    )
    .await?;
    let r = http::ok("SE TSM", r)?;
    steps.extend_from(&r);
    Ok(Json(
        json!({"card_id": r.get("card_id").cloned().unwrap_or(Value::Null), "steps": steps.into_value()}),
    ))
}

async fn issue(State(s): State<Arc<SpTsm>>, headers: HeaderMap, Json(b): Json<Value>) -> ApiResult {
    check_single(&headers, &s.bureau_token)?;
    let se_pk = field(&b, "se_public_key")?;
    let raw = zeroize::Zeroizing::new(random::<48>()?);
    let keys = KeySet::from_random(0x30, &raw);
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(&keys).map_err(ApiError::bad)?);
    let sealed = seal_for(se_pk, ISD_KEYS_INFO, &plain)?;
    let id: [u8; 8] = random()?;
    let se_id = format!("ISE{}", hex::encode_upper(id));
    let answer = json!({"se_id": se_id, "isd_aid": ISSUER_ISD_AID, "sealed_isd_keys": sealed});
    let mut ses = s.ses.lock().map_err(|_| ApiError::refused("state"))?;
    if ses.len() >= MAX_ISSUER_SES {
        return Err(ApiError::refused("no more issuer secure elements can be issued"));
    }
    ses.insert(se_id, IssuerSe { keys, counter: 0, applets: 0 });
    Ok(Json(answer))
}

async fn perso(State(s): State<Arc<SpTsm>>, headers: HeaderMap, Json(b): Json<Value>) -> ApiResult {
    check_single(&headers, &s.bureau_token)?;
    let se_id = field(&b, "se_id")?;
    let pan = field(&b, "pan")?;
    let mut steps = Steps::default();
    let pk = crypto::device::public_key(s.bureau_secret.as_ref()).map_err(ApiError::refused)?;
    let sealed = s.issuer_perso(pan, &pk, None)?;
    steps.push(
        "issuer",
        "perso bureau",
        format!("perso data for card {} (ICC key derived from the IMK), sealed", mask(pan)),
    );
    let plain =
        crypto::device::open(s.bureau_secret.as_ref(), PERSO_INFO, &sealed).map_err(ApiError::refused)?;
    let perso: PersoData = serde_json::from_slice(&plain).map_err(ApiError::bad)?;
    let mut ses = s.ses.lock().map_err(|_| ApiError::refused("state"))?;
    let se =
        ses.get_mut(se_id).ok_or_else(|| ApiError::not_found("not one of the issuer's secure elements"))?;
    se.applets += 1;
    se.counter += 1;
    let instance = format!("{}{:04X}", perso.aid, se.applets);
    let inst = hex::decode(&instance).map_err(ApiError::bad)?;
    let json = zeroize::Zeroizing::new(serde_json::to_vec(&perso).map_err(ApiError::bad)?);
    let mut cmds = vec![commands::install_applet(&inst)];
    cmds.extend(commands::store_data(&inst, &json));
    let isd = hex::decode(ISSUER_ISD_AID).map_err(ApiError::bad)?;
    let script = seal_script(se_id, &isd, &se.keys, se.counter, &cmds).map_err(ApiError::refused)?;
    steps.push(
        "perso bureau",
        "issuer SE (contact interface)",
        format!("install applet {instance}, STORE DATA ×{} under the ISD keys (no OTA)", cmds.len() - 1),
    );
    Ok(Json(
        json!({"card_id": format!("se:{se_id}:{instance}"), "script": script, "steps": steps.into_value()}),
    ))
}

pub fn router(s: Arc<SpTsm>) -> Router {
    Router::new()
        .route("/v1/applications", post(applications))
        .route("/v1/issuer-se/issue", post(issue))
        .route("/v1/issuer-se/perso", post(perso))
        .with_state(s)
}
