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
//! | `POST /v1/applications` | `{pan, se_id, application_id, auth_code, cross_check?}` | `{card_id, steps}` |
//! | `POST /v1/issuer-se/issue` | `{}` | `{se_id, isd_aid, isd_keys}` |
//! | `POST /v1/issuer-se/perso` | `{se_id, pan}` | `{card_id, script, steps}` |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::http::{self, ApiError, ApiResult, field};
use super::{IssuerPerso, PERSO_INFO, PersoKind, PersoOutcome, PersoRequest, Steps, random};
use crate::card::mask;
use crate::ota::{KeySet, commands, seal_script};
use crate::phone::se::PersoData;

/// The issuer's SE ISD AID.
pub const ISSUER_ISD_AID: &str = "A000000151000001";

/// The service provider id the issuer's domains go by at the SE TSM.
pub const SP_ID: &str = "issuer-a";

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
    ses: Mutex<HashMap<String, IssuerSe>>,
}

impl SpTsm {
    pub fn new(perso: Option<IssuerPerso>, se_operator: &str) -> Result<Arc<SpTsm>> {
        Ok(Arc::new(SpTsm {
            perso,
            se_operator: se_operator.to_string(),
            bureau_secret: super::p256_secret()?,
            ses: Mutex::new(HashMap::new()),
        }))
    }

    fn issuer_perso(&self, pan: &str, recipient: &[u8]) -> Result<Vec<u8>, ApiError> {
        let f =
            self.perso.as_ref().ok_or_else(|| ApiError::refused("no issuer perso system is connected"))?;
        let out = f(PersoRequest {
            pan,
            recipient_public_key: recipient,
            info: PERSO_INFO,
            kind: PersoKind::CardProfile,
            idv: None,
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
    let se_id = field(&b, "se_id")?;
    let app = field(&b, "application_id")?;
    let code = field(&b, "auth_code")?;
    let mut steps = Steps::default();
    steps.push("issuer", "issuer", format!("review the application for card {}", mask(pan)));
    if b.get("cross_check").and_then(Value::as_bool).unwrap_or(false) {
        let a = http::post(
            &s.se_operator,
            "/v1/cross-check",
            None,
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
    let key = http::ok("SE TSM", http::get(&s.se_operator, "/v1/tsm-key").await?)?;
    let tsm_pk = hex::decode(field(&key, "public_key")?).map_err(ApiError::bad)?;
    let sealed = s.issuer_perso(pan, &tsm_pk)?;
    steps.push(
        "issuer",
        "SP TSM",
        "perso data (sealed for the SE TSM, ICC key derived from the IMK) + authentication data",
    );
    let v = http::post(
        &s.se_operator,
        "/v1/auth/verify",
        None,
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
        None,
        &json!({"se_id": se_id, "sp_id": SP_ID, "perso_data": hex::encode_upper(&sealed)}),
    )
    .await?;
    let r = http::ok("SE TSM", r)?;
    steps.extend_from(&r);
    Ok(Json(
        json!({"card_id": r.get("card_id").cloned().unwrap_or(Value::Null), "steps": steps.into_value()}),
    ))
}

async fn issue(State(s): State<Arc<SpTsm>>) -> ApiResult {
    let raw = zeroize::Zeroizing::new(random::<48>()?);
    let keys = KeySet::from_random(0x30, &raw);
    let id: [u8; 8] = random()?;
    let se_id = format!("ISE{}", hex::encode_upper(id));
    let answer = json!({"se_id": se_id, "isd_aid": ISSUER_ISD_AID, "isd_keys": keys});
    s.ses
        .lock()
        .map_err(|_| ApiError::refused("state"))?
        .insert(se_id, IssuerSe { keys, counter: 0, applets: 0 });
    Ok(Json(answer))
}

async fn perso(State(s): State<Arc<SpTsm>>, Json(b): Json<Value>) -> ApiResult {
    let se_id = field(&b, "se_id")?;
    let pan = field(&b, "pan")?;
    let mut steps = Steps::default();
    let pk = crypto::device::public_key(s.bureau_secret.as_ref()).map_err(ApiError::refused)?;
    let sealed = s.issuer_perso(pan, &pk)?;
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
