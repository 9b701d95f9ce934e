//! The cardholder's and the phone's side of each operating model, step by step: what the
//! cardholder does, what the phone's agent sends and receives, and — from the providers' answers
//! — what happened between the parties. Each step is reported as it happens ("from → to: what").

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use serde_json::{Value, json};

use crate::providers::ProviderAddrs;
use crate::providers::http::{self, ok};
use emv::mask;
use phone::Phone;
use phone::hce::HceKind;
use phone::ota::{OtaReceipt, OtaScript};

/// The four operating models, the second and the third in their two flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// 1: an issuer-owned SE personalised by the issuer (no OTA).
    IssuerSe,
    /// 2: TSM, real PAN, OTA into the SE operator's SE.
    TsmSePan,
    /// 2: TSM, tokenized, OTA into the SE.
    TsmSeToken,
    /// 3: cloud platform, HCE, tokenized.
    Hce,
    /// 3: cloud platform, HCE, real PAN: the issuer's perso data on limited-use keys.
    HcePan,
    /// 4: DPSP wallet.
    Wallet,
}

impl Model {
    /// The demo's five flows (INTERFACES.md §3).
    pub const ALL: [Model; 5] =
        [Model::IssuerSe, Model::TsmSePan, Model::TsmSeToken, Model::Hce, Model::Wallet];

    /// Every flow: the demo's five and model 3 on the real PAN.
    pub const EVERY: [Model; 6] =
        [Model::IssuerSe, Model::TsmSePan, Model::TsmSeToken, Model::Hce, Model::HcePan, Model::Wallet];

    pub fn name(self) -> &'static str {
        match self {
            Model::IssuerSe => "issuer-se",
            Model::TsmSePan => "tsm-se-pan",
            Model::TsmSeToken => "tsm-se-token",
            Model::Hce => "hce",
            Model::HcePan => "hce-pan",
            Model::Wallet => "wallet",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Model {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Model::EVERY.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            format!("unknown model {s:?} (issuer-se, tsm-se-pan, tsm-se-token, hce, hce-pan, wallet)")
        })
    }
}

/// One step of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub from: String,
    pub to: String,
    pub what: String,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {}: {}", self.from, self.to, self.what)
    }
}

pub use crate::error::Refused;

impl Refused {
    fn from_answer(what: &'static str, a: &Value) -> Refused {
        let text = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
        Refused {
            what,
            status: text("status").unwrap_or_else(|| "refused".into()),
            response_code: text("response_code"),
        }
    }
}

/// The card the cardholder holds: the number, the expiry and — when the cardholder has it at hand
/// (printed on the back of the card) — the CVV2, which every flow sends where the provider's app
/// asks for it (the issuer verifies it in ID&V).
#[derive(Clone)]
pub struct CardholderCard {
    pub pan: String,
    pub expiry: String,
    pub cvv2: Option<String>,
}

impl CardholderCard {
    /// The card's number, expiry and CVV2 in a provider's request `body` (the CVV2 when known).
    fn typed_in(&self, mut body: Value) -> Value {
        body["pan"] = json!(self.pan);
        body["expiry"] = json!(self.expiry);
        if let Some(c) = &self.cvv2 {
            body["cvv2"] = json!(c);
        }
        body
    }
}

impl fmt::Debug for CardholderCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardholderCard").field("pan", &mask(&self.pan)).finish()
    }
}

/// Where the flow reports its steps, and where it gets the OTP the issuer sends the cardholder.
pub struct Io<'a> {
    pub log: &'a mut (dyn FnMut(&Step) + Send),
    pub otp: &'a mut (dyn FnMut() -> Result<String> + Send),
}

impl Io<'_> {
    fn step(&mut self, from: &str, to: &str, what: impl Into<String>) {
        (self.log)(&Step { from: from.into(), to: to.into(), what: what.into() });
    }

    fn provider_steps(&mut self, answer: &Value) {
        if let Some(a) = answer.get("steps").and_then(Value::as_array) {
            for s in a {
                let g = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                (self.log)(&Step { from: g("from"), to: g("to"), what: g("what") });
            }
        }
    }
}

fn s<'a>(v: &'a Value, name: &str) -> Result<&'a str> {
    v.get(name).and_then(Value::as_str).ok_or_else(|| Error::answer(format!("answer without {name}: {v}")))
}

/// Runs `model`'s provisioning flow for `card` on `phone`; the new card's id, enabled (and the
/// default card if the phone had none).
pub async fn provision(
    model: Model,
    phone: &mut Phone,
    addrs: &ProviderAddrs,
    card: &CardholderCard,
    io: &mut Io<'_>,
) -> Result<String> {
    let card_id = match model {
        Model::IssuerSe => issuer_se(phone, addrs, card, io).await?,
        Model::TsmSePan => tsm_pan(phone, addrs, card, io).await?,
        Model::TsmSeToken => tsm_token(phone, addrs, card, io).await?,
        Model::Hce => token_requestor(phone, &addrs.cloud, "cloud platform", card, io).await?,
        Model::HcePan => hce_pan(phone, addrs, card, io).await?,
        Model::Wallet => token_requestor(phone, &addrs.wallet, "wallet server", card, io).await?,
    };
    phone.set_model(&card_id, model.name())?;
    io.step("cardholder", "phone", format!("enable card {card_id}"));
    phone.enable(&card_id)?;
    Ok(card_id)
}

/// Has `name` issue a secure element (`POST base+path`, as `bearer` when given) made with a key
/// pair of its own, and fits it into the phone with its ISD keys — sealed for that key, opened
/// inside the element — owned by `owner`: the SE's id, and the owner credential when the issuer
/// gave one.
async fn issue_se(
    phone: &mut Phone,
    name: &str,
    base: &str,
    path: &str,
    owner: &str,
    bearer: Option<&str>,
) -> Result<(String, Option<String>)> {
    let se_pk = phone.order_secure_element(owner)?;
    let a = ok(name, http::post(base, path, bearer, &json!({"se_public_key": se_pk})).await?)?;
    let se_id = s(&a, "se_id")?.to_string();
    phone.fit_sealed_secure_element(&se_id, owner, s(&a, "isd_aid")?, s(&a, "sealed_isd_keys")?)?;
    Ok((se_id, a.get("owner_token").and_then(Value::as_str).map(str::to_string)))
}

/// The credential the provider at `base` issued this phone (registering the device first when
/// it has none): `POST base/v1/devices` with the device's id and public key.
async fn device_credential(phone: &mut Phone, base: &str, name: &str, io: &mut Io<'_>) -> Result<String> {
    if let Some(t) = phone.credential(base) {
        return Ok(t.to_string());
    }
    io.step("phone", name, "register the device (id and public key)");
    let body = json!({"device_id": phone.device_id(), "device_public_key": phone.device_public_key()?});
    let a = ok(name, http::post(base, "/v1/devices", None, &body).await?)?;
    let token = s(&a, "device_token")?.to_string();
    phone.set_credential(base, &token)?;
    Ok(token)
}

/// The SE operator's owner credential for the phone's SE.
fn operator_credential(phone: &Phone, addrs: &ProviderAddrs) -> Result<String> {
    phone.credential(&addrs.se_operator).map(str::to_string).ok_or_else(|| {
        Error::Phone(format!("no SE operator credential on this phone for {}", addrs.se_operator))
    })
}

async fn issuer_se(
    phone: &mut Phone,
    addrs: &ProviderAddrs,
    card: &CardholderCard,
    io: &mut Io<'_>,
) -> Result<String> {
    // The issuer's perso bureau does this, at its counter: it holds the bureau credential.
    let bureau =
        addrs.bureau_token.as_deref().ok_or_else(|| Error::Phone("no perso bureau credential".into()))?;
    let se_id = match phone.secure_element("issuer") {
        Some(s) => s.to_string(),
        None => {
            io.step("cardholder", "issuer", "request an issuer-owned secure element");
            let (se_id, _) =
                issue_se(phone, "issuer", &addrs.sp_tsm, "/v1/issuer-se/issue", "issuer", Some(bureau))
                    .await?;
            io.step(
                "issuer",
                "phone",
                format!("secure element {se_id} fitted (the issuer holds its ISD keys)"),
            );
            se_id
        }
    };
    io.step("cardholder", "issuer", format!("personalise card {} into SE {se_id}", mask(&card.pan)));
    let a = ok(
        "issuer perso bureau",
        http::post(
            &addrs.sp_tsm,
            "/v1/issuer-se/perso",
            Some(bureau),
            &json!({"se_id": se_id, "pan": card.pan}),
        )
        .await?,
    )?;
    io.provider_steps(&a);
    let script: OtaScript = serde_json::from_value(a.get("script").cloned().unwrap_or(Value::Null))
        .map_err(|e| Error::answer(format!("script: {e}")))?;
    let r = phone.deliver_script(&script)?;
    io.step("issuer SE", "perso bureau", format!("receipt: {} ({} commands)", r.sw, r.executed));
    if r.sw != "9000" {
        return Err(Error::Phone(format!("the issuer SE refused the perso script: {}", r.sw)));
    }
    Ok(s(&a, "card_id")?.to_string())
}

async fn operator_se(phone: &mut Phone, addrs: &ProviderAddrs, io: &mut Io<'_>) -> Result<String> {
    if let Some(s) = phone.secure_element("se-operator")
        && phone.credential(&addrs.se_operator).is_some()
    {
        return Ok(s.to_string());
    }
    if phone.secure_element("se-operator").is_some() {
        return Err(Error::Phone(format!(
            "this phone's SE came from another SE operator than {}",
            addrs.se_operator
        )));
    }
    let (se_id, owner) =
        issue_se(phone, "SE operator", &addrs.se_operator, "/v1/se/issue", "se-operator", None).await?;
    let owner = owner.ok_or_else(|| Error::answer("the SE operator gave no owner credential"))?;
    phone.set_credential(&addrs.se_operator, &owner)?;
    io.step(
        "SE operator",
        "phone",
        format!("embedded secure element {se_id} (ISD keys loaded at the factory)"),
    );
    Ok(se_id)
}

/// Fetches the SE TSM's queued scripts, runs them in the SE, sends back the receipts.
pub async fn fetch_ota(phone: &mut Phone, addrs: &ProviderAddrs, se_id: &str, io: &mut Io<'_>) -> Result<()> {
    let owner = operator_credential(phone, addrs)?;
    let a = ok("SE TSM", http::get(&addrs.se_operator, &format!("/v1/ota/{se_id}"), Some(&owner)).await?)?;
    let scripts: Vec<OtaScript> = serde_json::from_value(a.get("scripts").cloned().unwrap_or(Value::Null))
        .map_err(|e| Error::answer(format!("scripts: {e}")))?;
    io.step("SE TSM", "phone", format!("{} OTA script(s), encrypted and MACed", scripts.len()));
    let mut receipts: Vec<OtaReceipt> = Vec::new();
    for sc in &scripts {
        let r = phone.deliver_script(sc)?;
        io.step("phone (SE)", "SE TSM", format!("domain {} counter {}: {}", r.sd_aid, r.counter, r.sw));
        receipts.push(r);
    }
    let a = ok(
        "SE TSM",
        http::post(
            &addrs.se_operator,
            &format!("/v1/ota/{se_id}/receipt"),
            Some(&owner),
            &json!({"receipts": receipts}),
        )
        .await?,
    )?;
    io.provider_steps(&a);
    if receipts.iter().any(|r| r.sw != "9000") {
        return Err(Error::Phone("the SE refused an OTA script".into()));
    }
    Ok(())
}

async fn tsm_pan(
    phone: &mut Phone,
    addrs: &ProviderAddrs,
    card: &CardholderCard,
    io: &mut Io<'_>,
) -> Result<String> {
    let se_id = operator_se(phone, addrs, io).await?;
    let owner = operator_credential(phone, addrs)?;
    io.step("cardholder", "SE operator", format!("apply for a mobile card in SE {se_id}"));
    let app = ok(
        "SE operator",
        http::post(
            &addrs.se_operator,
            "/v1/applications",
            Some(&owner),
            &json!({"se_id": se_id, "cardholder": "test"}),
        )
        .await?,
    )?;
    let app_id = s(&app, "application_id")?;
    io.step("SE operator", "cardholder", format!("application {app_id} reviewed; authentication code"));
    io.step("cardholder", "issuer", format!("apply for card {} in SE {se_id}", mask(&card.pan)));
    let a = ok(
        "issuer / SP TSM",
        http::post(
            &addrs.sp_tsm,
            "/v1/applications",
            None,
            &card.typed_in(json!({"se_id": se_id, "application_id": app_id,
                    "auth_code": s(&app, "auth_code")?, "cross_check": true})),
        )
        .await?,
    )?;
    io.provider_steps(&a);
    fetch_ota(phone, addrs, &se_id, io).await?;
    Ok(s(&a, "card_id")?.to_string())
}

/// Asks a provider to add a card (`POST base+path` with `body`), answers the issuer's OTP step-up
/// when it asks for one (`POST base+path/otp`), and returns the approved answer — or the refusal
/// as a [`Refused`] error (`what` names it).
async fn add_with_idv(
    name: &str,
    base: &str,
    path: &str,
    bearer: &str,
    body: &Value,
    what: &'static str,
    io: &mut Io<'_>,
) -> Result<Value> {
    let mut a = ok(name, http::post(base, path, Some(bearer), body).await?)?;
    io.provider_steps(&a);
    if s(&a, "status")? == "otp_required" {
        let otp = (io.otp)()?;
        io.step("cardholder", name, "one-time password");
        let otp_body = json!({"provisioning_id": s(&a, "provisioning_id")?, "otp": otp});
        a = ok(name, http::post(base, &format!("{path}/otp"), Some(bearer), &otp_body).await?)?;
        io.provider_steps(&a);
    }
    if s(&a, "status")? != "approved" {
        return Err(Refused::from_answer(what, &a).into());
    }
    Ok(a)
}

async fn tsm_token(
    phone: &mut Phone,
    addrs: &ProviderAddrs,
    card: &CardholderCard,
    io: &mut Io<'_>,
) -> Result<String> {
    let se_id = operator_se(phone, addrs, io).await?;
    let owner = operator_credential(phone, addrs)?;
    io.step("cardholder", "SE TSM", format!("add card {} as a token in SE {se_id}", mask(&card.pan)));
    let body = card.typed_in(json!({"se_id": se_id}));
    let a =
        add_with_idv("SE TSM", &addrs.se_operator, "/v1/tokens", &owner, &body, "tokenization", io).await?;
    fetch_ota(phone, addrs, &se_id, io).await?;
    Ok(s(&a, "card_id")?.to_string())
}

async fn token_requestor(
    phone: &mut Phone,
    base: &str,
    name: &str,
    card: &CardholderCard,
    io: &mut Io<'_>,
) -> Result<String> {
    let dpk = phone.device_public_key()?;
    let device_id = phone.device_id().to_string();
    let cred = device_credential(phone, base, name, io).await?;
    io.step("cardholder", &format!("{name} app"), format!("card number {} typed in", mask(&card.pan)));
    io.step("phone", name, "add card (with the device's public key)");
    let body = card.typed_in(json!({"device_id": device_id, "device_public_key": dpk}));
    let a = add_with_idv(name, base, "/v1/cards", &cred, &body, "provisioning", io).await?;
    let token_ref = s(&a, "token_ref")?.to_string();
    let card_id = phone.install_token(
        &token_ref,
        if name.starts_with("cloud") { "cloud" } else { "wallet" },
        s(&a, "encrypted_token_data")?,
    )?;
    io.step(
        "phone",
        "phone (secure area)",
        format!("token data opened with the device key, stored as {card_id}"),
    );
    let l = ok(
        name,
        http::post(
            base,
            &format!("/v1/cards/{token_ref}/loaded"),
            Some(&cred),
            &json!({"device_id": device_id}),
        )
        .await?,
    )?;
    io.provider_steps(&l);
    Ok(card_id)
}

/// Model 3 on the real PAN: the cloud platform has the issuer verify cardholder and device, and
/// relays the issuer's perso data — the PAN with limited-use keys, sealed for the device key.
async fn hce_pan(
    phone: &mut Phone,
    addrs: &ProviderAddrs,
    card: &CardholderCard,
    io: &mut Io<'_>,
) -> Result<String> {
    const NAME: &str = "cloud platform";
    let dpk = phone.device_public_key()?;
    let device_id = phone.device_id().to_string();
    let cred = device_credential(phone, &addrs.cloud, NAME, io).await?;
    io.step("cardholder", "cloud platform app", format!("card number {} typed in", mask(&card.pan)));
    io.step("phone", NAME, "add the card itself, real PAN (with the device's public key)");
    let body = card.typed_in(json!({"device_id": device_id, "device_public_key": dpk}));
    let a = add_with_idv(NAME, &addrs.cloud, "/v1/pan-cards", &cred, &body, "provisioning", io).await?;
    let card_id = phone.install_pan_card(s(&a, "card_ref")?, "cloud", s(&a, "encrypted_card_data")?)?;
    let n = phone.profile(&card_id).and_then(|p| p.luks_left()).unwrap_or(0);
    io.step(
        "phone",
        "phone (secure area)",
        format!(
            "perso data opened with the device key: card {} on {n} limited-use keys, stored as {card_id}",
            mask(&card.pan)
        ),
    );
    Ok(card_id)
}

/// Asks the cloud platform for the next batch of limited-use keys for an HCE card (from the token
/// service for a token, from the issuer for a real-PAN card).
pub async fn replenish(
    phone: &mut Phone,
    addrs: &ProviderAddrs,
    card_id: &str,
    io: &mut Io<'_>,
) -> Result<usize> {
    let token_ref =
        card_id.strip_prefix("hce:").ok_or_else(|| Error::Phone(format!("{card_id} is not an HCE card")))?;
    let kind = phone.state().hce.card(token_ref).map(|c| c.kind);
    io.step("phone", "cloud platform", format!("replenish limited-use keys of {card_id}"));
    let (path, field) = match kind {
        Some(HceKind::RealPan) => (format!("/v1/pan-cards/{token_ref}/replenish"), "encrypted_card_data"),
        _ => (format!("/v1/cards/{token_ref}/replenish"), "encrypted_token_data"),
    };
    let cred = device_credential(phone, &addrs.cloud, "cloud platform", io).await?;
    let a = ok(
        "cloud platform",
        http::post(&addrs.cloud, &path, Some(&cred), &json!({"device_id": phone.device_id()})).await?,
    )?;
    io.provider_steps(&a);
    let n = phone.replenish(token_ref, s(&a, field)?)?;
    io.step("phone", "phone (secure area)", format!("{n} limited-use keys stored"));
    Ok(n)
}
